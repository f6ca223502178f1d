"""Stage 8: write the model card (MODEL_CARD.md, and as HTML for the report) from the run's outputs.

Model, classes and colors, data, training recipe, scores per split and class, cost and speed,
export parity, limits, and how to load the model with PyTorch and with onnxruntime.

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

SOURCES = {
    "opendatalab": "CamVid from OpenDataLab (`odl get CamVid`)",
    "openxlab": "CamVid from OpenXLab (`OpenDataLab/CamVid`)",
    "url": "a CamVid archive downloaded from `dataset.url`",
    "local": "a local CamVid copy (`dataset.path`)",
    "sample": "the workflow's procedural CamVid-format sample (synthetic street scenes)",
}



def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def sha256_prefix(path: Path) -> str:
    return sha256_file(path)[:16]


def model_section(run: dict) -> str:
    from ..training.model import MODELS

    name, meta, settings = run["meta"]["model"], run["meta"], run["settings"]
    weights = settings["model"]["backbone_weights"]
    init = {"imagenet": "ImageNet (torchvision IMAGENET1K_V1)", "none": "none (from scratch)"}
    rows = [
        ["architecture", f"{MODELS[name].architecture} (torchvision `{MODELS[name].builder}`)"],
        ["backbone initialisation", init.get(weights, f"weights file `{weights}`")],
        ["classes", len(run["palette"]["classes"])],
        [
            "checkpoint",
            f"`{run['paths']['model']}` (epoch {meta['epoch']}, best val mIoU during "
            f"training; sha256 `{sha256_prefix(Path(run['paths']['model']))}…`)",
        ],
        [
            "ONNX",
            f"`{run['paths']['onnx']}`, opset {run['check']['opset']}, sha256 "
            f"`{sha256_prefix(Path(run['paths']['onnx']))}…`",
        ],
        [
            "ONNX input",
            "`image`: uint8 RGB, (batch, 3, height, width), all three dynamic; "
            "normalisation (ImageNet mean/std) is inside the graph",
        ],
        ["ONNX output", "`logits`: float32 (batch, classes, height, width); argmax = class id"],
    ]
    return "## Model\n\n" + table(["", ""], rows)


def classes_section(palette: dict, ignored: list[str], metrics: list[dict]) -> str:
    """Every class the model predicts, and in which splits each is scored: only where it has
    pixels in the labels or the prediction (mIoU averages over those)."""
    scored = {m["split"]: {c["class"] for c in m["per_class"] if c["IoU"] is not None}
              for m in metrics}  # fmt: skip
    rows = []
    for c in palette["classes"]:
        hex_color = "#{:02x}{:02x}{:02x}".format(*c["color"])
        swatch = f'<span style="background:{hex_color}">&nbsp;&nbsp;&nbsp;&nbsp;</span>'
        splits = ", ".join(split for split, names in scored.items() if c["name"] in names)
        color = f"{swatch} `{hex_color}` {tuple(c['color'])}"
        rows.append([c["id"], c["name"], color, splits or "–"])
    counts = "; ".join(f"{split} {len(names)}" for split, names in scored.items())
    return (
        "## Classes\n\n"
        f"The model predicts all {len(palette['classes'])} classes of the palette. A split scores "
        "a class only where it has pixels in that split's labels or in the prediction: the others "
        "have no IoU and do not enter mIoU (as in MMSegmentation). Classes scored: "
        f"{counts}.\n\n"
        + table(["id", "name", "color", "scored in"], rows)
        + f"\n\nIgnored (label {palette.get('ignore_index', 255)}, neither trained nor scored): "
        + f"{', '.join(ignored) or 'none'}."
    )


def content_identity(manifest: dict, index: dict) -> str:
    """The data's ``content_id`` (extract writes it, convert copies it into index.json): sha256
    of the archive, or a hash of a folder's file names, sizes and times."""
    content = index.get("content_id") or manifest.get("content_id")
    return f"`{content}`" if content else "not recorded"


def data_section(run: dict) -> str:
    dataset, manifest = run["settings"]["dataset"], run["manifest"]
    sizes = ", ".join(f"{split} {n}" for split, n in manifest["sizes"].items())
    height, width = run["cost"]["resolution"]
    rows = [
        ["source", SOURCES.get(dataset["source"], dataset["source"])],
        ["layout", f"`{manifest['layout']}`; classes `{dataset['classes']}`"],
        ["split sizes (images)", sizes],
        ["image size (evaluated at)", f"{height}×{width}"],
        ["content hash", content_identity(manifest, run["index"])],
    ]
    return "## Data\n\n" + table(["", ""], rows)


