"""The main job's orchestration and the stage registry, with stand-in stages (the real ones run end to end
elsewhere)."""
import importlib

import pytest

from pipeline import storage
from pipeline.errors import GateError, PipelineError
from pipeline.layout import Layout
from pipeline.result import StageResult
from pipeline.run import run_pipeline, stages_to_force
from pipeline.stages import ALL_STAGES, DAILY_STAGES, RETRAINING_STAGES, STAGE_NAMES, STAGES, Stage


def test_from_stage_forces_that_stage_and_every_stage_downstream_of_it():
    assert STAGE_NAMES == ("ingest", "prepare", "eda", "train", "evaluate", "predict", "report")
    assert stages_to_force(False, None) == set()
    assert stages_to_force(True, None) == set(STAGE_NAMES)
    assert stages_to_force(False, "evaluate") == {"evaluate", "predict", "report"}
    assert stages_to_force(False, "eda") == {"eda", "report"}          # the figures change, the models do not
    assert stages_to_force(False, "prepare") == set(STAGE_NAMES) - {"ingest"}


def test_unknown_from_stage_is_an_error():
    with pytest.raises(PipelineError, match="unknown stage 'trian' for --from"):
        stages_to_force(False, "trian")


@pytest.fixture
def stand_in_stages(monkeypatch):
    """Every Stage.run records (stage, force) and returns a small result; ingest skips unless forced.
    `gate_fails` makes evaluate raise the gate error with its result."""
    calls: list[tuple[str, bool]] = []
    state = {"gate_fails": False}

    def run(self, spark, cfg, layout, force=False, **options):
        calls.append((self.name, force))
        result = StageResult(not force and self.name == "ingest", {"out": f"/tmp/{self.name}"}, counts={"rows": 1})
        if self.name == "evaluate" and state["gate_fails"]:
            raise GateError("best model model_1 test accuracy 0.5000 is below the target 0.9000", result)
        return result
    monkeypatch.setattr(Stage, "run", run)
    return calls, state


def test_runs_every_stage_in_order_and_writes_the_manifest(make_config, stand_in_stages):
    calls, _ = stand_in_stages
    cfg = make_config()
    layout = Layout.from_config(cfg)
    manifest = run_pipeline(None, cfg, layout, from_stage="train")
    assert calls == [(name, name in {"train", "evaluate", "predict", "report"}) for name in STAGE_NAMES]
    written = storage.read_json(layout.run_manifest)
    assert [s["stage"] for s in written["stages"]] == list(STAGE_NAMES)
    assert written["stages"][0] == {"stage": "ingest", "skipped": True, "outputs": {"out": "/tmp/ingest"},
                                    "counts": {"rows": 1}, "details": {}, "seconds": written["stages"][0]["seconds"]}
    assert written["finished"] and written["versions"]["pyspark"].startswith("3.5")
    assert manifest["run_id"] == layout.run_id == layout.run_root.rsplit("/", 1)[-1]


def test_failed_gate_still_reports_then_fails(make_config, stand_in_stages):
    calls, state = stand_in_stages
    state["gate_fails"] = True
    cfg = make_config()
    layout = Layout.from_config(cfg)
    with pytest.raises(GateError, match="below the target"):
        run_pipeline(None, cfg, layout)
    assert [name for name, _ in calls] == list(STAGE_NAMES)
    stages = storage.read_json(layout.run_manifest)["stages"]
    evaluate = stages[STAGE_NAMES.index("evaluate")]
    assert evaluate["details"]["gate_failed"].startswith("best model model_1")
    assert evaluate["outputs"] == {"out": "/tmp/evaluate"}


@pytest.mark.parametrize("stage", ALL_STAGES, ids=[stage.name for stage in ALL_STAGES])
def test_every_registered_stage_has_a_job_taking_exactly_its_options(stage):
    """The job's parser comes from the registry: --run-id only where the stage writes into the run folder,
    --force only where it skips a complete output, --ds where it works on one day, and the stage's own options."""
    job = importlib.import_module(f"jobs.{stage.name}")
    flags = {flag for action in job.args_parser()._actions for flag in action.option_strings}
    expected = {"-h", "--help", "--conf", "--profile", "--set"}
    expected |= {"--run-id"} if stage.per_run else set()
    expected |= {"--force"} if stage.skips_complete else set()
    expected |= {"--ds"} if stage.per_date else set()
    expected |= {option.cli_flag for option in stage.options}
    assert flags == expected
    module, function = stage.function.split(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_a_stage_refuses_an_option_it_does_not_declare():
    with pytest.raises(PipelineError, match="stage 'ingest' has no option 'model'"):
        STAGES[0].run(None, None, None, model="model_1")


def test_report_structure_table_lists_every_registered_stage(make_config):
    from pipeline.report.sections import structure_section
    layout = Layout.from_config(make_config())
    table = structure_section(layout)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`jobs/" in line]
    assert [row.split("|")[1].strip() for row in rows] == list(STAGE_NAMES)
    assert f"`eda: {layout.eda}`" in table and "`jobs/report.py`" in table
    assert "| curated, models |" in table  # evaluate's inputs, named as their writers name them


def test_every_stage_named_as_the_writer_of_an_output_is_registered():
    """`outputs.read_stage_output(path, "prepare")` tells the user which job to run: the name must be a stage's."""
    import ast
    from pathlib import Path

    from pipeline.config import REPO_ROOT
    named = set()
    for source in (REPO_ROOT / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "read_stage_output", "require_stage_output") and len(node.args) > 1 \
                    and isinstance(node.args[1], ast.Constant):
                named.add((Path(source).name, node.args[1].value))
    assert named and {stage for _, stage in named} <= set(STAGE_NAMES), sorted(named)


def test_a_stage_result_fits_on_one_log_line():
    result = StageResult(False, {"model_1": "/runs/x/train/model_1"}, counts={"models": 1, "workers": 2},
                         details={"model_1": {"val_accuracy": 0.98123, "epochs": 5}}, seconds=61.24)
    assert result.summary_line("train") == \
        "stage train: done in 61.2s | models=1, workers=2, model_1 val_accuracy=0.9812"
    assert StageResult(True, {}, seconds=0.5).summary_line("ingest") == \
        "stage ingest: skipped (output complete) in 0.5s | -"


@pytest.mark.parametrize(("stages", "outside"), [
    (STAGES, {"input"}), (DAILY_STAGES, {"landing day", "registry", "drift baseline"}),
    (RETRAINING_STAGES, {"labelled days", "curated", "registry"})], ids=["main", "daily", "retraining"])
def test_every_stage_reads_data_named_once_and_written_before_it_or_from_outside(stages, outside):
    """The declared graph `--from` follows: every input is a named product, written by an earlier stage of its
    workflow or coming from outside it (the raw input; a landed day, the registry; the prepared data)."""
    from pipeline.stages import PRODUCTS
    written: set[str] = set()
    for stage in stages:
        assert set(stage.inputs) | set(stage.outputs) <= set(PRODUCTS), stage.name
        assert set(stage.inputs) <= written | outside, stage.name
        written |= set(stage.outputs)
