"""Everything the report shows, loaded from the run's outputs (the report never computes or types a number)."""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.layout import Layout


@dataclass
class RunOutputs:
    raw_manifest: dict
    validation: dict
    curated_manifest: dict
    eda: dict
    histories: dict[str, dict]
    metrics: dict[str, dict]
    comparison: dict
    best: dict
    predictions: dict
    run_manifest: dict
    figures: dict[str, str] = field(default_factory=dict)   # figure key -> path


def _required_json(path: str, stage: str) -> dict:
    if not storage.exists(path):
        raise PipelineError(f"report needs {path}: run the {stage} stage first")
    return storage.read_json(path)


def load_run_outputs(cfg: PipelineConfig, layout: Layout) -> RunOutputs:
    models = list(cfg.train.models)
    figures = {name: f"{layout.eda}/{name}.png"
               for name in ("sample_grid", "label_distribution", "mean_images", "pixel_histogram")}
    for model in models:
        figures[f"{model}_curves"] = f"{layout.model_dir(model)}/curves.png"
        figures[f"{model}_confusion"] = f"{layout.evaluation}/{model}/confusion_matrix.png"
        figures[f"{model}_misclassified"] = f"{layout.evaluation}/{model}/misclassified.png"
    missing = [path for path in figures.values() if not storage.exists(path)]
    if missing:
        raise PipelineError(f"report needs the figure {missing[0]}: run the stage that draws it first")
    prediction_metrics = f"{layout.predictions}/test/metrics.json"
    return RunOutputs(
        raw_manifest=_required_json(layout.raw_manifest, "ingest"),
        validation=_required_json(layout.validation_report, "ingest"),
        curated_manifest=_required_json(layout.curated_manifest, "prepare"),
        eda=_required_json(f"{layout.eda}/summary.json", "eda"),
        histories={m: _required_json(f"{layout.model_dir(m)}/history.json", "train") for m in models},
        metrics={m: _required_json(f"{layout.evaluation}/{m}/metrics.json", "evaluate") for m in models},
        comparison=_required_json(f"{layout.evaluation}/comparison.json", "evaluate"),
        best=_required_json(f"{layout.evaluation}/best_model.json", "evaluate"),
        predictions=_required_json(prediction_metrics, "predict"),
        run_manifest=storage.read_json(layout.run_manifest) if storage.exists(layout.run_manifest) else {},
        figures=figures,
    )
