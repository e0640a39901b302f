"""The drift check of one scheduled day: does the day's batch still look like the training data? No labels needed.

Six statistics, each with its baseline from the training split, its value for the day and its threshold
(config section `drift`):
- pixel_mean, pixel_std, ink_share: the pixel statistics; moved when |batch - training| exceeds the threshold.
- mean_image_distance: RMS over pixels between the batch's mean image and the training mean image.
- class_distance: total variation between the predicted-class shares and the training label shares.
- low_confidence_share: share of predictions whose top probability is below drift.low_confidence (a ceiling:
  the training data carries no predictions, so there is no baseline to move from).
The two distances are never 0 for a finite batch even without drift: their threshold is the configured one plus
the distance sampling alone gives a batch of that many images (`sampling_allowance_*`).

The training side is the data the day's scoring model was trained on (a registered version records it: after a
retraining, the champion's own training set), measured once per data set by the same code that measures a day
(`image_statistics`) and kept beside that data (`layout.drift_baseline_of`). The day's verdict is written to
drift.json in every case, before the job fails (drift.on_drift = fail) or only warns, so the batch report can show
it either way.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyspark.sql.functions as F
from pyspark.ml.functions import array_to_vector
from pyspark.ml.stat import Summarizer
from pyspark.sql import DataFrame, SparkSession

from pipeline import outputs, storage
from pipeline.config import DriftConfig, PipelineConfig
from pipeline.day_publication import SCORING_JOB, scored_day
from pipeline.errors import GateError, PipelineError
from pipeline.fingerprint import fingerprint_of
from pipeline.layout import BatchFiles, Layout, drift_baseline_of
from pipeline.locks import output_lock
from pipeline.result import StageResult
from pipeline.schema import BATCH_IMAGES_SCHEMA, BATCH_PREDICTIONS_SCHEMA, NUM_CLASSES

log = logging.getLogger(__name__)

BASELINE_SPLIT = "train"
BASELINE_FORMAT_VERSION = 1   # bump when the baseline's content changes, so an old file is recomputed

MEANINGS = {
    "pixel_mean": "mean pixel level (0 background, 1 full ink)",
    "pixel_std": "standard deviation of the pixel levels",
    "ink_share": "share of pixels at or above drift.ink_threshold",
    "mean_image_distance": "RMS distance of the batch's mean image from the training mean image",
    "class_distance": "total variation between predicted classes and training labels",
    "low_confidence_share": "share of predictions below drift.low_confidence (a ceiling)",
}


@dataclass(frozen=True)
class ImageStatistics:
    """What a set of images looks like, in numbers that need no labels."""
    images: int
    pixel_mean: float
    pixel_std: float
    ink_share: float
    pixel_variance: float        # per-position variance across images, averaged over positions
    mean_image: list[float]


@dataclass(frozen=True)
class Statistic:
    """One row of drift.json: a statistic, where training had it, where the day has it, and the verdict."""
    name: str
    baseline: float | None       # None for a ceiling (no training value to move from)
    value: float
    threshold: float             # largest allowed |change|, or the ceiling; allowance included
    allowance: float = 0.0       # the part of the threshold that is sampling noise for this batch size
    kind: str = "change"         # change (from a training value) | distance (from training) | ceiling

    @property
    def change(self) -> float:
        return self.value - (self.baseline or 0.0)

    @property
    def moved(self) -> bool:
        return abs(self.change) > self.threshold

    @property
    def excess(self) -> float:
        """|change| as a multiple of the threshold: above 1 it moved; the largest is named first."""
        if self.threshold > 0:
            return abs(self.change) / self.threshold
        return math.inf if self.change else 0.0

    def describe(self) -> str:
        if self.kind == "ceiling":
            return f"{self.name} is {self.value:.3f}, above its ceiling {self.threshold:.3f}"
        if self.kind == "distance":
            return (f"{self.name} is {self.value:.3f}, more than the {self.threshold:.3f} allowed "
                    f"({self.threshold - self.allowance:.3f} + {self.allowance:.3f} for sampling)")
        return (f"{self.name} moved by {self.change:+.3f} ({self.baseline:.3f} in training, {self.value:.3f} in "
                f"the batch; allowed ±{self.threshold:.3f})")

    def to_dict(self) -> dict:
        return {**asdict(self), "meaning": MEANINGS[self.name], "change": self.change, "moved": self.moved}


def image_statistics(images: DataFrame, ink_threshold: float) -> ImageStatistics:
    """One Spark pass over `images` (an `image` column of floats in [0, 1]); only 5 vectors reach the driver."""
    if images.limit(1).count() == 0:   # Summarizer fails on no rows
        raise PipelineError("no images to measure")
    ink = F.transform("image", lambda x: F.when(x >= F.lit(ink_threshold), 1.0).otherwise(0.0))
    row = (images.select(array_to_vector("image").alias("pixels"), array_to_vector(ink).alias("ink"))
           .agg(Summarizer.metrics("count", "mean", "variance", "normL2").summary(F.col("pixels")).alias("s"),
                Summarizer.mean(F.col("ink")).alias("ink"))
           .first())
    count = int(row["s"]["count"])
    mean_image = row["s"]["mean"].toArray()
    pixel_mean = float(mean_image.mean())
    mean_square = float(np.square(row["s"]["normL2"].toArray()).sum()) / (count * mean_image.size)
    return ImageStatistics(images=count, pixel_mean=pixel_mean,
                           pixel_std=math.sqrt(max(mean_square - pixel_mean ** 2, 0.0)),
                           ink_share=float(row["ink"].toArray().mean()),
                           pixel_variance=float(row["s"]["variance"].toArray().mean()),
                           mean_image=[float(v) for v in mean_image])


def class_counts(df: DataFrame, column: str) -> dict[int, int]:
    """Rows per class of `column` (label or prediction), every class present."""
    counts = {int(r[column]): int(r["count"]) for r in df.groupBy(column).count().collect()}
    return {k: counts.get(k, 0) for k in range(NUM_CLASSES)}


def shares(counts: Mapping[int, int]) -> dict[int, float]:
    total = sum(counts.values())
    return {k: (v / total if total else 0.0) for k, v in counts.items()}


def low_confidence_count(predictions: DataFrame, low_confidence: float) -> int:
    return predictions.where(F.col("confidence") < F.lit(low_confidence)).count()


def total_variation(p: Mapping[int, float], q: Mapping[int, float]) -> float:
    """Half the L1 distance between two distributions over the same classes: 0 equal, 1 disjoint."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def rms_distance(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)))))


