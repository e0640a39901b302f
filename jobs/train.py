"""Train the CNNs with Horovod on Spark, fed by Petastorm from the curated Parquet."""
import sys

from pipeline.cli import job_parser, run_job
from pipeline.layout import Layout
from pipeline.train.stage import run_training


def args_parser():
    parser = job_parser(__doc__)
    parser.add_argument("--model", default="all", help="model_1 | model_2 | model_3 | all (default)")
    return parser


def _main(argv=None) -> int:
    return run_job(args_parser(), argv, "train", lambda spark, cfg, args: run_training(
        spark, cfg, Layout.from_config(cfg, args.run_id), model=args.model, force=args.force))


def main():
    sys.exit(_main())


if __name__ == "__main__":
    main()
