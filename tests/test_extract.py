"""Safe extraction and layout checks: every bad input is one line naming the file, no output."""

import io
import shutil
import tarfile
import zipfile

import pytest
from conftest import run_cli


def make_tar(path, members, mode="w:gz"):
    """members: name -> bytes, or (type, linkname) for links/devices."""
    with tarfile.open(path, mode) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, bytes):
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                info.type, info.linkname = content
                tar.addfile(info)
    return path


def extract(tmp_path, *archives):
    dest, manifest = tmp_path / "out", tmp_path / "dataset.json"
    result = run_cli(
        "extract", "--archive", *archives, "--dest", dest, "--manifest", manifest, check=False
    )
    return result, dest, manifest


def assert_refused(result, dest, manifest, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert not dest.exists() and not manifest.exists()
    assert not list(dest.parent.glob(".out.*"))  # no half-written temporary left


def test_sample_archive_extracts_and_pairs(tmp_path, sample_archive):
    result, dest, manifest = extract(tmp_path, sample_archive)
    assert result.returncode == 0, result.stderr
    assert "layout: camvid32" in result.stdout
    assert "'train': 4, 'val': 2, 'test': 2" in result.stdout
    import json

    data = json.loads(manifest.read_text())
    pair = data["splits"]["train"][0]
    assert pair["label"] == f"train_labels/{pair['stem']}_L.png"
    assert (dest / "CamVid" / pair["image"]).is_file()


@pytest.mark.parametrize(
    ("member", "fragment"),
    [
        ("../evil.txt", "climbs out with '..'"),
        ("CamVid/../../evil.txt", "climbs out with '..'"),
        ("/etc/evil.txt", "absolute path"),
    ],
)
def test_escaping_member_paths_are_refused(tmp_path, member, fragment):
    archive = make_tar(tmp_path / "bad.tar.gz", {"CamVid/ok.txt": b"x", member: b"evil"})
    assert_refused(*extract(tmp_path, archive), "bad.tar.gz", repr(member), fragment)


@pytest.mark.parametrize(
    ("kind", "target"),
    [
        (tarfile.SYMTYPE, "../../etc/passwd"),
        (tarfile.SYMTYPE, "/etc/passwd"),
        (tarfile.LNKTYPE, "../outside"),
    ],
)
def test_links_pointing_outside_are_refused(tmp_path, kind, target):
    archive = make_tar(tmp_path / "links.tar.gz", {"CamVid/link": (kind, target)})
    assert_refused(*extract(tmp_path, archive), "'CamVid/link'", "pointing outside")


def test_device_member_is_refused(tmp_path):
    archive = make_tar(tmp_path / "dev.tar", {"CamVid/dev": (tarfile.CHRTYPE, "")}, mode="w")
    assert_refused(*extract(tmp_path, archive), "special file", "'CamVid/dev'")


def test_truncated_archive_is_refused(tmp_path, sample_archive):
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(sample_archive.read_bytes()[: sample_archive.stat().st_size // 2])
    assert_refused(*extract(tmp_path, truncated), "truncated.tar.gz", "truncated or corrupt")


def test_corrupt_zip_member_is_refused(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("CamVid/class_dict.csv", "name,r,g,b\n" * 50)
    data = bytearray(archive.read_bytes())
    data[60] ^= 0xFF  # flip a byte of the stored member
    archive.write_bytes(bytes(data))
    assert_refused(*extract(tmp_path, archive), "bad.zip")


def test_zip_with_escaping_member_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.txt", "x")
    assert_refused(*extract(tmp_path, archive), "'../evil.txt'")


def test_multi_part_archive_is_joined_in_order(tmp_path, sample_archive):
    data = sample_archive.read_bytes()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    parts = []
    for i in range(3):
        part = tmp_path / f"CamVid.tar.gz.{i:02d}"
        part.write_bytes(data[cut[i] : cut[i + 1]])
        parts.append(part)
    result, dest, _ = extract(tmp_path, *parts)
    assert result.returncode == 0, result.stderr
    assert (dest / "CamVid" / "class_dict.csv").is_file()


@pytest.fixture
def tree(tmp_path, sample_archive):
    """An extracted copy of the sample that a test may damage."""
    with tarfile.open(sample_archive) as tar:
        tar.extractall(tmp_path / "tree", filter="data")
    return tmp_path / "tree" / "CamVid"


def index(tmp_path, folder):
    manifest = tmp_path / "dataset.json"
    result = run_cli("extract", "--directory", folder.parent, "--manifest", manifest, check=False)
    return result, manifest


def assert_one_line(result, manifest, *fragments):
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not manifest.exists()


def test_missing_split_folder(tmp_path, tree):
    shutil.rmtree(tree / "val_labels")
    assert_one_line(*index(tmp_path, tree), "val_labels", "split folder missing")


def test_image_without_label_is_named(tmp_path, tree):
    victim = sorted((tree / "train_labels").iterdir())[0]
    victim.unlink()
    stem = victim.name.removesuffix("_L.png")
    assert_one_line(*index(tmp_path, tree), "1 image(s) without label", f"{stem}.png")


def test_label_without_image_is_named(tmp_path, tree):
    victim = sorted((tree / "test").iterdir())[0]
    victim.unlink()
    assert_one_line(*index(tmp_path, tree), "1 label(s) without image", f"{victim.stem}_L.png")


def test_empty_split(tmp_path, tree):
    for folder in ("val", "val_labels"):
        for p in (tree / folder).iterdir():
            p.unlink()
    assert_one_line(*index(tmp_path, tree), "val", "split is empty")


def test_folder_is_indexed_in_place_without_changes(tmp_path, tree):
    before = sorted((p, p.stat().st_mtime_ns) for p in tree.rglob("*"))
    result, manifest = index(tmp_path, tree)
    assert result.returncode == 0 and manifest.is_file()
    assert sorted((p, p.stat().st_mtime_ns) for p in tree.rglob("*")) == before


@pytest.mark.parametrize("mode", ["w:bz2", "w:xz", "w"])
def test_other_tar_compressions(tmp_path, sample_archive, mode):
    with tarfile.open(sample_archive) as source:
        members = {m.name: source.extractfile(m).read() for m in source if m.isfile()}
    archive = make_tar(tmp_path / f"CamVid.{mode[2:] or 'plain'}.tar", members, mode=mode)
    result, dest, _ = extract(tmp_path, archive)
    assert result.returncode == 0, result.stderr
    assert (dest / "CamVid/class_dict.csv").is_file()


def test_split_sizes_other_than_camvid_are_a_warning(tmp_path, tree):
    manifest = tmp_path / "dataset.json"
    result = run_cli(
        "extract", "--directory", tree.parent, "--manifest", manifest, "--expect-camvid-sizes"
    )
    assert (
        "warning: split sizes {'train': 4, 'val': 2, 'test': 2} differ from full CamVid's"
        in result.stderr
    )
    assert manifest.is_file()


def test_existing_folder_is_never_replaced(tmp_path, sample_archive):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "mine.txt").write_text("the user's")
    result, _, manifest = extract(tmp_path, sample_archive)
    assert result.returncode == 2 and "folder exists and is not empty" in result.stderr
    assert (dest / "mine.txt").read_text() == "the user's" and not manifest.exists()
