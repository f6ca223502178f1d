"""Stage 8: write the model card (MODEL_CARD.md, and as HTML for the report) from the run's outputs.

Model, classes and colors, data, training recipe, scores per split and class, cost and speed,
export parity, limits, and how to load the model with PyTorch and with onnxruntime.

The card's text is the Jinja2 template ``model_card.md.j2``; this module computes what fills it.
The three code blocks under "How to use" are complete programs (a test runs them): either loader,
followed by the scoring block, prints the val mIoU stored in ``metrics/val.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core import command
from ..core.errors import cli
from ..core.fileio import atomic_path, read_json, sha256_file
from ..workflow.madeby import Record

TEMPLATE = "model_card.md.j2"  # beside this module (package data)
SOURCES = {
    "opendatalab": "CamVid from OpenDataLab (`odl get CamVid`)",
    "openxlab": "CamVid from OpenXLab (`OpenDataLab/CamVid`)",
    "url": "a CamVid archive downloaded from `dataset.url`",
    "local": "a local CamVid copy (`dataset.path`)",
    "sample": "the workflow's procedural CamVid-format sample (synthetic street scenes)",
}


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table (the template's ``table``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    # A "|" in a cell (a class name from class_dict.csv) would end the cell early.
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |"
              for row in rows]  # fmt: skip
    return "\n".join(lines)


def fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def sha256_prefix(path: Path) -> str:
    return sha256_file(path)[:16]


def model_rows(run: dict) -> list[list]:
    from ..training.networks import MODELS

    name, meta, settings = run["meta"]["model"], run["meta"], run["settings"]
    weights = settings["model"]["backbone_weights"]
    scratch = "none (from scratch)"
    init = {"imagenet": "ImageNet (torchvision IMAGENET1K_V1)", "none": scratch, "": scratch}
    model, onnx = run["paths"]["model"], run["paths"]["onnx"]
    return [
        ["architecture", f"{MODELS[name].architecture} (torchvision `{MODELS[name].builder}`)"],
        ["backbone initialisation", init.get(weights, f"weights file `{weights}`")],
        ["classes", len(run["palette"]["classes"])],
        ["checkpoint", f"`{model}` (epoch {meta['epoch']}, best val mIoU during training; "
                       f"sha256 `{sha256_prefix(Path(model))}…`)"],
        ["ONNX", f"`{onnx}`, opset {run['check']['opset']}, sha256 "
                 f"`{sha256_prefix(Path(onnx))}…`"],
        ["ONNX input", "`image`: uint8 RGB, (batch, 3, height, width), all three dynamic; "
                       "normalisation (ImageNet mean/std) is inside the graph"],
        ["ONNX output", "`logits`: float32 (batch, classes, height, width); argmax = class id"],
    ]  # fmt: skip


def class_rows(palette: dict, metrics: list[dict]) -> list[list]:
    """Every class the model predicts, and in which splits each is scored: only where it has
    pixels in the labels or the prediction (mIoU averages over those)."""
    scored = scored_classes(metrics)
    rows = []
    for c in palette["classes"]:
        hex_color = "#{:02x}{:02x}{:02x}".format(*c["color"])
        swatch = f'<span style="background:{hex_color}">&nbsp;&nbsp;&nbsp;&nbsp;</span>'
        splits = ", ".join(split for split, names in scored.items() if c["name"] in names)
        color = f"{swatch} `{hex_color}` {tuple(c['color'])}"
        rows.append([c["id"], c["name"], color, splits or "–"])
    return rows


def scored_classes(metrics: list[dict]) -> dict[str, set[str]]:
    """Split -> the classes it scores (those with an IoU)."""
    return {m["split"]: {c["class"] for c in m["per_class"] if c["IoU"] is not None}
            for m in metrics}  # fmt: skip


def content_identity(manifest: dict, index: dict) -> str:
    """The data's ``content_id`` (extract writes it, convert copies it into index.json): sha256
    of the archive, or a hash of a folder's file names, sizes and times."""
    content = index.get("content_id") or manifest.get("content_id")
    return f"`{content}`" if content else "not recorded"


CLASS_WEIGHTS = {"none": "", "median_frequency": ", median-frequency class weights"}


def data_rows(run: dict) -> list[list]:
    dataset, manifest = run["settings"]["dataset"], run["manifest"]
    sizes = ", ".join(f"{split} {n}" for split, n in manifest["sizes"].items())
    height, width = run["cost"]["resolution"]
    return [
        ["source", SOURCES.get(dataset["source"], dataset["source"])],
        ["layout", f"`{manifest['layout']}`; classes `{dataset['classes']}`"],
        ["split sizes (images)", sizes],
        ["image size (evaluated at)", f"{height}×{width}"],
        ["content hash", content_identity(manifest, run["index"])],
        *(
            [f"{split} split", f"left out: {why}"]
            for split, why in manifest.get("left_out", {}).items()
        ),
    ]


