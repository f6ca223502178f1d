"""The embedded default dataset: procedural street scenes in the exact layout of the CamVid archive.

``train/ train_labels/ val/ val_labels/ test/ test_labels/ class_dict.csv`` with the 32 CamVid
classes and colors, label files ``<stem>_L.png``, packed as a byte-for-byte reproducible .tar.gz.
The scenes (sky, buildings, trees, road with lane markings, sidewalks, cars, poles with signs,
pedestrians, fences) are drawn in label space first, then rendered with class-typical colors,
shading and noise, so a segmentation model has something real to learn.
"""

from __future__ import annotations

import argparse
import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..core import command
from ..core.errors import cli
from ..core.fileio import atomic_path
from ..core.settings import option
from ..workflow.madeby import Record

CAMVID32 = [
    ("Animal", (64, 128, 64)),
    ("Archway", (192, 0, 128)),
    ("Bicyclist", (0, 128, 192)),
    ("Bridge", (0, 128, 64)),
    ("Building", (128, 0, 0)),
    ("Car", (64, 0, 128)),
    ("CartLuggagePram", (64, 0, 192)),
    ("Child", (192, 128, 64)),
    ("Column_Pole", (192, 192, 128)),
    ("Fence", (64, 64, 128)),
    ("LaneMkgsDriv", (128, 0, 192)),
    ("LaneMkgsNonDriv", (192, 0, 64)),
    ("Misc_Text", (128, 128, 64)),
    ("MotorcycleScooter", (192, 0, 192)),
    ("OtherMoving", (128, 64, 64)),
    ("ParkingBlock", (64, 192, 128)),
    ("Pedestrian", (64, 64, 0)),
    ("Road", (128, 64, 128)),
    ("RoadShoulder", (128, 128, 192)),
    ("Sidewalk", (0, 0, 192)),
    ("SignSymbol", (192, 128, 128)),
    ("Sky", (128, 128, 128)),
    ("SUVPickupTruck", (64, 128, 192)),
    ("TrafficCone", (0, 0, 64)),
    ("TrafficLight", (0, 64, 64)),
    ("Train", (192, 64, 128)),
    ("Tree", (128, 128, 0)),
    ("Truck_Bus", (192, 128, 192)),
    ("Tunnel", (64, 0, 64)),
    ("VegetationMisc", (192, 192, 0)),
    ("Void", (0, 0, 0)),
    ("Wall", (64, 192, 0)),
]

# What each class looks like in the photo (not its label color).
APPEARANCE = {
    "Sky": (150, 190, 235), "Building": (150, 110, 90), "Wall": (200, 195, 180),
    "Tree": (50, 110, 40), "Road": (85, 85, 90), "LaneMkgsDriv": (235, 235, 225),
    "Sidewalk": (175, 160, 140), "Car": (170, 30, 35), "Column_Pole": (40, 40, 45),
    "SignSymbol": (240, 200, 20), "Pedestrian": (30, 60, 150), "Fence": (120, 80, 40),
    "Void": (0, 0, 0),
}  # fmt: skip

IDS = {name: i for i, (name, _) in enumerate(CAMVID32)}  # class name -> index into CAMVID32


