"""The main job end to end: the quick profile on the bundled MNIST, then a rerun that skips completed stages."""
import re

import pytest

from pipeline import storage
from pipeline.layout import Layout
from pipeline.run import run_pipeline
from pipeline.stages import STAGE_NAMES as STAGES

pytestmark = pytest.mark.slow

REPORT_SECTIONS = ["1. Data collection", "2. Exploratory data analysis", "3. Models", "4. Prediction",
                   "5. Tracking and registry", "6. Pipeline structure", "7. Libraries and versions",
                   "8. Known limitations and future work", "9. Conclusions", "10. References and acknowledgements"]


@pytest.fixture(scope="module")
def quick_run(spark, tmp_path_factory):
    from pipeline.config import load_config
    root = tmp_path_factory.mktemp("e2e")
    cfg = load_config(None, "quick", [f"paths.data={root / 'data'}", f"paths.runs={root / 'runs'}",
                                      "spark.master=local[2]", "train.num_workers=2"])
    layout = Layout.from_config(cfg)
    first = run_pipeline(spark, cfg, layout)
    second = run_pipeline(spark, cfg, layout)
    return cfg, layout, first, second


def test_manifest_lists_every_stage_with_durations(quick_run):
    _, layout, first, _ = quick_run
    assert [s["stage"] for s in first["stages"]] == list(STAGES)
    assert all(s["seconds"] >= 0 and not s["skipped"] for s in first["stages"])
    manifest = storage.read_json(layout.run_manifest)
    assert manifest["config"]["profile"] == "quick" and manifest["machine"]["cores"] >= 1
    assert manifest["headline"]["best_model"] in ("model_1", "model_2", "model_3")
    evaluation = next(s["details"] for s in first["stages"] if s["stage"] == "evaluate")
    assert all(m["test_accuracy"] > 0.8 for m in evaluation["models"].values()), evaluation["models"]


def test_report_has_every_section_and_no_empty_one(quick_run):
    _, layout, _, _ = quick_run
    report = storage.read_text(layout.report_md)
    headings = re.findall(r"^## (.+)$", report, flags=re.M)
    assert headings == REPORT_SECTIONS
    for body in re.split(r"^## .+$", report, flags=re.M)[1:]:
        assert len(body.strip()) > 200
    for placeholder in ("TODO", "TBD", "lorem", "None%", "nan", "placeholder", "XXX"):
        assert placeholder not in report
    html = storage.read_text(layout.report_html)
    # Four EDA figures, three training curves, the best model's confusion matrix and mistakes: all embedded.
    figures = re.findall(r"!\[[^]]*\]\((figures/[^)]+\.png)\)", report)
    assert len(set(figures)) == 9
    assert html.count("data:image/png;base64,") == len(figures) and 'src="figures/' not in html


def test_rerun_skips_completed_stages(quick_run):
    _, _, first, second = quick_run
    skipped = {s["stage"] for s in second["stages"] if s["skipped"]}
    assert {"ingest", "prepare", "eda", "train", "evaluate"} <= skipped
    assert second["headline"]["target_met"] is first["headline"]["target_met"] is True
    assert second["headline"]["best_test_accuracy"] == first["headline"]["best_test_accuracy"]
