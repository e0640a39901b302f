"""Land one simulated day of arrivals in <paths.landing>/ds=<date>/: scanned MNIST test digits (with labels.csv
when --labels), or with --kind noise|blobs|letters a batch of images that are not handwritten digits.
Deterministic per date and kind; the day's folder is replaced in one move. See pipeline/batch/arrivals.py."""
from __future__ import annotations

import argparse
import sys

from pipeline.batch.arrivals import KINDS, simulate_day
from pipeline.cli import configure_logging, job_parser, log
from pipeline.config import REPO_ROOT, load_config
from pipeline.errors import PipelineError
from pipeline.layout import Layout
from pipeline.run_ids import checked_ds


def args_parser() -> argparse.ArgumentParser:
    parser = job_parser(__doc__, per_run=False, skips_complete=False, per_date=True)
    parser.add_argument("--count", type=int, default=200, help="images to land (default: 200)")
    parser.add_argument("--labels", action="store_true", help="also write labels.csv (file,label); digits only")
    parser.add_argument("--kind", default="digits", choices=KINDS, help="what arrives (default: digits)")
    return parser


def _main(argv: list[str] | None = None) -> int:
    args = args_parser().parse_args(argv)
    configure_logging()
    try:
        cfg = load_config(args.conf or REPO_ROOT / "conf" / "local.yaml", args.profile, args.overrides)
        files = Layout.from_config(cfg).batch_files(checked_ds(args.ds))
        landed = simulate_day(cfg, files, args.count, args.kind, args.labels)
    except PipelineError as exc:
        print(f"ERROR [simulate_arrivals]: {exc}", file=sys.stderr)
        return 1
    log.info("landed %d %s image(s)%s in %s", len(landed), args.kind, " with labels.csv" if args.labels else "",
             files.landing)
    return 0


def main() -> None:
    sys.exit(_main())


if __name__ == "__main__":
    main()
