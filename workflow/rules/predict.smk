# Segment a folder of new images (config predict.input_dir) with a trained model.
from camvidseg import IMAGE_SUFFIXES

PREDICT_INPUT = config["predict"]["input_dir"]
# Checked when the workflow is read: a wrong folder is one line, not a MissingInputException.
if PREDICT_INPUT and not os.path.isdir(PREDICT_INPUT):
    stop(f"predict.input_dir: {PREDICT_INPUT} is not a folder")
if PREDICT_INPUT and not any(
    name.lower().endswith(IMAGE_SUFFIXES) for name in os.listdir(PREDICT_INPUT)
):
    stop(
        f"predict.input_dir: no images ({', '.join(IMAGE_SUFFIXES)}) in {PREDICT_INPUT}"
    )


if PREDICT_INPUT:

    rule predict:
        input:
            code("predict"),
            model=(
                "results/{exp}model/model.onnx"
                if config["predict"]["backend"] == "onnx"
                else "results/{exp}model/best.pth"
            ),
            palette="results/data/palette.json",
            images=PREDICT_INPUT,
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
