# CamVid semantic segmentation: archive -> extract -> palette -> masks -> train -> evaluate -> visualize.
# Thin on purpose: config validation and rule files; the logic lives in src/camvidseg/.
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config/config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/obtain.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/palette.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/visualize.smk"
include: "workflow/rules/plots.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/runcost.smk"
include: "workflow/rules/provenance.smk"


wildcard_constraints:
    split="|".join(SPLITS),


rule all:
    default_target: True
    input:
        FINAL_OUTPUTS,
        rules.provenance.output.record,
