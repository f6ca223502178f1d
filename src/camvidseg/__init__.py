"""CamVid semantic segmentation: the logic behind each Snakemake rule, one module per stage."""

# The release (pyproject.toml reads it; CHANGELOG.md names it; `camvidseg --version` prints it).
__version__ = "0.2.0"

# Label value that is neither trained nor scored (as in MMSegmentation/torchvision).
IGNORE_INDEX = 255
# Image files a dataset folder or a predict folder may hold.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
