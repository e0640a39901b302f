"""Markdown to a self-contained HTML page: figures embedded as data URIs so the file opens offline anywhere."""
from __future__ import annotations

import base64
import html
import re

import markdown

from pipeline import storage

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


def markdown_to_html(md_text: str, title: str, base_dir: str) -> str:
    """Render `md_text`; every image path (relative to `base_dir`) is inlined as a base64 PNG."""
    body = markdown.markdown(md_text, extensions=["tables", "fenced_code"])

    def inline(match: re.Match) -> str:
        alt, src = match.group(1), match.group(2)
        data = base64.b64encode(storage.read_bytes(f"{base_dir}/{src}")).decode()
        return f'<img alt="{alt}" src="data:image/png;base64,{data}"/>'

    body = _IMG.sub(inline, body)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")
