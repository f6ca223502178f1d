# The last rule: results/provenance.json says what made each final output (inputs' content,
# params, code, packages, git commit, time); `python -m camvidseg provenance` says what is stale.


rule provenance:
    input:
        code("provenance"),
        targets=FINAL_OUTPUTS,
    output:
        record="results/provenance.json",
        html=report(
            "results/provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"item": "what made each result"},
        ),
    log:
        "results/logs/provenance.log",
    localrule: True
    conda:
        DATA_ENV
    message:
        "Recording what made each result in {output.record}"
    shell:
        "python -m camvidseg provenance record --targets {input.targets:q}"
        " --record {output.record:q} --html {output.html:q} > {log:q} 2>&1"