def sampling_allowance_class_distance(training_shares: Mapping[int, float], images: int) -> float:
    """The total variation `images` draws from `training_shares` show on average with no drift at all:
    E|share_k - p_k| ~ sqrt(2 p_k (1 - p_k) / (pi n)) for each class (normal approximation), halved and summed."""
    return 0.5 * sum(math.sqrt(2 * p * (1 - p) / (math.pi * images)) for p in training_shares.values())


def sampling_allowance_mean_image(pixel_variance: float, images: int) -> float:
    """The RMS distance the mean of `images` training images shows from the training mean: sqrt(var / n)."""
    return math.sqrt(pixel_variance / images)


def compare(baseline: Mapping, batch: ImageStatistics, predicted: Mapping[int, int], unsure: int,
            cfg: DriftConfig) -> list[Statistic]:
    """Every statistic of the day against the training baseline (as `baseline_record` writes it)."""
    training_shares = {int(k): v for k, v in baseline["class_shares"].items()}
    class_allowance = sampling_allowance_class_distance(training_shares, batch.images)
    image_allowance = sampling_allowance_mean_image(baseline["pixel_variance"], batch.images)
    return [
        Statistic("pixel_mean", baseline["pixel_mean"], batch.pixel_mean, cfg.max_pixel_mean_change),
        Statistic("pixel_std", baseline["pixel_std"], batch.pixel_std, cfg.max_pixel_std_change),
        Statistic("ink_share", baseline["ink_share"], batch.ink_share, cfg.max_ink_share_change),
        Statistic("mean_image_distance", 0.0, rms_distance(batch.mean_image, baseline["mean_image"]),
                  cfg.max_mean_image_distance + image_allowance, image_allowance, "distance"),
        Statistic("class_distance", 0.0, total_variation(shares(predicted), training_shares),
                  cfg.max_class_distance + class_allowance, class_allowance, "distance"),
        Statistic("low_confidence_share", None, unsure / batch.images, cfg.max_low_confidence_share, kind="ceiling"),
    ]


