# Plots for people: training curves, per-class IoU bars, confusion matrices; a summary table.


rule plots:
    input:
        code("plots"),
        history="results/model/history.json",
        metrics=expand("results/metrics/{split}.json", split=config["eval"]["splits"]),
    output:
        curves=report(
            "results/plots/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
        ),
        iou=report(
            expand(
                "results/plots/per_class_iou_{split}.png",
                split=config["eval"]["splits"],
            ),
            caption="../report/per_class_iou.rst",
            category="Metrics",
        ),
        confusion=report(
            expand(
                "results/plots/confusion_{split}.png", split=config["eval"]["splits"]
            ),
            caption="../report/confusion.rst",
            category="Metrics",
        ),
        summary="results/metrics/summary.csv",
        table=report(
            "results/metrics/summary.html",
            caption="../report/summary.rst",
            category="Metrics",
        ),
    log:
        "results/logs/plots.log",
    conda:
        DATA_ENV
    message:
        "Plotting training curves and per-split scores"
    shell:
        "python -m camvidseg.plots --history {input.history} --metrics {input.metrics}"
        " --out results/plots --summary {output.summary} --summary-html {output.table}"
        " > {log} 2>&1"
