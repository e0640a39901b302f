"""Normalise the raw table and split it into curated train / validation / test Parquet for Petastorm."""
import sys

from pipeline.cli import job_parser, run_job
from pipeline.data.prepare import run_prepare
from pipeline.layout import Layout


def args_parser():
    return job_parser(__doc__)


def _main(argv=None) -> int:
    return run_job(args_parser(), argv, "prepare",
                   lambda spark, cfg, args: run_prepare(spark, cfg, Layout.from_config(cfg), force=args.force))


def main():
    sys.exit(_main())


if __name__ == "__main__":
    main()