def verdict(ds: str, statistics: Sequence[Statistic]) -> str | None:
    """One line naming the statistic that moved most (relative to its threshold) and by how much, and the others
    that moved; None when none did."""
    moved = sorted((s for s in statistics if s.moved), key=lambda s: s.excess, reverse=True)
    if not moved:
        return None
    others = f"; also moved: {', '.join(s.name for s in moved[1:])}" if len(moved) > 1 else ""
    return f"drift on {ds}: {moved[0].describe()}{others}"


def baseline_record(spark: SparkSession, cfg: PipelineConfig, path: str, curated: str | None) -> dict:
    """The statistics of the train split at `path` (data fingerprint `curated`), kept beside it
    (layout.drift_baseline_of), measured first when missing or made for other data or another ink threshold."""
    fingerprint = fingerprint_of({"curated": curated, "split": BASELINE_SPLIT, "format": BASELINE_FORMAT_VERSION,
                                  "ink_threshold": cfg.drift.ink_threshold})
    kept = drift_baseline_of(path)
    if outputs.is_complete(kept, fingerprint):
        return storage.read_json(kept)
    outputs.require_stage_output(path, "prepare")
    log.info("measuring the drift baseline once from %s", path)
    train = spark.read.parquet(path)
    record = {"fingerprint": fingerprint, "split": BASELINE_SPLIT, "source": path,
              "ink_threshold": cfg.drift.ink_threshold, **asdict(image_statistics(train, cfg.drift.ink_threshold)),
              "class_shares": {str(k): v for k, v in shares(class_counts(train, "label")).items()}}
    # Written in one move; days checked at once (a backfill) may both measure it, and write the same record.
    storage.write_json(kept, record)
    return record


def training_split(cfg: PipelineConfig, layout: Layout, scoring: Mapping) -> tuple[str, str | None]:
    """(train split, data fingerprint) of the model that scored the day: for a registered version, the data it was
    trained on (a retraining's champion learnt from more than the prepared split), as the scoring recorded it in
    scoring.json; else the prepared split."""
    model = scoring.get("model") or {}
    name, version = str(model.get("name", "")), str(model.get("version", ""))
    if "training_data" in model:
        recorded = model["training_data"]
        found = (recorded["split"], recorded["fingerprint"]) if recorded else None
    elif cfg.tracking.enabled and version.isdigit():   # a day scored before scoring.json recorded it: ask
        from pipeline.tracking import registry
        found = registry.training_data(cfg, name, version)
    else:
        found = None
    if found:
        return found
    if version.isdigit():
        log.info("%s version %s records no training data: drift is measured against the prepared train split",
                 name, version)
    return (layout.prepared(BASELINE_SPLIT),
            outputs.read_stage_output(layout.prepared_manifest, "prepare").get("fingerprint"))


