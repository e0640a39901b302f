"""What every job shares: its arguments, logging, config loading and the one-line error on failure."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.config import DEFAULT_CONF, PipelineConfig, known_profiles, load_config, profiles_dir
from pipeline.errors import PipelineError
from pipeline.layout import Layout
from pipeline.run_ids import checked_ds, checked_run_id

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("pipeline")

# TensorFlow's C++ start-up notes (CPU instruction sets) would otherwise be the loudest lines of every job.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

def job_parser(description: str, per_run: bool = True, skips_complete: bool = True,
               per_date: bool = False) -> argparse.ArgumentParser:
    """The arguments every job takes; --run-id only for jobs that write into a run folder, --force only for jobs
    that skip a complete output, --ds (required) for the scheduled batches' jobs, which work on one day."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--conf", default=None, help=f"config YAML (default: {DEFAULT_CONF}); relative paths in it "
                        "resolve against paths.root, by default the folder above the file's folder")
    parser.add_argument("--profile", default=None,
                        help="config profile: a name from the profiles/ folder beside the config file, e.g. "
                             f"{', '.join(known_profiles(profiles_dir(None)))} (default: the config file's "
                             "profile, else full)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable), e.g. --set train.batch_size=64; after "
                             "spark.settings. the rest is one Spark option, dots and all: "
                             "--set spark.settings.spark.hadoop.fs.s3a.endpoint=http://host:9000")
    if per_run:
        parser.add_argument("--run-id", default=None, help="run folder name (default: profile + config hash)")
    if skips_complete:
        parser.add_argument("--force", action="store_true", help="redo even if the output is complete")
    if per_date:
        parser.add_argument("--ds", required=True, metavar="YYYY-MM-DD",
                            help="the day to work on: its landing folder ds=YYYY-MM-DD and its partitions")
    return parser


def stage_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one stage's job, from its registry entry: the common arguments and the stage's options."""
    from pipeline.stages import stage_named
    stage = stage_named(name)
    parser = job_parser(f"The {stage.name} stage: {stage.summary}.", stage.per_run, stage.skips_complete,
                        stage.per_date)
    for option in stage.options:
        parser.add_argument(option.cli_flag, dest=option.name, default=option.default, help=option.help)
    return parser


def stage_job(name: str) -> tuple[Callable[[], argparse.ArgumentParser], Callable[..., int], Callable[[], None]]:
    """A stage's job entry points: `args_parser()`, `_main(argv)` (returns the exit code; tests call it) and
    `main()` (exits with it), so that jobs/<stage>.py is the stage's name and nothing else."""
    def main() -> None:
        sys.exit(run_stage_job(name, None))
    return (lambda: stage_parser(name)), (lambda argv=None: run_stage_job(name, argv)), main


def run_stage_job(name: str, argv: list[str] | None) -> int:
    """Parse, configure, run stage `name` once and log its result line; the exit code of its job."""
    from pipeline.stages import stage_named
    stage = stage_named(name)

    def run(spark, cfg: PipelineConfig, args: argparse.Namespace) -> None:
        layout = Layout.from_config(cfg, getattr(args, "run_id", None))
        options = {option.name: getattr(args, option.name) for option in stage.options}
        started = time.monotonic()
        result = stage.run(spark, cfg, layout, force=getattr(args, "force", False), ds=getattr(args, "ds", None),
                           **options)
        log.info("%s", dataclasses.replace(result, seconds=time.monotonic() - started).summary_line(name))
    return run_job(stage_parser(name), argv, name, run)


def default_conf() -> str:
    """The checkout's conf/local.yaml, for a job given no --conf; outside a checkout there is none to guess."""
    if not DEFAULT_CONF.is_file():
        raise PipelineError(f"no --conf given and {DEFAULT_CONF} does not exist (the pipeline package is not in a "
                            "checkout): pass --conf FILE")
    return str(DEFAULT_CONF)


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


def run_job(parser: argparse.ArgumentParser, argv: list[str] | None, job_name: str,
            work: Callable[[SparkSession, PipelineConfig, argparse.Namespace], object]) -> int:
    """Parse `argv`, load config, build the session, run `stage`; a PipelineError, a full disk or an unreachable
    store becomes one line and its exit code (pipeline.errors: whether a retry can help)."""
    from pipeline.failures import job_failure
    from pipeline.spark import build_spark_session

    args = parser.parse_args(argv)
    configure_logging()
    spark = None
    try:
        # Before the session starts: a mistyped date or run id costs no Spark start-up.
        if getattr(args, "ds", None) is not None:
            checked_ds(args.ds)
        if getattr(args, "run_id", None) is not None:
            checked_run_id(args.run_id)
        cfg = load_config(args.conf or default_conf(), args.profile, args.overrides)
        spark = build_spark_session(cfg.spark, job_name)
        work(spark, cfg, args)
        return 0
    except PipelineError as exc:
        print(f"ERROR [{job_name}]: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        # A full disk, an unreachable store or a failure on the Spark workers, however deep in Spark's or
        # Arrow's trace; anything else is a bug, and its traceback is what a developer needs.
        known = job_failure(exc)
        if known is None:
            raise
        log.debug("%s failed", job_name, exc_info=exc)
        print(f"ERROR [{job_name}]: {known}", file=sys.stderr)
        return known.exit_code
    finally:
        if spark is not None:
            spark.stop()
