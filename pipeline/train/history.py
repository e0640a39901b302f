"""history.json (the contract evaluation and the report read) and the training-curves figure.

The driver writes the skeleton before launching the workers, rank 0 appends one record per completed epoch,
and the driver finalises it (wall time, peak memory per worker, completeness) when the workers return.
"""
from __future__ import annotations

from typing import Any

from pipeline import storage
from pipeline.train.params import TrainParams

EPOCH_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def skeleton(params: TrainParams, layers: list[dict], epochs_done: list[dict], previous: dict | None) -> dict:
    """The history before this invocation: earlier epochs (when resuming) and everything known up front."""
    return {
        "model": params.model, "run_id": params.run_id, "fingerprint": params.fingerprint,
        "epochs_planned": params.epochs, "epochs_completed": len(epochs_done),
        "num_workers": params.num_workers, "tf_threads_per_worker": params.tf_threads,
        "batch_size_per_worker": params.batch_size,
        "learning_rate": params.learning_rate, "learning_rate_scaled": params.learning_rate * params.num_workers,
        "warmup_epochs": params.warmup_epochs, "steps_per_epoch": params.steps_per_epoch,
        "keep": params.keep, "augment": params.augment, "schedule": params.schedule, "kept_epoch": None,
        "train_rows": params.train_rows, "validation_rows": params.validation_rows,
        "params": sum(layer["params"] for layer in layers), "layers": layers,
        "epochs": list(epochs_done),
        "total_seconds": float((previous or {}).get("total_seconds", 0.0)) if epochs_done else 0.0,
        "peak_rss_mb_per_worker": [],
        "resumed_from_epoch": params.initial_epoch if params.initial_epoch > 0 else None,
        "complete": False,
    }


def epoch_record(epoch: int, logs: dict[str, Any], seconds: float) -> dict:
    """One epoch's averaged metrics; `epoch` counts from 1."""
    record = {"epoch": epoch, **{key: float(logs[key]) for key in EPOCH_KEYS},
              "validation_rows": int(logs["val_rows"]), "seconds": round(seconds, 3)}
    if logs.get("learning_rate") is not None:  # the optimizer's at the epoch's end (warm-up and schedules move it)
        record["learning_rate"] = float(logs["learning_rate"])
    return record


def with_epoch(history: dict, record: dict) -> dict:
    epochs = [e for e in history["epochs"] if e["epoch"] < record["epoch"]] + [record]
    return {**history, "epochs": epochs, "epochs_completed": len(epochs)}


def finalised(history: dict, run_seconds: float, rank_reports: list[dict]) -> dict:
    """Add this invocation's wall time and what each rank reported (in rank order), and mark completeness."""
    done = history["epochs_completed"] >= history["epochs_planned"]
    return {**history, "total_seconds": round(history["total_seconds"] + run_seconds, 3),
            "peak_rss_mb_per_worker": [r["peak_rss_mb"] for r in rank_reports], "workers": rank_reports,
            "complete": done}


def with_kept_epoch(history: dict, best_epoch: int | None) -> dict:
    """Record which epoch's weights model.keras holds: the best one's (saved by rank 0) when the rule is "best",
    else the last completed."""
    last = history["epochs"][-1]["epoch"] if history["epochs"] else None
    kept = best_epoch if history.get("keep") == "best" and best_epoch is not None else last
    return {**history, "kept_epoch": kept}


def read(path: str) -> dict | None:
    return storage.read_json_if_valid(path)


def plot_curves(history: dict, path: str) -> None:
    """Loss and accuracy per epoch, train against validation, side by side."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e["epoch"] for e in history["epochs"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        ax.plot(epochs, [e[metric] for e in history["epochs"]], "o-", label="train")
        ax.plot(epochs, [e[f"val_{metric}"] for e in history["epochs"]], "s-", label="validation")
        ax.set(title=f"{title} per epoch", xlabel="epoch", ylabel=metric)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{history['model']}: {history['num_workers']} Horovod worker(s), "
                 f"batch {history['batch_size_per_worker']} per worker")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes(path, buffer.getvalue())
