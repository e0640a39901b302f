"""Describe the curated data: label distribution, pixel statistics, mean images, split drift, figures."""
import sys

from pipeline.cli import job_parser, run_job
from pipeline.eda.stage import run_eda
from pipeline.layout import Layout


def args_parser():
    return job_parser(__doc__)


def _main(argv=None) -> int:
    return run_job(args_parser(), argv, "eda",
                   lambda spark, cfg, args: run_eda(spark, cfg, Layout.from_config(cfg), force=args.force))


def main():
    sys.exit(_main())


if __name__ == "__main__":
    main()
