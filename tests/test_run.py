"""The main job's orchestration, with stand-in stages (the real ones are exercised end to end elsewhere)."""
import pytest

from pipeline import storage
from pipeline.errors import GateError, PipelineError
from pipeline.layout import Layout
from pipeline.run import STAGES, run_pipeline, stages_to_force


def test_from_stage_forces_that_stage_and_later_ones():
    assert stages_to_force(False, None) == set()
    assert stages_to_force(True, None) == set(STAGES)
    assert stages_to_force(False, "evaluate") == {"evaluate", "predict", "report"}


def test_unknown_from_stage_is_an_error():
    with pytest.raises(PipelineError, match="unknown stage 'trian' for --from"):
        stages_to_force(False, "trian")


def _recording_stages(calls, gate_fails=False):
    def make(name):
        def stage(spark, cfg, layout, force):
            calls.append((name, force))
            if name == "evaluate" and gate_fails:
                raise GateError("best model model_1 test accuracy 0.5000 is below the target 0.9000")
            return {"skipped": not force and name == "ingest", "figure": 1}
        return stage
    return {name: make(name) for name in STAGES}


def test_runs_every_stage_in_order_and_writes_the_manifest(make_config):
    cfg = make_config()
    layout = Layout.from_config(cfg)
    calls = []
    manifest = run_pipeline(None, cfg, layout, from_stage="train", stage_functions=_recording_stages(calls))
    assert calls == [(name, name in {"train", "evaluate", "predict", "report"}) for name in STAGES]
    written = storage.read_json(layout.run_manifest)
    assert [s["stage"] for s in written["stages"]] == list(STAGES)
    assert written["stages"][0]["skipped"] is True
    assert written["finished"] and written["versions"]["pyspark"].startswith("3.5")
    assert manifest["run_id"] == layout.run_root.rsplit("/", 1)[-1]


def test_failed_gate_still_reports_then_fails(make_config):
    cfg = make_config()
    layout = Layout.from_config(cfg)
    calls = []
    with pytest.raises(GateError, match="below the target"):
        run_pipeline(None, cfg, layout, stage_functions=_recording_stages(calls, gate_fails=True))
    assert [name for name, _ in calls] == list(STAGES)
    stages = storage.read_json(layout.run_manifest)["stages"]
    assert stages[STAGES.index("evaluate")]["summary"]["gate_failed"].startswith("best model model_1")
