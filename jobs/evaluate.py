"""Evaluate every trained model on the untouched test set, compare them and gate on the target accuracy."""
import sys

from pipeline.cli import job_parser, run_job
from pipeline.evaluate.stage import run_evaluation
from pipeline.layout import Layout


def args_parser():
    return job_parser(__doc__)


def _main(argv=None) -> int:
    return run_job(args_parser(), argv, "evaluate", lambda spark, cfg, args: run_evaluation(
        spark, cfg, Layout.from_config(cfg, args.run_id), force=args.force))


def main():
    sys.exit(_main())


if __name__ == "__main__":
    main()
