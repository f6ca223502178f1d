"""Stage 6: pictures of the trained model's predictions in ``results/vis_data/``.

For a deterministic choice of images per split: the image, ground truth and prediction in the
dataset's colors, an alpha overlay, and a side-by-side panel (image | prediction | label) with a
legend of the classes present. Names are ``{split}_{stem}_{kind}.png``, so nothing collides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from . import IGNORE_INDEX, command
from .errors import cli
from .fileio import atomic_path, read_json
from .palette import color_table, colorize, overlay
from .settings import option


def choose(count: int, wanted: int) -> list[int]:
    """``wanted`` indices spread evenly over ``count`` items (the same every run)."""
    if wanted <= 0 or count == 0:
        return []
    return sorted({int(i) for i in np.linspace(0, count - 1, min(wanted, count)).round()})


def save_panel(path: Path, pictures: dict, present: set, palette: dict, title: str) -> None:
    """image | prediction | label (``pictures``' RGB arrays), legend of the ``present`` ids."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    height, width = pictures["image"].shape[:2]
    fig, axes = plt.subplots(1, 3, figsize=(3 * 4, 4 * height / width + 1.2), dpi=100)
    for ax, kind, name in zip(
        axes, ("image", "pred", "label"), ("image", "prediction", "label"), strict=True
    ):
        ax.imshow(pictures[kind], interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    handles = [
        Patch(color=np.array(c["color"]) / 255, label=c["name"])
        for c in palette["classes"]
        if c["id"] in present
    ]
    fig.legend(
        handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False
    )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    fig.savefig(path)
    plt.close(fig)


def visualize(
    model,
    device: str,
    prepared: Path,
    palette: dict,
    splits: list[str],
    num_images: int,
    alpha: float,
    out: Path,
) -> int:
    from .dataset import SegmentationDataset
    from .inference import predict_image

    colors = color_table(palette)
    written = 0
    for split in splits:
        dataset = SegmentationDataset(prepared, split)
        for i in choose(len(dataset), num_images):
            image, label = dataset.load(i)
            pred = predict_image(model, image, device)
            stem = f"{split}_{dataset.items[i]['stem']}"
            pictures = {
                "image": image,
                "label": colorize(label, colors),
                "pred": colorize(pred, colors),
                "overlay": overlay(image, pred, colors, alpha),
            }
            for kind, array in pictures.items():
                Image.fromarray(array).save(out / f"{stem}_{kind}.png")
            valid = label != IGNORE_INDEX
            accuracy = float((pred[valid] == label[valid]).mean()) if valid.any() else float("nan")
            present = (set(np.unique(pred)) | set(np.unique(label))) - {IGNORE_INDEX}
            save_panel(
                out / f"{stem}_panel.png",
                pictures,
                present,
                palette,
                f"{split} / {dataset.items[i]['stem']}: pixel accuracy {accuracy:.1%}",
            )
            written += 1
            print(f"visualized {stem}", flush=True)
    return written


@cli
def main(argv: list[str] | None = None) -> None:
    parser = command.parser(__file__, __doc__)
    parser.add_argument("--model", required=True, type=Path, help="best.pth from training")
    parser.add_argument(
        "--prepared", required=True, type=Path, help="folder from the convert stage"
    )
    parser.add_argument("--palette", required=True, type=Path, help="palette.json")
    parser.add_argument("--splits", **option("vis.splits"))
    parser.add_argument("--num-images", **option("vis.num_images"))
    parser.add_argument("--alpha", **option("vis.alpha"))
    command.add_device(parser)
    parser.add_argument("--out", required=True, type=Path, help="folder to write (absent or empty)")
    args = parser.parse_args(argv)

    from .inference import pick_device
    from .model import load_trained

    device = pick_device(args.device)
    model, _ = load_trained(args.model, device)
    with atomic_path(args.out, is_dir=True) as tmp:
        count = visualize(
            model,
            device,
            args.prepared,
            read_json(args.palette),
            args.splits,
            args.num_images,
            args.alpha,
            tmp,
        )
    print(f"{count} panels in {args.out}")


if __name__ == "__main__":
    main()
