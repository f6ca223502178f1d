"""`snakemake --report` gives one self-contained HTML file that renders in headless Chromium."""

import json
import re
import shutil
import subprocess
import sys

import pytest
from conftest import snakemake

# Header cells whose content box is narrower than the widest word of their text, as drawn.
NARROWER_THAN_A_HEADER_WORD = """ths => ths.filter(th => {
    const pen = document.createElement("canvas").getContext("2d");
    const style = getComputedStyle(th);
    pen.font = style.font;
    const widest = Math.max(...th.textContent.split(/\\s+/).map(w => pen.measureText(w).width));
    const inner = th.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    return inner + 0.5 < widest;
}).map(th => th.textContent)"""


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed by the test itself when missing (root + apt)."""
    path = shutil.which("chromium")
    if path is None and shutil.which("apt-get"):
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
        ):
            subprocess.run(command, capture_output=True, check=False, timeout=600)
        path = shutil.which("chromium")
    if path is None:
        pytest.skip("no chromium and it could not be installed with apt-get (needs root and apt)")
    return path


def test_report_renders_offline_with_metrics_and_panels(tiny_run, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    report = tiny_run / "results/report.html"
    snakemake(tiny_run, "--report", report)
    html = report.read_text()
    assert "http://" not in html.split("<body", 1)[1][:200]  # self-contained

    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=flags)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report.as_uri())
        # The first screen leads with the scores: the headline number, the bars, a panel.
        val = json.loads((tiny_run / "results/metrics/val.json").read_text())
        headline = page.locator("#camvidseg-headline")
        figure = headline.locator(".miou").first
        assert figure.inner_text() == f"{val['mIoU']:.4f}"
        box = figure.bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 1000, box
        bars = headline.locator("table#per-class-iou tr")
        assert bars.count() == val["num_classes_scored"]
        assert headline.locator("img[src^='data:image/png']").count() == 1
        page.screenshot(path=str(tmp_path / "first.png"))

        page.get_by_text("Provenance", exact=True).click()
        page.locator("tr", has_text="what made each result").locator("a[iconname=eye]").click()
        provenance = page.frame_locator("iframe").locator("table#provenance")
        provenance.wait_for(timeout=10_000)
        # No column narrower than its header word; the packages listed once, in their own table.
        squeezed = provenance.locator("th").evaluate_all(NARROWER_THAN_A_HEADER_WORD)
        assert squeezed == [], squeezed
        header = provenance.locator("tr").first.inner_text().split("\t")
        assert "packages" not in header, header
        packages = page.frame_locator("iframe").locator("table#packages tr", has_text="torch")
        assert packages.count() == 2  # torch and torchvision, each once
        page.screenshot(path=str(tmp_path / "provenance.png"))

        page.locator("nav, body").get_by_text("Results", exact=True).first.click()
        page.get_by_text("Metrics", exact=True).click()
        # Items are listed by their labels (split · item), not by file path.
        page.locator("tr", has_text="all splits · scores table").locator(
            "a[iconname=eye]"
        ).click()
        frame = page.frame_locator("iframe")
        summary = frame.locator("table#summary")
        summary.wait_for(timeout=10_000)
        row = summary.locator("tr", has_text="val").inner_text().split()
        assert row[0] == "val" and 0.0 <= float(row[1]) <= 1.0
        assert frame.locator("table#per-class tr").count() > 3
        page.screenshot(path=str(tmp_path / "metrics.png"))

        page.locator("nav, body").get_by_text("Results", exact=True).first.click()
        page.get_by_text("Predictions", exact=True).click()
        panel_row = page.locator("tr", has_text=re.compile(r"val · \w+ · panel")).first
        panel_row.locator("a[iconname=eye]").click()
        image = page.locator("img[src^='data:image/png']").first
        image.wait_for(timeout=10_000)
        assert image.evaluate("img => img.naturalWidth") > 300
        page.screenshot(path=str(tmp_path / "panel.png"))
        browser.close()
    assert all(url.startswith(("file:", "data:", "blob:", "about:")) for url in requests), requests
    print(f"screenshots in {tmp_path}", file=sys.stderr)

