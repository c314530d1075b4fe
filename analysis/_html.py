"""HTML pieces of the report: the page shell with plotly.js inlined once, figure divs, tables
with a CSV download link (a data: URI) and base64-embedded PNG galleries. Nothing here loads
anything from the network."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

_PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png"}}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
nav{position:sticky;top:0;background:#263238;color:#fff;padding:.5em 1em;z-index:10;font-size:.9em}
nav a{color:#cfd8dc;margin-right:1.2em;text-decoration:none}
main{max-width:1400px;margin:auto;padding:0 1.5em 3em}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:.5em 1.2em 1em;margin:1.2em 0}
h1{margin:.6em 0 .2em}h2{border-bottom:2px solid #eceff1;padding-bottom:.2em}
table.tbl{border-collapse:collapse;font-size:.82em;margin:.4em 0}
table.tbl th,table.tbl td{border:1px solid #ddd;padding:3px 7px;text-align:left}
table.tbl th{background:#eceff1}table.tbl tr:nth-child(even){background:#f7f9fa}
.sig{color:#b71c1c;font-weight:600}.note{color:#555;font-size:.9em}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
.gallery figure{margin:0;width:180px;font-size:.75em;text-align:center}
.gallery img{width:180px;height:auto;border:1px solid #ccc;image-rendering:pixelated}
.scroll{overflow-x:auto;max-width:100%}
a.download{font-size:.85em;margin-left:.6em}
details{margin:.4em 0}summary{cursor:pointer;font-weight:600}
"""


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def page(title: str, nav: list[tuple[str, str]], body: str) -> str:
    """The whole document: plotly.js inlined in the head, a sticky table of contents."""
    links = "".join(f'<a href="#{anchor}">{html.escape(label)}</a>' for anchor, label in nav)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<style>{_CSS}</style><script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body><nav>{links}</nav><main><h1>{html.escape(title)}</h1>{body}</main></body></html>\n"
    )


def section(anchor: str, title: str, content: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{content}</section>'


def figure(fig: go.Figure, fig_id: str) -> str:
    """A figure div (class ``report-figure``) without plotly.js; the page inlines it once."""
    inner = fig.to_html(full_html=False, include_plotlyjs=False, div_id=fig_id, config=_PLOT_CONFIG)
    return f'<div class="report-figure" data-figure="{fig_id}">{inner}</div>'


def table(
    df: pd.DataFrame, name: str, caption: str = "", collapsed: bool = False, digits: int = 4
) -> str:
    """An HTML table with a 'download CSV' link carrying the full-precision CSV as a data: URI."""
    csv = base64.b64encode(df.to_csv(index=False).encode("utf-8")).decode("ascii")
    link = f'<a class="download" download="{name}.csv" href="data:text/csv;base64,{csv}">download CSV</a>'
    body = (
        '<div class="scroll">'
        + df.to_html(
            index=False,
            classes="tbl",
            border=0,
            na_rep="–",
            float_format=lambda x: f"{x:.{digits}g}",
        )
        + "</div>"
    )
    head = f"{html.escape(caption or name)} {link}"
    if collapsed:
        return f"<details><summary>{head}</summary>{body}</details>"
    return f"<p><b>{head}</b></p>{body}"


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def gallery(samples: pd.DataFrame, max_images: int) -> str:
    """Images of one gallery kind, captioned with fold, strategy, task and sample id."""
    items = []
    for r in samples.head(max_images).itertuples():
        cap = html.escape(f"fold {r.fold} · {r.strategy or 'shared'} · {r.task} · {r.sample_id}")
        items.append(
            f'<figure><img alt="{cap}" src="{png_data_uri(Path(r.file))}"><figcaption>{cap}</figcaption></figure>'
        )
    more = len(samples) - max_images
    note = f'<p class="note">{more} more not shown.</p>' if more > 0 else ""
    return f'<div class="gallery">{"".join(items)}</div>{note}'


def paragraph(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{html.escape(text)}</p>'
