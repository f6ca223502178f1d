"""class_dict.csv validation and the palette file."""

import json

import pytest
from conftest import REPO, SEGNET11_CLASSES, assert_one_line_error, run_cli

GOOD = "name,r,g,b\nSky,128,128,128\nRoad,128,64,128\nVoid,0,0,0\n"


def palette(tmp_path, csv_text, *extra):
    csv_path = tmp_path / "class_dict.csv"
    if csv_text is not None:
        csv_path.write_text(csv_text)
    manifest = tmp_path / "dataset.json"
    manifest.write_text(json.dumps({"layout": "camvid32", "class_dict": str(csv_path)}))
    out = tmp_path / "palette.json"
    return run_cli("palette", "--manifest", manifest, "--out", out, *extra, check=False), out


def test_palette_ids_names_colors_and_ignore(tmp_path):
    result, out = palette(tmp_path, GOOD)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["classes"] == [
        {"id": 0, "name": "Sky", "color": [128, 128, 128]},
        {"id": 1, "name": "Road", "color": [128, 64, 128]},
    ]
    void = next(e for e in data["lookup"] if e["name"] == "Void")
    assert void["train_id"] == 255 and data["ignore_index"] == 255


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (None, "class_dict.csv not found"),
        ("name,r,g\nSky,1,2\nRoad,3,4\n", "missing column(s) b"),
        ("name,r,g,b\nSky,300,0,0\nRoad,1,1,1\n", "(300, 0, 0) of 'Sky' is outside 0-255"),
        (
            "name,r,g,b\nSky,1,2,3\nRoad,1,2,3\n",
            "color (1, 2, 3) of 'Road' is already used by 'Sky'",
        ),
        ("name,r,g,b\nSky,1,2,3\nSky,4,5,6\n", "duplicate class name 'Sky'"),
        ("name,r,g,b\nSky,1,2,3\n", "needs at least 2 classes"),
        ("name,r,g,b\nSky,a,2,3\nRoad,1,1,1\n", "is not three integers"),
    ],
)
def test_bad_class_dict_is_one_line(tmp_path, text, fragment):
    result, out = palette(tmp_path, text)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "class_dict.csv" in lines[0] and fragment in lines[0], lines
    assert not out.exists()


def test_unknown_ignore_class_names_the_key(tmp_path):
    result, _ = palette(tmp_path, GOOD, "--ignore-classes", "Nope")
    assert "dataset.ignore_classes: Nope not in class_dict.csv" in result.stderr


def test_camvid11_grouping(tmp_path):
    from camvidseg.data.sample import CAMVID32

    text = "name,r,g,b\n" + "".join(f"{n},{r},{g},{b}\n" for n, (r, g, b) in CAMVID32)
    result, out = palette(tmp_path, text, "--classes", "camvid11")
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert [c["name"] for c in data["classes"]] == SEGNET11_CLASSES
    by_name = {e["name"]: e["train_id"] for e in data["lookup"]}
    assert by_name["LaneMkgsDriv"] == by_name["Road"] == 3
    assert by_name["SUVPickupTruck"] == 8 and by_name["Void"] == 255
    # An ignored member is ignored, its group keeps the other members.
    result, out = palette(tmp_path, text, "--classes", "camvid11", "--ignore-classes", "Truck_Bus")
    by_name = {e["name"]: e["train_id"] for e in json.loads(out.read_text())["lookup"]}
    assert by_name["Truck_Bus"] == 255 and by_name["Car"] == by_name["SUVPickupTruck"] == 8


def test_class_dict_with_a_utf8_byte_order_mark_is_read(tmp_path):
    (tmp_path / "class_dict.csv").write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    result, out = palette(tmp_path, None)
    assert result.returncode == 0, result.stderr
    assert [c["name"] for c in json.loads(out.read_text())["classes"]] == ["Sky", "Road"]


def test_class_dict_in_latin1_is_one_line_naming_file_and_encoding(tmp_path):
    (tmp_path / "class_dict.csv").write_bytes((GOOD + "Caf\u00e9,1,2,3\n").encode("latin-1"))
    result, out = palette(tmp_path, None)
    assert result.returncode == 2 and not out.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "class_dict.csv: not UTF-8 text (byte 0xe9" in lines[0] and "Latin-1" in lines[0]


def many_classes(count: int) -> str:
    """A class_dict.csv of ``count`` classes with distinct colors."""
    rows = [f"class{i},{i // 256},{i % 256},7" for i in range(count)]
    return "name,r,g,b\n" + "\n".join(rows) + "\n"


@pytest.mark.parametrize("count", [255, 256, 300, 1000])
def test_more_classes_than_a_mask_holds_is_one_line_naming_the_file_and_limit(tmp_path, count):
    """Mask ids are 8-bit: 255 is the ignore index and 254 marks unknown colors, so 254 trained
    classes is the most; more must not collide with either (nor crash convert)."""
    result, out = palette(
        tmp_path, many_classes(count), "--classes", "camvid32", "--ignore-classes"
    )
    assert_one_line_error(result, f"class_dict.csv: {count} classes to train, more than 254")
    assert not out.exists()


def test_ignored_classes_do_not_count_against_the_limit(tmp_path):
    names = [f"class{i}" for i in range(254, 300)]
    result, out = palette(
        tmp_path, many_classes(300), "--classes", "camvid32", "--ignore-classes", *names
    )
    assert result.returncode == 0, result.stderr
    assert [c["id"] for c in json.loads(out.read_text())["classes"]] == list(range(254))


def test_the_docs_say_what_is_done_with_a_latin1_class_dict():
    """The code refuses Latin-1 (the test above); the docs (README and docs/reliability.md, where
    its Bad input section lives) must not claim it is read."""
    pages = [REPO / "README.md", REPO / "docs/reliability.md"]
    readme = " ".join(" ".join(page.read_text() for page in pages).split())
    assert "Latin-1 encoding is read fine" not in readme
    assert 'a Latin-1 file is refused naming the byte, "save it as UTF-8"' in readme
