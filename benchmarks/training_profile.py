"""Where a default training's time goes, against this machine's training limit (issue 29: measure first).

1. **Training limit**: forward + backward + AdamW step of the fine-tuned backbone (EfficientNet-Lite0 with
   a head, train mode with batch-norm frozen, channels-last, the stem and the first ``--frozen-blocks``
   blocks frozen and computed by ONNX Runtime, as fine-tuning runs) on random 224-px tensors at the
   fine-tuning batch size, nothing else: the images/s no fine-tuning recipe can beat here. Beside it: the
   same with the frozen blocks in torch, with every layer trained, and forward alone (eval, no grad).
2. **A default training** (`make run`'s: the shipped real-photo sample, every default, round on) in a
   temporary folder with a fresh store, W&B disabled: wall time and the stages the results record
   (fine-tune, the pseudo-label round, the int8 guard, the fits), and fine-tuning throughput as a share of
   the limit (images trained per second, the per-epoch held-out pass and decoding included).
3. **Where that training's time goes**, by what the main thread was doing (each region's own time, nested
   regions subtracted): decoding and augmenting training images, the frozen blocks (ONNX Runtime), the
   trained blocks' forward and loss, backward, the optimizer step, the held-out scoring of each epoch, the
   extractors' forward passes, the int8 quantisation, the fits; the rest is versioning, I/O and outputs.

    .venv/bin/python benchmarks/training_profile.py [--iters 20] [--batch 16] [--frozen-blocks 3] [--json]

Run it on a quiet machine; compare the ratio, not absolute figures, across machines.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def training_limit(batch: int, iters: int, frozen_blocks: int, n_classes: int = 12, ort_prefix: bool = True
                   ) -> dict[str, float]:
    import numpy as np
    import torch

    from src.features.finetune import _freeze_bn, _start_model, freeze_early
    from src.features.frozen_prefix import split_forward, to_tensor

    model = _start_model(n_classes, None).train()
    _freeze_bn(model)  # as fine-tuning trains: batch-norm statistics frozen, channels-last inputs
    opt = torch.optim.AdamW(freeze_early(model, frozen_blocks), lr=1e-4)
    batch_nhwc = np.random.default_rng(0).normal(size=(batch, 224, 224, 3)).astype(np.float32)
    x = to_tensor(batch_nhwc)
    forward = split_forward(model, frozen_blocks, 224) if ort_prefix else (lambda _: model(x))
    y = torch.randint(0, n_classes, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(forward(batch_nhwc), y).backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    train_ips = batch * iters / (time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():
        model(x)
        t0 = time.perf_counter()
        for _ in range(iters):
            model(x)
        fwd_ips = batch * iters / (time.perf_counter() - t0)
    return {"train_images_per_s": train_ips, "forward_images_per_s": fwd_ips, "batch": batch,
            "threads": torch.get_num_threads(), "frozen_blocks": frozen_blocks}


class _Clock:
    """Each wrapped region's own wall time on the main thread: the time of regions nested in it is subtracted."""

    def __init__(self):
        self.own: dict[str, float] = {}
        self._nested: list[float] = []
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, owner, name: str, region: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if threading.current_thread() is not threading.main_thread():
                return original(*args, **kwargs)
            self._nested.append(0.0)
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent = time.perf_counter() - t0
                inner = self._nested.pop()
                self.own[region] = self.own.get(region, 0.0) + spent - inner
                if self._nested:
                    self._nested[-1] += spent
        self.patch(owner, name, timed)

    def patch(self, owner, name: str, value) -> None:
        """Set ``owner.name`` to ``value`` until :meth:`restore`."""
        self._undo.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def _clocked_training() -> _Clock:
    """A clock on the functions a training spends its main thread in (patched where they are looked up)."""
    import torch

    from src.features import extraction, finetune, frozen_prefix, int8_calibration, onnx_runtime

    clock = _Clock()
    clock.wrap(finetune._Images, "decode", "decode training images")
    clock.wrap(finetune._Images, "batch", "augment training batches")
    clock.wrap(finetune, "_train", "trained blocks forward + loss (torch)")
    clock.wrap(finetune, "_predict", "held-out scoring per epoch (torch part)")
    clock.wrap(torch.Tensor, "backward", "backward")
    clock.wrap(torch.optim.AdamW, "step", "optimizer step")
    make_session = frozen_prefix.prefix_session

    class _TimedSession:  # the frozen blocks' session, its runs clocked
        def __init__(self, session):
            self._session = session

        def run(self, *args, **kwargs):
            return self._session.run(*args, **kwargs)

    def timed_session(*args, **kwargs):
        return _TimedSession(make_session(*args, **kwargs))

    clock.wrap(_TimedSession, "run", "frozen blocks forward (ONNX Runtime)")
    clock.patch(frozen_prefix, "prefix_session", timed_session)
    clock.wrap(frozen_prefix, "prefix_session", "frozen blocks export")
    clock.wrap(onnx_runtime.OrtExtractor, "__call__", "extractors' forward passes")
    clock.wrap(extraction.TorchExtractor, "__call__", "extractors' forward passes")
    clock.wrap(int8_calibration, "quantize_int8", "int8 quantisation (GPTQ, ranges, quantiser)")
    return clock


