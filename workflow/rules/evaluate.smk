# Stage 5: per-class IoU / mIoU of the trained model on a split, at full resolution, with the
# configured inference (eval.mode whole/slide, eval.tta flip/scales).


rule evaluate:
    input:
        code("evaluate"),
        model="results/model/best.pth",
        prepared="results/data/prepared",
        palette="results/data/palette.json",
    output:
        json="results/metrics/{split}.json",
        csv=report(
            "results/metrics/{split}_per_class.csv",
            caption="../report/per_class.rst",
            category="Metrics",
            labels={"item": "{split} · per-class scores (CSV)"},
        ),
    log:
        "results/logs/evaluate_{split}.log",
    benchmark:
        "results/benchmarks/evaluate_{split}.tsv"
    conda:
        DATA_ENV
    resources:
        **INFER_GPU_RESOURCES,
    params:
        lease=gpus_to_lease,
        device=TRAIN["device"],
        mode=eval_mode_flags(),
    message:
        "Evaluating the trained model on the {wildcards.split} split"
    shell:
        "python -m camvidseg.lease --gpus {params.lease:q} -- python -m camvidseg.evaluate"
        " --model {input.model} --prepared {input.prepared}"
        " --palette {input.palette} --split {wildcards.split} --device {params.device}"
        " {params.mode:q}"
        " --out-json {output.json} --out-csv {output.csv} > {log} 2>&1"
