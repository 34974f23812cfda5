"""Training with an unlabeled pool: every label used by default, pool rows unlabeled, pseudo-labels out."""

import csv
import json

import pytest
from PIL import Image
from helpers import make_image_folder
from test_pool import add_pool
from wandb_records import read_run

from src.train_with_wandb import main
from src.training.config import TrainConfig

FAST = ["--fine-tune-epochs", "0", "--image-size", "32", "--n-neighbors", "3", "--json", "--no-progress"]


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pooled")
    data = add_pool(make_image_folder(tmp / "d", per_split={"train": 4, "test": 2}), n=6)
    return tmp, data


def train(capsys, tmp, data, *extra, mode="disabled"):
    code = main(["--data-dir", str(data), "--models-dir", str(tmp / "m"), "--store", str(tmp / "s"),
                 "--wandb-mode", mode, *FAST, *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out), out.err


def test_every_label_is_used_unless_hiding_is_asked_for():
    assert TrainConfig().labeled_ratio is None
    assert TrainConfig().resolved(has_pool=True).labeled_ratio == 1.0
    assert TrainConfig().resolved(has_pool=False).labeled_ratio == 1.0  # a fully labeled folder: no label hidden
    assert TrainConfig(labeled_ratio=0.3).resolved(has_pool=True).labeled_ratio == 0.3


def test_pool_is_unlabeled_rows_and_pseudo_labels_come_out(pooled, capsys, tmp_path, monkeypatch):
    tmp, data = pooled
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    res, _ = train(capsys, tmp, data, mode="offline")
    assert res["config"]["labeled_ratio"] == 1.0
    d = res["dataset"]
    assert d["pool_samples"] == 6 and d["labeled_samples"] == 12 and d["unlabeled_samples"] == 6
    assert d["labeled_per_class"] == {"a": 4, "b": 4, "c": 4}
    for m in res["algorithms"].values():
        assert m["unlabeled_accuracy"] is None  # no hidden labels, and the pool has no truth
    rows = list(csv.DictReader(open(tmp / "m" / "pseudo_labels.csv")))
    assert [list(r) for r in rows[:1]] == [["path", "label", "confidence", "algorithm", "raw_confidence", "accept"]]
    assert sorted(r["path"] for r in rows) == sorted(p.relative_to(data).as_posix()
                                                      for p in (data / "unlabeled").rglob("*.png"))
    assert {r["algorithm"] for r in rows} == {res["summary"]["best_algorithm"]}
    assert all(r["label"] in ("a", "b", "c") and 0 <= float(r["confidence"]) <= 1 for r in rows)
    pl = res["pseudo_labels"]
    # 4 labels per class, near-identical drawings kept in one fold: fewer than 10 labeled images are scored, too
    # few to show any confidence 95 % right, so none is recommended and every row says accept 0
    assert pl["calibration"]["held_out_images"] < 10 and pl["recommended_min_confidence"] is None
    assert pl["accepted"] == 0 and {r["accept"] for r in rows} == {"0"}
    from src.reporting.text import format_training_summary

    res["pseudo_labels"].update(recommended_min_confidence=0.95, accepted=4)  # as a run that can recommend says it
    assert "recommended: 4 with confidence >= 0.95 (>= 95 % right on" in format_training_summary(res)
    assert pl["count"] == 6 and sum(pl["per_class"].values()) == 6
    q = pl["confidence_quantiles"]
    assert q["p0"] <= q["p50"] <= q["p100"]
    logged = read_run(res["run"]["dir"])
    assert logged["config"]["labeled_ratio"] == 1.0
    keys = logged["history_keys"]
    for key in ("pseudo_labels/sample/_type", "pseudo_labels/confidence/_type", "data/pool_samples",
                "data/labeled_per_class/a"):
        assert key in keys, sorted(k for k in keys if "pseudo" in k)


def test_hidden_labels_with_a_pool_measure_only_the_hidden(pooled, capsys):
    tmp, data = pooled
    res, _ = train(capsys, tmp, data, "--labeled-ratio", "0.5")
    assert res["config"]["labeled_ratio"] == 0.5
    assert res["dataset"]["labeled_samples"] == 6 and res["dataset"]["unlabeled_samples"] == 12
    for m in res["algorithms"].values():
        assert m["unlabeled_accuracy"] is not None


def test_pool_features_are_cached(pooled, capsys):
    tmp, data = pooled
    train(capsys, tmp, data)
    _, err = train(capsys, tmp, data)
    assert "pool features: 6 from cache, 0 extracted" in err


def test_no_pool_writes_no_pseudo_labels_and_uses_every_label(tmp_path, capsys):
    data = make_image_folder(tmp_path / "d", per_split={"train": 10, "test": 2})
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "pseudo_labels.csv").write_text("stale")  # as a previous run with a pool left it
    from src.training.outputs import MANIFEST

    (tmp_path / "m" / MANIFEST).write_text(json.dumps({"files": ["pseudo_labels.csv"]}))
    res, _ = train(capsys, tmp_path, data)
    assert res["config"]["labeled_ratio"] == 1.0 and res["pseudo_labels"] is None
    assert res["dataset"]["pool_samples"] == 0 and res["dataset"]["labeled_samples"] == res["dataset"]["train_samples"]
    assert not (tmp_path / "m" / "pseudo_labels.csv").exists()


def test_text_summary_names_the_pool_and_pseudo_labels(pooled, capsys):
    tmp, data = pooled
    code = main(["--data-dir", str(data), "--models-dir", str(tmp / "m"), "--store", str(tmp / "s"),
                 "--wandb-mode", "disabled", *[f for f in FAST if f != "--json"]])
    out = capsys.readouterr().out
    assert code == 0 and "6 unlabeled in the pool" in out and "pseudo-labels: 6 pool images" in out
    assert "none recommended for bulk acceptance (" in out


