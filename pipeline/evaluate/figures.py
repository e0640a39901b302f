"""Evaluation figures rendered to PNG bytes (matplotlib, Agg backend): the stage decides where they are written."""
from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from pipeline.schema import IMAGE_HEIGHT, IMAGE_WIDTH  # noqa: E402


def confusion_matrix_png(matrix: np.ndarray, title: str) -> bytes:
    """A labelled heat map with the count in every cell; log colour scale so that rare confusions show."""
    n = matrix.shape[0]
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(matrix + 1, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(2, int(matrix.max()) + 1)))
    threshold = math.sqrt(max(2, int(matrix.max()) + 1))  # the log scale's middle: white text above it
    for true in range(n):
        for predicted in range(n):
            count = int(matrix[true, predicted])
            ax.text(predicted, true, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count + 1 > threshold else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="count + 1 (log scale)")
    return _to_png(fig)


def misclassified_png(examples: list[dict], title: str) -> bytes:
    """A grid of misclassified images, each captioned 'true T / pred P (confidence)'.

    `examples`: dicts with `image` (IMAGE_PIXELS floats), `label`, `prediction`, `confidence`.
    """
    if not examples:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
        ax.set_title(title)
        return _to_png(fig)
    cols = min(5, len(examples))
    rows = math.ceil(len(examples) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.25 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, example in zip(axes.flat, examples, strict=False):
        pixels = np.asarray(example["image"], dtype=np.float32).reshape(IMAGE_HEIGHT, IMAGE_WIDTH)
        ax.imshow(pixels, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"true {example['label']} / pred {example['prediction']}\n"
                     f"confidence {example['confidence']:.2f}", fontsize=9)
    fig.suptitle(title)
    return _to_png(fig)


def _to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
