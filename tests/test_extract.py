"""Safe extraction and layout checks: every bad input is one line naming the file, no output."""

import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import zipfile

import pytest
from conftest import png_bomb, run_cli, snakemake


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


def cve_2025_4517_archive(path, dest_len, target):
    """The realpath-overflow attack on Python's tarfile filters (CVE-2025-4517), as in CPython's
    own test: a chain of symlinks whose resolved path exceeds PATH_MAX hides where ``escape``
    points (the folder above the extraction root), then a hard link through it overwrites
    ``target`` there and a new file is created beside it."""
    steps = "abcdefghijklmnop"
    component = "d" * ((os.pathconf("/", "PC_PATH_MAX") - dest_len) // (len(steps) + 1))
    with tarfile.open(path, "w:gz") as tar:

        def add(name, kind=tarfile.REGTYPE, link="", content=b""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size, info.mode = kind, link, len(content), 0o777
            tar.addfile(info, io.BytesIO(content) if content else None)

        folder = ""
        for step in steps:
            add(os.path.join(folder, component), tarfile.DIRTYPE)
            add(os.path.join(folder, step), tarfile.SYMTYPE, component)
            folder = os.path.join(folder, component)
        deep_link = os.path.join(*steps, "l" * 254)
        add(deep_link, tarfile.SYMTYPE, os.path.join(*[".."] * len(steps)))
        add("escape", tarfile.SYMTYPE, os.path.join(deep_link, ".."))
        add("flaglink", tarfile.LNKTYPE, os.path.join("escape", target.name))
        add("flaglink", content=b"overwritten")
        add("escape/newfile", content=b"new")
    return path


def test_cve_2025_4517_archive_cannot_write_outside(tmp_path):
    flag = tmp_path / "flag"  # the escape target: the folder above the extraction root
    flag.write_text("original")
    # The stage extracts into a temporary sibling of --dest, tmp_path/.out.<pid@host.>XXXXXXXX;
    # the component length tolerates ~200 characters more than this estimate.
    archive = cve_2025_4517_archive(
        tmp_path / "CamVid.tar.gz", len(str(tmp_path / ".out.")) + 8, flag
    )
    result, dest, manifest = extract(tmp_path, archive)
    assert flag.read_text() == "original"
    assert not (tmp_path / "newfile").exists()
    assert_refused(result, dest, manifest, "CamVid.tar.gz", "refusing symlink member 'a'")


@pytest.mark.parametrize(
    ("kind", "target", "what"),
    [
        (tarfile.SYMTYPE, "../../etc/passwd", "symlink"),
        (tarfile.SYMTYPE, "/etc/passwd", "symlink"),
        (tarfile.SYMTYPE, "train/a.png", "symlink"),  # even one that stays inside
        (tarfile.LNKTYPE, "../outside", "hard link"),
        (tarfile.LNKTYPE, "CamVid/not_in_the_archive.png", "hard link"),  # was a KeyError
    ],
)
def test_links_are_refused(tmp_path, kind, target, what):
    archive = make_tar(tmp_path / "links.tar.gz", {"CamVid/link": (kind, target)})
    assert_refused(
        *extract(tmp_path, archive), f"refusing {what} member 'CamVid/link'", "holds no links"
    )


def test_symlink_chain_is_refused_as_a_link_not_as_corrupt(tmp_path):
    archive = make_tar(
        tmp_path / "chain.tar.gz",
        {
            "CamVid/x": (tarfile.SYMTYPE, "y"),
            "CamVid/y": (tarfile.SYMTYPE, "z"),
            "CamVid/z": (tarfile.SYMTYPE, "x"),
            "CamVid/x/evil.txt": b"evil",
        },
    )
    result, dest, manifest = extract(tmp_path, archive)
    assert "truncated or corrupt" not in result.stderr
    assert_refused(result, dest, manifest, "refusing symlink member 'CamVid/x'")


def test_zip_symlink_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("CamVid/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "train/a.png")
    assert_refused(*extract(tmp_path, archive), "refusing symlink member 'CamVid/link'")


@pytest.mark.parametrize("kind", [stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK])
def test_zip_special_member_is_refused(tmp_path, kind):
    archive = tmp_path / "special.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("CamVid/special")
        info.external_attr = (kind | 0o644) << 16
        zf.writestr(info, "")
    assert_refused(*extract(tmp_path, archive), "special file", "'CamVid/special'")


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
    # The CRC check's own words (zipfile would otherwise fail mid-extraction, less precisely).
    message = "bad.zip: member 'CamVid/class_dict.csv' is corrupt (CRC mismatch)"
    assert_refused(*extract(tmp_path, archive), message)


def test_zip_with_escaping_member_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.txt", "x")
    # zipfile itself would silently drop the '..': only our check refuses, in these words.
    assert_refused(*extract(tmp_path, archive), "'../evil.txt' that climbs out with '..'")


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


@pytest.mark.parametrize("removed", [("test", "test_labels"), ("test_labels",)])
def test_test_split_without_labels_is_left_out_and_said_so(tmp_path, tree, removed):
    """Train and val are what training needs; a copy without test labels still indexes."""
    for folder in removed:
        shutil.rmtree(tree / folder)
    result, manifest = index(tmp_path, tree)
    assert result.returncode == 0, result.stderr
    index_data = json.loads(manifest.read_text())
    assert set(index_data["splits"]) == {"train", "val"} and "test" not in index_data["sizes"]
    reason = index_data["left_out"]["test"]
    if removed == ("test_labels",):
        assert reason == f"{tree / 'test'} has no labels (test_labels/ missing)"
    else:
        assert reason == f"no test/ or test_labels/ folder in {tree}"
    assert f"test split left out: {reason}; nothing is scored on it" in result.stdout


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


def sample_members(sample_archive):
    with tarfile.open(sample_archive) as source:
        return {m.name: source.extractfile(m).read() for m in source if m.isfile()}


def make_zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


@pytest.mark.parametrize("make", [make_tar, make_zip])
@pytest.mark.parametrize(
    ("hostile", "refused", "reason"),
    [
        ({"CamVid/x": b"a file", "CamVid/x/y": b"under it"}, "'CamVid/x/y'",
         "an earlier member is a file where this one needs a folder"),
        ({"CamVid/d/f": b"in a folder", "CamVid/d": b"a file of its name"}, "'CamVid/d'",
         "a folder of this name is already there"),
        ({"CamVid/" + "a" * 300: b"x"}, "'CamVid/aaa", "its name is too long for the file system"),
    ],
)  # fmt: skip
def test_members_the_file_system_cannot_hold_are_refused_by_name(
    tmp_path, sample_archive, make, hostile, refused, reason
):
    suffix = ".tar.gz" if make is make_tar else ".zip"
    archive = make(tmp_path / f"hostile{suffix}", hostile | sample_members(sample_archive))
    result, dest, manifest = extract(tmp_path, archive)
    assert_refused(result, dest, manifest, f"{archive}: refusing member {refused}", reason)


def test_a_layout_refusal_names_the_archive_and_the_member_not_a_temporary(
    tmp_path, sample_archive
):
    members = sample_members(sample_archive)
    label = sorted(name for name in members if "/train_labels/" in name)[0]
    del members[label]
    archive = make_tar(tmp_path / "unlabelled.tar.gz", members)
    result, dest, manifest = extract(tmp_path, archive)
    stem = label.rsplit("/", 1)[1].removesuffix("_L.png")
    line = f"error: {archive}/CamVid/train: 1 image(s) without label: {stem}.png"
    assert_refused(result, dest, manifest, line)
    assert ".out." not in result.stderr


@pytest.mark.parametrize("tool", ["zipfile.writestr", "zip -r", "DOS attributes"])
def test_valid_zips_are_accepted(tmp_path, sample_archive, tool):
    """Members with permission bits but no file-type bits, or DOS attributes, are plain files."""
    archive = tmp_path / "CamVid.zip"
    members = sample_members(sample_archive)
    if tool == "zip -r":
        with tarfile.open(sample_archive) as tar:
            tar.extractall(tmp_path / "tree", filter="data")
        subprocess.run(["zip", "-qr", archive, "CamVid"], cwd=tmp_path / "tree", check=True)
    else:
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                if tool == "zipfile.writestr":
                    zf.writestr(name, data)  # external_attr 0o600 << 16, no S_IFREG bits
                else:
                    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
                    info.create_system, info.external_attr = 0, 0x20  # MS-DOS "archive" bit
                    zf.writestr(info, data)
    result, dest, manifest = extract(tmp_path, archive)
    assert result.returncode == 0, result.stderr
    for name, data in members.items():
        assert (dest / name).read_bytes() == data
    assert json.loads(manifest.read_text())["sizes"] == {"train": 4, "val": 2, "test": 2}


def zero_bomb(path, size):
    """A .tar.gz with one zero-filled member of ``size`` bytes (compresses about 1000:1)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("CamVid/zeros.bin")
        info.size = size

        class Zeros(io.RawIOBase):
            left = size

            def readinto(self, buffer):
                n = min(len(buffer), self.left)
                buffer[:n] = bytes(n)
                self.left -= n
                return n

        tar.addfile(info, Zeros())
    return path


def test_decompression_bomb_tar_is_refused_before_writing(tmp_path):
    archive = zero_bomb(tmp_path / "bomb.tar.gz", 80 * 2**20)
    assert archive.stat().st_size < 2**20
    assert_refused(
        *extract(tmp_path, archive),
        "bomb.tar.gz: refusing to unpack",
        "'CamVid/zeros.bin'",
        "dataset.max_unpack_ratio",
    )


def test_decompression_bomb_zip_is_refused(tmp_path):
    archive = tmp_path / "bomb.zip"
    with (
        zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("CamVid/zeros.bin", "w", force_zip64=True) as member,
    ):
        for _ in range(80):
            member.write(bytes(2**20))
    assert_refused(*extract(tmp_path, archive), "refusing to unpack", "dataset.max_unpack_ratio")


def test_unpack_limits_are_settings(tmp_path, sample_archive):
    dest, manifest = tmp_path / "out", tmp_path / "dataset.json"
    result = run_cli(
        "extract", "--archive", sample_archive, "--dest", dest, "--manifest", manifest,
        "--max-unpack-gib", "0.00001", check=False,
    )  # fmt: skip
    assert_refused(result, dest, manifest, "more than dataset.max_unpack_gib (1e-05 GiB)")


def test_archive_larger_than_the_free_disk_is_refused(tmp_path):
    """A header declaring 1 TiB (its data need not even be there): refused for the disk."""
    archive = tmp_path / "huge.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("CamVid/huge.bin")
        info.size = 2**40
        tar.addfile(info)  # no data follows: extraction would fail, the check comes first
    dest, manifest = tmp_path / "out", tmp_path / "dataset.json"
    result = run_cli(
        "extract", "--archive", archive, "--dest", dest, "--manifest", manifest,
        "--max-unpack-ratio", "1e12", "--max-unpack-gib", "1e6", check=False,
    )  # fmt: skip
    assert_refused(result, dest, manifest, "'CamVid/huge.bin'", "more than the free space")


def test_image_bomb_in_the_dataset_is_named(tmp_path, tree):
    victim = sorted((tree / "train").iterdir())[0]
    png_bomb(victim)
    assert_one_line(
        *index(tmp_path, tree), f"{victim}: refusing image", "decompression bomb"
    )


def test_workflow_passes_the_unpack_limit_to_extract(tmp_path):
    result = snakemake(
        tmp_path, "--until", "extract", "--config", "dataset={max_unpack_gib: 0.00001}",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    log = (tmp_path / "results/logs/extract.log").read_text().strip().splitlines()
    assert log[-1].startswith("error: resources/camvid_sample.tar.gz: refusing to unpack")
    assert "dataset.max_unpack_gib (1e-05 GiB)" in log[-1]
    assert not (tmp_path / "results/data/extracted").exists()


def test_extract_archive_wants_a_fresh_folder(tmp_path, sample_archive):
    from camvidseg.core.errors import UserError
    from camvidseg.data.extract import extract_archive

    assert extract_archive([sample_archive], tmp_path / "new") > 0  # made when absent
    with pytest.raises(UserError, match="extraction needs a fresh, empty folder"):
        extract_archive([sample_archive], tmp_path / "new")


NOT_UTF8 = "a\udcffb"  # the byte 0xff, as Python holds a name that is not UTF-8


def zip_with_name_bytes(path, name: str, raw: bytes, payload=b"x"):
    """A zip that flags its names as UTF-8 (as zipfile does for non-ASCII) but holds ``raw``
    bytes for ``name`` in both of its headers."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name, payload)
    encoded = name.encode()
    assert len(raw) == len(encoded)
    path.write_bytes(path.read_bytes().replace(encoded, raw))
    return path


@pytest.mark.parametrize(
    "member",
    [f"CamVid/train/{NOT_UTF8}.png", f"CamVid/{NOT_UTF8}/x.png", f"CamVid/notes-{NOT_UTF8}.txt"],
    ids=["image", "folder", "other-file"],
)
def test_tar_member_name_that_is_not_utf8_is_refused_in_one_line(tmp_path, member):
    archive = make_tar(tmp_path / "x.tar.gz", {"CamVid/class_dict.csv": b"name,r,g,b\n",
                                               member: b"data"})  # fmt: skip
    result, dest, manifest = extract(tmp_path, archive)
    assert_refused(result, dest, manifest, "not UTF-8", "\\udcff")


def test_zip_member_name_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    archive = zip_with_name_bytes(
        tmp_path / "x.zip", "CamVid/train/aéb.png", b"CamVid/train/a\xff\xfeb.png"
    )
    result, dest, manifest = extract(tmp_path, archive)
    assert_refused(result, dest, manifest, str(archive), "not UTF-8")


@pytest.mark.parametrize("where", ["train", "train_labels", "test"])
def test_folder_file_name_that_is_not_utf8_is_refused_in_one_line(tmp_path, tree, where):
    victim = sorted((tree / where).iterdir())[0]
    os.rename(victim, os.fsencode(victim.parent) + b"/" + os.fsencode(victim.stem) + b"\xff.png")
    result, manifest = index(tmp_path, tree)
    assert_one_line(result, manifest, "not UTF-8", where)


def test_workflow_reads_a_folder_with_a_name_that_is_not_utf8_and_refuses_it_at_extraction(
    tmp_path, tree
):
    """Reading the workflow (which keys the folder's files) does not crash; the index job says
    which name in one line."""
    stray = tree / "train"
    (stray / NOT_UTF8).write_bytes(b"x")
    config = ("--config", f"dataset={{source: local, path: '{tree.parent}'}}")
    planned = snakemake(tmp_path / "run", "-n", "results/data/dataset.json", *config)
    assert "index_dataset" in planned.stdout
    result = snakemake(tmp_path / "run", "results/data/dataset.json", *config, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
    log = (tmp_path / "run/results/logs/extract.log").read_text().strip().splitlines()
    assert len(log) >= 1 and log[-1].startswith("error: ") and "not UTF-8" in log[-1], log
    assert not (tmp_path / "run/results/data/dataset.json").exists()
