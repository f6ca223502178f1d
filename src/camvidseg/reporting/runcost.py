"""Run cost: wall time and peak memory of the heavy jobs, from Snakemake's benchmark files.

The convert, train and evaluate rules carry ``benchmark:`` directives; Snakemake writes one TSV
per job (seconds, max RSS in MB, CPU time, ...). This stage gathers them into
``results/benchmarks/summary.csv`` and an HTML table for the report.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..core import command
from ..core.errors import UserError, cli
from ..core.fileio import atomic_path
from ..workflow.madeby import Record
from .pages import write_table_page

COLUMNS = (("s", "wall time (s)"), ("h:m:s", "wall time"), ("max_rss", "max RSS (MB)"),
           ("cpu_time", "CPU time (s)"), ("mean_load", "mean CPU load (%)"))  # fmt: skip


def read_benchmark(path: Path) -> dict:
    """The first (only) record of a Snakemake benchmark TSV, by column name."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        raise UserError(f"{path}: benchmark file holds no record")
    return {"job": path.stem, **{key: rows[0].get(key, "-") for key, _ in COLUMNS}}


def write_table(records: list[dict], csv_path: Path, html_path: Path) -> None:
    keys = ["job", *(key for key, _ in COLUMNS)]
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, keys)
        writer.writeheader()
        writer.writerows(records)
    write_table_page(
        html_path,
        "Run cost of the heavy jobs",
        "run-cost",
        ["job", *dict(COLUMNS).values()],
        [[r[key] for key in keys] for r in records],
        "Measured by Snakemake's benchmark: directive on the machine that ran each job; a job "
        "reused from an earlier run keeps that run's figures.",
    )


@cli
def main(argv: list[str] | None = None) -> None:
    parser = command.parser(__file__, __doc__)
    parser.add_argument(
        "--benchmarks", nargs="+", type=Path, required=True, help="benchmark TSVs of the jobs"
    )
    parser.add_argument("--csv", required=True, type=Path, help="table to write (.csv)")
    parser.add_argument("--html", required=True, type=Path, help="the same as HTML, for the report")
    args = parser.parse_args(argv)
    made = Record(__file__, args, [args.benchmarks], [args.csv, args.html])
    records = [read_benchmark(path) for path in args.benchmarks]
    write_table(records, args.csv, args.html)
    made.write()
    for r in records:
        print(f"{r['job']}: {r['h:m:s']} wall, max RSS {r['max_rss']} MB")


if __name__ == "__main__":
    main()
