"""Report building blocks: tables format numbers as read, HTML embeds every figure and opens offline."""
import base64
import io

from PIL import Image

from pipeline.report.render import markdown_to_html
from pipeline.report.sections import table


def test_table_formats_counts_and_ratios():
    md = table(["model", "params", "accuracy"], [["model_1", 693962, 0.98765], ["a|b", 12, 12.5]])
    assert md.splitlines()[2] == "| model_1 | 693,962 | 0.9877 |"
    assert md.splitlines()[3] == "| a\\|b | 12 | 12.5 |"


def test_html_embeds_figures(tmp_path):
    (tmp_path / "figures").mkdir()
    png = io.BytesIO()
    Image.new("L", (40, 30), color=128).save(png, format="PNG")
    (tmp_path / "figures" / "grid.png").write_bytes(png.getvalue())
    html = markdown_to_html("# Title\n\n![a grid](figures/grid.png)\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
                            "t", str(tmp_path))
    encoded = html.split('src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(encoded) == png.getvalue()
    assert "<table>" in html and "figures/grid.png" not in html
