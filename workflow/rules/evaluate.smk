# Stage 5: per-class IoU / mIoU of the trained model on a split, at full resolution, with the
# configured inference (eval.mode whole/slide, eval.tta flip/scales).


rule evaluate:
    input:
        code("evaluate"),
        model="results/{exp}model/best.pth",
        prepared="results/data/prepared",
        palette="results/data/palette.json",
    output:
        json="results/{exp}metrics/{split}.json",
        csv=report(
            "results/{exp}metrics/{split}_per_class.csv",
            caption="../report/per_class.rst",
            category="Metrics",
            subcategory=report_subcategory,
            labels=report_label("item", "{split} · per-class scores (CSV)"),
        ),
    log:
        "results/{exp}logs/evaluate_{split}.log",
    benchmark:
        "results/{exp}benchmarks/evaluate_{split}.tsv"
    conda:
        DATA_ENV
    resources:
        gpu=inference_gpu_request,
        gpu_slot=inference_gpu_request,
    params:
        lease=gpus_to_lease,
        device=setting("train.device"),
        mode=eval_mode_flags,
        experiment=run_label,
    message:
        "Evaluating the trained model on the {wildcards.split} split{params.experiment}"
    shell:
        "python -m camvidseg lease --gpus {params.lease:q} -- python -m camvidseg evaluate"
        " --model {input.model:q} --prepared {input.prepared:q}"
        " --palette {input.palette:q} --split {wildcards.split:q} --device {params.device:q}"
        " {params.mode:q} --out-json {output.json:q} --out-csv {output.csv:q} > {log:q} 2>&1"
