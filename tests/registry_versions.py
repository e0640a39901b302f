"""Registering a saved model in a test's MLflow store the way training does, without training it there."""
from __future__ import annotations

import numpy as np


def register(cfg, model_file: str, model: str, accuracy: float, **tags: str) -> str:
    """One model logged and registered the way training does it (`tags` added to the version's); returns its
    version."""
    from pipeline.tracking.model_log import log_keras_model
    from pipeline.tracking.store import connect
    store = connect(cfg)
    run = store.client.create_run(store.experiment_id, tags={"pipeline.model": model})
    example = np.zeros((2, 28, 28, 1), np.float32)
    example[:, 6:22, 14, 0] = 1.0  # a stroke: the served model refuses blank images, its input example included
    version = log_keras_model(store.client, run.info.run_id, model_file, example, cfg,
                              {"model": model, "test_accuracy": str(accuracy), **tags})
    store.client.set_terminated(run.info.run_id, "FINISHED")
    return str(version.version)


def make_champion(cfg, model_file: str, model: str, accuracy: float) -> str:
    """`model_file` registered and promoted to champion (the first version ever is, when it meets the target)."""
    from pipeline.tracking import registry
    from pipeline.tracking.decision import Evidence, Figures
    version = register(cfg, model_file, model, accuracy)
    registry.set_challenger(cfg, version)
    challenger = registry.resolve_model_uri(cfg, f"models:/{cfg.tracking.registered_model}@challenger")
    current = registry.champion(cfg)
    champion = None if current is None else Evidence(current.version, Figures(0.0, 1))
    decision = registry.promote(cfg, challenger, Evidence(version, Figures(accuracy, 1)), champion,
                                context=f"a test's champion {model}")
    assert decision.promoted, decision
    return version
