"""Fast unit tests of the pieces an end-to-end run cannot judge (issue 16's seeded mutations):
augmentation keeps image and mask aligned, training resumes from the newest checkpoint, initial
weights are really loaded, evaluate scores the split it names, a training process keeps the memory
it frees for its next step. Seconds each, no Snakemake."""

import importlib.util
import json
import os
import random
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, make_plan, sources_stable
from PIL import Image

from camvidseg.data.dataset import RandomScaleCropFlip

STEP = 4  # image value per column/row index (a misplaced column is off by many steps)


def index_images(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image whose red channel is ``STEP`` x the column and green ``STEP`` x the row (blue
    255), and two masks holding the column and the row index: any misalignment shows."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([cols * STEP, rows * STEP, np.full_like(cols, 255)], axis=-1)
    return image.astype(np.uint8), cols.astype(np.uint8), rows.astype(np.uint8)


def augmented(seed: int, transform, image: np.ndarray, mask: np.ndarray):
    random.seed(seed)  # the transform draws from `random`: same seed, same scale/crop/flip
    return transform(image, mask)


def is_flipped(col_mask: np.ndarray) -> bool:
    """Whether column indices run right to left (read along the first row with two labels)."""
    row = next(r for r in col_mask if (r != 255).sum() >= 2)
    labels = row[row != 255]
    return bool(labels[0] > labels[-1])


@pytest.mark.parametrize("scale_range", [(1.0, 1.0), (0.5, 0.8), (1.2, 2.0)])
def test_augmentation_keeps_image_and_mask_aligned(scale_range):
    image, cols, rows = index_images(20, 30)
    transform = RandomScaleCropFlip((16, 24), scale_range)
    flips = set()
    for seed in range(24):
        out, col_mask = augmented(seed, transform, image, cols)
        same, row_mask = augmented(seed, transform, image, rows)
        assert np.array_equal(out, same) and out.shape == (16, 24, 3)
        labelled = col_mask != 255
        assert np.array_equal(labelled, row_mask != 255)
        # Linear (image) and nearest (mask) resizing sample a source pixel apart at most (the
        # scale is 0.5 at the least), so values differ by two index steps at most.
        red, green = out[..., 0].astype(int), out[..., 1].astype(int)
        assert np.abs(red - STEP * col_mask.astype(int))[labelled].max() <= 2 * STEP
        assert np.abs(green - STEP * row_mask.astype(int))[labelled].max() <= 2 * STEP
        # Padding: black image exactly where the mask is the ignore index.
        assert (out[~labelled] == 0).all() and (out[labelled][:, 2] > 0).all()
        flips.add(is_flipped(col_mask))
    assert flips == {False, True}  # both orientations were drawn, and checked


def test_padding_is_black_under_the_ignore_index():
    image, cols, _ = index_images(10, 12)
    transform = RandomScaleCropFlip((16, 24), (1.0, 1.0))
    flips = set()
    for seed in range(8):
        out, mask = augmented(seed, transform, image, cols)
        flips.add(is_flipped(mask))
        # The whole 10 x 12 image at the top, on the left (or right, flipped); the rest padding.
        placed = np.s_[:10, 12:] if is_flipped(mask) else np.s_[:10, :12]
        expected = cols[:, ::-1] if is_flipped(mask) else cols
        assert np.array_equal(mask[placed], expected) and (mask != 255).sum() == 10 * 12
        assert np.array_equal(out[placed][..., 0], STEP * expected)
        assert (out[mask == 255] == 0).all()
    assert flips == {False, True}


# ---------------------------------------------------------------- training: resume, weights


def small_model(seed: int):
    from camvidseg.training.model import SegmentationModel

    torch.manual_seed(seed)
    return SegmentationModel("lraspp_mobilenet_v3_large", 3, 0.0)


def test_initial_weights_are_loaded_tensor_by_tensor(tmp_path):
    from camvidseg.training.model import load_initial_weights

    source, target = small_model(1), small_model(2)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "init.pth")
    before = target.state_dict()
    assert not all(torch.equal(before[k], v) for k, v in source.state_dict().items())
    assert load_initial_weights(target, tmp_path / "init.pth") == []
    loaded = target.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())


