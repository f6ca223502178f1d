# The workflow's entry is workflow/Snakefile (the Snakemake catalog's layout).
include: "workflow/Snakefile"
