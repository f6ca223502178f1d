"""reporting.pages is the one HTML writer: the metrics summary, the provenance page, the run-cost
and leaderboard tables and the model card's page all come out of it, escaped."""

import re

from conftest import REPO

from camvidseg.deploy.card import to_html
from camvidseg.reporting import pages
from camvidseg.reporting.plots import summary_table
from camvidseg.reporting.provenance import render_html


def test_table_escapes_every_cell_and_puts_list_items_on_lines():
    html = pages.table("t", ["a<b", "c"], [["x & y", ["one", "<two>"]]], row_headers=True)
    assert html == (
        "<table id='t'><tr><th>a&lt;b</th><th>c</th></tr>"
        "<tr><th>x &amp; y</th><td>one<br>&lt;two&gt;</td></tr></table>"
    )


def test_metrics_summary_page_is_built_by_the_one_writer(tmp_path):
    per_class = [{"class": "Car & Bus", "IoU": 0.5}, {"class": "Sky", "IoU": None}]
    metrics = {"split": "val", "mIoU": 0.5, "mAcc": 0.25, "aAcc": 0.75, "mDice": None,
               "num_classes_scored": 1, "per_class": per_class}  # fmt: skip
    summary_table([metrics], tmp_path / "s.csv", tmp_path / "s.html")
    page = (tmp_path / "s.html").read_text()
    assert page.startswith(pages.document("Metrics", "")[:60])
    row = "<tr><th>val</th><td>0.5000</td><td>0.2500</td><td>0.7500</td><td></td><td>1</td>"
    assert row in page
    assert "<th>Car &amp; Bus</th><td>0.5000</td>" in page and "Sky" not in page  # never scored


def test_provenance_page_escapes_what_the_record_holds_and_lists_packages_once():
    def stage(packages, settings):
        environment = {"git": None, "packages": packages}
        inputs = {"a<b>.png": "sha256:" + "1" * 64}
        return {"finished": "2026-01-01", "inputs": inputs, "settings": settings,
                "code": {"hash": "c0de"}, "environment": environment}  # fmt: skip

    nested = '{"train": {"lr": 0.01, "crop_size": [8, 8]}}'
    stages = {"train": stage({"torch": "2.6", "no": None}, {"x": "y", "settings": nested}),
              "plots": stage({"torch": "2.6", "numpy": "2"}, {"unset": None}),
              "card": stage({"torch": "2.7", "numpy": "2"}, {})}  # fmt: skip
    page = render_html({"made": "now", "dataset": "<data>", "stages": stages})
    assert "dataset &lt;data&gt;" in page and f"a&lt;b&gt;.png: sha256:{'1' * 12}<" in page
    assert "<td>no git</td>" in page and "no None" not in page and "unset" not in page
    assert "<td>x: y<br>train.lr: 0.01<br>train.crop_size: 8 8</td>" in page
    packages = page.split("<table id='packages'>")[1]
    assert page.count("numpy") == 1 and "<tr><td>numpy</td><td>2</td></tr>" in packages
    assert "<td>2.6 (train, plots)<br>2.7 (card)</td>" in packages  # where they differ


def test_model_card_page_and_every_other_page_share_the_document():
    page = to_html("# Card\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and pages.STYLE in page
    writers = [
        path.relative_to(REPO / "src").as_posix()
        for path in (REPO / "src/camvidseg").rglob("*.py")
        if re.search(r"<!DOCTYPE html>|<table|<tr>", path.read_text(), re.I)
    ]
    assert writers == ["camvidseg/reporting/pages.py"]
