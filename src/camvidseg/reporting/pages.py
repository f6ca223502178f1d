"""The project's one HTML writer: self-contained pages of tables for the report (which shows HTML
inline) and the model card's page. Every text is escaped here; callers pass plain values."""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

from ..core.fileio import atomic_path

STYLE = (
    "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
)


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
