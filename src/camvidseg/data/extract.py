"""Stage 2: extract the archive safely and check the dataset layout.

Refuses, naming the member, archive members that could land outside the target (absolute paths,
``..``, any link: CamVid has none), device files, and archives whose members declare more bytes
than the unpack limits or the free disk allow. Extracts into a fresh folder. Then finds the
dataset root, recognises the layout (the CamVid archive's RGB masks with ``class_dict.csv``, or
the SegNet copy's index masks in ``*annot/``), pairs every image with its label by file stem,
checks every picture's header (size limit), and writes ``dataset.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import os
import stat
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .. import IMAGE_SUFFIXES
from ..core import command
from ..core.errors import UserError, cli
from ..core.fileio import atomic_path, write_json
from ..core.progress import Progress
from ..core.settings import default, option
from ..workflow.madeby import Record
from .budget import UnpackBudget, shown_name
from .identity import HashCache, content_id, tree_content_id
from .images import checked_size

SPLITS = ("train", "val", "test")
# Training needs train and val; many copies ship no test labels (the SegNet train+val copy,
# Cityscapes-like sets whose test labels are withheld): that split is then left out, said so.
OPTIONAL_SPLITS = ("test",)
CAMVID_SIZES = {"train": 367, "val": 101, "test": 233}
# What a member's own path can make the file system refuse, and why. Other write errors (full
# disk, no permission) are the destination's, and name it (core.errors).
MEMBER_PATH_ERRORS = {
    errno.ENOTDIR: "an earlier member is a file where this one needs a folder",
    errno.EISDIR: "a folder of this name is already there",
    errno.EEXIST: "a folder of this name is already there",
    errno.ENAMETOOLONG: "its name is too long for the file system",
}
LAYOUT_LABEL_DIR = {"camvid32": "{split}_labels", "segnet11": "{split}annot"}


class _ConcatenatedParts(io.RawIOBase):
    """Read ``archive.00, archive.01, ...`` as one stream, as ``cat`` would."""

    def __init__(self, paths: list[Path], progress: Progress | None = None):
        self._paths = list(paths)
        self._current = None
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self._current is None:
                if not self._paths:
                    return 0
                self._current = self._paths.pop(0).open("rb")
            n = self._current.readinto(buffer)
            if n:
                if self._progress is not None:
                    self._progress.advance(n)
                return n
            self._current.close()
            self._current = None

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
        super().close()


NOT_UTF8_HINT = "rename it (e.g. with convmv): every later stage writes names as UTF-8"


def _check_name_encoding(name: str, where: Path, what: str) -> None:
    """Refuse a name whose bytes are not UTF-8 (Python holds them as surrogate escapes)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        raise UserError(f"{where}: refusing {what} {shown_name(name)}: its name is not UTF-8; "
                        f"{NOT_UTF8_HINT}") from None  # fmt: skip


def _check_member_path(name: str, archive: Path) -> None:
    _check_name_encoding(name, archive, "member")
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        raise UserError(f"{archive}: refusing member {shown_name(name)} with an absolute path")
    if ".." in path.parts:
        raise UserError(f"{archive}: refusing member {shown_name(name)} that climbs out with '..'")


def _refuse_links_and_specials(name: str, kind: str, archive: Path) -> None:
    """CamVid archives hold only files and folders. Links are refused outright instead of being
    resolved: Python's own link checks were bypassed (CVE-2025-4517), so none is trusted."""
    if kind in ("symlink", "hard link"):
        raise UserError(
            f"{archive}: refusing {kind} member {shown_name(name)} "
            "(a dataset archive holds no links)"
        )
    if kind != "file":
        raise UserError(f"{archive}: refusing special file member {shown_name(name)}")


@contextlib.contextmanager
def _member_path_refused(name: str, archive: Path):
    try:
        yield
    except (OverflowError, OSError) as err:
        if isinstance(err, OverflowError):  # tarfile sets the member's time past what fits
            reason = "its modification time is out of range"
        elif err.errno in MEMBER_PATH_ERRORS:
            reason = MEMBER_PATH_ERRORS[err.errno]
        else:
            raise
        raise UserError(f"{archive}: refusing member {shown_name(name)}: {reason}") from None


@contextlib.contextmanager
def _named_in_archive(archive: Path, unpacked: Path):
    """A refusal of what the archive holds names it as ``archive/member``, not as the temporary
    folder it was unpacked into (gone by the time the line is read)."""
    try:
        yield
    except UserError as err:
        raise UserError(str(err).replace(str(unpacked), str(archive))) from None


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hard link"
    return "file" if member.isfile() or member.isdir() else "special"


