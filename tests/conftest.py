"""Shared fixtures: one local Spark session for the whole test run, and configs pointing at temp dirs."""
from __future__ import annotations

import os

import pytest

from pipeline.config import PipelineConfig, load_config
from pipeline.spark import build_spark_session

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from pipeline.config import SparkConfig
    local_dir = tmp_path_factory.mktemp("spark-local")
    cfg = SparkConfig(master="local[2]", app_name="tests", log_level="ERROR", shuffle_partitions=4,
                      driver_memory="2g", settings={"spark.local.dir": str(local_dir),
                                                    "spark.sql.warehouse.dir": str(local_dir / "warehouse"),
                                                    "spark.default.parallelism": "2"})
    session = build_spark_session(cfg, "tests")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture
def make_config(tmp_path):
    """A config whose outputs go under this test's tmp_path; extra `section.key=value` overrides allowed."""
    def _make(*overrides: str, profile: str = "full", input_dir: str | None = None) -> PipelineConfig:
        base = [f"paths.data={tmp_path / 'data'}", f"paths.runs={tmp_path / 'runs'}",
                f"paths.store={tmp_path / 'store'}", "spark.master=local[2]"]
        if input_dir is not None:
            base.append(f"paths.input={input_dir}")
        return load_config(None, profile, [*base, *overrides])
    return _make
