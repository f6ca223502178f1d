# Stage 1: obtain the dataset archive (and backbone weights) into resources/.
# localrule: on a cluster they run where the network is (the login node).


if DATASET["source"] == "url" and not DATASET["url"]:
    raise WorkflowError(
        "invalid config: dataset.url: required when dataset.source is url"
    )


if DATASET["source"] != "local":

    rule obtain_dataset:
        input:
            code("sample" if DATASET["source"] == "sample" else "obtain"),
        output:
            archive_name(),
        log:
            "results/logs/obtain_dataset.log",
        localrule: True
        conda:
            DOWNLOAD_ENV
        params:
            **obtain_params(),
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
