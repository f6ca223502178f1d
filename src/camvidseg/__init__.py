"""CamVid semantic segmentation: the logic behind each Snakemake rule, one module per stage."""

IGNORE_INDEX = (
    255  # label value that is neither trained nor scored (as in MMSegmentation/torchvision)
)
