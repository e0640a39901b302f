"""Rendering shared by every report: matplotlib figures to PNG bytes, and Markdown to a self-contained HTML page
whose figures are embedded as data URIs, so the file opens offline anywhere."""
from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import markdown
import numpy as np
from matplotlib.figure import Figure

from pipeline import storage

DPI = 100

_IMG = re.compile(r'<img alt="([^"]*)" src="([^"]+)"\s*/?>')

CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; line-height: 1.5; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
code { background: #f5f5f5; padding: 0 0.2em; } pre { background: #f5f5f5; padding: 0.8em; overflow-x: auto; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
"""


@dataclass(frozen=True)
class Panel:
    """One image of an image grid: its pixels (row-major, values in [0, 1]), a title above, a caption below."""
    pixels: Sequence[float]
    title: str
    caption: str


def image_grid(panels: Sequence[Panel], height: int, width: int, suptitle: str, title_size: float = 11,
               caption_size: float = 7, caption_limit: int = 34) -> Figure:
    """Images five to a row, dark ink on light paper as people read digits, each with its title and caption."""
    columns = min(5, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    fig = Figure(figsize=(2.4 * columns, 2.7 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, panel in zip(axes, panels, strict=False):
        ax.imshow(np.asarray(panel.pixels, dtype=np.float32).reshape(height, width), cmap="gray_r",
                  vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(panel.title, fontsize=title_size)
        ax.set_xlabel(_shortened(panel.caption, caption_limit), fontsize=caption_size)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    fig.suptitle(suptitle, fontsize=title_size + 2)
    return fig


def _shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def to_png(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes (Agg renderer)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.2, facecolor="white")
    return buffer.getvalue()


def markdown_to_html(md_text: str, title: str, base_dir: str = "", images: Mapping[str, bytes] | None = None) -> str:
    """Render `md_text`; every image is inlined as a base64 PNG: taken from `images` (keyed by the path the
    Markdown links) when given, so a report can be rendered before any file is written, else read from the file
    at that path relative to `base_dir`."""
    body = markdown.markdown(md_text, extensions=["tables", "fenced_code"])

    def inline(match: re.Match) -> str:
        alt, src = match.group(1), match.group(2)
        png = images[src] if images is not None else storage.read_bytes(f"{base_dir}/{src}")
        return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'

    body = _IMG.sub(inline, body)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")
