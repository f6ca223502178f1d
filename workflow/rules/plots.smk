# Plots for people: training curves, per-class IoU bars, confusion matrices; a summary table.


rule plots:
    input:
        code("plots"),
        history="results/model/history.json",
        metrics=expand("results/metrics/{split}.json", split=config["eval"]["splits"]),
    output:
        **per_split_reports(
            "results/plots/per_class_iou_{split}.png",
            "../report/per_class_iou.rst",
            "per-class IoU chart",
        ),
        **per_split_reports(
            "results/plots/confusion_{split}.png",
            "../report/confusion.rst",
            "confusion matrix",
        ),
        curves=report(
            "results/plots/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
            labels={"item": "loss and val mIoU curves"},
        ),
        summary="results/metrics/summary.csv",
        table=report(
            "results/metrics/summary.html",
            caption="../report/summary.rst",
            category="Metrics",
            labels={"item": "all splits · scores table"},
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
