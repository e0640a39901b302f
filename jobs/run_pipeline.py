"""The main job: every stage of pipeline/stages.py in order, each skipped when its output is complete."""
import sys

from pipeline.cli import job_parser, run_job
from pipeline.layout import Layout
from pipeline.run import run_pipeline
from pipeline.stages import STAGE_NAMES


def args_parser():
    parser = job_parser(__doc__)
    parser.add_argument("--from", dest="from_stage", choices=STAGE_NAMES, default=None,
                        help="redo this stage and every stage downstream of it (that reads what it writes)")
    return parser


def _main(argv=None) -> int:
    return run_job(args_parser(), argv, "pipeline", lambda spark, cfg, args: run_pipeline(
        spark, cfg, Layout.from_config(cfg, args.run_id), force=args.force, from_stage=args.from_stage))


def main():
    sys.exit(_main())


if __name__ == "__main__":
    main()
