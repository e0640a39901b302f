"""Typed configuration: a YAML file, then an optional profile overlay, then `--set section.key=value` overrides,
validated once, here at the edge; stages receive the frozen objects (or plain values taken from them).

One module per concern: `schema` (the sections, their keys, defaults and meanings), `fields` (what a key admits),
`loading` (files, profiles, overrides, moved keys, validation), `checkout` (where conf/ and data/ are); secrets are
pipeline.redaction's. This package's names are the ones the rest of the pipeline uses.
"""
from pipeline.config.checkout import DEFAULT_CONF, DEFAULT_PROFILE, REPO_ROOT
from pipeline.config.loading import MOVED_KEYS, default_paths_root, known_profiles, load_config, profiles_dir
from pipeline.config.schema import (
                                    BatchConfig,
                                    DataConfig,
                                    DriftConfig,
                                    EdaConfig,
                                    EvaluateConfig,
                                    ModelConfig,
                                    PathsConfig,
                                    PipelineConfig,
                                    PredictConfig,
                                    PrepareConfig,
                                    ReportConfig,
                                    RetrainConfig,
                                    SparkConfig,
                                    TrackingConfig,
                                    TrainConfig,
)

__all__ = ["DEFAULT_CONF", "DEFAULT_PROFILE", "MOVED_KEYS", "REPO_ROOT", "BatchConfig", "DataConfig", "DriftConfig",
           "EdaConfig", "EvaluateConfig", "ModelConfig", "PathsConfig", "PipelineConfig", "PredictConfig",
           "PrepareConfig", "ReportConfig", "RetrainConfig", "SparkConfig", "TrackingConfig", "TrainConfig",
           "default_paths_root", "known_profiles", "load_config", "profiles_dir"]
