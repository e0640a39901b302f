"""Score new data with a saved model, distributed over Spark: IDX, npz, CSV, curated Parquet or image files."""
import sys

from pipeline.cli import job_parser, run_job
from pipeline.layout import Layout
from pipeline.predict.stage import run_prediction


def args_parser():
    parser = job_parser(__doc__)
    parser.add_argument("--input", default=None,
                        help="file or folder to score (default: the curated test set)")
    parser.add_argument("--model", default=None, help="model name (default: predict.model, 'best' from evaluation)")
    parser.add_argument("--output", default=None, help="output folder (default: <run>/predict/<input name>)")
    return parser


def _main(argv=None) -> int:
    return run_job(args_parser(), argv, "predict", lambda spark, cfg, args: run_prediction(
        spark, cfg, Layout.from_config(cfg, args.run_id), input_path=args.input, model=args.model,
        output=args.output))


def main():
    sys.exit(_main())


if __name__ == "__main__":
    main()
