"""What every job shares: its arguments, logging, config loading and the one-line error on failure."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from pipeline.config import PipelineConfig, known_profiles, load_config
from pipeline.errors import PipelineError

log = logging.getLogger("pipeline")

# TensorFlow's C++ start-up notes (CPU instruction sets) would otherwise be the loudest lines of every job.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

Stage = Callable[["SparkSession", PipelineConfig, argparse.Namespace], object]  # noqa: F821


def job_parser(description: str | None) -> argparse.ArgumentParser:
    """The arguments every job takes; a job adds its own to the parser it gets back."""
    parser = argparse.ArgumentParser(description=(description or "").strip().splitlines()[0])
    parser.add_argument("--conf", default=None, help="config YAML (default: conf/local.yaml)")
    parser.add_argument("--profile", default=None,
                        help=f"config profile, a name from conf/profiles: {', '.join(known_profiles())} "
                             "(default: the config file's profile, else full)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable), e.g. --set train.batch_size=64; after "
                             "spark.settings. the rest is one Spark option, dots and all: "
                             "--set spark.settings.spark.hadoop.fs.s3a.endpoint=http://host:9000")
    parser.add_argument("--run-id", default=None, help="run folder name (default: profile + config hash)")
    parser.add_argument("--force", action="store_true", help="redo this stage even if its output is complete")
    return parser


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("py4j", "matplotlib", "PIL", "h5py", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_py4j_retry_notes)


def _drop_py4j_retry_notes(record: logging.LogRecord) -> bool:
    """py4j logs a stale pooled connection it then retries on the ROOT logger, traceback and all: not an error."""
    return not (record.name == "root" and record.getMessage().startswith("Exception while sending command"))


def run_job(parser: argparse.ArgumentParser, argv: list[str] | None, job_name: str, stage: Stage) -> int:
    """Parse `argv`, load config, build the session, run `stage`; a PipelineError becomes one line and exit 1."""
    from pipeline.config import REPO_ROOT
    from pipeline.spark import build_spark_session

    args = parser.parse_args(argv)
    configure_logging()
    spark = None
    try:
        cfg = load_config(args.conf or REPO_ROOT / "conf" / "local.yaml", args.profile, args.overrides)
        spark = build_spark_session(cfg.spark, job_name)
        stage(spark, cfg, args)
        return 0
    except PipelineError as exc:
        print(f"ERROR [{job_name}]: {exc}", file=sys.stderr)
        return 1
    finally:
        if spark is not None:
            spark.stop()