def read_batch_table(spark: SparkSession, path: str, columns: Sequence[str]) -> DataFrame:
    """One day's partition of a batch table, refused in one line when missing or lacking a column."""
    outputs.require_stage_output(path, SCORING_JOB)
    df = spark.read.parquet(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PipelineError(f"{path} lacks column(s) {', '.join(missing)}: not written by "
                            f"{outputs.job_for(SCORING_JOB)}")
    return df.select(*columns)


@dataclass(frozen=True)
class ScoredFacts:
    """What the day's scoring found, computed once by it (scoring.json)."""
    predicted: dict[int, int]     # predictions per class
    unsure: int                   # predictions below drift.low_confidence
    model_name: str               # what scored the day
    model_version: str


def scored_facts(spark: SparkSession, batch: BatchFiles, scoring: Mapping, low_confidence: float) -> ScoredFacts:
    """The day's predicted classes, predictions below `low_confidence` and scoring model, as its scoring.json
    records them; counted from the predictions only for a day scored before scoring.json held them, or for another
    drift.low_confidence than the scoring's."""
    recorded = scoring.get("low_confidence") or {}
    if "predicted_counts" in scoring and recorded.get("below") == low_confidence:
        return ScoredFacts({int(k): int(v) for k, v in scoring["predicted_counts"].items()}, int(recorded["count"]),
                           str(scoring["model"]["name"]), str(scoring["model"]["version"]))
    predictions = read_batch_table(spark, batch.predictions, BATCH_PREDICTIONS_SCHEMA.fieldNames())
    return ScoredFacts(class_counts(predictions, "prediction"), low_confidence_count(predictions, low_confidence),
                       *scoring_model(predictions))


@dataclass(frozen=True)
class DayMeasures:
    images: ImageStatistics
    scored: ScoredFacts


def scoring_model(predictions: DataFrame) -> tuple[str, str]:
    """The model name and version that scored the day, read from the rows themselves (one of each, unless the
    day was scored in pieces: then all of them, comma-separated)."""
    rows = predictions.select("model_name", "model_version").distinct().collect()
    return (", ".join(sorted({r["model_name"] for r in rows})), ", ".join(sorted({r["model_version"] for r in rows})))


def measure_day(spark: SparkSession, cfg: PipelineConfig, batch: BatchFiles, scoring: Mapping) -> DayMeasures:
    """The day's image statistics, with what its scoring found."""
    images = read_batch_table(spark, batch.images, BATCH_IMAGES_SCHEMA.fieldNames())
    try:
        statistics = image_statistics(images, cfg.drift.ink_threshold)
    except PipelineError:
        raise PipelineError(f"{batch.images} holds no images: nothing to check for drift on {batch.ds}") from None
    scored = scored_facts(spark, batch, scoring, cfg.drift.low_confidence)
    if sum(scored.predicted.values()) != statistics.images:
        raise PipelineError(f"the images and predictions of {batch.ds} disagree ({statistics.images} images, "
                            f"{sum(scored.predicted.values())} predictions): rerun {outputs.job_for(SCORING_JOB)} "
                            f"--ds {batch.ds}")
    return DayMeasures(statistics, scored)


def drift_record(batch: BatchFiles, day: DayMeasures, baseline: Mapping, statistics: Sequence[Statistic],
                 cfg: DriftConfig) -> dict:
    """drift.json: the verdict, every statistic with its baseline, value, threshold and whether it moved."""
    line = verdict(batch.ds, statistics)
    return {"ds": batch.ds, "model_name": day.scored.model_name, "model_version": day.scored.model_version,
            "images": day.images.images, "flagged": line is not None, "verdict": line or f"no drift on {batch.ds}",
            "on_drift": cfg.on_drift, "statistics": [s.to_dict() for s in statistics],
            "class_shares": {"training": baseline["class_shares"],
                             "batch": {str(k): v for k, v in shares(day.scored.predicted).items()}},
            "baseline": {"source": baseline["source"], "images": baseline["images"],
                         "ink_threshold": baseline["ink_threshold"]},
            "low_confidence": cfg.low_confidence}


def run_drift_check(spark: SparkSession, cfg: PipelineConfig, layout: Layout, ds: str) -> StageResult:
    """Measure day `ds`, write its drift.json, then fail (or warn) in one line if a statistic moved."""
    batch = layout.batch_files(ds)
    scoring = scored_day(batch)   # every folder of the day from the scoring this scoring.json (published last) names
    baseline = baseline_record(spark, cfg, *training_split(cfg, layout, scoring))
    # The day's reports folder is one output: scoring republishes it whole, later tasks add their files to it.
    with output_lock(batch.reports, "check_drift"):
        day = measure_day(spark, cfg, batch, scoring)
        statistics = compare(baseline, day.images, day.scored.predicted, day.scored.unsure, cfg.drift)
        record = drift_record(batch, day, baseline, statistics, cfg.drift)
        storage.write_json(batch.drift, record)
    result = StageResult(False, {"drift": batch.drift}, counts={"images": day.images.images},
                         details={"ds": batch.ds, "flagged": record["flagged"],
                                  "moved": [s.name for s in statistics if s.moved]})
    if record["flagged"] and cfg.drift.on_drift == "fail":
        raise GateError(record["verdict"], result)
    if record["flagged"]:
        log.warning("%s (drift.on_drift=warn: not failing)", record["verdict"])
    else:
        log.info("%s: every statistic within its threshold (%s)", record["verdict"], batch.drift)
    return result