def recipe_rows(run: dict) -> list[list]:
    t, history = run["settings"]["train"], run["history"]
    precision = run["meta"]["precision"]
    mixed = "fp32" if precision == "fp32" else f"{precision} autocast"
    best = max(history["val"], key=lambda r: r["mIoU"], default=None)
    return [
        ["optimizer", f"{t['optimizer']}, lr {t['lr']}, weight decay {t['weight_decay']}, "
                      f"{t['warmup_iters']} warm-up iterations"],
        ["schedule", f"{t['epochs']} epochs, batch {t['batch_size']} per GPU × {t['gpus']}, "
                     f"validation every {t['val_interval']} epoch(s)"],
        ["augmentation", f"random scale {t['scale_range']}, crop {t['crop_size']}, h-flip"],
        ["loss", f"cross-entropy{CLASS_WEIGHTS[t['class_weights']]} (aux head weight "
                 f"{run['settings']['model']['aux_loss_weight']})"],
        ["precision", f"{mixed}: training's validation and every score below (the model file's)"],
        ["seed", t["seed"]],
        ["best validation",
         "–" if best is None else f"mIoU {best['mIoU']:.4f} at epoch {best['epoch']}"],
    ]  # fmt: skip


def scored(metrics: list[dict]) -> list[dict]:
    """The splits that have a score (a split without labels is in the metrics, not scored)."""
    return [m for m in metrics if m.get("scored", True)]


def score_rows(metrics: list[dict]) -> list[list]:
    return [
        [m["split"], label, *(fmt(scores[k]) for k in ("mIoU", "mAcc", "aAcc", "mDice")),
         scores["num_classes_scored"]]
        for m in scored(metrics)
        for label, scores in m["modes"].items()
    ]  # fmt: skip


def per_class_rows(metrics: list[dict]) -> list[list]:
    """IoU per class (a column per scored split), the classes no split scored left out."""
    metrics = scored(metrics)
    names = [c["class"] for c in metrics[0]["per_class"]] if metrics else []
    return [
        [name, *(fmt(m["per_class"][k]["IoU"]) for m in metrics)]
        for k, name in enumerate(names)
        if any(m["per_class"][k]["IoU"] is not None for m in metrics)
    ]


def speed_rows(speed: dict) -> list[list]:
    rows = []
    for device, backends in speed.items():
        for backend in ("torch_eager", "onnxruntime"):
            result = backends.get(backend)
            if isinstance(result, dict):
                rows.append([device, backend.replace("_", " "), f"{result['latency_ms']:.1f}",
                             f"{result['images_per_s']:.2f}", result["precision"]])  # fmt: skip
            elif result:
                rows.append([device, backend, "–", "–", result])
    return rows


def parity_rows(check: dict) -> list[list]:
    return [
        ["images / pixels compared", f"{check['images']} / {check['pixels']}"],
        ["max abs logit difference", f"{check['max_abs_logit_diff']:.3g}"],
        ["argmax agreement",
         f"{check['argmax_agreement']:.4%} (need ≥ {check['min_agreement']:.1%})"],
        ["mIoU PyTorch / onnxruntime",
         f"{fmt(check['mIoU_torch'])} / {fmt(check['mIoU_onnxruntime'])}"
         f" (difference ≤ {check['max_mIoU_diff']} required)"],
    ]  # fmt: skip


def limits(run: dict) -> list[str]:
    val = next((m for m in run["metrics"] if m["split"] == "val"), run["metrics"][0])
    scored = sorted((c for c in val["per_class"] if c["IoU"] is not None), key=lambda c: c["IoU"])
    weakest = ", ".join(f"{c['class']} {c['IoU']:.2f}" for c in scored[:3])
    unseen = [c["class"] for c in val["per_class"] if not c["gt_pixels"]]
    train_images = run["manifest"]["sizes"].get("train", 0)
    return [
        f"Weakest classes ({val['split']} IoU): {weakest}. Thin and rare classes (poles, signs, "
        "pedestrians, cyclists) are the hard ones; do not rely on them.",
        f"{len(unseen)} class(es) have no pixels in the {val['split']} labels, so their score is "
        f"unknown: {', '.join(unseen) or 'none'}.",
        "Trained on the synthetic sample: the scores show the pipeline works and say nothing about "
        "real street scenes."
        if run["settings"]["dataset"]["source"] == "sample"
        else f"Trained on {train_images} images of one domain (CamVid: daytime driving in "
        "Cambridge, UK, one camera); expect lower scores at night, in rain, in other cities.",
        f"Scored at {run['cost']['resolution'][0]}×{run['cost']['resolution'][1]}; the ONNX graph "
        "accepts any size, but accuracy at other sizes was not measured.",
        f"Scores are computed in {run['meta']['precision']}, the precision the model file records "
        "for its validation; the ONNX model is fp32 and its parity is checked in fp32 on the CPU.",
    ]


