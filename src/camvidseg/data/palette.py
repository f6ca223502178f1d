"""Stage 3: parse the dataset's palette into the classes the model trains on.

``class_dict.csv`` (columns name,r,g,b) of the CamVid archive, or the palette this project ships
for the SegNet layout, becomes ``palette.json``: the trained classes (contiguous ids, names,
colors), the ignore index, and a lookup from every source label value to a train id.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from .. import IGNORE_INDEX
from ..core import command
from ..core.errors import UserError, cli
from ..core.fileio import read_json, write_json
from ..core.settings import option
from ..workflow.madeby import Record

# The standard SegNet grouping of the 32 CamVid classes into 11 (the rest is ignored), so results
# compare with published CamVid tables. Colors are those of SegNet's own scripts.
CAMVID11_GROUPS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "Sky": ((128, 128, 128), ("Sky",)),
    "Building": ((128, 0, 0), ("Building", "Archway", "Bridge", "Tunnel", "Wall")),
    "Pole": ((192, 192, 128), ("Column_Pole", "TrafficCone")),
    "Road": ((128, 64, 128), ("Road", "LaneMkgsDriv", "LaneMkgsNonDriv")),
    "Sidewalk": ((60, 40, 222), ("Sidewalk", "ParkingBlock", "RoadShoulder")),
    "Tree": ((128, 128, 0), ("Tree", "VegetationMisc")),
    "SignSymbol": ((192, 128, 128), ("SignSymbol", "Misc_Text", "TrafficLight")),
    "Fence": ((64, 64, 128), ("Fence",)),
    "Car": ((64, 0, 128), ("Car", "SUVPickupTruck", "Truck_Bus", "Train", "OtherMoving")),
    "Pedestrian": ((64, 64, 0), ("Pedestrian", "Child", "CartLuggagePram", "Animal")),
    "Bicyclist": ((0, 128, 192), ("Bicyclist", "MotorcycleScooter")),
}

# The SegNet copy of CamVid stores class indices 0..10 and 11 for void.
SEGNET11_VOID_VALUE = 11
# Masks hold 8-bit train ids: 255 is the ignore index and 254 marks a color the palette does not
# know (convert's lookup), so ids 0..253 are all a mask can give trained classes.
UNKNOWN_ID = 254
MAX_CLASSES = UNKNOWN_ID


def read_class_dict(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """Read and validate ``class_dict.csv``; every problem is one line naming the file."""
    if not path.is_file():
        raise UserError(f"{path}: class_dict.csv not found")
    try:
        # utf-8-sig: spreadsheet programs often start a UTF-8 CSV with a byte-order mark.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}, "
            "perhaps Latin-1); save it as UTF-8"
        ) from None
    try:
        return _parse_class_dict(path, text)
    except csv.Error as err:  # an unbalanced quote that swallows the file, a NUL byte
        raise UserError(f"{path}: not valid CSV ({err})") from None


def _parse_class_dict(path: Path, text: str) -> list[tuple[str, tuple[int, int, int]]]:
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        missing = [c for c in ("name", "r", "g", "b") if c not in header]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)} (need name,r,g,b)")
        twice = [c for c in ("name", "r", "g", "b") if header.count(c) > 1]
        if twice:  # the reader would keep the last silently
            raise UserError(f"{path}: column(s) {', '.join(twice)} appear more than once")
        reader.fieldnames = header
        classes: list[tuple[str, tuple[int, int, int]]] = []
        names: set[str] = set()
        colors: dict[tuple[int, int, int], str] = {}
        for line_no, row in enumerate(reader, start=2):
            name = (row["name"] or "").strip()
            if not name:
                raise UserError(f"{path}:{line_no}: empty class name")
            if not name.isprintable():  # a newline or NUL would break legends, tables, logs
                raise UserError(f"{path}:{line_no}: class name {name!r} holds a control character")
            values = [str(row[c]).strip() for c in ("r", "g", "b")]
            # ASCII digits only: int() also reads "1_0" as 10, "+12", and digits of other scripts
            if not all(v.isascii() and v.isdigit() for v in values):
                raise UserError(f"{path}:{line_no}: color of {name!r} is not three integers")
            color = tuple(int(v) for v in values)
            if any(not 0 <= v <= 255 for v in color):
                raise UserError(f"{path}:{line_no}: color {color} of {name!r} is outside 0-255")
            if name in names:
                raise UserError(f"{path}:{line_no}: duplicate class name {name!r}")
            if color in colors:
                raise UserError(
                    f"{path}:{line_no}: color {color} of {name!r} is already used by "
                    f"{colors[color]!r}"
                )
            names.add(name)
            colors[color] = name
            classes.append((name, color))  # type: ignore[arg-type]
    if len(classes) < 2:
        raise UserError(f"{path}: needs at least 2 classes, found {len(classes)}")
    return classes


def build_rgb_palette(
    class_dict: list[tuple[str, tuple[int, int, int]]], grouping: str, ignore_classes: list[str]
) -> dict:
    """Trained classes and the color lookup for RGB label masks (the camvid32 layout)."""
    known = {name for name, _ in class_dict}
    unknown = [n for n in ignore_classes if n not in known]
    if unknown:
        raise UserError(f"dataset.ignore_classes: {', '.join(unknown)} not in class_dict.csv")
    if grouping == "camvid32":
        kept = [(n, c) for n, c in class_dict if n not in ignore_classes]
        if len(kept) < 2:  # nothing to tell apart: a model of no class fails to build
            raise UserError(
                f"dataset.ignore_classes: leaves {len(kept)} class(es) of class_dict.csv to "
                f"train ({', '.join(n for n, _ in kept) or 'none'}); at least 2 are needed"
            )
        classes = [{"id": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(kept)]
        train_id = {n: i for i, (n, _) in enumerate(kept)}
    elif grouping == "camvid11":
        missing = [g for g, (_, members) in CAMVID11_GROUPS.items() if not known & set(members)]
        if missing:
            raise UserError(
                f"dataset.classes: camvid11 needs CamVid class names; none found for {missing}"
            )
        classes, train_id = [], {}
        for i, (group, (color, members)) in enumerate(CAMVID11_GROUPS.items()):
            classes.append({"id": i, "name": group, "color": list(color)})
            train_id.update({m: i for m in members if m not in ignore_classes})
    else:
        raise UserError(f"dataset.classes: unknown grouping {grouping!r}")
    lookup = [
        {"value": list(c), "name": n, "train_id": train_id.get(n, IGNORE_INDEX)}
        for n, c in class_dict
    ]
    return {"encoding": "rgb", "classes": classes, "lookup": lookup}


def build_segnet_palette() -> dict:
    """The SegNet copy of CamVid: index labels 0..10, 11 = void."""
    classes = [
        {"id": i, "name": name, "color": list(color)}
        for i, (name, (color, _)) in enumerate(CAMVID11_GROUPS.items())
    ]
    lookup = [{"value": c["id"], "name": c["name"], "train_id": c["id"]} for c in classes]
    lookup.append({"value": SEGNET11_VOID_VALUE, "name": "Void", "train_id": IGNORE_INDEX})
    return {"encoding": "index", "classes": classes, "lookup": lookup}


def make_palette(manifest: dict, grouping: str, ignore_classes: list[str]) -> dict:
    if manifest["layout"] == "segnet11":
        palette = build_segnet_palette()
    else:
        class_dict = read_class_dict(Path(manifest["class_dict"]))
        palette = build_rgb_palette(class_dict, grouping, ignore_classes)
        check_class_count(palette, manifest["class_dict"])
    palette.update(layout=manifest["layout"], ignore_index=IGNORE_INDEX)
    return palette


def check_class_count(palette: dict, source: Path | str) -> None:
    """Refuse trained classes an 8-bit mask cannot hold apart from the reserved ids."""
    count = len(palette["classes"])
    if count > MAX_CLASSES or any(not 0 <= c["id"] < MAX_CLASSES for c in palette["classes"]):
        raise UserError(
            f"{source}: {count} classes to train, more than {MAX_CLASSES}, the most an 8-bit "
            f"mask holds (ids {UNKNOWN_ID} and {IGNORE_INDEX} are reserved); list the rest in "
            "dataset.ignore_classes"
        )


def class_names(palette: dict) -> list[str]:
    return [c["name"] for c in palette["classes"]]


def read_palette_of(path: Path, model: Path, classes: list[str] | int) -> dict:
    """palette.json, refused unless it holds the classes ``model`` was trained on (their names,
    or their number where the model file records only that): another run's palette would put
    the wrong names on colors, legends and scores, or fail deep inside scoring."""
    palette = read_json(path)
    named = class_names(palette)
    if (named if isinstance(classes, list) else len(named)) != classes:
        count = len(classes) if isinstance(classes, list) else classes
        raise UserError(
            f"{path}: its {len(named)} classes are not the {count} {model} was trained on; give "
            "the palette.json of the run that trained it (--palette)"
        )
    return palette


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command.parser(__file__, __doc__)
    parser.add_argument("--manifest", required=True, help="dataset.json from the extract stage")
    parser.add_argument("--classes", **option("dataset.classes"))
    parser.add_argument("--ignore-classes", **option("dataset.ignore_classes"))
    parser.add_argument("--out", required=True, help="palette.json to write")
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    made = Record(__file__, args, [args.manifest], [args.out])
    palette = make_palette(read_json(args.manifest), args.classes, args.ignore_classes)
    write_json(args.out, palette)
    made.write()
    names = ", ".join(class_names(palette))
    print(
        f"palette: {len(palette['classes'])} trained classes ({names}); ignore index {IGNORE_INDEX}"
    )


if __name__ == "__main__":
    main()
