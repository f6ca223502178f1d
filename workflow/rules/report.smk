# The report's first page leads with the scores: the description Snakemake shows first is
# workflow/report/workflow.rst with the run's headline put before it, from results/ as they are
# when the report is made (a run not yet scored gets the description alone).
import base64
import glob
import json
import os
import csv
import html

DESCRIPTION = workflow.source_path("../report/workflow.rst")


def headline_run():
    """results/ of the run to headline: the base run, else the leaderboard's best experiment."""
    if os.path.exists("results/metrics/val.json") or not os.path.exists(
        "results/leaderboard.csv"
    ):
        return "results/"
    with open("results/leaderboard.csv") as handle:
        best = next(csv.DictReader(handle), None)
    return f"results/experiments/{best['experiment']}/" if best else "results/"


def embedded_image(path, alt):
    with open(path, "rb") as handle:
        data = base64.b64encode(handle.read()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width:48%">'


def leaderboard_table():
    with open("results/leaderboard.csv") as handle:
        rows = list(csv.reader(handle))

    def cells(row, tag):
        return "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in row)

    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows[1:])
    return f"<table id='headline-leaderboard'><tr>{cells(rows[0], 'th')}</tr>{body}</table>"


def headline_html():
    run = headline_run()
    scores = {}
    for split in EVAL_SPLITS:
        path = f"{run}metrics/{split}.json"
        if os.path.exists(path):
            with open(path) as handle:
                scores[split] = json.load(handle)
    if not scores:
        return ""
    name = (
        run.removeprefix("results/experiments/").rstrip("/")
        if "experiments/" in run
        else ""
    )
    figures = " · ".join(
        f"{split} mIoU <b class='headline-miou'>{m['mIoU']:.4f}</b>"
        for split, m in scores.items()
    )
    first = next(iter(scores.values()))
    parts = [
        f"<h2 id='headline'>Scores{f' of the best experiment, {html.escape(name)}' if name else ''}</h2>",
        f"<p style='font-size:1.4em'>{figures} ({first['num_classes_scored']} classes scored, "
        f"best epoch {first['epoch']})</p>",
    ]
    pictures = []
    bars = f"{run}plots/per_class_iou_{next(iter(scores))}.png"
    if os.path.exists(bars):
        pictures.append(embedded_image(bars, "per-class IoU"))
    panels = sorted(glob.glob(f"{run}vis_data/*_panel.png"))
    if panels:
        pictures.append(embedded_image(panels[0], "image | prediction | label"))
    parts.append(f"<p>{' '.join(pictures)}</p>")
    if os.path.exists("results/leaderboard.csv"):
        parts.append(f"<h3>Leaderboard</h3>{leaderboard_table()}")
    return "\n".join(parts)


def report_description():
    """workflow.rst with the headline (raw HTML) before it, written under .snakemake/."""
    with open(DESCRIPTION) as handle:
        description = handle.read()
    headline = headline_html()
    if headline:
        raw = "\n".join(f"   {line}" for line in headline.splitlines())
        description = f".. raw:: html\n\n{raw}\n\n{description}"
    path = os.path.abspath(".snakemake/camvidseg-report/workflow.rst")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(description)
    return path
