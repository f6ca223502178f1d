# Stage 3: class_dict.csv (or the SegNet palette) -> palette.json with ids, names and colors.
# Part of the data chain: a localrule (extract.smk says why).


rule palette:
    input:
        code("palette"),
        manifest="results/data/dataset.json",
    output:
        "results/data/palette.json",
    log:
        "results/logs/palette.log",
    localrule: True
    conda:
        DATA_ENV
    params:
        classes=lookup(within=config, dpath="dataset/classes"),
        ignore=lookup(within=config, dpath="dataset/ignore_classes"),
    message:
        "Parsing the palette ({params.classes}, ignoring {params.ignore})"
    shell:
        "python -m camvidseg palette --manifest {input.manifest:q}"
        " --classes {params.classes:q} --ignore-classes {params.ignore:q}"
        " --out {output:q} > {log:q} 2>&1"
