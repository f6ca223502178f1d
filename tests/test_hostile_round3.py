"""Hostile inputs, third round: each is one line naming the file or key, exit 2, no traceback,
no hang, no output; a name from an archive or a class_dict.csv cannot forge lines or markup."""

import io
import os
import re
import struct
import tarfile
import threading
import time
import zipfile
import zlib

import pytest
from conftest import assert_one_line_error, run_cli
from test_extract import assert_refused, extract, make_tar, sample_members
from test_plan import config

from camvidseg.core.errors import UserError
from camvidseg.core.fileio import atomic_path, read_json, refuse_nonempty_folder
from camvidseg.data.images import checked_size
from camvidseg.deploy.card import table, to_html
from camvidseg.workflow import plan


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with(extra: bytes, width=48, height=32) -> bytes:
    """A valid RGB PNG with ``extra`` chunks before its pixels."""
    raw = b"".join(b"\x00" + bytes(width * 3) for _ in range(height))
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return (b"\x89PNG\r\n\x1a\n" + header + extra + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))  # fmt: skip


@pytest.mark.parametrize("kind", [b"zTXt", b"iCCP"])
def test_a_metadata_bomb_in_a_picture_is_refused_as_unreadable(tmp_path, kind):
    """10 kB that inflate to 10 MB of text: PIL's own guard raises ValueError."""
    plain, bomb = tmp_path / "plain.png", tmp_path / "bomb.png"
    plain.write_bytes(png_with(chunk(kind, b"k\x00\x00" + zlib.compress(b"a" * 100))))
    assert checked_size(plain, "label") == (48, 32)  # the same chunk, small: read
    bomb.write_bytes(png_with(chunk(kind, b"k\x00\x00" + zlib.compress(b"a" * (10 << 20)))))
    with pytest.raises(UserError, match=f"{bomb}: corrupt or unreadable label"):
        checked_size(bomb, "label")


def fifo_at(path):
    """A FIFO at ``path``. Should a reader open it (the bug these tests catch), a writer comes by
    after 10 s and leaves at once, so the reader gets an end of file instead of waiting forever."""
    os.mkfifo(path)

    def release():
        time.sleep(10)
        for _ in range(100):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader (yet), or the test is over
                time.sleep(0.2)

    threading.Thread(target=release, daemon=True).start()
    return path


def test_a_fifo_where_a_picture_goes_is_refused_without_waiting(tmp_path):
    fifo = fifo_at(tmp_path / "frame.png")
    with pytest.raises(UserError, match=re.escape("frame.png: not a regular file")):
        checked_size(fifo)


def test_read_json_says_what_is_wrong_with_the_file(tmp_path):
    (tmp_path / "text.json").write_text("not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    reasons = {"missing.json": "file not found", "text.json": "not JSON",
               "list.json": "expected a JSON object, found list", ".": "not a file"}  # fmt: skip
    for name, reason in reasons.items():
        with pytest.raises(UserError, match=reason):
            read_json(tmp_path / name)


def test_an_output_path_holding_the_other_kind_is_refused_before_any_work(tmp_path):
    (tmp_path / "mine.txt").write_text("the user's")
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match=re.escape("mine.txt: exists and is not a folder")):
        refuse_nonempty_folder(tmp_path / "mine.txt")
    refused = pytest.raises(UserError, match="folder: is a folder, where a file goes")
    with refused, atomic_path(tmp_path / "folder"):
        raise AssertionError("the block must not run")
    assert (tmp_path / "mine.txt").read_text() == "the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "mine.txt"]


