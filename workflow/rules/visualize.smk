# Stage 6: image | prediction | label panels, color masks and overlays in results/{exp}vis_data/.


rule visualize:
    input:
        code("visualize"),
        model="results/{exp}model/best.pth",
        prepared="results/data/prepared",
        palette="results/data/palette.json",
    output:
        report(
            directory("results/{exp}vis_data"),
            patterns=["{split,train|val|test}_{stem}_panel.png"],
            caption="../report/panel.rst",
            category="Predictions",
            subcategory=report_subcategory,
            labels=report_label("picture", "{split} · {stem} · panel"),
        ),
    log:
        "results/{exp}logs/visualize.log",
    conda:
        DATA_ENV
    resources:
        gpu=inference_gpu_request,
        gpu_slot=inference_gpu_request,
    params:
        lease=gpus_to_lease,
        num_images=config["vis"]["num_images"],
        splits=config["vis"]["splits"],
        alpha=config["vis"]["alpha"],
        device=setting("train.device"),
        experiment=run_label,
    message:
        "Drawing {params.num_images} prediction panels per split into {output}{params.experiment}"
    shell:
        "python -m camvidseg lease --gpus {params.lease:q} -- python -m camvidseg visualize"
        " --model {input.model:q} --prepared {input.prepared:q}"
        " --palette {input.palette:q} --splits {params.splits:q}"
        " --num-images {params.num_images:q} --alpha {params.alpha:q}"
        " --device {params.device:q} --out {output:q} > {log:q} 2>&1"
