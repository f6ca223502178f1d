"""Stage 6: pictures of the trained model's predictions in ``results/vis_data/``.

For a deterministic choice of images per split: the image, ground truth and prediction in the
dataset's colors, an alpha overlay, and a side-by-side panel (image | prediction | label) with a
legend of the classes present (and of the ignored area, where the label has one). Names are
``{split}_{stem}_{kind}.png``, so nothing collides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .. import IGNORE_INDEX
from ..core import command
from ..core.errors import cli
from ..core.fileio import atomic_path, read_json, refuse_nonempty_folder
from ..core.progress import Progress
from ..core.settings import option
from ..data.colors import color_table, colorize, legend_entries, overlay
from ..workflow.madeby import Record
from .panel import save_panel


def choose(count: int, wanted: int) -> list[int]:
    """``wanted`` indices spread evenly over ``count`` items (the same every run)."""
    if wanted <= 0 or count == 0:
        return []
    return sorted({int(i) for i in np.linspace(0, count - 1, min(wanted, count)).round()})


def draw(model, device: str, dataset, i: int, split: str, palette: dict, alpha: float, out: Path):
    """The pictures of item ``i`` of ``dataset`` (one split) in ``out``."""
    from .inference import predict_image

    colors = color_table(palette)
    image, label = dataset.load(i)
    pred = predict_image(model, image, device)
    stem = dataset.items[i]["stem"]
    pictures = {
        "image": image,
        "label": colorize(label, colors),
        "pred": colorize(pred, colors),
        "overlay": overlay(image, pred, colors, alpha),
    }
    for kind, array in pictures.items():
        Image.fromarray(array).save(out / f"{split}_{stem}_{kind}.png")
    valid = label != IGNORE_INDEX
    accuracy = float((pred[valid] == label[valid]).mean()) if valid.any() else float("nan")
    save_panel(
        out / f"{split}_{stem}_panel.png",
        [("image", image), ("prediction", pictures["pred"]), ("label", pictures["label"])],
        legend_entries(palette, set(np.unique(pred)) | set(np.unique(label))),
        f"{split} / {stem}: pixel accuracy {accuracy:.1%}",
    )


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
    from ..data.dataset import SegmentationDataset

    left_out = read_json(prepared / "index.json").get("left_out", {})
    chosen = []
    for split in splits:
        if split in left_out:
            print(f"{split}: no pictures: left out of the dataset: {left_out[split]}")
            continue
        dataset = SegmentationDataset(prepared, split)
        chosen += [(split, dataset, i) for i in choose(len(dataset), num_images)]
    with Progress("visualize", len(chosen), "images") as progress:
        for split, dataset, i in chosen:
            draw(model, device, dataset, i, split, palette, alpha, out)
            progress.advance()
    return len(chosen)


@cli
def main(argv: list[str] | None = None) -> None:
    parser = command.parser(__file__, __doc__)
    command.add_trained_model(parser)
    parser.add_argument("--splits", **option("vis.splits"))
    parser.add_argument("--num-images", **option("vis.num_images"))
    parser.add_argument("--alpha", **option("vis.alpha"))
    parser.add_argument("--out", required=True, type=Path, help="folder to write (absent or empty)")
    args = parser.parse_args(argv)
    refuse_nonempty_folder(args.out)
    made = Record(__file__, args, [args.model, args.prepared, args.palette], [args.out])

    from ..core.device import resolve
    from ..data.palette import read_palette_of
    from ..training.segmenter import load_trained, precision_line, trained_classes

    device = resolve(args.device, "--device")
    model, meta = load_trained(args.model, device)
    print(precision_line(args.model, meta), flush=True)
    palette = read_palette_of(args.palette, args.model, trained_classes(meta))
    with atomic_path(args.out, is_dir=True) as tmp:
        count = visualize(
            model,
            device,
            args.prepared,
            palette,
            args.splits,
            args.num_images,
            args.alpha,
            tmp,
        )
    made.write()
    print(f"{count} panels in {args.out}")


if __name__ == "__main__":
    main()
