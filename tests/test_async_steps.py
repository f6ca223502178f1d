"""GPU efficiency by design, checked where the CPU can check it (issue 20, item 5): bf16 trains
without a loss scaler, losses reach the host once per log interval in the order they were made,
the loader copies from pinned memory without blocking (that GPU jobs keep their loader workers
per process: tests/test_train.py), and evaluation runs batched with loader workers, scoring
exactly what one image at a time scores."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from camvidseg.core import settings

CLASSES = 3


def tiny_model(seed: int = 0):
    from camvidseg.training.model import SegmentationModel

    torch.manual_seed(seed)
    return SegmentationModel("lraspp_mobilenet_v3_large", CLASSES, 0.0).eval()


def prepared_split(root, sizes: list[tuple[int, int]]):
    """A prepared folder (PNG, no cache) whose val split has one image per entry of ``sizes``."""
    rng = np.random.default_rng(len(sizes))
    (root / "val").mkdir(parents=True)
    items = []
    for i, (height, width) in enumerate(sizes):
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        mask = rng.integers(0, CLASSES, (height, width), dtype=np.uint8)
        mask[0, :5] = 255  # some ignored pixels
        Image.fromarray(image).save(root / f"val/{i}.png")
        Image.fromarray(mask).save(root / f"val/{i}_mask.png")
        items.append({"stem": str(i), "image": f"val/{i}.png", "mask": f"val/{i}_mask.png"})
    (root / "index.json").write_text(json.dumps({"splits": {"val": items}}))
    return root


def test_bf16_trains_under_autocast_without_a_loss_scaler(monkeypatch):
    from mmengine.optim import build_optim_wrapper

    from camvidseg.training.train import optim_wrapper_config

    def refuse(*args, **kwargs):
        raise AssertionError("a GradScaler was made for bf16")

    monkeypatch.setattr(torch.amp.GradScaler, "__init__", refuse)
    model = tiny_model().train()
    train = settings.resolve("train", {"lr": 0.01})
    wrapper = build_optim_wrapper(model, optim_wrapper_config(train, "bf16"))
    assert not hasattr(wrapper, "loss_scaler")
    dtypes = []
    model.net.classifier.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    before = [p.detach().clone() for p in model.parameters()]
    batch = {"inputs": torch.randint(0, 255, (2, 3, 32, 48), dtype=torch.uint8),
             "data_samples": {"labels": torch.randint(0, CLASSES, (2, 32, 48))}}  # fmt: skip
    losses = model.train_step(batch, wrapper)  # CPU autocast has bf16 too
    assert dtypes == [torch.bfloat16] and torch.isfinite(losses["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert optim_wrapper_config(train, "fp16")["type"] == "AmpOptimWrapper"  # fp16 needs one


def test_the_preprocessor_copies_without_blocking():
    assert tiny_model().data_preprocessor._non_blocking


def test_losses_reach_the_hub_once_per_log_interval_in_their_order():
    """A real MessageHub behind the hook: nothing is read between the logger's iterations (no
    host sync there), then every value arrives, in order, exactly as ``.item()`` reads it."""
    from mmengine.logging import MessageHub

    from camvidseg.training.async_steps import DeferredLossHook

    hub = MessageHub(f"deferred-{id(object())}")
    runner = SimpleNamespace(message_hub=hub, train_dataloader=[None] * 7, hooks=[], iter=0)
    hook = DeferredLossHook(interval=3)
    made = [(torch.tensor(0.1 * i + 1 / 3), torch.tensor(i / 7)) for i in range(7)]
    counts = []
    for batch_idx, (loss, aux) in enumerate(made):
        runner.iter = batch_idx  # MMEngine counts after the hooks
        hook.after_train_iter(runner, batch_idx, outputs={"loss": loss, "loss_aux": aux})
        logged = hub.log_scalars.get("train/loss")
        counts.append(0 if logged is None else len(logged.data[0]))
    assert counts == [0, 0, 3, 3, 3, 6, 7]  # at the logger's iterations and the epoch's last
    assert list(hub.get_scalar("train/loss").data[0]) == [loss.item() for loss, _ in made]
    assert list(hub.get_scalar("train/loss_aux").data[0]) == [aux.item() for _, aux in made]
    runner.hooks.append(hook)
    runner.iter = 7
    hook.after_train_iter(runner, 0, outputs={"loss": torch.tensor(2.0), "loss_aux": 0.5})
    from camvidseg.training.async_steps import flush_losses

    flush_losses(runner)  # what a signal's checkpoint does first
    assert hub.get_scalar("train/loss").data[0][-1] == 2.0
    assert hub.get_scalar("train/loss_aux").data[0][-1] == 0.5


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_loss_that_is_not_finite_stops_training_naming_its_iteration(bad):
    """Labels of no class (every pixel ignored) or a learning rate too high: a NaN loss trained on
    to the end and exported a model that predicts nothing."""
    from mmengine.logging import MessageHub

    from camvidseg.core.errors import UserError
    from camvidseg.training.async_steps import DeferredLossHook

    runner = SimpleNamespace(message_hub=MessageHub(f"nan-{id(object())}"),
                             train_dataloader=[None] * 20, iter=0)  # fmt: skip
    hook = DeferredLossHook(interval=4)
    losses = [1.0, 0.5, bad, 0.25]  # the third step diverged; the logger reads at the fourth
    with pytest.raises(UserError, match=rf"^train: loss {bad} at iteration 3: training diverged"):
        for batch_idx, loss in enumerate(losses):
            runner.iter = batch_idx
            hook.after_train_iter(runner, batch_idx, outputs={"loss": torch.tensor(loss)})
    assert list(runner.message_hub.get_scalar("train/loss").data[0]) == [1.0, 0.5]


def test_evaluation_loader_batches_images_of_one_size_with_workers(tmp_path):
    from camvidseg.data.dataset import SegmentationDataset
    from camvidseg.evaluation.evaluate import evaluation_loader

    sizes = [(32, 48)] * 5 + [(40, 56)] * 2 + [(32, 48)]
    dataset = SegmentationDataset(prepared_split(tmp_path, sizes), "val")
    loader = evaluation_loader(dataset, 4, 2, "cpu")
    assert loader.num_workers == 2
    batches = [batch["data_samples"]["index"].tolist() for batch in loader]
    assert batches == [[0, 1, 2, 3], [4], [5, 6], [7]]  # in order; a new size, a new batch
    assert settings.resolve("eval", {})["batch_size"] > 1
    assert settings.resolve("eval", {})["num_workers"] > 0


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_batched_evaluation_scores_what_one_image_at_a_time_scores(tmp_path, mode):
    from camvidseg.data.dataset import SegmentationDataset
    from camvidseg.evaluation.evaluate import evaluate
    from camvidseg.evaluation.inference import WHOLE

    sizes = [(32, 48)] * 5 + [(40, 56)] * 3
    dataset = SegmentationDataset(prepared_split(tmp_path, sizes), "val")
    setting = WHOLE | ({"mode": "slide", "crop_size": [24, 32], "stride": [16, 16]}
                       if mode == "slide" else {})  # fmt: skip
    from camvidseg.training.segmenter import Segmenter

    torch.manual_seed(3)
    model = Segmenter("lraspp_mobilenet_v3_large", CLASSES, aux_loss=False).eval()
    names = ["a", "b", "c"]
    one = evaluate(model, dataset, names, "cpu", [setting], batch_size=1, workers=0)
    batched = evaluate(model, dataset, names, "cpu", [setting], batch_size=4, workers=2)
    assert np.array(one[0]["confusion"]).sum() == sum(h * w - 5 for h, w in sizes)
    assert batched[0]["confusion"] == one[0]["confusion"]
    assert batched[0]["mIoU"] == one[0]["mIoU"]
