# Run cost: time and peak memory of the heavy jobs (their benchmark: files), as a report table.
# A localrule, as plots (plots.smk says why).


rule run_cost:
    input:
        code("runcost"),
        benchmarks=[
            "results/benchmarks/convert_masks.tsv",
            "results/benchmarks/train.tsv",
            *expand(
                "results/benchmarks/evaluate_{split}.tsv",
                split=config["eval"]["splits"],
            ),
        ],
    output:
        csv="results/benchmarks/summary.csv",
        html=report(
            "results/benchmarks/summary.html",
            caption="../report/run_cost.rst",
            category="Run cost",
            labels={"item": "time and max RSS of the heavy jobs"},
        ),
    log:
        "results/logs/run_cost.log",
    localrule: True
    conda:
        DATA_ENV
    message:
        "Summarising time and memory of the heavy jobs"
    shell:
        "python -m camvidseg runcost --benchmarks {input.benchmarks:q}"
        " --csv {output.csv:q} --html {output.html:q} > {log:q} 2>&1"