def encrypted(path, members):
    """A zip whose members are flagged encrypted (what `zip -e` writes)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x01\x02", 8), (b"PK\x03\x04", 6)):
        start = 0
        while (at := data.find(signature, start)) >= 0:
            flags = struct.unpack_from("<H", data, at + offset)[0]
            struct.pack_into("<H", data, at + offset, flags | 1)
            start = at + 4
    path.write_bytes(bytes(data))
    return path


def far_future(path, members):
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(content), 1e20 if name.endswith(".csv") else 0
            tar.addfile(info, io.BytesIO(content))
    return path


@pytest.mark.parametrize(
    ("make", "name", "fragment"),
    [
        (encrypted, "locked.zip", "is encrypted, password required"),
        (far_future, "future.tar.gz", "its modification time is out of range"),
    ],
)
def test_archives_python_cannot_unpack_are_one_line(tmp_path, sample_archive, make, name, fragment):
    archive = make(tmp_path / name, sample_members(sample_archive))
    result, dest, manifest = extract(tmp_path, archive)
    assert_refused(result, dest, manifest, f"{archive}", fragment)


def test_a_name_with_a_newline_cannot_forge_a_second_error_line(tmp_path, sample_archive):
    members = sample_members(sample_archive)
    image = next(content for name, content in members.items() if "/train/" in name)
    members["CamVid/train/evil\nerror: forged.png"] = image
    result, dest, manifest = extract(tmp_path, make_tar(tmp_path / "nl.tar.gz", members))
    assert_refused(result, dest, manifest, "image(s) without label: evil\\nerror: forged.png")


@pytest.mark.parametrize("kind", ["broken link", "loop", "fifo"])
def test_a_dataset_folder_with_a_link_loop_broken_link_or_fifo_is_one_line(
    tmp_path, sample_archive, kind
):
    with tarfile.open(sample_archive) as tar:
        tar.extractall(tmp_path / "tree", filter="data")
    odd = tmp_path / "tree/CamVid/odd"
    if kind == "broken link":
        odd.symlink_to(tmp_path / "nowhere")
    elif kind == "loop":
        odd.symlink_to("..")
    else:
        fifo_at(odd)
    manifest = tmp_path / "dataset.json"
    result = run_cli("extract", "--directory", tmp_path / "tree", "--manifest", manifest,
                     check=False)  # fmt: skip
    reason = {"broken link": "odd: broken link", "loop": "a link that leads back",
              "fifo": "odd: not a regular file"}[kind]  # fmt: skip
    assert_one_line_error(result, reason)
    assert not manifest.exists()


def test_a_fifo_given_as_the_archive_is_refused_without_waiting(tmp_path):
    fifo = fifo_at(tmp_path / "camvid.tar.gz")
    result, dest, manifest = extract(tmp_path, fifo)
    assert_refused(result, dest, manifest, f"{fifo}: not a regular file")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('name,r,g,b\n"' + "x" * 200_000 + '",1,2,3\nRoad,4,5,6\n', "not valid CSV (field larger"),
        ('name,r,g,b\n"Sky\nerror: forged",1,2,3\nRoad,4,5,6\n', "holds a control character"),
    ],
)
def test_class_dict_that_csv_cannot_read_or_with_control_characters_is_one_line(
    tmp_path, text, fragment
):
    from camvidseg.data.palette import read_class_dict

    path = tmp_path / "class_dict.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=f"{path}") as raised:
        read_class_dict(path)
    assert fragment in str(raised.value)


def test_class_names_reach_the_model_card_page_as_text_not_markup():
    markdown = table(["id", "name"], [[0, "<img src=x onerror=alert(1)>"], [1, "Road|Lane"]])
    page = to_html(markdown)
    assert "<img" not in page and "<td>&lt;img src=x onerror=alert(1)&gt;</td>" in page
    assert "<td>Road|Lane</td>" in page


def aliased_list(levels: int, width: int = 10) -> list:
    """What YAML makes of ``a: &a [1 x width]``, ``b: &b [*a x width]``, ...: shared lists."""
    node: list = [1] * width
    for _ in range(levels):
        node = [node] * width
    return node


def test_yaml_alias_bombs_are_refused_at_once():
    holds_itself: list = []
    holds_itself.append(holds_itself)
    for extra, message in [
        ({"eval2": holds_itself}, "invalid config: eval2.0: a YAML alias that holds itself"),
        # a million values: past the limit, yet walked in seconds should the limit go
        ({"xf": aliased_list(5)}, "invalid config: more than 100000 values"),
    ]:
        with pytest.raises(UserError) as raised:
            plan.validate(config() | extra)
        assert str(raised.value).startswith(message), raised.value


def test_sample_pictures_larger_than_any_camvid_frame_needs_are_refused_in_the_config():
    given = config(dataset={"source": "sample", "sample": {"width": 100_000}})
    with pytest.raises(UserError, match=re.escape("dataset.sample.width: 100000 is greater than")):
        plan.validate(given)
