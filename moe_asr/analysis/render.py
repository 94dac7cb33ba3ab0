"""The report's document model and its two renderings (Markdown and self-contained HTML).

A document is a list of blocks: ``("h1"|"h2"|"h3", text)``, ``("p", text)``,
``("table", header, rows)`` and ``("img", file, caption)`` (a PNG in the output dir,
embedded as a data URI in HTML and linked in both).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

__all__ = ["Block", "fmt", "to_markdown", "to_html"]

Block = tuple


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table cell: ``n/a`` for ``None``, floats to ``digits`` decimals."""
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + b[1])
        elif kind == "p":
            out.append(b[1])
        elif kind == "table":
            cells = [[c.replace("|", "\\|") for c in row] for row in [b[1], *b[2]]]
            out.append("| " + " | ".join(cells[0]) + " |")
            out[-1] += "\n|" + "---|" * len(b[1])
            out[-1] += "".join("\n| " + " | ".join(r) + " |" for r in cells[1:])
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})")
    return "\n\n".join(out) + "\n"


_CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#eee}"
    "figure{margin:1em 0}img{max-width:100%}figcaption{font-size:85%;color:#555}"
)


def to_html(blocks: list[Block], outdir: Path) -> str:
    """A self-contained page: every ``img`` block's file under ``outdir`` embedded."""
    e = html.escape
    title = next((b[1] for b in blocks if b[0] == "h1"), "report")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
    ]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{e(b[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(b[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{e(c)}</th>" for c in b[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b[2]
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode((outdir / b[1]).read_bytes()).decode("ascii")
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{e(b[2])}">'
                f'<figcaption>{e(b[2])} (<a href="{e(b[1])}">{e(b[1])}</a>)</figcaption></figure>'
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
