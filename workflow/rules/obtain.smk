# Stage 1: obtain the dataset archive (and backbone weights) into resources/.
# localrules: on a cluster they run where the network is (the login node).


localrules:
    obtain_dataset,
    fetch_backbone_weights,


if DATASET["source"] != "local":

    rule obtain_dataset:
        input:
            code("sample" if DATASET["source"] == "sample" else "obtain"),
        output:
            archive_name(),
        log:
            "results/logs/obtain_dataset.log",
        conda:
            DOWNLOAD_ENV
        params:
            source=DATASET["source"],
            url=identity.redact_url(DATASET["url"]),
            command=obtain_command(),
        message:
            "Obtaining the CamVid archive (dataset.source: {params.source})"
        shell:
            "{params.command} --out {output} > {log} 2>&1"


rule fetch_backbone_weights:
    input:
        code("obtain"),
    output:
        "resources/weights/{model}_backbone.pth",
    log:
        "results/logs/fetch_backbone_weights_{model}.log",
    conda:
        DATA_ENV
    message:
        "Fetching torchvision's ImageNet weights for the {wildcards.model} backbone"
    shell:
        "python -m camvidseg.obtain weights --model {wildcards.model} --out {output} > {log} 2>&1"
