# Segment a folder of new images (config predict.input_dir) with the trained model.

if config["predict"]["input_dir"]:

    rule predict:
        input:
            code("predict"),
            model=(
                "results/model/model.onnx"
                if config["predict"]["backend"] == "onnx"
                else "results/model/best.pth"
            ),
            palette="results/data/palette.json",
            images=config["predict"]["input_dir"],
        output:
            directory("results/predict"),
        log:
            "results/logs/predict.log",
        conda:
            DATA_ENV
        resources:
            **INFER_GPU_RESOURCES,
        params:
            lease=gpus_to_lease,
            alpha=config["vis"]["alpha"],
            device=TRAIN["device"],
            backend=config["predict"]["backend"],
        message:
            "Segmenting the images in {input.images}"
        shell:
            "python -m camvidseg.lease --gpus {params.lease:q} -- python -m camvidseg.predict"
            " --backend {params.backend:q} --model {input.model:q} --palette {input.palette}"
            " --input-dir {input.images} --alpha {params.alpha} --device {params.device}"
            " --out {output} > {log} 2>&1"