def recipe_section(run: dict) -> str:
    t, history = run["settings"]["train"], run["history"]
    amp = t["amp"] and t["device"] != "cpu"
    best = max(history["val"], key=lambda r: r["mIoU"], default=None)
    rows = [
        [
            "optimizer",
            f"{t['optimizer']}, lr {t['lr']}, weight decay {t['weight_decay']}, "
            f"{t['warmup_iters']} warm-up iterations",
        ],
        [
            "schedule",
            f"{t['epochs']} epochs, batch {t['batch_size']} per GPU × {t['gpus']}, "
            f"validation every {t['val_interval']} epoch(s)",
        ],
        ["augmentation", f"random scale {t['scale_range']}, crop {t['crop_size']}, h-flip"],
        ["loss", f"cross-entropy (aux head weight {run['settings']['model']['aux_loss_weight']})"],
        ["precision", "AMP (bf16 where supported)" if amp else "fp32"],
        ["seed", t["seed"]],
        [
            "best validation",
            "–" if best is None else f"mIoU {best['mIoU']:.4f} at epoch {best['epoch']}",
        ],
    ]
    return "## Training recipe\n\n" + table(["", ""], rows)


def scores_section(metrics: list[dict]) -> str:
    rows = [
        [
            m["split"],
            label,
            *(fmt(scores[k]) for k in ("mIoU", "mAcc", "aAcc", "mDice")),
            scores["num_classes_scored"],
        ]
        for m in metrics
        for label, scores in m["modes"].items()
    ]
    names = [c["class"] for c in metrics[0]["per_class"]]
    per_class = [
        [name, *(fmt(m["per_class"][k]["IoU"]) for m in metrics)]
        for k, name in enumerate(names)
        if any(m["per_class"][k]["IoU"] is not None for m in metrics)
    ]
    first = metrics[0]["inference"]["label"]
    return (
        "## Scores\n\nFractions in 0–1 from one confusion matrix per split (ignored pixels "
        "excluded); means over the classes present in ground truth or prediction.\n\n"
        + table(["split", "inference", "mIoU", "mAcc", "aAcc", "mDice", "classes scored"], rows)
        + f"\n\n### Per-class IoU ({first})\n\n"
        + table(["class", *(f"{m['split']} IoU" for m in metrics)], per_class)
    )


def speed_rows(speed: dict) -> list[list]:
    rows = []
    for device, backends in speed.items():
        for backend in ("torch_eager", "onnxruntime"):
            result = backends.get(backend)
            if isinstance(result, dict):
                rows.append(
                    [
                        device,
                        backend.replace("_", " "),
                        f"{result['latency_ms']:.1f}",
                        f"{result['images_per_s']:.2f}",
                        result["precision"],
                    ]
                )
            elif result:
                rows.append([device, backend, "–", "–", result])
    return rows


def cost_section(cost: dict) -> str:
    height, width = cost["resolution"]
    ratio = cost["speed"]["cpu"]["onnxruntime_vs_eager"]
    return (
        f"## Cost and speed\n\n{cost['params'] / 1e6:.2f} M parameters (without the training-only "
        f"auxiliary head); {cost['gflops_per_image']:.2f} GFLOPs per {height}×{width} image "
        "(`torch.utils.flop_counter`: convolutions and matrix products, a multiply-add = 2).\n\n"
        + table(
            ["device", "backend", "latency ms", "images/s", "precision"], speed_rows(cost["speed"])
        )
        + f"\n\nBatch of one {height}×{width} image, {cost['threads']} CPU threads, median of "
        f"the timed calls after a warm-up, measured by the export check while the workflow ran: "
        f"onnxruntime is **{ratio:.2f}×** eager PyTorch's images/s on the CPU. "
        "`benchmarks/inference.py` measures this alone, at 360×480 and 720×960."
    )


def parity_section(check: dict) -> str:
    rows = [
        ["images / pixels compared", f"{check['images']} / {check['pixels']}"],
        ["max abs logit difference", f"{check['max_abs_logit_diff']:.3g}"],
        [
            "argmax agreement",
            f"{check['argmax_agreement']:.4%} (need ≥ {check['min_agreement']:.1%})",
        ],
        [
            "mIoU PyTorch / onnxruntime",
            f"{fmt(check['mIoU_torch'])} / {fmt(check['mIoU_onnxruntime'])}"
            f" (difference ≤ {check['max_mIoU_diff']} required)",
        ],
    ]
    return f"## Export parity ({check['split']} split, fp32 on the CPU)\n\n" + table(["", ""], rows)


def limits_section(run: dict) -> str:
    val = next((m for m in run["metrics"] if m["split"] == "val"), run["metrics"][0])
    scored = sorted((c for c in val["per_class"] if c["IoU"] is not None), key=lambda c: c["IoU"])
    weakest = ", ".join(f"{c['class']} {c['IoU']:.2f}" for c in scored[:3])
    unseen = [c["class"] for c in val["per_class"] if not c["gt_pixels"]]
    train_images = run["manifest"]["sizes"].get("train", 0)
    items = [
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
        "On CUDA the workflow evaluates under autocast; the ONNX model is fp32 and its parity is "
        "checked in fp32 on the CPU.",
    ]
    return "## Limits\n\n" + "\n".join(f"- {item}" for item in items)