def loader_values(run: dict) -> dict:
    """What the code blocks of "How to use" fill in: the network's builder and normalisation."""
    from ..training.networks import IMAGENET_MEAN, IMAGENET_STD, MODELS

    model = MODELS[run["meta"]["model"]]
    builder, has_aux = model.builder, model.has_aux
    val = next((m for m in run["metrics"] if m["split"] == "val"), None)
    return {
        "builder": builder,
        "aux": ", aux_loss=True" if has_aux and run["meta"]["aux_loss_weight"] > 0 else "",
        "classes": len(run["palette"]["classes"]),
        "mean": ", ".join(f"{v:g}" for v in IMAGENET_MEAN),
        "std": ", ".join(f"{v:g}" for v in IMAGENET_STD),
        "stored_val_miou": fmt(val["modes"]["whole"]["mIoU"])
        if val and "whole" in val["modes"]
        else "–",
    }


def render(run: dict) -> str:
    """The card: ``model_card.md.j2`` filled with the run's files and the rows computed here."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown; to_html shows any HTML in it as text
    )
    height, width = run["cost"]["resolution"]
    return environment.get_template(TEMPLATE).render(
        **run,
        **loader_values(run),
        table=table,
        size=f"{height}×{width}",
        model_rows=model_rows(run),
        class_rows=class_rows(run["palette"], run["metrics"]),
        class_counts="; ".join(
            f"{split} {len(names)}" for split, names in scored_classes(run["metrics"]).items()
        ),
        data_rows=data_rows(run),
        recipe_rows=recipe_rows(run),
        score_rows=score_rows(run["metrics"]),
        scored_metrics=scored(run["metrics"]),
        unscored=[m for m in run["metrics"] if m not in scored(run["metrics"])],
        per_class_header=[f"{m['split']} IoU" for m in scored(run["metrics"])],
        per_class_rows=per_class_rows(run["metrics"]),
        speed_rows=speed_rows(run["cost"]["speed"]),
        parity_rows=parity_rows(run["check"]),
        limits=limits(run),
    )


def to_html(markdown: str) -> str:
    from markdown_it import MarkdownIt

    from ..reporting import pages

    # html off: HTML in the text (a class name from a downloaded class_dict.csv) shows as text
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    style = "body{max-width:70em}td,th{text-align:left}pre{background:#f6f6f6;padding:.6em}"
    return pages.document("Model card", body, style)


def gather(args: argparse.Namespace) -> dict:
    """Everything the card reads, from the run's files."""
    settings = json.loads(args.settings)
    metrics = sorted((read_json(p) for p in args.metrics), key=lambda m: m["split"] != "val")
    return {
        "settings": settings,
        "meta": {
            "model": metrics[0]["model"],
            "epoch": metrics[0]["epoch"],
            "precision": metrics[0]["precision"],  # evaluate's: the one best.pth records
            "aux_loss_weight": settings["model"]["aux_loss_weight"],
        },
        "palette": read_json(args.palette),
        "manifest": read_json(args.manifest),
        "index": read_json(args.prepared / "index.json"),
        "history": read_json(args.history),
        "metrics": metrics,
        "check": read_json(args.check),
        "cost": read_json(args.cost),
        "paths": {k: str(getattr(args, k)) for k in ("model", "onnx", "prepared", "palette")},
    }


@cli
def main(argv: list[str] | None = None) -> None:
    parser = command.parser(__file__, __doc__)
    inputs = {
        "model": "best.pth from training",
        "onnx": "model.onnx from export",
        "palette": "palette.json",
        "manifest": "dataset.json from extract",
        "prepared": "folder from convert (index.json)",
        "history": "history.json from training",
        "check": "export_check.json",
        "cost": "cost.json",
    }
    for name, what in inputs.items():
        parser.add_argument(f"--{name}", required=True, type=Path, help=what)
    parser.add_argument("--metrics", required=True, nargs="+", type=Path, help="{split}.json")
    parser.add_argument("--settings", required=True, help="JSON: dataset, model, train sections")
    parser.add_argument("--out", required=True, type=Path, help="MODEL_CARD.md")
    parser.add_argument("--out-html", type=Path, help="the card as HTML, for the report")
    args = parser.parse_args(argv)
    made = Record(
        __file__,
        args,
        [getattr(args, name) for name in [*inputs, "metrics"]],
        [args.out, args.out_html],
    )
    card = render(gather(args))
    with atomic_path(args.out) as tmp:
        tmp.write_text(card)
    if args.out_html:
        with atomic_path(args.out_html) as tmp:
            tmp.write_text(to_html(card))
    made.write()
    print(f"model card: {args.out}")


if __name__ == "__main__":
    main()
