"""Fine-tuning leaves the stem and the first blocks as they are, and the cache key says how many."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from src.features.backbone import Preprocessing, create_model
from src.features.finetune import FineTuneSpec, fine_tune, finetune_key, frozen_prefixes


def test_prefixes_name_the_stem_and_the_first_blocks():
    assert frozen_prefixes(0) == ()
    assert frozen_prefixes(2) == ("conv_stem.", "bn1.", "blocks.0.", "blocks.1.")
    names = [n for n, _ in create_model(num_classes=0, pretrained=False).named_parameters()]
    frozen = [n for n in names if n.startswith(frozen_prefixes(3))]
    assert frozen and all(n.startswith(("conv_stem", "bn1", "blocks.0.", "blocks.1.", "blocks.2.")) for n in frozen)
    assert any(n.startswith("blocks.3.") for n in names) and not any(n.startswith("blocks.3.") for n in frozen)


def test_key_changes_with_the_frozen_blocks():
    pre = Preprocessing.for_size(32)
    a = finetune_key(["d1", "d2"], [0, 1], FineTuneSpec(1, 1e-3, 0, pre))
    assert a != finetune_key(["d1", "d2"], [0, 1], FineTuneSpec(1, 1e-3, 0, pre, frozen_blocks=0))
    assert a == finetune_key(["d1", "d2"], [0, 1], FineTuneSpec(1, 1e-3, 0, pre, frozen_blocks=3))


def test_key_changes_with_the_training_size_only_when_it_differs():
    pre = Preprocessing.for_size(64)
    a = finetune_key(["d1"], [0], FineTuneSpec(1, 1e-3, 0, pre))
    assert a == finetune_key(["d1"], [0], FineTuneSpec(1, 1e-3, 0, pre, train_size=64))  # old keys stay valid
    assert a != finetune_key(["d1"], [0], FineTuneSpec(1, 1e-3, 0, pre, train_size=48))
    assert FineTuneSpec(1, 1e-3, 0, pre, train_size=48).train_pre() == Preprocessing.for_size(48)


def test_training_batches_at_a_smaller_size_and_held_out_images_at_the_extractors(tmp_path, monkeypatch):
    from src.features import finetune

    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        paths.append(tmp_path / f"{i}.jpg")
        Image.fromarray(rng.integers(0, 255, (60, 60, 3), dtype=np.uint8)).save(paths[-1])
    shapes, real_predict = [], finetune._predict
    monkeypatch.setattr(finetune._Images, "batch", lambda self, idx, r, pre, real=finetune._Images.batch:
                        shapes.append(pre.image_size) or real(self, idx, r, pre))
    monkeypatch.setattr(finetune, "_predict", lambda fwd, px, pre, **k: shapes.append(("held-out", px.shape[1]))
                        or real_predict(fwd, px, pre, **k))
    spec = FineTuneSpec(2, 1e-3, 0, Preprocessing.for_size(48), batch_size=4, train_size=32)
    _, result = fine_tune(paths, np.array([0, 1] * 4), np.arange(6), np.arange(6, 8), 2, spec, progress=False)
    assert shapes == [32, 32, ("held-out", 48)] * 2 and result.best_val_accuracy is not None


@pytest.mark.parametrize("frozen_blocks", [3, 0])
def test_only_the_unfrozen_layers_move(tmp_path, frozen_blocks):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        p = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    labels = np.array([0, 1] * 4)
    before = {n: p.detach().clone() for n, p in create_model(num_classes=0, pretrained=True).named_parameters()}
    spec = FineTuneSpec(1, 1e-2, 0, Preprocessing.for_size(32), batch_size=4, frozen_blocks=frozen_blocks)
    model, _ = fine_tune(paths, labels, np.arange(6), np.arange(6, 8), 2, spec, progress=False)
    after = dict(model.named_parameters())
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    stem = {n for n in before if n.startswith(("conv_stem.", "blocks.0.", "blocks.2."))}
    late = {n for n in before if n.startswith(("blocks.3.", "blocks.6.", "conv_head."))}
    if frozen_blocks:
        assert not moved & stem and late <= moved
    else:
        assert stem & moved and late <= moved


@pytest.mark.parametrize("bad", ["-1", "8"])
def test_a_block_count_out_of_range_is_one_error_line(tmp_path, capsys, bad):
    from src.core.errors import ConfigError
    from src.train_with_wandb import main
    from src.training.config import TrainConfig

    with pytest.raises(ConfigError):
        TrainConfig(fine_tune_frozen_blocks=int(bad)).validated()
    assert main(["--fine-tune-frozen-blocks", bad, "--data-dir", str(tmp_path / "none"),
                 "--models-dir", str(tmp_path / "m"), "--store", str(tmp_path / "s")]) == ConfigError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: fine_tune_frozen_blocks must be in [0, 7]"), err
    assert not (tmp_path / "m").exists() and not (tmp_path / "s").exists()  # nothing written


def test_the_flag_reaches_the_fine_tune_spec():
    from src.train_with_wandb import build_parser, config_from_args
    from src.training.pipeline import finetune_spec

    cfg = config_from_args(build_parser().parse_args(["--fine-tune-frozen-blocks", "0"])).validated()
    assert cfg.fine_tune_frozen_blocks == 0 and finetune_spec(cfg).frozen_blocks == 0
    assert finetune_spec(config_from_args(build_parser().parse_args([]))).frozen_blocks == 3
