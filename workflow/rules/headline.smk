# The scores as people look for them: the report opens on this fragment (report/workflow.rst
# includes it), the best experiment's with experiments. A localrule, as plots (plots.smk says why).
HEADLINE_RUNS = [f"results/{exp}" for exp in EXPERIMENT_DIRS] or ["results/"]


rule headline:
    input:
        code("headline"),
        metrics=expand(
            "{run}metrics/{split}.json", run=HEADLINE_RUNS, split=EVAL_SPLITS
        ),
        panels=expand("{run}vis_data", run=HEADLINE_RUNS),
        leaderboard=["results/leaderboard.csv"] if EXPERIMENTS else [],
    output:
        report(
            "results/headline.html",
            caption="../report/headline.rst",
            category="Scores",
            labels={"item": "headline: scores, per-class IoU, a panel"},
        ),
    log:
        "results/logs/headline.log",
    localrule: True
    conda:
        DATA_ENV
    params:
        runs=HEADLINE_RUNS,
        splits=EVAL_SPLITS,
        leaderboard=lambda wildcards, input: [
            f"--leaderboard={path}" for path in input.leaderboard
        ],
    message:
        "Writing the headline of the report"
    shell:
        "python -m camvidseg headline --runs {params.runs:q} --splits {params.splits:q}"
        " {params.leaderboard:q} --out {output:q} > {log:q} 2>&1"
