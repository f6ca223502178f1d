# Stage 7: best.pth -> model.onnx (opset 18, dynamic batch/height/width), its parity with PyTorch
# on the val images (the check fails the run when they disagree) and what the model costs.
# Stage 8: the model card, from the run's own outputs.
import json


rule export_onnx:
    input:
        code("export"),
        model="results/{exp}model/best.pth",
        palette="results/data/palette.json",
    output:
        "results/{exp}model/model.onnx",
    log:
        "results/{exp}logs/export_onnx.log",
    conda:
        DATA_ENV
    message:
        "Exporting the trained model to ONNX"
    shell:
        "python -m camvidseg.export onnx --model {input.model:q} --palette {input.palette:q}"
        " --out {output:q} > {log:q} 2>&1"


rule check_export:
    input:
        code("export"),
        model="results/model/best.pth",
        onnx="results/model/model.onnx",
        prepared="results/data/prepared",
        palette="results/data/palette.json",
    output:
        check="results/model/export_check.json",
        cost="results/metrics/cost.json",
    log:
        "results/logs/check_export.log",
    conda:
        DATA_ENV
    threads: 4
    resources:
        gpu=inference_gpu_request,
        gpu_slot=inference_gpu_request,
    params:
        lease=gpus_to_lease,
        device=config["train"]["device"],
    message:
        "Checking the ONNX export against PyTorch on the val images; measuring its cost"
    shell:
        "python -m camvidseg.lease --gpus {params.lease:q} -- python -m camvidseg.export check"
        " --model {input.model:q} --onnx {input.onnx:q}"
        " --prepared {input.prepared:q} --palette {input.palette:q} --split val"
        " --threads {threads:q} --device {params.device:q} --out {output.check:q}"
        " --out-cost {output.cost:q} > {log:q} 2>&1"


rule model_card:
    input:
        code("card"),
        model="results/model/best.pth",
        onnx="results/model/model.onnx",
        palette="results/data/palette.json",
        manifest="results/data/dataset.json",
        prepared="results/data/prepared",
        history="results/model/history.json",
        check="results/model/export_check.json",
        cost="results/metrics/cost.json",
        metrics=expand("results/metrics/{split}.json", split=config["eval"]["splits"]),
    output:
        card="results/model/MODEL_CARD.md",
        html=report(
            "results/model/MODEL_CARD.html",
            caption="../report/model_card.rst",
            category="Model",
        ),
    log:
        "results/logs/model_card.log",
    conda:
        DATA_ENV
    params:
        settings=json.dumps(
            {k: config[k] for k in ("dataset", "model", "train", "eval")}
        ),
    message:
        "Writing the model card"
    shell:
        "python -m camvidseg.card --model {input.model:q} --onnx {input.onnx:q}"
        " --palette {input.palette:q} --manifest {input.manifest:q}"
        " --prepared {input.prepared:q} --history {input.history:q}"
        " --check {input.check:q} --cost {input.cost:q} --metrics {input.metrics:q}"
        " --settings {params.settings:q} --out {output.card:q} --out-html {output.html:q}"
        " > {log:q} 2>&1"
