"""One self-contained HTML page: images embedded as data URIs, CSS inline, no script and no
request of any kind, readable at 1280 px and printable. Every table carries a link that downloads
it as CSV (a data URI of the rows shown, every digit kept); every figure a caption and the command
behind it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ticketlab.store import csv_text

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; max-width: 1180px; margin: 0 auto; padding: 1.5em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { font-size: 1.05em; margin: 1.4em 0 0.4em; }
p.lead { color: #555; margin-top: 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .caption { color: #444; font-size: 0.9em; margin: 0.3em 0; }
code { font-size: 0.88em; background: #f4f4f4; padding: 0 0.25em; word-break: break-all; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.4em 0; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: right; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
.wide { overflow-x: auto; } a.csv { font-size: 0.85em; }
nav ul { columns: 3; font-size: 0.9em; }
@media print { body { max-width: none; padding: 0; } a.csv { display: none; } h2 { break-before: page; }
               figure, table { break-inside: avoid; } }
"""


@dataclass
class Figure:
    image: bytes  # PNG, or GIF when `mime` says so
    caption: str
    command: str | None = None  # what reproduces it
    mime: str = "image/png"


@dataclass
class Table:
    rows: list[dict[str, Any]]
    columns: Sequence[str]
    caption: str
    name: str  # the CSV file's name when downloaded
    command: str | None = None


@dataclass
class Section:
    title: str
    lead: str = ""
    blocks: list[Figure | Table] = field(default_factory=list)


def cell(value: Any) -> str:
    """A value as a table shows it: a number with a fraction to 4 significant digits (its CSV keeps
    every digit), anything else as it is."""
    if isinstance(value, str) and any(mark in value for mark in ".e") and not value.isalpha():
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _command(command: str | None) -> str:
    return f" Reproduce: <code>{html.escape(command)}</code>" if command else ""


def _figure(block: Figure) -> str:
    data = base64.b64encode(block.image).decode()
    return (f'<figure><img src="data:{block.mime};base64,{data}" alt="{html.escape(block.caption)}">'
            f"<figcaption>{html.escape(block.caption)}{_command(block.command)}</figcaption></figure>")


def _table(block: Table) -> str:
    shown = [{column: cell(row.get(column)) for column in block.columns} for row in block.rows]
    numeric = {column: all(_is_number(row[column]) for row in shown) for column in block.columns}
    classes = {column: "" if numeric[column] else ' class="text"' for column in block.columns}
    head = "".join(f"<th{classes[c]}>{html.escape(c)}</th>" for c in block.columns)
    body = "".join("<tr>" + "".join(f"<td{classes[c]}>{html.escape(row[c])}</td>" for c in block.columns) + "</tr>"
                   for row in shown)
    full = [{column: row.get(column) for column in block.columns} for row in block.rows]
    data = base64.b64encode(csv_text(full, block.columns).encode()).decode()
    link = f'<a class="csv" download="{html.escape(block.name)}" href="data:text/csv;base64,{data}">CSV</a>'
    return (f'<p class="caption">{html.escape(block.caption)} {link}{_command(block.command)}</p>'
            f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == ""
    return True


def _slug(title: str, index: int) -> str:
    return f"s{index}-" + "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")


def render(title: str, lead: str, sections: Sequence[Section], facts: Mapping[str, str] | None = None) -> str:
    """The page: a title, what it covers, a table of contents, then each section's blocks."""
    parts = [f"<h1>{html.escape(title)}</h1>", f'<p class="lead">{html.escape(lead)}</p>']
    if facts:
        parts.append("<table>" + "".join(f'<tr><th class="text">{html.escape(k)}</th><td class="text">'
                                         f"{html.escape(v)}</td></tr>" for k, v in facts.items()) + "</table>")
    slugs = [_slug(section.title, i) for i, section in enumerate(sections)]
    parts.append("<nav><ul>" + "".join(f'<li><a href="#{slug}">{html.escape(s.title)}</a></li>'
                                       for slug, s in zip(slugs, sections)) + "</ul></nav>")
    for slug, section in zip(slugs, sections):
        parts.append(f'<section><h2 id="{slug}">{html.escape(section.title)}</h2>')
        if section.lead:
            parts.append(f'<p class="lead">{html.escape(section.lead)}</p>')
        parts += [_figure(b) if isinstance(b, Figure) else _table(b) for b in section.blocks]
        parts.append("</section>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
