"""benchmarks/training_profile.py's clock: each region's own time, nested regions subtracted, put back after."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "training_profile.py"


def _module():
    spec = importlib.util.spec_from_file_location("training_profile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NOW = [0.0]  # the clock's time: the work below advances it, so the figures are exact


class Work:
    @staticmethod
    def inner():
        NOW[0] += 2.0

    @staticmethod
    def outer():
        NOW[0] += 1.0
        Work.inner()
        Work.inner()


def test_a_region_counts_its_own_time_and_nested_regions_theirs(monkeypatch):
    module = _module()
    monkeypatch.setattr(module.time, "perf_counter", lambda: NOW[0])
    clock = module._Clock()
    outer, inner = Work.outer, Work.inner
    clock.wrap(Work, "inner", "inner")
    clock.wrap(Work, "outer", "outer")
    Work.outer()
    Work.inner()
    assert clock.own == {"outer": 1.0, "inner": 6.0}  # outer's own second, not the four spent inside inner
    clock.restore()
    assert Work.outer is outer and Work.inner is inner


def test_other_threads_are_not_clocked():
    clock = _module()._Clock()
    clock.wrap(Work, "inner", "inner")
    try:
        worker = threading.Thread(target=Work.inner)
        worker.start()
        worker.join()
        assert clock.own == {}
    finally:
        clock.restore()


def test_the_training_clock_patches_and_restores_what_it_clocks():
    import torch

    from src.features import finetune, frozen_prefix, onnx_runtime

    before = (torch.Tensor.backward, finetune._train, frozen_prefix.prefix_session, onnx_runtime.OrtExtractor.__call__)
    clock = _module()._clocked_training()
    assert torch.Tensor.backward is not before[0] and frozen_prefix.prefix_session is not before[2]
    clock.restore()
    assert (torch.Tensor.backward, finetune._train, frozen_prefix.prefix_session,
            onnx_runtime.OrtExtractor.__call__) == before
