"""The EDA figures, drawn from aggregates and a few sample rows already on the driver.

Built on `matplotlib.figure.Figure` (the object API, never pyplot): no global figure state and no GUI backend,
so rendering is headless wherever the job runs. Each function returns the Figure, so tests can read its titles;
`pipeline.rendering.to_png` renders it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from pipeline.rendering import Panel, image_grid


def sample_title(label: int) -> str:
    """The title of one sample panel: what the test compares with the record's label."""
    return f"label {label}"


def sample_grid(samples: Sequence[Mapping], height: int, width: int, seed: int) -> Figure:
    """One subplot per sample image, titled with its label: the study's random-sample check, done right.

    `samples` are dicts with record_id, label and image (height*width values in [0, 1]).
    """
    panels = [Panel(sample["image"], sample_title(sample["label"]), str(sample["record_id"])) for sample in samples]
    return image_grid(panels, height, width, f"{len(samples)} random training images (seed {seed}) with their labels",
                      title_size=13, caption_size=7.5, caption_limit=40)


def label_distribution_chart(counts: Mapping[str, Mapping[int, int]], num_classes: int) -> Figure:
    """One bar chart per split: images per digit with the count on each bar and the balanced level dashed."""
    fig = Figure(figsize=(5.2 * len(counts), 4.8), layout="constrained")
    axes = fig.subplots(1, len(counts), squeeze=False).ravel()
    labels = list(range(num_classes))
    for ax, (split, per_label) in zip(axes, counts.items(), strict=True):
        values = [per_label.get(label, 0) for label in labels]
        total = sum(values)
        bars = ax.bar(labels, values, color="tab:blue", width=0.75, zorder=2)
        # Drawn under the bars, and the counts on a white box above both, so the line never crosses a number.
        ax.axhline(total / num_classes, color="tab:red", linestyle="--", linewidth=1, label="balanced", zorder=1)
        for text in ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=2, fontsize=8):
            text.set_bbox({"facecolor": "white", "edgecolor": "none", "pad": 0.6})
            text.set_zorder(3)
        ax.set_ylim(0, max(values + [1]) * 1.12)
        ax.set_xticks(labels)
        ax.set_title(f"{split} ({total:,} images)", fontsize=12)
        ax.set_xlabel("digit")
        ax.set_ylabel("images")
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("Label distribution per split", fontsize=14)
    return fig


def mean_images_grid(means: Mapping[int, Sequence[float]], counts: Mapping[int, int], height: int,
                     width: int) -> Figure:
    """The mean training image of every digit on one shared colour scale, so intensities compare."""
    columns = min(5, max(1, len(means)))
    rows = max(1, math.ceil(len(means) / columns))
    fig = Figure(figsize=(2.4 * columns + 1.0, 2.6 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    top = max(float(np.max(m)) for m in means.values()) if means else 1.0
    image = None
    for ax, (label, mean) in zip(axes.ravel(), sorted(means.items()), strict=False):
        image = ax.imshow(np.asarray(mean).reshape(height, width), cmap="magma", vmin=0.0, vmax=top,
                          interpolation="nearest")
        ax.set_title(f"digit {label} (n={counts.get(label, 0):,})", fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[len(means):]:
        ax.set_axis_off()
    fig.suptitle("Mean image per digit (training split)", fontsize=14)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02, label="mean pixel intensity")
    return fig


def pixel_histogram_chart(shares: Mapping[str, Sequence[float]], bins: int) -> Figure:
    """Share of pixels per intensity bin, one line per split, log scale: background dwarfs every other bin."""
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    ax = fig.subplots()
    edges = np.linspace(0.0, 1.0, bins + 1)
    for split, values in shares.items():
        ax.stairs(np.asarray(values, dtype=float), edges, label=split, linewidth=1.8)
    ax.set_yscale("log")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("pixel intensity (0 = background, 1 = full ink)")
    ax.set_ylabel("share of the split's pixels (log scale)")
    ax.set_title(f"Pixel-intensity histogram ({bins} bins)", fontsize=14)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="split")
    return fig
