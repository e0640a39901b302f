"""Rendering shared by every report: matplotlib figures to PNG bytes, and Markdown to a self-contained HTML page
whose figures are embedded as data URIs, so the file opens offline anywhere."""
from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Mapping

import markdown
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
