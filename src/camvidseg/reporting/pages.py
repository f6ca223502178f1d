"""The project's one HTML writer: self-contained pages of tables for the report (which shows HTML
inline), the model card's page and the headline fragment the report opens on. Every text is
escaped here; callers pass plain values."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from pathlib import Path

from ..core.fileio import atomic_path

STYLE = (
    "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
)


def shown_value(value) -> str:
    """A table value as people read it: floats to 4 places (1 from 10 on), lists as ``96x128``,
    a content identity by its first 12 hex digits, nothing for None."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, list):
        return "x".join(map(str, value))
    value = str(value)
    return value[:19] if value.startswith("sha256:") else value


def cell(value) -> str:
    """A cell's text, escaped; a list or tuple is one line per item."""
    if isinstance(value, list | tuple):
        return "<br>".join(html.escape(str(item)) for item in value)
    return html.escape(str(value))


def table(table_id: str, header: Iterable, rows: Iterable[Iterable], row_headers=False) -> str:
    """A table; with ``row_headers`` each row's first cell is a header cell."""
    head = "".join(f"<th>{cell(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = [cell(value) for value in row]
        first = f"<th>{cells[0]}</th>" if row_headers and cells else ""
        rest = cells[1:] if first else cells
        body.append("<tr>" + first + "".join(f"<td>{c}</td>" for c in rest) + "</tr>")
    return f"<table id='{table_id}'><tr>{head}</tr>{''.join(body)}</table>"


def bars(table_id: str, values: list[tuple[str, float]]) -> str:
    """A bar chart as a table: one row per (label, value in [0, 1]), the value printed beside its
    bar (crisp at any zoom, readable by text search and screen readers)."""
    rows = "".join(
        f"<tr><th>{cell(label)}</th><td style='width:100%'><div class='bar' "
        f"style='width:{max(0.0, min(1.0, value)) * 100:.1f}%'></div></td>"
        f"<td>{value:.3f}</td></tr>"
        for label, value in values
    )
    return f"<table id='{table_id}' class='bars'>{rows}</table>"


def figures(items: list[tuple[str, str | None]], line_class: str, figure_class: str) -> str:
    """One line of figures set large: ``label <b>value</b>`` each, joined by middle dots; an item
    without a value is its label alone (a split not scored, and why)."""
    shown = [
        f"{cell(label)} <b class='{figure_class}'>{cell(value)}</b>" if value else cell(label)
        for label, value in items
    ]
    return f"<p class='{line_class}'>{' · '.join(shown)}</p>"


def image(path: Path, caption: str) -> str:
    """A PNG embedded in the page (the report is one self-contained file), with its caption."""
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f"<figure><img alt='{cell(caption)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{cell(caption)}</figcaption></figure>"
    )


def fragment(section_id: str, body: str, style: str) -> str:
    """HTML to put inside another page (the report's first page) or to open on its own:
    ``style`` applies inside the section only (its selectors are prefixed with its id)."""
    scoped = "".join(f"#{section_id} {rule}}}" for rule in style.split("}") if rule.strip())
    return f"<section id='{section_id}'><style>{scoped}</style>{body}</section>\n"


def heading(text: str, level: int = 2) -> str:
    return f"<h{level}>{html.escape(text)}</h{level}>"


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def document(title: str, body: str, style: str = "") -> str:
    """A whole page: ``body`` (HTML built by this module, or rendered Markdown) under ``title``;
    ``style`` adds to the common style."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}{style}</style></head><body>{body}</body></html>\n"
    )


def write_page(path: Path, title: str, body: str, style: str = "") -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(document(title, body, style))


def write_table_page(path: Path, title: str, table_id: str, header: list, rows: list[list],
                     note: str = "") -> None:  # fmt: skip
    """One table under a heading, with an optional note below."""
    body = heading(title) + table(table_id, header, rows) + (paragraph(note) if note else "")
    write_page(path, title, body)
