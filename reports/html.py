"""Self-contained HTML pages: figures embedded as base64 PNG, tables escaped, one stylesheet inline."""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}.meta{color:#666;margin-top:0}table{border-collapse:collapse;font-size:.85rem;margin:1rem 0}
th,td{border-bottom:1px solid #ddd;padding:.3rem .55rem;text-align:left}th{background:#f4f6f8;position:sticky;top:0}
tr:first-child td{font-weight:600}figure{margin:1.5rem 0}figcaption{color:#555;font-size:.9rem}
img{max-width:100%}.wrap{overflow-x:auto}.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{background:#f4f6f8;border-radius:8px;padding:.8rem 1.2rem}.card b{display:block;font-size:1.4rem}
"""


@dataclass
class Figure:
    title: str
    png: bytes
    caption: str = ""


def png(figure: plt.Figure, palette: bool = False) -> bytes:
    """A figure as PNG bytes with no software/date metadata, so the same plot gives the same bytes. `palette`: 256
    colours, a third of the bytes and the same to the eye for charts (not for photographs)."""
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    if not palette:
        return buffer.getvalue()
    buffer.seek(0)
    with Image.open(buffer) as image:
        reduced = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    reduced.save(out, format="PNG", optimize=True)
    return out.getvalue()


def cell_text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def table_html(frame: pd.DataFrame) -> str:
    """An HTML table; a run_link column becomes the link on run_id instead of a column of its own."""
    columns = [c for c in frame.columns if c != "run_link"]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for column in columns:
            text = html.escape(cell_text(row[column]))
            if column == "run_id" and text and row.get("run_link"):  # "" where no server serves the store
                text = f'<a href="{html.escape(str(row["run_link"]))}">{text[:8]}</a>'
            cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def figure_html(figure: Figure) -> str:
    """A figure with its caption; one without an image (a plot hidden for a stated reason) is its caption alone."""
    data = base64.b64encode(figure.png).decode("ascii")
    caption = f"<figcaption>{html.escape(figure.caption)}</figcaption>" if figure.caption else ""
    image = f'<img alt="{html.escape(figure.title)}" src="data:image/png;base64,{data}">' if figure.png else ""
    return f"<figure><h3>{html.escape(figure.title)}</h3>{image}{caption}</figure>"


def page(title: str, subtitle: str, body: str, banner: str = "") -> str:
    """A whole page; `banner` (HTML) opens its body, above the title, so no reader misses it."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{banner}<h1>{html.escape(title)}</h1>"
            f'<p class="meta">{html.escape(subtitle)}</p>{body}</body></html>\n')