def torch_snippet(run: dict) -> str:
    from ..training.model import IMAGENET_MEAN, IMAGENET_STD, MODELS

    name, k = run["meta"]["model"], len(run["palette"]["classes"])
    builder, has_aux = MODELS[name].builder, MODELS[name].has_aux
    aux = ", aux_loss=True" if has_aux and run["meta"]["aux_loss_weight"] > 0 else ""
    mean = ", ".join(f"{v:g}" for v in IMAGENET_MEAN)
    std = ", ".join(f"{v:g}" for v in IMAGENET_STD)
    return f"""import numpy as np, torch, torchvision
from PIL import Image
net = torchvision.models.segmentation.{builder}(num_classes={k}, weights_backbone=None{aux})
state = torch.load("{run["paths"]["model"]}", weights_only=True)["state_dict"]
net.load_state_dict({{k[4:]: v for k, v in state.items() if k.startswith("net.")}})
mean, std = torch.tensor([{mean}]), torch.tensor([{std}])
def predict(rgb):  # (H, W, 3) uint8 RGB -> (H, W) class ids
    x = ((torch.from_numpy(rgb).float() - mean) / std).permute(2, 0, 1)[None]
    with torch.no_grad():
        return net.eval()(x)["out"].argmax(1)[0].numpy()"""


def onnx_snippet(run: dict) -> str:
    return f"""import numpy as np, onnxruntime as ort
from PIL import Image
session = ort.InferenceSession("{run["paths"]["onnx"]}", providers=["CPUExecutionProvider"])
def predict(rgb):  # (H, W, 3) uint8 RGB -> (H, W) class ids; the graph normalises
    batch = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])
    return session.run(["logits"], {{"image": batch}})[0].argmax(1)[0]"""


def score_snippet(run: dict) -> str:
    k = len(run["palette"]["classes"])
    return f"""import json, os
root, k = "{run["paths"]["prepared"]}", {k}  # prepared data, number of classes
cm = np.zeros((k, k), np.int64)
for item in json.load(open(os.path.join(root, "index.json")))["splits"]["val"]:
    pred = predict(np.asarray(Image.open(os.path.join(root, item["image"])).convert("RGB")))
    label = np.asarray(Image.open(os.path.join(root, item["mask"]))).astype(np.int64)
    keep = label < k  # ignored pixels (255) are not scored
    cm += np.bincount(label[keep] * k + pred[keep], minlength=k * k).reshape(k, k)
union = cm.sum(0) + cm.sum(1) - np.diag(cm)
print(f"val mIoU {{(np.diag(cm)[union > 0] / union[union > 0]).mean():.6f}}")"""


def usage_section(run: dict) -> str:
    val = next((m for m in run["metrics"] if m["split"] == "val"), None)
    stored = fmt(val["modes"]["whole"]["mIoU"]) if val and "whole" in val["modes"] else "–"
    block = "```python\n{}\n```"
    return (
        "## How to use\n\nRun from the folder the workflow ran in. Load with **PyTorch** "
        "(torch + torchvision only, weights read with `weights_only=True`):\n\n"
        + block.format(torch_snippet(run))
        + "\n\nor with **onnxruntime** (no torch: `requirements-deploy.txt`):\n\n"
        + block.format(onnx_snippet(run))
        + "\n\nthen score the val split; either loader prints the stored whole-image val mIoU "
        f"({stored}):\n\n"
        + block.format(score_snippet(run))
        + "\n\nFor a folder of images: `python -m camvidseg predict --backend onnx --model "
        f"{run['paths']['onnx']} --palette {run['paths']['palette']} --input-dir DIR --out OUT`."
    )


def render(run: dict) -> str:
    name, meta = run["meta"]["model"], run["meta"]
    sections = [
        f"# Model card: `{name}` for CamVid semantic segmentation",
        f"Written by the workflow's `model_card` rule from this run's outputs (epoch "
        f"{meta['epoch']} checkpoint); every number below is read from `results/`.",
        model_section(run),
        classes_section(
            run["palette"], run["settings"]["dataset"]["ignore_classes"], run["metrics"]
        ),
        data_section(run),
        recipe_section(run),
        scores_section(run["metrics"]),
        cost_section(run["cost"]),
        parity_section(run["check"]),
        limits_section(run),
        usage_section(run),
    ]
    return "\n\n".join(sections) + "\n"


def to_html(markdown: str) -> str:
    from markdown_it import MarkdownIt

    from ..reporting import pages

    body = MarkdownIt("commonmark").enable("table").render(markdown)
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
    card = render(gather(args))
    with atomic_path(args.out) as tmp:
        tmp.write_text(card)
    if args.out_html:
        with atomic_path(args.out_html) as tmp:
            tmp.write_text(to_html(card))
    print(f"model card: {args.out}")


if __name__ == "__main__":
    main()
