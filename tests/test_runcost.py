"""The heavy rules are benchmarked; their time and peak memory are one table in the report."""

import csv


def test_run_cost_table_holds_time_and_memory_of_the_heavy_jobs(tiny_run):
    with (tiny_run / "results/benchmarks/summary.csv").open() as handle:
        rows = {row["job"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"convert_masks", "train", "evaluate_val", "evaluate_test"}
    for row in rows.values():
        assert float(row["s"]) > 0 and float(row["max_rss"]) > 0
    # Snakemake samples memory every 0.5 s, so a sub-second job may show only its shell's RSS;
    # training imports torch and runs for seconds: its peak is a torch process's (> 100 MB)
    assert float(rows["train"]["max_rss"]) > 100
    # each row is its own job's benchmark record, not a neighbour's (no timing race: the figures
    # are compared with the file Snakemake wrote, never with another job's)
    for job, row in rows.items():
        tsv = tiny_run / f"results/benchmarks/{job}.tsv"
        with tsv.open() as handle:
            measured = next(csv.DictReader(handle, delimiter="\t"))
        figures = ("s", "max_rss", "cpu_time")
        assert [row[key] for key in figures] == [measured[key] for key in figures]
    page = (tiny_run / "results/benchmarks/summary.html").read_text()
    assert "<th>max RSS (MB)</th>" in page and "<td>train</td>" in page
