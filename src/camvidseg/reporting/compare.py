"""Per-class IoU of two experiments side by side, with the difference (B - A).

``camvidseg compare A B`` reads ``results/experiments/<name>/metrics/<split>.json``; a name may also
be a run folder holding ``metrics/`` (``results`` is the base config's run).
"""

from __future__ import annotations

from pathlib import Path

from ..core import command
from ..core.errors import UserError, cli
from ..core.fileio import read_json


def metrics_file(run: str, root: Path, split: str) -> Path:
    folder = Path(run) if (Path(run) / "metrics").is_dir() else root / "experiments" / run
    path = folder / "metrics" / f"{split}.json"
    if not path.is_file():
        raise UserError(f"{path}: no {split} metrics for {run!r} (run snakemake first?)")
    return path


def iou_differences(a: dict, b: dict) -> list[tuple[str, float | None, float | None]]:
    """(class, IoU in A, IoU in B) for every class either run scored, in class order."""
    names_a = [c["class"] for c in a["per_class"]]
    names_b = [c["class"] for c in b["per_class"]]
    if names_a != names_b:
        raise UserError("the two runs were scored on different class lists; nothing to compare")
    pairs = zip(a["per_class"], b["per_class"], strict=True)
    return [(x["class"], x["IoU"], y["IoU"]) for x, y in pairs
            if x["IoU"] is not None or y["IoU"] is not None]  # fmt: skip


def fmt(value: float | None, sign: str = "") -> str:
    return f"{'-':>8}" if value is None else f"{value:{sign}8.4f}"


def lines(name_a: str, name_b: str, a: dict, b: dict) -> list[str]:
    rows = [*iou_differences(a, b), ("mIoU", a["mIoU"], b["mIoU"])]
    width = max(len(r[0]) for r in rows)
    out = [f"per-class IoU on {a['split']}: A = {name_a}, B = {name_b}",
           f"{'class':<{width}} {'A':>8} {'B':>8} {'B - A':>8}"]  # fmt: skip
    for name, x, y in rows:
        change = None if x is None or y is None else y - x
        out.append(f"{name:<{width}} {fmt(x)} {fmt(y)} {fmt(change, '+')}")
    return out


@cli
def main(argv: list[str] | None = None) -> None:
    p = command.parser(__file__, __doc__)
    p.add_argument("a", help="experiment name (or run folder)")
    p.add_argument("b", help="experiment name (or run folder)")
    p.add_argument("--split", default="val", help="which split's metrics to compare")
    p.add_argument("--results", default=Path("results"), type=Path, help="the results folder")
    args = p.parse_args(argv)
    a = read_json(metrics_file(args.a, args.results, args.split))
    b = read_json(metrics_file(args.b, args.results, args.split))
    print("\n".join(lines(args.a, args.b, a, b)))


if __name__ == "__main__":
    main()