def test_training_resumes_from_the_newest_readable_checkpoint(tmp_path, capsys):
    from camvidseg.training.train import parse_args, plan_run

    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared/index.json").write_text("{}")
    (tmp_path / "palette.json").write_text("{}")
    settings = {"model": {"backbone_weights": "none"}, "train": {"device": "cpu", "batch_size": 2}}
    args = parse_args(["--settings", json.dumps(settings), "--prepared", str(tmp_path / "prepared"),
                       "--palette", str(tmp_path / "palette.json"), "--out-model", "m",
                       "--out-history", "h", "--work-root", str(tmp_path / "ckpt"),
                       "--threads", "1"])  # fmt: skip
    assert plan_run(args, "cpu", images=8).resume_from is None  # a fresh start
    work_dir = plan_run(args, "cpu", images=8).work_dir
    work_dir.mkdir(parents=True)
    for name in ("epoch_2.pth", "epoch_10.pth", "epoch_9.pth", "iter_9.pth"):
        torch.save({"meta": {}}, work_dir / name)
    run = plan_run(args, "cpu", images=8)  # 4 iterations per epoch: epoch_10 ends iteration 40
    assert run.resume_from == work_dir / "epoch_10.pth"
    assert f"resuming from epoch_10.pth in {work_dir}" in capsys.readouterr().out


def test_a_write_removes_what_killed_writers_left_in_its_folder(tmp_path):
    """A training killed while it rewrote epoch_1.pth leaves its temporary; the resumed training
    moves past that checkpoint and never writes it again, so the next write of any output in the
    folder removes it. A running writer's temporary, this process's temporary of another output
    and another host's stay (fault injection found the leftover)."""
    from camvidseg.core.fileio import atomic_path

    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        left = tmp_path / f".epoch_1.pth.{dead.pid}@{host}.k9x2m4q7"
        kept = [tmp_path / f".epoch_3.pth.{live.pid}@{host}.a1b2c3d4",
                tmp_path / f".history.json.{os.getpid()}@{host}.a1b2c3d4",
                tmp_path / f".epoch_1.pth.{dead.pid}@another-{host}.a1b2c3d4"]  # fmt: skip
        for path in (left, *kept):
            path.write_bytes(b"partial")
        with atomic_path(tmp_path / "epoch_2.pth") as tmp:
            tmp.write_bytes(b"complete")
    finally:
        live.kill()
        live.wait()
    assert sorted(tmp_path.iterdir()) == sorted([*kept, tmp_path / "epoch_2.pth"])


# ---------------------------------------------------------------- evaluate


def prepared_split(root, split: str, count: int, size=(32, 48), ignored: int = 0) -> list[dict]:
    """``count`` image/mask pairs of one split under ``root``; each mask has ``ignored`` pixels
    of the ignore index in its first row."""
    rng = np.random.default_rng(count)
    (root / split).mkdir(parents=True)
    items = []
    for i in range(count):
        image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        mask = rng.integers(0, 3, size, dtype=np.uint8)
        mask[0, :ignored] = 255
        Image.fromarray(image).save(root / split / f"{i}.png")
        Image.fromarray(mask).save(root / split / f"{i}_mask.png")
        items.append({"stem": str(i), "image": f"{split}/{i}.png", "mask": f"{split}/{i}_mask.png"})
    return items


def test_evaluate_scores_the_split_it_names(tmp_path):
    from camvidseg.evaluation import evaluate

    prepared = tmp_path / "prepared"
    splits = {"train": prepared_split(prepared, "train", 3),
              "val": prepared_split(prepared, "val", 1, ignored=7)}  # fmt: skip
    (prepared / "index.json").write_text(json.dumps({"splits": splits}))
    classes = [{"id": i, "name": n, "color": [i, i, i]} for i, n in enumerate("abc")]
    (tmp_path / "palette.json").write_text(json.dumps({"classes": classes}))
    meta = {"model": "lraspp_mobilenet_v3_large", "num_classes": 3, "aux_loss_weight": 0.0,
            "epoch": 1, "precision": "fp32"}  # fmt: skip
    torch.save({"meta": meta, "state_dict": small_model(0).state_dict()}, tmp_path / "best.pth")
    out = tmp_path / "val.json"
    evaluate.main(["--model", str(tmp_path / "best.pth"), "--prepared", str(prepared),
                   "--palette", str(tmp_path / "palette.json"), "--split", "val",
                   "--device", "cpu", "--out-json", str(out),
                   "--out-csv", str(tmp_path / "val.csv")])  # fmt: skip
    scores = json.loads(out.read_text())
    assert scores["split"] == "val"
    assert scores["pixels_scored"] == 32 * 48 - 7  # the one val image, not the 3 train images
    confusion = np.array(scores["confusion"])
    assert confusion.sum() == 32 * 48 - 7


