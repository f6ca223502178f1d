"""Segment every image in a folder with the trained model: color masks and overlays."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from . import IMAGE_SUFFIXES, command
from .errors import UserError, cli
from .fileio import atomic_path, read_json
from .palette import color_table, colorize, overlay
from .settings import describe, option


@cli
def main(argv: list[str] | None = None) -> None:
    parser = command.parser(__file__, __doc__)
    parser.add_argument("--model", required=True, type=Path, help="best.pth from training")
    parser.add_argument("--palette", required=True, type=Path, help="palette.json")
    parser.add_argument("--input-dir", required=True, type=Path, help=describe("predict.input_dir"))
    parser.add_argument("--alpha", **option("vis.alpha"))
    command.add_device(parser)
    parser.add_argument("--out", required=True, type=Path, help="folder to write (absent or empty)")
    args = parser.parse_args(argv)

    # Imported after parsing: torch takes seconds to load and --help needs none of it.
    from .dataset import read_image
    from .inference import pick_device, predict_image
    from .model import load_trained

    if not args.input_dir.is_dir():
        raise UserError(f"predict.input_dir: {args.input_dir} is not a folder")
    images = sorted(p for p in args.input_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UserError(
            f"predict.input_dir: no images ({', '.join(IMAGE_SUFFIXES)}) in {args.input_dir}"
        )
    device = pick_device(args.device)
    model, _ = load_trained(args.model, device)
    colors = color_table(read_json(args.palette))
    with atomic_path(args.out, is_dir=True) as tmp:
        for n, path in enumerate(images, start=1):
            image = read_image(str(path))
            ids = predict_image(model, image, device)
            Image.fromarray(colorize(ids, colors)).save(tmp / f"{path.stem}_mask.png")
            Image.fromarray(overlay(image, ids, colors, args.alpha)).save(
                tmp / f"{path.stem}_overlay.png"
            )
            print(f"predicted {n}/{len(images)}: {path.name}", flush=True)
    print(f"{len(images)} images segmented into {args.out}")


if __name__ == "__main__":
    main()
