# Stage 7: best.pth -> model.onnx (opset 18, dynamic batch/height/width), its parity with PyTorch
# on the val images (the check fails the run when they disagree) and what the model costs.
# Stage 8: the model card, from the run's own outputs. Both for any experiment: the base run builds
# them by default, a named one on request (results/experiments/NAME/model/MODEL_CARD.md).
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
    params:
        experiment=run_label,
    message:
        "Exporting the trained model to ONNX{params.experiment}"
    shell:
        "python -m camvidseg export onnx --model {input.model:q} --palette {input.palette:q}"
        " --out {output:q} > {log:q} 2>&1"


rule check_export:
    input:
        code("export"),
        model="results/{exp}model/best.pth",
        onnx="results/{exp}model/model.onnx",
        prepared="results/data/prepared",
        palette="results/data/palette.json",
    output:
        check="results/{exp}model/export_check.json",
        cost="results/{exp}metrics/cost.json",
    log:
        "results/{exp}logs/check_export.log",
    conda:
        DATA_ENV
    threads: 4
    resources:
        gpu=inference_gpu_request,
        gpu_slot=inference_gpu_request,
    params:
        lease=gpus_to_lease,
        device=setting("train.device"),
        experiment=run_label,
    message:
        "Checking the ONNX export against PyTorch on the val images; measuring its cost"
        "{params.experiment}"
    shell:
        "python -m camvidseg lease --gpus {params.lease:q} -- python -m camvidseg export check"
        " --model {input.model:q} --onnx {input.onnx:q}"
        " --prepared {input.prepared:q} --palette {input.palette:q} --split val"
        " --threads {threads:q} --device {params.device:q} --out {output.check:q}"
        " --out-cost {output.cost:q} > {log:q} 2>&1"


# The model card renders the files above (and hashes two): as plots and run_cost, a localrule.
rule model_card:
    input:
        code("card"),
        model="results/{exp}model/best.pth",
        onnx="results/{exp}model/model.onnx",
        palette="results/data/palette.json",
        manifest="results/data/dataset.json",
        prepared="results/data/prepared",
        history="results/{exp}model/history.json",
        check="results/{exp}model/export_check.json",
        cost="results/{exp}metrics/cost.json",
        metrics=expand("results/{{exp}}metrics/{split}.json", split=EVAL_SPLITS),
    output:
        card="results/{exp}model/MODEL_CARD.md",
        html=report(
            "results/{exp}model/MODEL_CARD.html",
            caption="../report/model_card.rst",
            category="Model",
            subcategory=report_subcategory,
            labels=report_label("item", "model card"),
        ),
    log:
        "results/{exp}logs/model_card.log",
    localrule: True
    conda:
        DATA_ENV
    params:
        settings=card_settings,
        experiment=run_label,
    message:
        "Writing the model card{params.experiment}"
    shell:
        "python -m camvidseg card --model {input.model:q} --onnx {input.onnx:q}"
        " --palette {input.palette:q} --manifest {input.manifest:q}"
        " --prepared {input.prepared:q} --history {input.history:q}"
        " --check {input.check:q} --cost {input.cost:q} --metrics {input.metrics:q}"
        " --settings {params.settings:q} --out {output.card:q} --out-html {output.html:q}"
        " > {log:q} 2>&1"