def evaluate_split(tmp_path, index: dict, split: str) -> dict:
    """Run the evaluate command on ``split`` of a prepared folder with ``index``; its JSON."""
    from camvidseg.evaluation import evaluate

    prepared = tmp_path / "prepared"
    (prepared / "index.json").write_text(json.dumps(index))
    classes = [{"id": i, "name": n, "color": [i, i, i]} for i, n in enumerate("abc")]
    (tmp_path / "palette.json").write_text(json.dumps({"classes": classes}))
    meta = {"model": "lraspp_mobilenet_v3_large", "num_classes": 3, "aux_loss_weight": 0.0,
            "epoch": 1, "precision": "fp32"}  # fmt: skip
    torch.save({"meta": meta, "state_dict": small_model(0).state_dict()}, tmp_path / "best.pth")
    out = tmp_path / f"{split}.json"
    evaluate.main(["--model", str(tmp_path / "best.pth"), "--prepared", str(prepared),
                   "--palette", str(tmp_path / "palette.json"), "--split", split,
                   "--device", "cpu", "--out-json", str(out),
                   "--out-csv", str(tmp_path / f"{split}.csv")])  # fmt: skip
    return json.loads(out.read_text())


def test_a_split_left_out_of_the_dataset_is_scored_on_nothing(tmp_path, capsys):
    splits = {"train": prepared_split(tmp_path / "prepared", "train", 2)}
    why = "no test/ or testannot/ folder in /data/CamVid"
    scores = evaluate_split(tmp_path, {"splits": splits, "left_out": {"test": why}}, "test")
    assert scores["scored"] is False and scores["reason"] == why
    assert scores["mIoU"] is None and scores["per_class"] == [] and scores["images"] == 0
    assert f"test: not scored: {why}" in capsys.readouterr().out
    assert (tmp_path / "test.csv").read_text().splitlines() == [
        "class,IoU,Acc,Dice,gt_pixels,pred_pixels"
    ]


def test_a_split_whose_labels_are_all_ignored_is_scored_on_nothing(tmp_path):
    splits = {"test": prepared_split(tmp_path / "prepared", "test", 2, ignored=48 * 32)}
    for item in splits["test"]:  # every pixel of the ignore index
        path = tmp_path / "prepared" / item["mask"]
        Image.fromarray(np.full((32, 48), 255, np.uint8)).save(path)
    scores = evaluate_split(tmp_path, {"splits": splits}, "test")
    assert scores["scored"] is False and scores["images"] == 2
    assert scores["reason"] == "the 2 test images have no labelled pixel (all ignored)"
    assert scores["mIoU"] is None and scores["modes"] == {}


# ---------------------------------------------------------------- class weights


def test_median_frequency_weights_balance_the_classes_by_the_images_they_appear_in(tmp_path):
    from camvidseg.data.dataset import SegmentationDataset, median_frequency_weights

    prepared = tmp_path / "prepared"
    items = prepared_split(prepared, "train", 2, size=(2, 2))
    masks = [[[0, 0], [0, 0]], [[0, 0], [1, 255]]]  # class 0: 6 of 8 px, class 1: 1 of 4
    for item, mask in zip(items, masks, strict=True):
        Image.fromarray(np.array(mask, np.uint8)).save(prepared / item["mask"])
    (prepared / "index.json").write_text(json.dumps({"splits": {"train": items}}))
    weights = median_frequency_weights(SegmentationDataset(prepared, "train"), 3)
    # frequencies 0.75 and 0.25, median 0.5; class 2 never appears: weight 1
    assert weights.tolist() == pytest.approx([0.5 / 0.75, 2.0, 1.0])


def test_class_weights_weigh_the_loss_and_stay_out_of_the_model_file():
    import torch.nn.functional as F

    from camvidseg.training.model import SegmentationModel

    weights = torch.tensor([0.5, 2.0, 1.0])
    torch.manual_seed(0)
    model = SegmentationModel("lraspp_mobilenet_v3_large", 3, 0.0, class_weights=weights).eval()
    inputs = torch.rand(2, 3, 32, 48)
    labels = torch.randint(0, 3, (2, 32, 48))
    labels[0, 0] = 255
    loss = model(inputs, {"labels": labels}, mode="loss")["loss"]
    logits = model(inputs, mode="tensor")
    assert loss.item() == pytest.approx(
        F.cross_entropy(logits, labels, weight=weights, ignore_index=255).item(), rel=1e-6
    )
    assert loss.item() != pytest.approx(F.cross_entropy(logits, labels, ignore_index=255).item())
    assert "class_weights" not in model.state_dict()  # evaluate rebuilds the model without them


# ---------------------------------------------------------------- the seeded mutations themselves


def test_every_seeded_mutation_still_matches_the_code():
    """tools/mutations.yaml's snippets each occur once in today's code (else `make mutations`
    refuses to run), and `make mutations` runs apart from `make test`."""
    spec = importlib.util.spec_from_file_location("mutations", REPO / "tools/mutations.py")
    mutations = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mutations)
    with sources_stable():  # not a source another test is editing for a moment
        listed = mutations.load(mutations.LIST, None)
    assert len(listed) >= 30
    assert "tools/mutations.py" in make_plan("-o", ".venv/.installed", "mutations")
    assert "tools/mutations.py" not in make_plan("-o", ".venv/.installed", "test")


