# Stage 3b: label images -> class-index masks (palette PNGs), once, in parallel.
# Part of the data chain: a localrule (extract.smk says why).


rule convert_masks:
    input:
        code("convert"),
        manifest="results/data/dataset.json",
        palette="results/data/palette.json",
    output:
        directory("results/data/prepared"),
    log:
        "results/logs/convert_masks.log",
    benchmark:
        "results/benchmarks/convert_masks.tsv"
    localrule: True
    conda:
        DATA_ENV
    threads: 4
    params:
        strict=["--strict-colors"] if DATASET["strict_colors"] else [],
        cache="--cache-images" if DATASET["cache_images"] else "--no-cache-images",
    message:
        "Converting label images to class-index masks with {threads} processes"
    shell:
        "python -m camvidseg convert --manifest {input.manifest:q}"
        " --palette {input.palette:q} --threads {threads:q} {params.strict:q} {params.cache:q}"
        " --out {output:q} > {log:q} 2>&1"
