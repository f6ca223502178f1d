# Plots for people: training curves, per-class IoU bars, confusion matrices; a summary table.
# With experiments, the leaderboard compares them: one table, overlaid curves, grouped bars.
# A summary of small files, seconds of work: on a cluster it runs where Snakemake runs (the
# login node), as a cluster job would spend longer queueing and starting than working.
import json


rule plots:
    input:
        code("plots"),
        history="results/{exp}model/history.json",
        metrics=expand("results/{{exp}}metrics/{split}.json", split=EVAL_SPLITS),
    output:
        **per_split_reports(
            "results/{{exp}}plots/per_class_iou_{split}.png",
            "../report/per_class_iou.rst",
            "per-class IoU chart",
        ),
        **per_split_reports(
            "results/{{exp}}plots/confusion_{split}.png",
            "../report/confusion.rst",
            "confusion matrix",
        ),
        curves=report(
            "results/{exp}plots/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
            subcategory=report_subcategory,
            labels=report_label("item", "loss and val mIoU curves"),
        ),
        summary="results/{exp}metrics/summary.csv",
        table=report(
            "results/{exp}metrics/summary.html",
            caption="../report/summary.rst",
            category="Metrics",
            subcategory=report_subcategory,
            labels=report_label("item", "all splits · scores table"),
        ),
    log:
        "results/{exp}logs/plots.log",
    localrule: True
    conda:
        DATA_ENV
    params:
        out=lambda wildcards: f"results/{wildcards.exp}plots",
        experiment=run_label,
    message:
        "Plotting training curves and per-split scores{params.experiment}"
    shell:
        "python -m camvidseg plots --history {input.history:q} --metrics {input.metrics:q}"
        " --out {params.out:q} --summary {output.summary:q} --summary-html {output.table:q}"
        " > {log:q} 2>&1"


if EXPERIMENTS:

    rule leaderboard:
        input:
            code("leaderboard"),
            prepared="results/data/prepared",
            metrics=expand(
                "results/{exp}metrics/{split}.json",
                exp=EXPERIMENT_DIRS,
                split=EVAL_SPLITS,
            ),
            models=expand("results/{exp}model/best.pth", exp=EXPERIMENT_DIRS),
            histories=expand("results/{exp}model/history.json", exp=EXPERIMENT_DIRS),
        output:
            csv="results/leaderboard.csv",
            markdown="results/leaderboard.md",
            table=report(
                "results/leaderboard.html",
                caption="../report/leaderboard.rst",
                category="Leaderboard",
                labels={"item": f"{len(EXPERIMENTS)} experiments · leaderboard table"},
            ),
            curves=report(
                "results/leaderboard_curves.png",
                caption="../report/leaderboard_curves.rst",
                category="Leaderboard",
                labels={
                    "item": f"{len(EXPERIMENTS)} experiments · val mIoU and loss curves"
                },
            ),
            iou=report(
                "results/leaderboard_iou.png",
                caption="../report/leaderboard_iou.rst",
                category="Leaderboard",
                labels={
                    "item": f"{len(EXPERIMENTS)} experiments · per-class IoU bars"
                },
            ),
        log:
            "results/logs/leaderboard.log",
        conda:
            DATA_ENV
        params:
            experiments=json.dumps(
                {name: RUN_SETTINGS[name] for name in EXPERIMENTS}, sort_keys=True
            ),
            experiments_count=len(EXPERIMENTS),
            splits=EVAL_SPLITS,  # a module's shell sees params, not this file's names
        message:
            "Ranking {params.experiments_count} experiments (leaderboard, curves, per-class IoU)"
        shell:
            "python -m camvidseg leaderboard --experiments {params.experiments:q}"
            " --root results/experiments --prepared {input.prepared:q} --splits {params.splits:q}"
            " --csv {output.csv:q}"
            " --markdown {output.markdown:q} --html {output.table:q} --curves {output.curves:q}"
            " --iou {output.iou:q} > {log:q} 2>&1"