def _extract_tar(parts: list[Path], dest: Path, budget: UnpackBudget) -> int:
    count = 0
    size = sum(part.stat().st_size for part in parts)
    with (
        Progress("extract", size, "bytes") as progress,
        _ConcatenatedParts(parts, progress) as raw,
        tarfile.open(fileobj=raw, mode="r|*") as tar,
    ):
        for member in tar:
            _check_member_path(member.name, parts[0])
            _refuse_links_and_specials(member.name, _tar_kind(member), parts[0])
            budget.add(member.name, member.size)
            with _member_path_refused(member.name, parts[0]):
                tar.extract(member, dest, filter="data")
            count += 1
    return count


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """What a zip member is. Only type bits that say link/device/fifo/socket make it special:
    many tools write permission bits alone (zipfile.writestr's 0o600) or DOS attributes."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_IFMT(mode) in (0, stat.S_IFREG, stat.S_IFDIR):
        return "file"
    return "special"


def _extract_zip(archive: Path, dest: Path, budget: UnpackBudget) -> int:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            _check_member_path(info.filename, archive)
            _refuse_links_and_specials(info.filename, _zip_kind(info), archive)
            budget.add(info.filename, info.file_size)
        bad = zf.testzip()
        if bad is not None:
            raise UserError(f"{archive}: member {bad!r} is corrupt (CRC mismatch)")
        members = zf.infolist()
        with Progress("extract", len(members), "members") as progress:
            for info in members:
                with _member_path_refused(info.filename, archive):
                    zf.extract(info, dest)
                progress.advance()
        return len(members)


def extract_archive(
    parts: list[Path],
    dest: Path,
    max_ratio: float = default("dataset.max_unpack_ratio"),
    max_gib: float = default("dataset.max_unpack_gib"),
) -> int:
    """Extract ``parts`` (one archive, possibly split) into the fresh, empty folder ``dest``;
    returns the member count."""
    for part in parts:
        if not part.is_file():
            raise UserError(f"{part}: archive not found")
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise UserError(f"{dest}: extraction needs a fresh, empty folder")
    budget = UnpackBudget(parts, dest, max_ratio, max_gib)
    try:
        if zipfile.is_zipfile(parts[0]):
            if len(parts) > 1:
                raise UserError(f"{parts[0]}: multi-part zip archives are not supported")
            return _extract_zip(parts[0], dest, budget)
        return _extract_tar(parts, dest, budget)
    except UnicodeDecodeError as err:  # a zip that flags its names as UTF-8, wrongly
        raise UserError(
            f"{parts[0]}: refusing the archive: a member name is not UTF-8 although the archive "
            f"says it is (bytes {err.object[err.start : err.end]!r}); {NOT_UTF8_HINT}"
        ) from None
    except (RuntimeError, NotImplementedError) as err:  # zipfile: encrypted, or a method it lacks
        raise UserError(
            f"{parts[0]}: cannot read the archive ({err}); repack it without a password, "
            "with deflate compression"
        ) from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as err:
        if isinstance(err, OSError) and not isinstance(err, EOFError) and err.errno is not None:
            raise
        raise UserError(f"{parts[0]}: archive is truncated or corrupt ({err})") from None


def find_root(top: Path) -> tuple[Path, str]:
    """The folder holding the splits, and its layout, searched a few levels down."""
    candidates = [top, *sorted(p for p in top.glob("*") if p.is_dir())]
    candidates += sorted(p for p in top.glob("*/*") if p.is_dir())
    candidates += sorted(p for p in top.glob("*/*/*") if p.is_dir())
    for folder in candidates:
        if (folder / "class_dict.csv").is_file() or (folder / "train_labels").is_dir():
            return folder, "camvid32"
        if (folder / "trainannot").is_dir():
            return folder, "segnet11"
    raise UserError(
        f"{top}: no CamVid layout found (expected class_dict.csv with train/ train_labels/ ..., "
        "or the SegNet copy's train/ trainannot/ ...)"
    )


def _names(paths: list[str], limit: int = 5) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def pair_split(root: Path, split: str, layout: str) -> list[dict]:
    image_dir = root / split
    label_dir = root / LAYOUT_LABEL_DIR[layout].format(split=split)
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise UserError(f"{folder}: split folder missing")
        for entry in folder.iterdir():
            _check_name_encoding(entry.name, folder, "file")
    images = {}
    for p in sorted(image_dir.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in images:  # one would be trained on, the other silently not
                raise UserError(
                    f"{image_dir}: {images[p.stem].name} and {p.name} are one image twice; "
                    "keep one"
                )
            images[p.stem] = p
    label_suffix = "_L" if layout == "camvid32" else ""
    labels, not_png = {}, []
    for p in label_dir.iterdir():
        if p.suffix.lower() == ".png" and p.stem.endswith(label_suffix):
            labels[p.stem[: len(p.stem) - len(label_suffix)]] = p
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            not_png.append(p.name)
    no_label = sorted(images[s].name for s in images.keys() - labels.keys())
    no_image = sorted(labels[s].name for s in labels.keys() - images.keys())
    problems = []
    if no_label:
        problems.append(f"{len(no_label)} image(s) without label: {_names(no_label)}")
    if no_label and not_png:  # a JPEG's compression blurs class colors into ones of no class
        problems.append(f"labels must be PNG, found {_names(sorted(not_png))} in {label_dir}")
    if no_image:
        problems.append(f"{len(no_image)} label(s) without image: {_names(no_image)}")
    if problems:
        raise UserError(f"{image_dir}: " + "; ".join(problems))
    if not images:
        raise UserError(f"{image_dir}: split is empty")
    for stem in images:  # headers only: a bomb or a non-image is named here, not in a worker
        checked_size(images[stem], "image")
        checked_size(labels[stem], "label")
    return [
        {
            "stem": s,
            "image": str(images[s].relative_to(root)),
            "label": str(labels[s].relative_to(root)),
        }
        for s in sorted(images)
    ]


def unlabelled_reason(root: Path, split: str, layout: str) -> str | None:
    """Why ``split`` has no labelled images in ``root`` (None when its label folder exists)."""
    image_dir = root / split
    label_dir = root / LAYOUT_LABEL_DIR[layout].format(split=split)
    if label_dir.is_dir():
        return None
    if image_dir.is_dir():
        return f"{image_dir} has no labels ({label_dir.name}/ missing)"
    return f"no {split}/ or {label_dir.name}/ folder in {root}"


def index_dataset(top: Path, layout: str = "auto", expect_camvid_sizes: bool = False) -> dict:
    root, detected = find_root(top)
    if layout not in ("auto", detected):
        raise UserError(
            f"dataset.layout: configured {layout!r} but {root} has the {detected} layout"
        )
    print(f"layout: {detected} (in {root.relative_to(top) if root != top else 'the top folder'})")
    splits, left_out = {}, {}
    for split in SPLITS:
        reason = unlabelled_reason(root, split, detected) if split in OPTIONAL_SPLITS else None
        if reason is None:
            splits[split] = pair_split(root, split, detected)
        else:
            left_out[split] = reason
            print(f"{split} split left out: {reason}; nothing is scored on it")
    class_dict = root / "class_dict.csv"
    if detected == "camvid32" and not class_dict.is_file():
        raise UserError(f"{class_dict}: class_dict.csv not found")
    sizes = {split: len(pairs) for split, pairs in splits.items()}
    print(f"splits: {sizes} ({sum(sizes.values())} images)")
    if expect_camvid_sizes and sizes != {split: CAMVID_SIZES[split] for split in sizes}:
        print(
            f"warning: split sizes {sizes} differ from full CamVid's 367/101/233 (701)",
            file=sys.stderr,
        )
    return {
        "root": str(root),
        "layout": detected,
        "class_dict": str(class_dict) if detected == "camvid32" else None,
        "sizes": sizes,
        "splits": splits,
        "left_out": left_out,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command.parser(__file__, __doc__)
    parser.add_argument("--archive", nargs="+", type=Path, help="archive (or its parts, in order)")
    parser.add_argument("--directory", type=Path, help="an already-extracted dataset (read only)")
    parser.add_argument("--dest", type=Path, help="folder to extract into")
    parser.add_argument("--layout", **option("dataset.layout"))
    parser.add_argument(
        "--expect-camvid-sizes",
        action="store_true",
        help="warn when the split sizes differ from CamVid's 367/101/233",
    )
    parser.add_argument("--manifest", required=True, type=Path, help="dataset.json to write")
    parser.add_argument("--max-unpack-ratio", **option("dataset.max_unpack_ratio"))
    parser.add_argument("--max-unpack-gib", **option("dataset.max_unpack_gib"))
    args = parser.parse_args(argv)
    if bool(args.archive) == bool(args.directory):
        parser.error("give exactly one of --archive or --directory")
    if args.archive and args.dest is None:
        parser.error("--archive needs --dest")
    return args


@cli
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    made = Record(__file__, args, [args.archive, args.directory], [args.manifest, args.dest])
    if args.archive:
        with atomic_path(args.dest, is_dir=True) as tmp:
            count = extract_archive(args.archive, tmp, args.max_unpack_ratio, args.max_unpack_gib)
            print(f"extracted {count} members of {args.archive[0]}")
            with _named_in_archive(args.archive[0], tmp):
                manifest = index_dataset(tmp, args.layout, args.expect_camvid_sizes)
        manifest["root"] = os.path.join(args.dest, os.path.relpath(manifest["root"], tmp))
        if manifest["class_dict"]:
            manifest["class_dict"] = os.path.join(manifest["root"], "class_dict.csv")
    else:
        if not args.directory.is_dir():
            raise UserError(f"{args.directory}: dataset.path is not a folder")
        manifest = index_dataset(args.directory, args.layout, args.expect_camvid_sizes)
    # Carried through prepared/index.json into the training fingerprint: new pixels under the
    # same file names must never resume (or reuse) a model trained on the old ones.
    manifest["content_id"] = data_identity(args.archive or args.directory)
    print(f"content id: {manifest['content_id']}")
    write_json(args.manifest, manifest)
    made.write()


def data_identity(source: list[Path] | Path) -> str:
    """The data's content: the archive's sha256, or every file of the folder by its sha256 (each
    computed once, then found again by the file's cheap key)."""
    cache = HashCache.from_env()
    if isinstance(source, Path):
        content = tree_content_id(source, cache)
    else:
        content = content_id(source, cache)
    cache.save()
    return content


if __name__ == "__main__":
    main()
