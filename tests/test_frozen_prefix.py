"""The frozen blocks run in ONNX Runtime during fine-tuning: the same logits, the same gradients, and one
export per process and weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.features import frozen_prefix
from src.features.backbone import create_model
from src.features.finetune import _freeze_bn, freeze_early
from src.features.frozen_prefix import to_tensor

pytest.importorskip("onnxruntime")


def _model(frozen_blocks: int):
    torch.manual_seed(0)
    model = create_model(num_classes=4, pretrained=True)
    freeze_early(model, frozen_blocks)
    model.train()
    _freeze_bn(model)  # as fine-tuning runs it: BatchNorm on its stored statistics
    model.drop_rate = 0.0  # dropout draws differ between two passes; the layers are what is compared
    return model


@pytest.mark.parametrize("frozen_blocks", [1, 3, 5])
def test_logits_and_gradients_equal_the_torch_forward(frozen_blocks):
    batch = np.random.default_rng(0).normal(size=(3, 64, 64, 3)).astype(np.float32)
    model = _model(frozen_blocks)
    ours = frozen_prefix.split_forward(model, frozen_blocks, 64)(batch)
    ours.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    theirs = model(to_tensor(batch))
    theirs.square().sum().backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-3, atol=1e-4 * float(p.grad.abs().max()) + 1e-7)
    assert not any(n.startswith("blocks.0.") for n in grads)  # nothing frozen has a gradient


def test_nothing_frozen_is_the_plain_forward():
    batch = np.zeros((1, 32, 32, 3), np.float32)
    model = _model(0)
    torch.testing.assert_close(frozen_prefix.split_forward(model, 0, 32)(batch), model(to_tensor(batch)))


def test_one_session_per_weights_and_size_and_other_sizes_refused(monkeypatch):
    monkeypatch.setattr(frozen_prefix, "_SESSIONS", {})
    model = _model(3)
    a = frozen_prefix.prefix_session(model, 3, 32)
    assert frozen_prefix.prefix_session(_model(3), 3, 32) is a      # the same ImageNet weights: no new export
    assert frozen_prefix.prefix_session(model, 3, 64) is not a       # another size: its own constant pads
    with torch.no_grad():
        model.conv_stem.weight.add_(0.01)
    assert frozen_prefix.prefix_session(model, 3, 32) is not a       # other weights: another export
    with pytest.raises(ValueError, match="32-px"):
        frozen_prefix.split_forward(model, 3, 32)(np.zeros((1, 48, 48, 3), np.float32))


def test_without_onnx_runtime_the_frozen_blocks_stay_in_torch(monkeypatch, caplog):
    def broken(*_):
        raise RuntimeError("no ONNX Runtime here")

    monkeypatch.setattr(frozen_prefix, "prefix_session", broken)
    batch = np.zeros((1, 32, 32, 3), np.float32)
    model = _model(3)
    with caplog.at_level("WARNING"):
        out = frozen_prefix.split_forward(model, 3, 32)(batch)
    torch.testing.assert_close(out, model(to_tensor(batch)))
    assert "stay in torch" in caplog.text
