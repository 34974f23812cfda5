"""Training's --shift-dir: each algorithm and the baseline report shift_accuracy; bad input stops early."""

import json
import os

import pytest
from helpers import make_image_folder
from PIL import Image
from wandb_records import read_run

from src.train_with_wandb import main
from src.training.config import TrainConfig

FAST = ["--fine-tune-epochs", "0", "--image-size", "32", "--n-neighbors", "3", "--labeled-ratio", "0.5",
        "--no-progress"]
ALGOS = ("label_propagation", "label_spreading", "self_training")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shift")
    data = make_image_folder(tmp / "d", per_split={"train": 4, "test": 2})
    # another "style": the classes a and b (a subset) as 40-px images with a dark frame
    shift = tmp / "shifted"
    for c, col in (("a", (180, 60, 60)), ("b", (60, 170, 60))):
        (shift / c).mkdir(parents=True)
        for i in range(3):
            img = Image.new("RGB", (40, 40), (20, 20, 20))
            img.paste(Image.new("RGB", (30, 30), tuple(v + 8 * i for v in col)), (5, 5))
            img.save(shift / c / f"{c}_{i}.jpg")
    return tmp, data, shift


def train(capsys, tmp, data, *extra, mode="disabled", json_out=True):
    code = main(["--data-dir", str(data), "--models-dir", str(tmp / "m"), "--store", str(tmp / "s"),
                 "--wandb-mode", mode, *FAST, *(["--json"] if json_out else []), *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    return (json.loads(out.out) if json_out else out.out), out.err


def test_shift_accuracy_per_algorithm_and_baseline_in_results_and_wandb(data, capsys, tmp_path, monkeypatch):
    tmp, root, shift = data
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    res, err = train(capsys, tmp, root, "--shift-dir", str(shift), mode="offline")
    assert "shift features: 0 from cache, 6 extracted" in err
    assert res["config"]["shift_dir"] == str(shift)
    assert res["shift"] == {"root": str(shift), "samples": 6, "classes": ["a", "b"]}
    for m in [*res["algorithms"].values(), res["baseline"]]:
        assert 0.0 <= m["shift_accuracy"] <= 1.0
    assert set(res["algorithms"]) == set(ALGOS)
    s = res["summary"]
    # these solid-colour images of a class are near-identical, so no class can be held out and the baseline may
    # ship (learning/groups.py): the summary's figure is the picked row's either way
    picked = res["baseline"] if s["best_algorithm"] == "baseline" else res["algorithms"][s["best_algorithm"]]
    assert s["best_shift_accuracy"] == picked["shift_accuracy"]
    assert s["baseline_shift_accuracy"] == res["baseline"]["shift_accuracy"]
    logged = read_run(res["run"]["dir"])
    for name in (*ALGOS, "baseline"):
        assert f"{name}/shift_accuracy" in logged["history_keys"], name
        assert f"{name}/test_accuracy" in logged["history_keys"], name
    assert logged["summary"]["summary/best_shift_accuracy"] == s["best_shift_accuracy"]
    assert "dataset/shift_samples" in logged["history_keys"]
    saved = json.loads((tmp / "m" / "training_results.json").read_text())
    assert saved["algorithms"]["self_training"]["shift_accuracy"] == res["algorithms"]["self_training"]["shift_accuracy"]


def test_shift_dir_is_report_only_and_absent_without_the_flag(data, capsys):
    tmp, root, shift = data
    with_shift, _ = train(capsys, tmp, root, "--shift-dir", str(shift))
    _, err = train(capsys, tmp, root, "--shift-dir", str(shift))
    assert "shift features: 6 from cache, 0 extracted" in err  # cached like the test features
    without, _ = train(capsys, tmp, root)
    assert "shift" not in without and without["config"]["shift_dir"] is None
    for name in ALGOS:
        a, b = with_shift["algorithms"][name], without["algorithms"][name]
        assert "shift_accuracy" not in b
        assert (a["val_accuracy"], a["test_accuracy"]) == (b["val_accuracy"], b["test_accuracy"])
    assert "shift_accuracy" not in without["baseline"]
    assert "best_shift_accuracy" not in without["summary"]
    assert with_shift["summary"]["best_algorithm"] == without["summary"]["best_algorithm"]


def test_text_summary_shows_the_shift_column(data, capsys):
    tmp, root, shift = data
    out, _ = train(capsys, tmp, root, "--shift-dir", str(shift), json_out=False)
    assert "shift_acc" in out and "style shift (6 images in" in out
    out, _ = train(capsys, tmp, root, json_out=False)
    assert "shift_acc" not in out and "style shift" not in out


def test_links_leaving_the_shift_dir_are_never_read(data, capsys, tmp_path):
    tmp, root, _ = data
    shift = make_image_folder(tmp_path / "sh", classes=("a", "c"), per_split={"x": 2}) / "x"
    outside = make_image_folder(tmp_path / "elsewhere", classes=("b",), per_split={"y": 2}) / "y" / "b"
    os.symlink(outside, shift / "b")                                   # a class folder leading outside
    os.symlink(outside / "b_0.png", shift / "a" / "linked.png")        # a file leading outside
    res, err = train(capsys, tmp, root, "--shift-dir", str(shift))
    assert res["shift"]["samples"] == 4 and res["shift"]["classes"] == ["a", "c"]
    assert "leading outside" in err


def bad(kind, tmp_path):
    root = tmp_path / "bad"
    if kind == "missing":
        return root, "does not exist"
    if kind == "file":
        root.write_text("not a folder")
        return root, "is not a folder"
    if kind == "empty":
        (root / "a").mkdir(parents=True)
        (root / "a" / "notes.txt").write_text("no images here")
        return root, "has no images in class folders"
    if kind == "unknown_class":
        make_image_folder(root, classes=("a", "zebra"), per_split={"x": 1})
        return root / "x", "class folder 'zebra' is not a training class"
    if kind == "only_outside":
        outside = make_image_folder(tmp_path / "elsewhere", classes=("a",), per_split={"y": 1}) / "y" / "a"
        root.mkdir()
        os.symlink(outside, root / "a")
        return root, "has no images in class folders"
    if kind == "corrupt":
        (root / "a").mkdir(parents=True)
        (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
        return root, "broken.jpg"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "file", "empty", "unknown_class", "only_outside", "corrupt"])
def test_bad_shift_dir_is_one_line_error_before_training(data, capsys, tmp_path, kind):
    tmp, root, _ = data
    shift, message = bad(kind, tmp_path)
    models = tmp_path / "models"
    code = main(["--data-dir", str(root), "--models-dir", str(models), "--store", str(tmp_path / "s"),
                 "--wandb-mode", "offline", *FAST, "--shift-dir", str(shift)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err  # DataError
    lines = [ln for ln in err.splitlines() if not ln.startswith("WARNING")]  # a skipped non-image is warned
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err
    assert not models.exists() and not (tmp_path / "wandb_root" / "wandb").exists()  # stopped before any training


def test_missing_shift_dir_is_refused_before_the_dataset_is_generated(tmp_path, monkeypatch):
    from src.core.errors import DataError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        TrainConfig(shift_dir=str(tmp_path / "nope")).validated()
    assert not (tmp_path / "DS2GROCERIES").exists()