MEMORY_A_STEP_GIVES_BACK = """
import os, sys
import numpy as np
from camvidseg.training.allocator import keep_freed_memory

if sys.argv[1] == "kept" and not keep_freed_memory():
    raise SystemExit("not glibc")
def resident():  # bytes, whatever the page size (huge pages included)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
blocks = [np.ones((1 << 20) // 8) for _ in range(100)]  # a training step's pattern in small
held = resident()
del blocks
print(held - resident())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator is what is tuned")
def test_training_process_keeps_the_memory_its_last_step_freed():
    returned = {}
    for mode in ("default", "kept"):
        run = [sys.executable, "-c", MEMORY_A_STEP_GIVES_BACK, mode]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}  # this checkout's package
        returned[mode] = int(
            subprocess.run(run, capture_output=True, text=True, check=True, env=env).stdout
        )
    # By default the 100 MB go back to the OS at once (and the next step faults them in anew).
    assert returned["default"] > 80 << 20, returned
    assert returned["kept"] < 8 << 20, returned


def test_the_schema_names_exactly_the_models_that_have_a_record():
    from camvidseg.core import settings
    from camvidseg.training.networks import MODELS

    assert settings.node("model.name")["enum"] == list(MODELS)


def test_a_model_added_as_one_record_builds_and_gets_its_model_card(tmp_path):
    """docs/architecture.md: a new network is one ``MODELS`` record (and the schema's enum). In a
    scratch copy of the package, fcn_resnet101 added so: the config accepts it, the network
    builds, and the model card describes it (the card reads the same record)."""
    import shutil

    shutil.copytree(REPO / "src", tmp_path / "src")
    package = tmp_path / "src/camvidseg"
    records = package / "training/networks.py"
    record = ('    "fcn_resnet101": Network("fcn_resnet101", True, "ResNet101_Weights",'
              ' "FCN head on a ResNet-101 backbone"),\n')  # fmt: skip
    records.write_text(records.read_text().replace("MODELS = {\n", "MODELS = {\n" + record, 1))
    schema = package / "config.schema.yaml"
    schema.write_text(schema.read_text().replace("fcn_resnet50]", "fcn_resnet50, fcn_resnet101]"))
    (tmp_path / "best.pth").write_bytes(b"weights")
    (tmp_path / "model.onnx").write_bytes(b"graph")
    script = f"""
import jsonschema
from camvidseg.core import settings
from camvidseg.deploy.card import model_rows
from camvidseg.training.segmenter import build_network
jsonschema.validate("fcn_resnet101", settings.node("model.name"))
build_network("fcn_resnet101", 3, aux_loss=True)
run = {{"meta": {{"model": "fcn_resnet101", "epoch": 1, "aux_loss_weight": 0.4}},
        "settings": {{"model": {{"backbone_weights": "none"}}}},
        "palette": {{"classes": ["a", "b", "c"]}}, "check": {{"opset": 17}},
        "paths": {{"model": {str(tmp_path / "best.pth")!r},
                  "onnx": {str(tmp_path / "model.onnx")!r}}}}}
print(model_rows(run))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path / "src")})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "FCN head on a ResNet-101 backbone (torchvision `fcn_resnet101`)" in result.stdout


def test_backbone_weights_load_where_they_fit_and_another_networks_are_refused(tmp_path):
    """model.backbone_weights: an ImageNet classifier's state dict fills the segmentation
    backbone (its "features." prefix dropped); a classifier of another family does not fit."""
    from camvidseg.core.errors import UserError
    from camvidseg.training.model import load_backbone
    from camvidseg.training.segmenter import build_network
    from camvidseg.training.torchvision_import import import_torchvision

    models = import_torchvision().models
    classifier = models.mobilenet_v3_large(weights=None)
    torch.save(classifier.state_dict(), tmp_path / "mobilenet.pth")
    net = build_network("lraspp_mobilenet_v3_large", 3, aux_loss=False)
    assert load_backbone(net, tmp_path / "mobilenet.pth") == len(net.backbone.state_dict())
    loaded = net.backbone.state_dict()["0.0.weight"]
    assert torch.equal(loaded, classifier.state_dict()["features.0.0.weight"])

    torch.save(models.resnet18(weights=None).state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(UserError, match=r"resnet.pth: only 0 of \d+ backbone tensors fit"):
        load_backbone(net, tmp_path / "resnet.pth")
