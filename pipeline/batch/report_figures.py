"""The batch report's figures, drawn from aggregates and a few sample rows already on the driver.

Built on `matplotlib.figure.Figure` (no pyplot: no global state, headless anywhere); each returns the Figure so tests
can read it, and `pipeline.rendering.to_png` renders it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from pipeline.rendering import Panel, image_grid
from pipeline.schema import IMAGE_HEIGHT, IMAGE_WIDTH, NUM_CLASSES


def class_distribution_chart(counts: Mapping[int, int], training_shares: Mapping[int, float] | None) -> Figure:
    """Predicted images per class, with the training label share as a marker on every bar when known."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    classes = list(range(NUM_CLASSES))
    values = [counts.get(k, 0) for k in classes]
    total = sum(values)
    bars = ax.bar(classes, values, color="tab:blue", width=0.75, label="predicted", zorder=2)
    ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=2, fontsize=8)
    expected = [training_shares.get(k, 0.0) * total for k in classes] if training_shares else []
    if expected:
        ax.scatter(classes, expected, marker="_", s=600, color="tab:red", linewidths=2.5,
                   label="training label share x images", zorder=3)
    ax.set_ylim(0, max(values + expected + [1]) * 1.3)   # headroom for the legend above the bars
    ax.set_xticks(classes)
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("images")
    ax.legend(loc="upper center", ncol=2, fontsize=8)
    ax.set_title(f"Predicted classes ({total:,} images)", fontsize=13)
    return fig


def confidence_histogram(confidence_counts: Sequence[int], low_confidence: float) -> Figure:
    """Images per confidence bin over [0, 1], the low-confidence threshold dashed."""
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.subplots()
    edges = np.linspace(0.0, 1.0, len(confidence_counts) + 1)
    ax.stairs(np.asarray(confidence_counts, dtype=float), edges, fill=True, color="tab:blue", alpha=0.8)
    ax.axvline(low_confidence, color="tab:red", linestyle="--", linewidth=1.2,
               label=f"low confidence below {low_confidence:g}")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("images")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Confidence of the predictions", fontsize=13)
    return fig


def drift_chart(statistics: Sequence[Mapping]) -> Figure:
    """Every drift statistic's |change| as a share of its threshold: past the line at 1 it moved (red)."""
    fig = Figure(figsize=(8, 0.55 * len(statistics) + 1.6), layout="constrained")
    ax = fig.subplots()
    names = [s["name"] for s in statistics]
    ratios = [abs(s["change"]) / s["threshold"] if s["threshold"] else 0.0 for s in statistics]
    colours = ["tab:red" if s["moved"] else "tab:green" for s in statistics]
    bars = ax.barh(names, ratios, color=colours, zorder=2)
    ax.bar_label(bars, labels=[f"{r:.2f}" for r in ratios], padding=3, fontsize=8)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1, label="threshold", zorder=1)
    ax.invert_yaxis()
    ax.set_xlim(0, max(ratios + [1.0]) * 1.2)
    ax.set_xlabel("|change from training| / threshold (a ceiling: value / ceiling)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Drift statistics against the training baseline", fontsize=13)
    return fig


def example_title(example: Mapping) -> str:
    """The title of one panel of the low-confidence grid: what the test compares with the prediction."""
    return f"pred {example['prediction']} ({example['confidence']:.2f})"


def lowest_confidence_grid(examples: Sequence[Mapping]) -> Figure:
    """The least confident images, each titled with its prediction and confidence, its file below."""
    panels = [Panel(example["image"], example_title(example), str(example["source_file"])) for example in examples]
    return image_grid(panels, IMAGE_HEIGHT, IMAGE_WIDTH, f"The {len(examples)} least confident predictions")