def default_training(frozen_blocks: int) -> dict:
    from src.train_with_wandb import train_with_wandb
    from src.training.pipeline import SAMPLE_DIR

    clock = _clocked_training()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            shutil.copytree(SAMPLE_DIR, data)
            t0 = time.perf_counter()
            r = train_with_wandb(data_dir=data, models_dir=Path(tmp) / "models", store=Path(tmp) / "store",
                                 wandb_mode="disabled", progress=False, fine_tune_frozen_blocks=frozen_blocks)
            wall = time.perf_counter() - t0
    finally:
        clock.restore()
    ft, rnd, guard = r["extractor"]["fine_tune"], r["extractor"]["pseudo_label_round"], r["extractor"]["int8_guard"]
    n_fit = r["dataset"]["labeled_samples"] - r["summary"]["val_images"]
    fits = sum(m["fit_seconds"] for m in r["algorithms"].values()) + r["baseline"]["fit_seconds"]
    stages = {"fine_tune": ft["seconds"], "pseudo_label_round": rnd.get("seconds") or 0.0,
              "int8_guard": guard.get("seconds") or 0.0, "fits": fits}
    stages["rest (decode, extraction, versioning, outputs)"] = wall - sum(stages.values())
    regions = dict(sorted(clock.own.items(), key=lambda kv: -kv[1]))
    regions["fits (from the results)"] = fits
    regions["the rest: versioning, decoding for extraction, I/O, outputs"] = wall - sum(regions.values())
    return {"wall_s": wall, "stages_s": stages, "fine_tune_images": n_fit * ft["epochs"],
            "fine_tune_images_per_s": n_fit * ft["epochs"] / ft["seconds"],
            "round_pseudo_labels": rnd.get("pseudo_labels"), "round_kept": rnd.get("kept"),
            "precision": r["extractor"]["precision"], "main_thread_s": regions}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=20, help="timed steps of the limit (default 20)")
    p.add_argument("--batch", type=int, default=16, help="batch size of the limit (fine-tuning's: 16)")
    p.add_argument("--frozen-blocks", type=int, default=None,
                   help="blocks fine-tuning leaves frozen, in the limit and the training (default: training's)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    a = p.parse_args()
    from src.features.finetune import FROZEN_BLOCKS

    frozen = FROZEN_BLOCKS if a.frozen_blocks is None else a.frozen_blocks
    os.environ.setdefault("WANDB_MODE", "disabled")
    out = {"load": os.getloadavg()[0], "limit": training_limit(a.batch, a.iters, frozen),
           "limit_torch_prefix": training_limit(a.batch, a.iters, frozen, ort_prefix=False),
           "limit_every_layer": training_limit(a.batch, a.iters, 0), "training": default_training(frozen)}
    out["fine_tune_share_of_limit"] = (out["training"]["fine_tune_images_per_s"]
                                       / out["limit"]["train_images_per_s"])
    if a.json:
        print(json.dumps(out, indent=2))
        return
    lim, tr = out["limit"], out["training"]
    print(f"training limit (batch {lim['batch']}, {lim['threads']} threads, {frozen} blocks frozen): "
          f"{lim['train_images_per_s']:.1f} img/s forward+backward+step (frozen blocks in torch: "
          f"{out['limit_torch_prefix']['train_images_per_s']:.1f}; every layer trained: "
          f"{out['limit_every_layer']['train_images_per_s']:.1f}); forward alone {lim['forward_images_per_s']:.1f} img/s")
    print(f"default training on the shipped sample: {tr['wall_s']:.1f} s ({tr['precision']})")
    for k, v in tr["stages_s"].items():
        print(f"  {k:<48} {v:6.1f} s  {v / tr['wall_s']:5.1%}")
    print("where the main thread spent it (each region's own time):")
    for k, v in tr["main_thread_s"].items():
        print(f"  {k:<62} {v:6.2f} s  {v / tr['wall_s']:5.1%}")
    print(f"fine-tuning: {tr['fine_tune_images']} images in {tr['stages_s']['fine_tune']:.1f} s = "
          f"{tr['fine_tune_images_per_s']:.1f} img/s, {out['fine_tune_share_of_limit']:.0%} of the limit; "
          f"round: {tr['round_pseudo_labels']} pseudo-labels, kept {tr['round_kept']}; load {out['load']:.1f}")


if __name__ == "__main__":
    main()
