"""Whole-image, sliding-window and test-time-augmented inference; FLOP counting (issue 13)."""

import pytest
import torch

from camvidseg.deploy.cost import gflops_per_image, parameter_count
from camvidseg.evaluation.inference import WHOLE, mode_label, predict_logits, window_starts
from camvidseg.training.segmenter import Segmenter


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Segmenter("lraspp_mobilenet_v3_large", 5, aux_loss=False).eval()


def setting(mode="whole", crop=None, stride=None, flip=False, scales=(1.0,)):
    return {"mode": mode, "crop_size": crop, "stride": stride,
            "tta": {"flip": flip, "scales": list(scales)}}  # fmt: skip


def image(height=40, width=56, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=generator)


def test_slide_with_one_window_the_size_of_the_image_equals_whole_exactly(model):
    inputs = image()
    whole = predict_logits(model, inputs, "cpu", WHOLE)
    slide = predict_logits(model, inputs, "cpu", setting("slide", [40, 56], [40, 56]))
    assert torch.equal(whole, slide)


def test_overlapping_windows_cover_every_pixel_and_differ_from_whole(model):
    inputs = image()
    whole = predict_logits(model, inputs, "cpu", WHOLE)
    slide = predict_logits(model, inputs, "cpu", setting("slide", [24, 32], [16, 16]))
    assert slide.shape == whole.shape and torch.isfinite(slide).all()
    assert not torch.allclose(slide, whole)


def test_window_starts_step_by_stride_and_end_flush_with_the_edge():
    assert window_starts(100, 40, 30) == [0, 30, 60]
    assert window_starts(100, 40, 40) == [0, 40, 60]
    assert window_starts(30, 40, 10) == [0]


def test_flip_tta_on_a_mirror_symmetric_image_gives_a_mirror_symmetric_prediction(model):
    half = image(40, 28)
    symmetric = torch.cat([half, half.flip(-1)], dim=-1)
    assert torch.equal(symmetric, symmetric.flip(-1))
    plain = predict_logits(model, symmetric, "cpu", WHOLE)
    assert not torch.equal(plain, plain.flip(-1))  # the network alone is not symmetric
    for tta in (setting(flip=True), setting(flip=True, scales=(0.75, 1.0, 1.5)),
                setting("slide", [24, 32], [16, 24], flip=True)):  # fmt: skip
        logits = predict_logits(model, symmetric, "cpu", tta)
        assert torch.equal(logits, logits.flip(-1)), mode_label(tta)
        assert torch.equal(logits.argmax(1), logits.argmax(1).flip(-1))


def test_multi_scale_logits_come_back_at_the_image_size(model):
    inputs = image(37, 53)
    logits = predict_logits(model, inputs, "cpu", setting(scales=(0.5, 1.25)))
    assert logits.shape == (1, 5, 37, 53)


def test_mode_labels_name_the_setting():
    assert mode_label(WHOLE) == "whole"
    assert mode_label(setting("slide", [360, 480], [240, 320], True, (0.5, 1.0))) == (
        "slide 360x480/240x320 + scales 0.5,1 + flip"
    )


def test_flops_are_counted_by_torch_and_grow_with_the_pixels(model):
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    # 2 FLOPs per multiply-add: 2 * (3 * 3 * 3) * 8 outputs per pixel * 100 pixels
    assert gflops_per_image(conv, 10, 10) == pytest.approx(2 * 27 * 8 * 100 / 1e9)
    assert parameter_count(conv) == 3 * 8 * 9 + 8
    small, large = (gflops_per_image(model.net, 32 * k, 48 * k) for k in (2, 4))
    assert large / small == pytest.approx(4, rel=0.1)


@pytest.mark.parametrize(
    ("agreement", "delta", "fails"),
    [(0.9995, 0.0009, False), (0.9989, 0.0, True), (1.0, 0.0011, True)],
)
def test_export_verdict_needs_999_per_mille_agreement_and_miou_within_0_001(
    agreement, delta, fails
):
    from camvidseg.core.errors import UserError
    from camvidseg.deploy.export import verdict

    parity = {"argmax_agreement": agreement, "mIoU_abs_diff": delta, "max_abs_logit_diff": 0.5}
    if not fails:
        verdict(parity, "m.onnx", "val")
        return
    with pytest.raises(UserError, match=r"^m\.onnx: export check failed on val: argmax agrees"):
        verdict(parity, "m.onnx", "val")
