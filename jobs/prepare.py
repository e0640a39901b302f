"""The prepare stage as a job (python or spark-submit); pipeline/stages.py says what it does and writes."""
import sys

from pipeline.cli import run_stage_job, stage_parser


def args_parser():
    return stage_parser("prepare")


def _main(argv=None) -> int:
    return run_stage_job("prepare", argv)


def main():
    sys.exit(_main())


if __name__ == "__main__":
    main()
