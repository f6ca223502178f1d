# Stage 4: train through an MMEngine Runner, one job per experiment. Checkpoints live in
# results/{exp}train_work/<fingerprint>/, deliberately not a declared output: Snakemake deletes
# the outputs of a failed job, and a killed run must resume from its last epoch when it runs again.


rule train:
    input:
        code("train"),
        prepared="results/data/prepared",
        palette="results/data/palette.json",
        backbone=backbone_weights_file,
        init=initial_weights_file,
    output:
        model="results/{exp}model/best.pth",
        history="results/{exp}model/history.json",
    log:
        "results/{exp}logs/train.log",
    benchmark:
        "results/{exp}benchmarks/train.tsv"
    conda:
        DATA_ENV
    threads: 4
    resources:
        **NODE_RESOURCES,
        gpu=gpu_request,
        mem_mb=16000,
        runtime=720,
    params:
        lease=gpus_to_lease,
        settings=training_settings,
        model=setting("model.name"),
        epochs=setting("train.epochs"),
        device=setting("train.device"),
        experiment=run_label,
        backbone=lambda wildcards, input: input.backbone or "none",
        gpus=gpu_processes,
        nodes=node_tasks,
        work_root=lambda wildcards: f"results/{wildcards.exp}train_work",
        run_name=lambda wildcards: experiment(wildcards) or "base",
    message:
        "Training {params.model} for {params.epochs} epochs on {params.device}"
        " ({resources.gpu} GPUs requested){params.experiment}"
    shell:
        "python -m camvidseg lease --gpus {params.lease:q} -- python -m camvidseg train"
        " --settings {params.settings:q}"
        " --prepared {input.prepared:q} --palette {input.palette:q}"
        " --backbone-weights {params.backbone:q} --gpus {params.gpus:q}"
        " --nodes {params.nodes:q} --threads {threads:q}"
        " --work-root {params.work_root:q} --out-model {output.model:q}"
        " --out-history {output.history:q} --run-name {params.run_name:q}"
        " --mlflow-store results/mlflow > {log:q} 2>&1"
