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
    eda, evaluation = layout.eda_files, layout.evaluation_files
    figures = {name: eda.figure(name)
               for name in ("sample_grid", "label_distribution", "mean_images", "pixel_histogram")}
    for model in models:
        figures[f"{model}_curves"] = layout.curves(model)
        figures[f"{model}_confusion"] = evaluation.confusion_matrix_png(model)
        figures[f"{model}_misclassified"] = evaluation.misclassified_png(model)
    missing = [path for path in figures.values() if not storage.exists(path)]
    if missing:
        raise PipelineError(f"report needs the figure {missing[0]}: run the stage that draws it first")
    prediction_metrics = layout.prediction_files("test").metrics  # predict's default input: the test split
    return RunOutputs(
        raw_manifest=_required_json(layout.raw_manifest, "ingest"),
        validation=_required_json(layout.validation_report, "ingest"),
        curated_manifest=_required_json(layout.curated_manifest, "prepare"),
        eda=_required_json(eda.summary, "eda"),
        histories={m: _required_json(layout.history(m), "train") for m in models},
        metrics={m: _required_json(evaluation.metrics(m), "evaluate") for m in models},
        comparison=_required_json(evaluation.comparison, "evaluate"),
        best=_required_json(evaluation.best_model, "evaluate"),
        predictions=_required_json(prediction_metrics, "predict"),
        run_manifest=storage.read_json(layout.run_manifest) if storage.exists(layout.run_manifest) else {},
        figures=figures,
    )