def test_graph_labels_are_the_transduction_where_kept_and_the_final_classifier_elsewhere():
    import numpy as np

    from src.learning.semi_supervised import assigned_labels, fit_baseline, fit_semi_supervised

    rng = np.random.default_rng(2)
    centers = rng.normal(size=(3, 16)) * 2.0
    X = np.concatenate([c + rng.normal(size=(40, 16)) * 2.5 for c in centers])  # overlapping: some disagreement
    y = np.full(len(X), -1)
    y[[0, 1, 40, 41, 80, 81]] = [0, 0, 1, 1, 2, 2]
    model = fit_semi_supervised("label_propagation", X, y, 5, 0)
    graph = model[-1]
    labels, conf = assigned_labels(model, X)
    kept, final = graph.pseudo_mask_, model.predict(X)
    assert kept.any() and (~kept & (y == -1)).any()
    assert (labels[kept] == graph.transduction_[kept]).all()
    assert np.allclose(conf[kept], graph.label_confidence_[kept])
    other = ~kept & (y == -1) & (graph.label_confidence_ < 1.0)
    assert (graph.transduction_[other] != final[other]).any()  # the rows where the choice matters exist
    assert (labels[other] == final[other]).all()
    assert (labels[y != -1] == y[y != -1]).all()
    for name in ("label_propagation", "self_training", "baseline"):  # some rows only: the same as all, indexed
        m = model if name == "label_propagation" else (fit_baseline(X, y, 0) if name == "baseline"
                                                       else fit_semi_supervised(name, X, y, 5, 0))
        every, rows = assigned_labels(m, X), np.array([3, 50, 0, 119])
        some = assigned_labels(m, X, rows)
        assert (some[0] == every[0][rows]).all() and np.allclose(some[1], every[1][rows])
        given = assigned_labels(m, X, rows, m.predict_proba(X[rows]))
        assert (given[0] == some[0]).all() and np.allclose(given[1], some[1])


def test_one_label_per_class_trains_quietly_and_copies_in_test_are_said(tmp_path, capsys):
    import shutil

    data = make_image_folder(tmp_path / "d", per_split={"train": 2, "test": 2})
    for p in (data / "test").rglob("*.png"):  # test photos of their own, one pixel off the training ones
        with Image.open(p) as im:
            im = im.convert("RGB")
        im.putpixel((0, 0), (0, 0, 0))
        im.save(p)
    for c in ("a", "b", "c"):  # a training photo copied into test/: the test accuracy would count it as unseen
        src = sorted((data / "train" / c).iterdir())[0]
        shutil.copyfile(src, data / "test" / c / ("copy-" + src.name))
    res, err = train(capsys, tmp_path, data, "--labeled-ratio", "0.5")
    assert res["dataset"]["labeled_samples"] == 3  # one per class
    assert "unique classes" not in err  # scikit-learn's warning, a dozen times a run before
    assert sorted(res["dataset"]["leaked_test_images"]) == sorted(
        f"test/{c}/copy-{sorted((data / 'train' / c).iterdir())[0].name}" for c in ("a", "b", "c"))
    assert "3 test image(s) are byte-identical to training or pool images" in err


def test_training_says_what_the_store_takes(tmp_path, capsys):
    from src.reporting.text import format_training_summary

    data = make_image_folder(tmp_path / "d", per_split={"train": 2, "test": 1})
    res, _ = train(capsys, tmp_path, data)
    on_disk = sum(p.stat().st_size for p in (tmp_path / "s").rglob("*") if p.is_file() and not p.is_symlink())
    assert res["store"]["root"] == str((tmp_path / "s").resolve()) and 0 < res["store"]["bytes"] <= on_disk
    line = format_training_summary(res).splitlines()[-1]
    assert line.startswith(f"store:   {res['store']['root']}, ") and "housekeeping.py du" in line


def test_pseudo_labels_are_calibrated_on_every_labeled_photo_not_only_the_held_out_ones(capsys, tmp_path,
                                                                                        monkeypatch):
    import shutil

    import src.training.pipeline as pipeline

    folds, real = [], pipeline.every_labeled_folds
    monkeypatch.setattr(pipeline, "every_labeled_folds", lambda *args: folds.append(real(*args)) or folds[-1])
    import src.training.pseudo_labels as pl

    unbiased, calibrate = [], pl.calibrate_pseudo_labels
    monkeypatch.setattr(pl, "calibrate_pseudo_labels", lambda c, r, u: unbiased.append(u) or calibrate(c, r, u))
    data = shutil.copytree(pipeline.SAMPLE_DIR, tmp_path / "photos")  # real photos: few near-duplicates
    res, _ = train(capsys, tmp_path, data, "--fine-tune-epochs", "1", "--pseudo-finetune-epochs", "0",
                   "--image-size", "64", "--runtime", "onnx")
    scored = int((folds[-1] >= 0).sum())  # every labeled photo the folds hold out once (catalogue shots never)
    assert res["pseudo_labels"]["calibration"]["held_out_images"] == scored
    assert scored > 2 * res["summary"]["val_images"] > 0  # not only the fine-tune's held-out photos
    best = res["summary"]["best_algorithm"]  # calibrated: its own and label spreading's support for its labels
    assert res["pseudo_labels"]["calibration"]["committee"] == [best, *(["label_spreading"] if best != "label_spreading"
                                                                        else [])]
    # the photos the fine-tune held out are the ones whose evidence is taken at face value (D44)
    assert int(unbiased[-1].sum()) == res["summary"]["val_images"] and len(unbiased[-1]) == scored
    assert 0 < res["pseudo_labels"]["calibration"]["evidence_discount"] <= 1
