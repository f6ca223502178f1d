# Stage 2: extract the archive safely (or index a folder in place) and check the layout.
# The data chain (this, palette, convert_masks) is made of localrules: it runs once per dataset, in
# seconds to a minute of mostly I/O (all 701 CamVid masks convert in ~13 s on 2 cores), so on a
# cluster it runs where Snakemake runs (profiles/slurm caps that at local-cores) instead of
# waiting in the queue for a job of its own before training can be submitted.


if LOCAL_FOLDER:

    rule index_dataset:
        input:
            code("extract"),
            folder=DATASET["path"],
        output:
            "results/data/dataset.json",
        log:
            "results/logs/extract.log",
        localrule: True
        conda:
            DATA_ENV
        params:
            layout=lookup(within=config, dpath="dataset/layout"),
            expect=EXPECT_FULL,
            content_id=DATASET_CONTENT_ID,
        message:
            "Checking the dataset folder {input.folder} in place (nothing is copied)"
        shell:
            "python -m camvidseg extract --directory {input.folder:q}"
            " --layout {params.layout:q} {params.expect:q} --content-id {params.content_id:q}"
            " --manifest {output:q} > {log:q} 2>&1"

else:

    rule extract:
        input:
            code("extract"),
            archive=LOCAL_ARCHIVE or [plan.archive_name(DATASET)],
        output:
            manifest="results/data/dataset.json",
            tree=directory("results/data/extracted"),
        log:
            "results/logs/extract.log",
        localrule: True
        conda:
            DATA_ENV
        params:
            layout=lookup(within=config, dpath="dataset/layout"),
            expect=EXPECT_FULL,
            max_ratio=lookup(within=config, dpath="dataset/max_unpack_ratio"),
            max_gib=lookup(within=config, dpath="dataset/max_unpack_gib"),
            content_id=DATASET_CONTENT_ID,
        message:
            "Extracting {input.archive[0]} safely and checking the layout"
        shell:
            "python -m camvidseg extract --archive {input.archive:q} --dest {output.tree:q}"
            " --layout {params.layout:q} {params.expect:q} --content-id {params.content_id:q}"
            " --manifest {output.manifest:q}"
            " --max-unpack-ratio {params.max_ratio:q} --max-unpack-gib {params.max_gib:q}"
            " > {log:q} 2>&1"
