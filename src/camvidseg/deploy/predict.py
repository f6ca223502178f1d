"""Segment every image in a folder with the trained model: color masks, overlays and panels
(image | prediction | overlay, with a legend of the classes found).

``--backend torch`` runs ``best.pth``; ``--backend onnx`` runs the exported ``model.onnx`` through
onnxruntime and imports no torch (nor OpenCV), so it works in the slim ``envs/deploy.yaml``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .. import IMAGE_SUFFIXES
from ..core import command
from ..core.errors import UserError, cli
from ..core.fileio import atomic_path, refuse_nonempty_folder
from ..core.progress import Progress
from ..core.settings import option
from ..data.colors import color_table, colorize, legend_entries, overlay
from ..data.images import checked_size, read_rgb
from ..data.palette import read_palette_of
from ..evaluation.panel import save_panel
from ..workflow.madeby import Record


def input_images(folder: Path) -> list[Path]:
    """The images to segment, checked before the model is loaded: each output pair is named
    after the stem, so ``x.png`` and ``x.jpg`` would write the same files (refused), and every
    header is checked for size (a decompression bomb is named, not decoded)."""
    if not folder.is_dir():
        raise UserError(f"predict.input_dir: {folder} is not a folder")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UserError(f"predict.input_dir: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    by_stem: dict[str, list[str]] = {}
    for path in images:
        by_stem.setdefault(path.stem, []).append(path.name)
    clashes = [names for names in by_stem.values() if len(names) > 1]
    if clashes:
        more = f" (and {len(clashes) - 1} more such group(s))" if len(clashes) > 1 else ""
        raise UserError(
            f"predict.input_dir: {' and '.join(clashes[0])} in {folder} would both be written "
            f"as {Path(clashes[0][0]).stem}_mask.png{more}; rename or move one"
        )
    for path in images:
        checked_size(path, "image")
    return images


def load_segmenter(backend: str, model_path: Path, device: str):
    """(segment an RGB array, the model's class names) with the backend; only torch's imports
    torch. Both backends get their images from the one decoder (images.read_rgb)."""
    if backend == "onnx":
        from .runtime import onnx_predict, open_session, session_classes

        session = open_session(model_path, device=device)
        return (lambda image: onnx_predict(session, image)), session_classes(session)
    # Imported after parsing: torch takes seconds to load and --help needs none of it.
    from ..core.device import resolve
    from ..evaluation.inference import predict_image
    from ..training.segmenter import load_trained, precision_line, trained_classes

    device = resolve(device, "--device")
    model, meta = load_trained(model_path, device)
    print(precision_line(model_path, meta), flush=True)
    return (lambda image: predict_image(model, image, device)), trained_classes(meta)


@cli
def main(argv: list[str] | None = None) -> None:
    parser = command.parser(__file__, __doc__)
    parser.add_argument(
        "--model", required=True, type=Path, help="best.pth (torch) or model.onnx (onnx)"
    )
    parser.add_argument("--backend", **option("predict.backend"))
    parser.add_argument("--palette", required=True, type=Path, help="palette.json")
    parser.add_argument(
        "--input-dir", required=True, type=Path, help="folder of images (.png, .jpg) to segment"
    )
    parser.add_argument("--alpha", **option("vis.alpha"))
    command.add_device(parser)
    # Outside results/: the workflow's predict rule owns results/predict.
    parser.add_argument(
        "--out", type=Path, default=Path("predictions"), help="folder to write (absent or empty)"
    )
    args = parser.parse_args(argv)
    images = input_images(args.input_dir)
    refuse_nonempty_folder(args.out)
    made = Record(__file__, args, [args.model, args.palette, args.input_dir], [args.out])
    segment, classes = load_segmenter(args.backend, args.model, args.device)
    palette = read_palette_of(args.palette, args.model, classes)
    colors = color_table(palette)
    with (
        atomic_path(args.out, is_dir=True) as tmp,
        Progress("predict", len(images), "images") as progress,
    ):
        for path in images:
            image = read_rgb(path)
            ids = segment(image)
            mask, blended = colorize(ids, colors), overlay(image, ids, colors, args.alpha)
            Image.fromarray(mask).save(tmp / f"{path.stem}_mask.png")
            Image.fromarray(blended).save(tmp / f"{path.stem}_overlay.png")
            save_panel(
                tmp / f"{path.stem}_panel.png",
                [("image", image), ("prediction", mask), ("overlay", blended)],
                legend_entries(palette, set(np.unique(ids))),
                path.name,
            )
            progress.advance()
    made.write()
    print(f"{len(images)} images segmented into {args.out}")


if __name__ == "__main__":
    main()
