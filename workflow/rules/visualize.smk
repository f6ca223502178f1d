# Stage 6: image | prediction | label panels, color masks and overlays in results/vis_data/.


rule visualize:
    input:
        code("visualize"),
        model="results/model/best.pth",
        prepared="results/data/prepared",
        palette="results/data/palette.json",
    output:
        report(
            directory("results/vis_data"),
            patterns=["{split,train|val|test}_{stem}_panel.png"],
            caption="../report/panel.rst",
            category="Predictions",
            labels={"picture": "{split} · {stem} · panel"},
        ),
    log:
        "results/logs/visualize.log",
    conda:
        DATA_ENV
    resources:
        **INFER_GPU_RESOURCES,
    params:
        lease=gpus_to_lease,
        num_images=config["vis"]["num_images"],
        splits=" ".join(config["vis"]["splits"]),
        alpha=config["vis"]["alpha"],
        device=TRAIN["device"],
    message:
        "Drawing {params.num_images} prediction panels per split into {output}"
    shell:
        "python -m camvidseg.lease --gpus {params.lease:q} -- python -m camvidseg.visualize"
        " --model {input.model} --prepared {input.prepared}"
        " --palette {input.palette} --splits {params.splits} --num-images {params.num_images}"
        " --alpha {params.alpha} --device {params.device} --out {output} > {log} 2>&1"