def draw_scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A street scene as a (H, W) array of class names' indices into CAMVID32. The parts are
    drawn in this order (later ones cover earlier ones), each from the same generator."""
    label = np.full((height, width), IDS["Sky"], dtype=np.uint8)
    horizon = int(height * rng.uniform(0.38, 0.5))
    draw_skyline(rng, label, horizon)
    vanish_x = draw_ground(rng, label, horizon)
    draw_cars(rng, label, horizon, vanish_x)
    draw_poles(rng, label, horizon, vanish_x)
    draw_pedestrians(rng, label, horizon, vanish_x)
    label[-max(height // 40, 1) :, :] = IDS["Void"]  # the car bonnet edge CamVid marks as void
    return label


def draw_skyline(rng: np.random.Generator, label: np.ndarray, horizon: int) -> None:
    """Building blocks and walls up to the horizon, tree crowns standing on it."""
    height, width = label.shape
    yy, xx = np.mgrid[0:height, 0:width]
    x = 0
    while x < width:  # building blocks of varying height, with gaps of sky or a wall
        w = int(width * rng.uniform(0.12, 0.3))
        top = int(horizon * rng.uniform(0.05, 0.7))
        kind = "Building" if rng.random() < 0.8 else "Wall"
        if rng.random() < 0.85:
            label[top:horizon, x : x + w] = IDS[kind]
        x += w
    for _ in range(rng.integers(1, 4)):  # tree crowns standing on the horizon
        cx, cy = rng.integers(0, width), horizon - rng.integers(height // 12, height // 5)
        ry, rx = rng.integers(height // 10, height // 5), rng.integers(width // 14, width // 7)
        label[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = IDS["Tree"]
        label[cy:horizon, max(cx - 2, 0) : cx + 2] = IDS["Tree"]


def draw_ground(rng: np.random.Generator, label: np.ndarray, horizon: int) -> float:
    """Road as a trapezoid to the vanishing point (returned), lane markings, sidewalks either
    side, perhaps a fence along the far sidewalk edge."""
    height, width = label.shape
    yy, xx = np.mgrid[0:height, 0:width]
    vanish_x = width * rng.uniform(0.35, 0.65)
    below = yy >= horizon
    t = (yy - horizon) / max(height - horizon, 1)
    half_road = width * (0.04 + 0.55 * t)
    label[below] = IDS["Sidewalk"]
    road = below & (np.abs(xx - vanish_x) <= half_road)
    label[road] = IDS["Road"]
    dash = (np.abs(xx - vanish_x) <= 1 + 2.5 * t) & ((yy // max(height // 14, 2)) % 2 == 0)
    label[road & dash & (t > 0.1)] = IDS["LaneMkgsDriv"]
    if rng.random() < 0.6:  # fence along the far sidewalk edge
        fx = int(rng.integers(0, width // 2))
        fence_h = max(height // 16, 2)
        label[horizon - fence_h : horizon + 1, fx : fx + width // 3] = IDS["Fence"]
    return vanish_x


def draw_cars(rng: np.random.Generator, label: np.ndarray, horizon: int, vanish_x: float) -> None:
    """Cars on the road, larger when nearer."""
    height, width = label.shape
    for _ in range(rng.integers(1, 4)):
        ty = rng.uniform(0.25, 0.85)
        cy = int(horizon + ty * (height - horizon))
        ch, cw = int(height * (0.06 + 0.18 * ty)), int(width * (0.1 + 0.25 * ty))
        cx = int(vanish_x + rng.uniform(-0.6, 0.3) * width * (0.04 + 0.55 * ty))
        label[max(cy - ch, 0) : cy, max(cx, 0) : max(cx + cw, 0)] = IDS["Car"]


def draw_poles(rng: np.random.Generator, label: np.ndarray, horizon: int, vanish_x: float) -> None:
    """Poles with a sign on the sidewalks, one side each (or none)."""
    height, width = label.shape
    for side in (-1, 1):
        if rng.random() < 0.8:
            ty = rng.uniform(0.2, 0.7)
            base = int(horizon + ty * (height - horizon))
            px = int(vanish_x + side * (width * (0.04 + 0.55 * ty) + width * 0.05))
            if 0 <= px < width - 3:
                pw, ph = max(2, int(width * 0.012 * (1 + ty))), int(height * (0.3 + 0.3 * ty))
                label[max(base - ph, 0) : base, px : px + pw] = IDS["Column_Pole"]
                s = max(4, int(width * 0.04 * (1 + ty)))
                top = max(base - ph, 0)
                label[top : top + s, max(px - s // 2, 0) : px + s // 2 + pw] = IDS["SignSymbol"]


def draw_pedestrians(
    rng: np.random.Generator, label: np.ndarray, horizon: int, vanish_x: float
) -> None:
    """Pedestrians on the sidewalks, as upright ellipses."""
    height, width = label.shape
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(rng.integers(0, 3)):
        ty = rng.uniform(0.3, 0.9)
        base = int(horizon + ty * (height - horizon))
        side = rng.choice([-1, 1])
        px = int(vanish_x + side * (width * (0.04 + 0.55 * ty) + width * rng.uniform(0.02, 0.2)))
        ph, pw = int(height * (0.12 + 0.2 * ty)), max(3, int(width * 0.03 * (1 + ty)))
        cy, cx = base - ph // 2, px
        body = ((yy - cy) / (ph / 2)) ** 2 + ((xx - cx) / (pw / 2)) ** 2 <= 1
        label[body] = IDS["Pedestrian"]


def render(rng: np.random.Generator, label: np.ndarray) -> np.ndarray:
    """Photo-like RGB for a label map: class colors, per-object shading, texture and noise."""
    height, width = label.shape
    image = np.zeros((height, width, 3), dtype=np.float32)
    for i, (name, _) in enumerate(CAMVID32):
        mask = label == i
        if mask.any():
            base = np.array(APPEARANCE.get(name, (128, 128, 128)), dtype=np.float32)
            image[mask] = base * rng.uniform(0.8, 1.2)
    yy, xx = np.mgrid[0:height, 0:width]
    windows = ((yy // 5) % 3 == 0) & ((xx // 4) % 3 == 0)
    building = np.isin(label, [4, 31])
    image[building & windows] *= 0.55
    image *= (0.85 + 0.3 * (yy / height))[..., None]  # light falls off towards the top
    image += rng.normal(0, 9, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def label_to_rgb(label: np.ndarray) -> np.ndarray:
    table = np.array([c for _, c in CAMVID32], dtype=np.uint8)
    return table[label]


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def build_sample(
    out: Path, sizes: dict[str, int], height: int, width: int, seed: int, top: str = "CamVid"
) -> None:
    """Write the sample archive; the same arguments always give the same bytes."""
    members: dict[str, bytes] = {}
    csv_lines = ["name,r,g,b"] + [f"{n},{r},{g},{b}" for n, (r, g, b) in CAMVID32]
    members[f"{top}/class_dict.csv"] = ("\n".join(csv_lines) + "\n").encode()
    for split_no, (split, count) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, split_no])
        for i in range(count):
            stem = f"0016E5_{split_no}{i:04d}"
            label = draw_scene(rng, height, width)
            members[f"{top}/{split}/{stem}.png"] = png_bytes(render(rng, label))
            members[f"{top}/{split}_labels/{stem}_L.png"] = png_bytes(label_to_rgb(label))
    with (
        atomic_path(out) as tmp,
        tmp.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        dirs = sorted({str(Path(m).parent) for m in members})
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(members[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(members[name]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command.parser(__file__, __doc__)
    parser.add_argument("--out", required=True, help="archive to write (.tar.gz)")
    for key in ("train", "val", "test", "height", "width", "seed"):
        parser.add_argument(f"--{key}", **option(f"dataset.sample.{key}"))
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    made = Record(__file__, args, [], [args.out])
    sizes = {"train": args.train, "val": args.val, "test": args.test}
    build_sample(Path(args.out), sizes, args.height, args.width, args.seed)
    made.write()
    print(f"sample: {sizes} images of {args.height}x{args.width} -> {args.out}")


if __name__ == "__main__":
    main()
