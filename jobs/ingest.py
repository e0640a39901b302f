"""Ingest raw MNIST files (IDX, npz or CSV) into the raw Parquet table, validating them on the way."""
import sys

from pipeline.cli import job_parser, run_job
from pipeline.data.ingest import run_ingest
from pipeline.layout import Layout


def args_parser():
    return job_parser(__doc__)


def _main(argv=None) -> int:
    return run_job(args_parser(), argv, "ingest",
                   lambda spark, cfg, args: run_ingest(spark, cfg, Layout.from_config(cfg), force=args.force))


def main():
    sys.exit(_main())


if __name__ == "__main__":
    main()
