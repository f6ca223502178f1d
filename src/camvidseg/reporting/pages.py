"""Small self-contained HTML pages of tables, for the report (which shows HTML inline)."""

from __future__ import annotations

import html
from pathlib import Path

from ..core.fileio import atomic_path

STYLE = (
    "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
)


def write_table_page(path: Path, title: str, table_id: str, header: list, rows: list[list],
                     note: str = "") -> None:  # fmt: skip
    """One table (cells are escaped) under a heading, with an optional note (HTML) below."""
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h2>{html.escape(title)}</h2>"
        f"<table id='{table_id}'><tr>{head}</tr>{body}</table>{note}</body></html>\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page)
