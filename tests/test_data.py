import logging

import numpy as np
import pytest
from helpers import make_image_folder

from src.data.dataset import image_dataset as scan_dataset
from src.data.splits import holdout_split, labeled_split
from src.core.errors import ConfigError, DataError


def test_scan_finds_classes_and_splits(tmp_path):
    ds = scan_dataset(make_image_folder(tmp_path / "d"))
    assert ds.classes == ["a", "b", "c"]
    assert len(ds.train) == 18 and len(ds.test) == 6
    assert ds.class_counts("train") == {"a": 6, "b": 6, "c": 6}
    assert set(ds.train.labels.tolist()) == {0, 1, 2}


def test_scan_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_dataset(tmp_path / "nope")


def test_scan_missing_split(tmp_path):
    make_image_folder(tmp_path / "d", per_split={"train": 2})
    with pytest.raises(DataError, match="no 'test' folder"):
        scan_dataset(tmp_path / "d")


def test_scan_empty_train(tmp_path):
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "test").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        scan_dataset(tmp_path / "d")


def test_scan_class_without_images(tmp_path):
    root = make_image_folder(tmp_path / "d")
    (root / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="'empty' has no images"):
        scan_dataset(root)


def test_scan_zero_byte_file(tmp_path):
    root = make_image_folder(tmp_path / "d")
    (root / "train" / "a" / "zero.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="0 bytes"):
        scan_dataset(root)


def test_scan_test_class_unknown_to_train(tmp_path):
    root = make_image_folder(tmp_path / "d")
    make_image_folder(tmp_path / "d", classes=("zzz",), per_split={"test": 1})
    with pytest.raises(DataError, match="'zzz'"):
        scan_dataset(root)


def test_scan_skips_non_image_files_with_warning(tmp_path, caplog):
    root = make_image_folder(tmp_path / "d")
    (root / "train" / "a" / "notes.txt").write_text("hello")
    with caplog.at_level(logging.WARNING):
        ds = scan_dataset(root)
    assert len(ds.train) == 18
    assert "non-image" in caplog.text


@pytest.mark.parametrize("ratio", [0, -0.1, 1.01, 2])
def test_labeled_ratio_out_of_range(ratio):
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        labeled_split(np.zeros(10, dtype=int), ratio, 1, 0)


def test_fewer_labeled_than_classes():
    labels = np.repeat(np.arange(10), 5)
    with pytest.raises(ConfigError, match="5 labeled images for 10 classes"):
        labeled_split(labels, 0.1, 10, 0)


def test_labeled_split_stratified_seeded_one_per_class():
    labels = np.repeat(np.arange(5), [40, 20, 10, 5, 3])
    m1 = labeled_split(labels, 0.1, 5, seed=1)
    m2 = labeled_split(labels, 0.1, 5, seed=1)
    m3 = labeled_split(labels, 0.1, 5, seed=2)
    assert (m1 == m2).all() and not (m1 == m3).all()
    counts = np.bincount(labels[m1], minlength=5)
    assert counts.tolist() == [4, 2, 1, 1, 1]  # at least one per class, proportional otherwise


def test_full_ratio_labels_everything():
    labels = np.repeat(np.arange(3), 4)
    assert labeled_split(labels, 1.0, 3, 0).all()


def test_holdout_keeps_singletons_for_fitting():
    labels = np.array([0, 1, 1, 1, 1, 1])
    fit, val = holdout_split(labels, 0.4, 0)
    assert 0 in fit.tolist()
    assert len(val) == 2 and set(fit) | set(val) == set(range(6)) and not set(fit) & set(val)


def test_synthetic_dataset_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    """Also within one process (the noise once came from C's unseeded rand())."""
    from src.data.synth import generate_dataset

    def files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}

    kw = dict(n_classes=3, train_per_class=5, test_per_class=2, image_size=48)
    a = files(generate_dataset(tmp_path / "a", seed=1, **kw))
    b = files(generate_dataset(tmp_path / "b", seed=1, **kw))
    c = files(generate_dataset(tmp_path / "c", seed=2, **kw))
    assert len(a) == 21 and a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


SYNTH = ["--out", "D", "--classes", "2", "--train-per-class", "3", "--test-per-class", "1", "--unlabeled", "2",
         "--image-size", "32", "--no-progress"]


@pytest.mark.usefixtures("drop_log_handlers")
def test_synth_in_a_read_only_folder_is_one_line_naming_where(tmp_path, monkeypatch, capsys):
    """Run from a folder it may not write (root writes anywhere: the refusal is simulated)."""
    import errno
    from pathlib import Path

    from src import synth
    from src.core.errors import StoreError

    def refused(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Path, "mkdir", refused)
    assert synth.main(SYNTH) == StoreError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot write the dataset at {tmp_path / 'D'}"), err
    assert "Permission denied" in err[0] and "--out" in err[0]


@pytest.mark.usefixtures("drop_log_handlers")
@pytest.mark.parametrize("existed", [False, True])
def test_synth_on_a_full_disk_leaves_nothing_behind(tmp_path, monkeypatch, capsys, existed):
    """The disk fills after a few images: what this run wrote goes, what was there stays."""
    import errno

    from PIL import Image

    from src import synth

    out = tmp_path / "D"
    if existed:
        (out / "train" / "apple").mkdir(parents=True)
        (out / "train" / "apple" / "mine.txt").write_text("keep")
    real, saved = Image.Image.save, []

    def fills(self, fp, *args, **kwargs):
        if len(saved) == 5:
            open(fp, "wb").write(b"\xff\xd8 half a jpeg")
            raise OSError(errno.ENOSPC, "No space left on device", str(fp))
        saved.append(fp)
        return real(self, fp, *args, **kwargs)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Image.Image, "save", fills)
    assert synth.main(SYNTH) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "nothing of this run was kept" in err[0]
    if existed:
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
            "train", "train/apple", "train/apple/mine.txt"]
    else:
        assert not out.exists()
