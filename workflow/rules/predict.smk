# Segment a folder of new images (config predict.input_dir) with a trained model.

if config["predict"]["input_dir"]:

    rule predict:
        input:
            code("predict"),
            model=(
                "results/{exp}model/model.onnx"
                if config["predict"]["backend"] == "onnx"
                else "results/{exp}model/best.pth"
            ),
            palette="results/data/palette.json",
            images=config["predict"]["input_dir"],
        output:
            directory("results/{exp}predict"),
        log:
            "results/{exp}logs/predict.log",
        conda:
            DATA_ENV
        resources:
            gpu=inference_gpu_request,
            gpu_slot=inference_gpu_request,
        params:
            lease=gpus_to_lease,
            alpha=config["vis"]["alpha"],
            device=setting("train.device"),
            backend=config["predict"]["backend"],
        message:
            "Segmenting the images in {input.images}"
        shell:
            "python -m camvidseg lease --gpus {params.lease:q} -- python -m camvidseg predict"
            " --backend {params.backend:q} --model {input.model:q} --palette {input.palette:q}"
            " --input-dir {input.images:q} --alpha {params.alpha:q} --device {params.device:q}"
            " --out {output:q} > {log:q} 2>&1"
