"""Where every stage reads and writes: derived from config alone, so each job finds the others' outputs.

Data stages are keyed by a hash of the config that shapes them, so runs with the same inputs and data config
share them; everything model-related lives in one folder per run.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import PipelineConfig

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Layout:
    input_dir: str
    raw_root: str        # <data>/<ingest hash>: raw/, quarantine/, validation_report.json, manifest.json
    curated_root: str    # <raw_root>/curated-<prepare hash>: train/, validation/, test/, manifest.json, eda/
    run_root: str        # <runs>/<run id>

    @classmethod
    def from_config(cls, cfg: PipelineConfig, run_id: str | None = None) -> Layout:
        raw_root = f"{cfg.resolve(cfg.paths.data).rstrip('/')}/ingest-{ingest_hash(cfg)}"
        curated_root = f"{raw_root}/curated-{cfg.section_hash('data', 'prepare')}"
        run_root = f"{cfg.resolve(cfg.paths.runs).rstrip('/')}/{run_id or default_run_id(cfg)}"
        return cls(cfg.resolve(cfg.paths.input), raw_root, curated_root, run_root)

    @property
    def raw(self) -> str:
        return f"{self.raw_root}/raw"

    @property
    def quarantine(self) -> str:
        return f"{self.raw_root}/quarantine"

    @property
    def validation_report(self) -> str:
        return f"{self.raw_root}/validation_report.json"

    @property
    def raw_manifest(self) -> str:
        return f"{self.raw_root}/manifest.json"

    def curated(self, split: str) -> str:
        return f"{self.curated_root}/{split}"

    @property
    def curated_manifest(self) -> str:
        return f"{self.curated_root}/manifest.json"

    @property
    def eda(self) -> str:
        return f"{self.curated_root}/eda"

    @property
    def run_id(self) -> str:
        return self.run_root.rstrip("/").rsplit("/", 1)[-1]

    def model_dir(self, model_name: str) -> str:
        return f"{self.run_root}/train/{model_name}"

    @property
    def evaluation(self) -> str:
        return f"{self.run_root}/evaluate"

    @property
    def predictions(self) -> str:
        return f"{self.run_root}/predict"

    @property
    def run_manifest(self) -> str:
        return f"{self.run_root}/manifest.json"


def ingest_hash(cfg: PipelineConfig) -> str:
    import hashlib
    import json
    from dataclasses import asdict
    payload = {"input": cfg.resolve(cfg.paths.input), "data": asdict(cfg.data)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def default_run_id(cfg: PipelineConfig) -> str:
    """Same profile and config, same run folder: a rerun resumes and skips instead of starting over."""
    return f"{cfg.profile}-{cfg.section_hash('data', 'prepare', 'train')}"
