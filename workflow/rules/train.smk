# Stage 4: train through an MMEngine Runner. Checkpoints live in results/train_work/<fingerprint>/,
# deliberately not a declared output: Snakemake deletes the outputs of a failed job, and a killed
# run must resume from its last epoch when the rule runs again.


rule train:
    input:
        code("train"),
        prepared="results/data/prepared",
        palette="results/data/palette.json",
        backbone=backbone_weights_file(),
        init=TRAIN["load_from"] or [],
    output:
        model="results/model/best.pth",
        history="results/model/history.json",
    log:
        "results/logs/train.log",
    benchmark:
        "results/benchmarks/train.tsv"
    conda:
        DATA_ENV
    threads: 4
    resources:
        **GPU_RESOURCES,
        **NODE_RESOURCES,
        mem_mb=16000,
        runtime=720,
    params:
        lease=gpus_to_lease,
        model=MODEL["name"],
        epochs=TRAIN["epochs"],
        device=TRAIN["device"],
        settings=train_settings(),
        backbone=lambda wildcards, input: input.backbone or "none",
        workers=loader_workers,
        gpus=gpu_processes,
        nodes=node_tasks,
    message:
        "Training {params.model} for {params.epochs} epochs on {params.device}"
    shell:
        "python -m camvidseg.lease --gpus {params.lease:q} -- python -m camvidseg.train"
        " --prepared {input.prepared} --palette {input.palette}"
        " --settings {params.settings:q} --backbone-weights {params.backbone:q}"
        " --gpus {params.gpus} --nodes {params.nodes}"
        " --num-workers {params.workers} --threads {threads}"
        " --work-root results/train_work --out-model {output.model}"
        " --out-history {output.history} > {log} 2>&1"
