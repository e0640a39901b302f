"""Everything the report shows, loaded from the run's outputs (the report never computes or types a number)."""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline import outputs, storage
from pipeline.config import PipelineConfig
from pipeline.layout import Layout
from pipeline.validation_report import read_validation_report


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
    tracking: dict = field(default_factory=dict)            # tracking.json: MLflow runs and registered versions
    promotion: dict = field(default_factory=dict)           # the registry's decision (evaluation folder)
    recipe_study: dict = field(default_factory=dict)        # seeds and ablation of a recipe (benchmarks/model4.py)


def load_run_outputs(cfg: PipelineConfig, layout: Layout) -> RunOutputs:
    models = list(cfg.train.models)
    eda, evaluation = layout.eda_files, layout.evaluation_files
    drawn = {name: (eda.figure(name), "eda")  # figure key -> (path, the stage that draws it)
             for name in ("sample_grid", "label_distribution", "mean_images", "pixel_histogram")}
    for model in models:
        drawn |= {f"{model}_curves": (layout.curves(model), "train"),
                  f"{model}_confusion": (evaluation.confusion_matrix_png(model), "evaluate"),
                  f"{model}_misclassified": (evaluation.misclassified_png(model), "evaluate")}
    for path, stage in drawn.values():
        outputs.require_stage_output(path, stage)
    prediction_metrics = layout.prediction_files("test").metrics  # predict's default input: the test split
    return RunOutputs(
        raw_manifest=outputs.read_stage_output(layout.raw_manifest, "ingest"),
        validation=read_validation_report(layout.validation_report),
        curated_manifest=outputs.read_stage_output(layout.curated_manifest, "prepare"),
        eda=outputs.read_stage_output(eda.summary, "eda"),
        histories={m: outputs.read_stage_output(layout.history(m), "train") for m in models},
        metrics={m: outputs.read_stage_output(evaluation.metrics(m), "evaluate") for m in models},
        comparison=outputs.read_stage_output(evaluation.comparison, "evaluate"),
        best=outputs.read_stage_output(evaluation.best_model, "evaluate"),
        predictions=outputs.read_stage_output(prediction_metrics, "predict"),
        run_manifest=storage.read_json(layout.run_manifest) if storage.exists(layout.run_manifest) else {},
        figures={key: path for key, (path, _) in drawn.items()},
        tracking=_optional(layout.tracking_record) if cfg.tracking.enabled else {},
        promotion=_optional(evaluation.promotion) if cfg.tracking.enabled else {},
        recipe_study=_optional(cfg.resolve(cfg.report.recipe_study)) if cfg.report.recipe_study else {},
    )


def _optional(path: str) -> dict:
    """A record that may be absent (tracking off, no recipe study measured): empty when missing."""
    value = storage.read_json_if_valid(path)
    return value if isinstance(value, dict) else {}
