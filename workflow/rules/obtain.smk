# Stage 1: obtain the dataset archive (and backbone weights) into resources/.
# localrule: on a cluster they run where the network is (the login node).


# The command per dataset.source; every value reaches the shell quoted. The URL reaches the job
# through its environment (plan.job_environment), named, never expanded into a command line:
# Snakemake writes params and commands into .snakemake/metadata and processes' command lines are
# public, so a signed URL's token goes in neither (params.url holds it redacted, so a new path
# still re-runs).
OBTAIN_COMMANDS = {
    "sample": (
        "python -m camvidseg sample --train {params.sample[train]:q}"
        " --val {params.sample[val]:q} --test {params.sample[test]:q}"
        " --height {params.sample[height]:q} --width {params.sample[width]:q}"
        " --seed {params.sample[seed]:q} --out {output:q} > {log:q} 2>&1"
    ),
    "url": (
        "python -m camvidseg obtain url --url-env {params.url_env:q}"
        " {params.sha256:q} --out {output:q} > {log:q} 2>&1"
    ),
    "opendatalab": (
        "python -m camvidseg obtain {params.source:q}"
        " --download-dir {params.download_dir:q} --out {output:q} > {log:q} 2>&1"
    ),
}
OBTAIN_COMMANDS["openxlab"] = OBTAIN_COMMANDS["opendatalab"]


if DATASET["source"] != "local":

    rule obtain_dataset:
        input:
            code("sample" if DATASET["source"] == "sample" else "obtain"),
            source=DATASET_SOURCE,
        output:
            plan.archive_name(DATASET),
        log:
            "results/logs/obtain_dataset.log",
        localrule: True
        conda:
            DOWNLOAD_ENV
        params:
            **OBTAIN_PARAMS,
            source=DATASET["source"],
        message:
            "Obtaining the CamVid archive (dataset.source: {params.source})"
        shell:
            OBTAIN_COMMANDS[DATASET["source"]]


rule fetch_backbone_weights:
    input:
        code("obtain"),
    output:
        "resources/weights/{model}_backbone.pth",
    log:
        "results/logs/fetch_backbone_weights_{model}.log",
    localrule: True
    conda:
        DATA_ENV
    message:
        "Fetching torchvision's ImageNet weights for the {wildcards.model} backbone"
    shell:
        "python -m camvidseg obtain weights --model {wildcards.model:q} --out {output:q}"
        " > {log:q} 2>&1"
