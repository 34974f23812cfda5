"""labeling.py: suggest (strategies, CSV + self-contained HTML), apply (moves, refusals, kill-safety,
sources, versions) and issues (planted wrong folders found with cleanlab)."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import make_image_folder
from PIL import Image
from test_pool import add_pool

from src.labeling import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dataset with a pool of 6 and a model trained on it (frozen backbone, 32 px)."""
    from src.train_with_wandb import train_with_wandb

    tmp = tmp_path_factory.mktemp("lab")
    data = add_pool(make_image_folder(tmp / "d", per_split={"train": 4, "test": 2}), n=6)
    train_with_wandb(fine_tune_epochs=0, image_size=32, n_neighbors=3, data_dir=data, models_dir=tmp / "m",
                     store=tmp / "s", wandb_mode="disabled", progress=False)
    return tmp


@pytest.fixture()
def ws(trained, tmp_path):
    """A private copy of the trained fixture (apply moves files)."""
    shutil.copytree(trained, tmp_path / "w", symlinks=True)
    return tmp_path / "w"


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err):
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith(("INFO", "WARNING"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def pool_files(data):
    return sorted(p.relative_to(data).as_posix() for p in (data / "unlabeled").rglob("*") if p.is_file())


def all_bytes(data):
    return sorted(p.read_bytes() for p in data.rglob("*") if p.is_file())


# -- suggest -------------------------------------------------------------------------------
def suggest(capsys, ws, *extra):
    return run(capsys, "suggest", "--data-dir", str(ws / "d"), "--models-dir", str(ws / "m"),
               "--store", str(ws / "s"), *extra)


@pytest.mark.parametrize("strategy", ["diverse", "margin", "typical", "random"])
def test_suggest_writes_csv_and_self_contained_html(ws, capsys, strategy):
    code, out, err = suggest(capsys, ws, "--budget", "3", "--strategy", strategy, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 3 and all(r["path"] in pool_files(ws / "d") for r in rows)
    assert len({r["path"] for r in rows}) == 3
    with open(ws / "m" / "labeling" / "suggestions.csv") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == ["path", "suggested_label", "confidence"]
    assert [g["path"] for g in got] == [r["path"] for r in rows]
    html = (ws / "m" / "labeling" / "suggestions.html").read_text()
    assert html.count("data:image/jpeg;base64,") == 3 and "http" not in html and "file:" not in html
    assert all(r["suggested_label"] in html for r in rows)


def test_suggest_margin_puts_the_least_sure_first(ws, capsys):
    code, out, _ = suggest(capsys, ws, "--budget", "6", "--strategy", "margin", "--json", "--out", str(ws / "o"))
    rows = json.loads(out)
    assert code == 0 and len(rows) == 6 and (ws / "o" / "suggestions.csv").exists()


def test_typical_picks_the_densest_image_of_what_no_label_covers_first():
    """Two groups of pool images, the labeled ones all in the first: the first pick comes from the second
    group, strays are never picked, and one pick from one group is its densest image."""
    from src.curation.suggest import select

    rng = np.random.default_rng(0)
    a = np.array([1.0, 0.0, 0.0]) + 0.05 * rng.normal(size=(30, 3))
    b = np.array([0.0, 1.0, 0.0]) + 0.05 * rng.normal(size=(30, 3))
    b[0] = [0.0, 1.0, 0.0]                       # the centre of the second group
    b[1] = [0.3, 1.0, 0.3]                       # a stray of it
    pool = np.vstack([a, b])
    labeled = np.array([1.0, 0.0, 0.0]) + 0.05 * rng.normal(size=(4, 3))
    proba = np.full((len(pool), 2), 0.5)
    picks = select(pool, proba, 3, "typical", seed=0, labeled=labeled)
    assert len(set(picks.tolist())) == 3 and 30 <= picks[0] < 60  # the uncovered group first
    assert 31 not in picks.tolist()              # a stray is never typical
    one = select(b, proba[:30], 1, "typical", seed=0, labeled=np.zeros((0, 3)))
    z = b / np.linalg.norm(b, axis=1, keepdims=True)
    near = np.sort(np.linalg.norm(z[:, None] - z[None], axis=2), axis=1)[:, 1:21].mean(1)
    assert one.tolist() == [int(np.argmin(near))] and near[31 - 30] > np.median(near)  # the densest image
    assert (select(pool, proba, 3, "typical", seed=0, labeled=labeled) == picks).all()  # seeded


def test_typical_measures_large_clusters_on_a_sample(monkeypatch):
    """Clusters larger than MAX_REFERENCE are measured against a seeded sample (memory stays bounded)."""
    import importlib

    sg = importlib.import_module("src.curation.suggest")  # the module (the package exports the function)
    monkeypatch.setattr(sg, "MAX_REFERENCE", 5)
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(200, 8))
    picks = sg.typical(pool, pool[:0], 4, seed=0)
    assert len(set(picks.tolist())) == 4 and picks.min() >= 0 and picks.max() < 200
    assert (sg.typical(pool, pool[:0], 4, seed=0) == picks).all()


def test_suggest_random_is_seeded(ws, capsys):
    a = json.loads(suggest(capsys, ws, "--budget", "2", "--strategy", "random", "--json")[1])
    b = json.loads(suggest(capsys, ws, "--budget", "2", "--strategy", "random", "--json")[1])
    assert a == b


@pytest.mark.parametrize("args,code,needle", [
    (["--budget", "0"], 2, "--budget"),
    (["--budget", "2", "--strategy", "best"], 2, "invalid choice"),
])
def test_suggest_bad_flags(ws, capsys, args, code, needle):
    got, _, err = suggest(capsys, ws, *args)
    assert got == code and needle in one_line(err)


def test_suggest_without_model_or_pool(ws, capsys):
    code, _, err = run(capsys, "suggest", "--data-dir", str(ws / "d"), "--models-dir", str(ws / "nomodels"),
                       "--budget", "2", "--store", str(ws / "s"))
    assert code == 3 and "train" in one_line(err)
    shutil.rmtree(ws / "d" / "unlabeled")
    code, _, err = suggest(capsys, ws, "--budget", "2")
    assert code == 2 and "unlabeled" in one_line(err)


def test_suggest_refuses_a_model_of_other_classes(ws, capsys):
    (ws / "d" / "train" / "zz").mkdir()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(ws / "d" / "train" / "zz" / "z.png")
    code, _, err = suggest(capsys, ws, "--budget", "2")
    assert code == 3 and "retrain" in one_line(err)


# -- apply ---------------------------------------------------------------------------------
def write_csv(path, rows, header=("path", "label")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def apply(capsys, ws, labels, *extra):
    return run(capsys, "apply", "--data-dir", str(ws / "d"), "--labels", str(labels), "--store", str(ws / "s"),
               "--wandb-mode", "disabled", *extra)


def test_apply_a_labeled_copy_of_suggestions(ws, capsys):
    from src.data_versioning import load_dataset_artifact

    code, out, _ = suggest(capsys, ws, "--budget", "2", "--json")
    rows = json.loads(out)
    with open(ws / "m" / "labeling" / "suggestions.csv") as f:
        sugg = list(csv.DictReader(f))
    write_csv(ws / "l.csv", [[s["path"], s["suggested_label"], s["confidence"], "b"] for s in sugg],
              header=("path", "suggested_label", "confidence", "label"))
    before = all_bytes(ws / "d")
    code, out, err = apply(capsys, ws, ws / "l.csv", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["labeled"] == 2 and r["source"] == "human" and r["version"].startswith("d:")  # training's name rule
    assert all(p not in pool_files(ws / "d") for p in (x["path"] for x in rows))
    assert all((ws / "d" / m["to"]).exists() and m["to"].startswith("train/b/") for m in r["moves"])
    assert all_bytes(ws / "d") == before  # moved, not copied or lost
    v = load_dataset_artifact("d", "latest", store=ws / "s")
    assert "2 images labeled" in v["description"]
    src = {e["path"]: e["source"] for e in v["manifest"]}
    assert all(src[m["to"]] == "human" for m in r["moves"])
    assert all(src[p] is None for p in pool_files(ws / "d"))


def test_dry_run_moves_nothing(ws, capsys):
    write_csv(ws / "l.csv", [["unlabeled/p0.png", "a"]])
    before = pool_files(ws / "d")
    code, out, _ = apply(capsys, ws, ws / "l.csv", "--dry-run")
    assert code == 0 and "would label 1" in out and pool_files(ws / "d") == before


def test_same_file_names_get_distinct_names(ws, capsys):
    Image.new("RGB", (32, 32), (9, 9, 9)).save(ws / "d" / "unlabeled" / "a" / "p0.png")
    write_csv(ws / "l.csv", [["unlabeled/p0.png", "a"], ["unlabeled/a/p0.png", "a"]])
    code, out, err = apply(capsys, ws, ws / "l.csv", "--json")
    assert code == 0, err
    r = json.loads(out)
    names = [m["to"] for m in r["moves"]]
    assert len(set(names)) == 2 and len(r["renamed"]) == 1
    assert all((ws / "d" / n).exists() for n in names)


def test_pseudo_labels_with_min_confidence_are_recorded_as_pseudo_and_carried_forward(ws, capsys):
    from src.data_versioning import create_dataset_artifact, load_dataset_artifact

    rows = list(csv.DictReader(open(ws / "m" / "pseudo_labels.csv")))
    cut = sorted(float(r["confidence"]) for r in rows)[-2]  # the two most confident
    code, out, err = apply(capsys, ws, ws / "m" / "pseudo_labels.csv", "--min-confidence", str(cut), "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["source"] == "pseudo" and r["labeled"] >= 2 and r["skipped_low_confidence"] == 6 - r["labeled"]
    moved = {m["to"] for m in r["moves"]}
    Image.new("RGB", (32, 32), (5, 5, 5)).save(ws / "d" / "train" / "a" / "new_human.png")
    create_dataset_artifact(ws / "d", "d", store=ws / "s", wandb_mode="disabled")
    v = load_dataset_artifact("d", "latest", store=ws / "s")
    src = {e["path"]: e["source"] for e in v["manifest"]}
    assert all(src[p] == "pseudo" for p in moved), ({p: src.get(p) for p in moved}, v["history"][-2:])
    assert src["train/a/new_human.png"] == "human"
    assert src["train/a/a_0.png"] == "human"


def test_without_a_minimum_only_the_rows_training_recommends_are_applied(ws, capsys):
    rows = list(csv.DictReader(open(ws / "m" / "pseudo_labels.csv")))
    assert "accept" in rows[0] and "raw_confidence" in rows[0]
    chosen = [r["path"] for r in rows[:2]]
    header = list(rows[0])
    write_csv(ws / "l.csv", [[r[c] if c != "accept" else int(r["path"] in chosen) for c in header] for r in rows],
              header=header)
    before = pool_files(ws / "d")
    code, out, err = apply(capsys, ws, ws / "l.csv")
    assert code == 0, err
    assert "labeled 2 image(s)" in out and f"{len(rows) - 2} not recommended by training" in out
    assert sorted(set(before) - set(pool_files(ws / "d"))) == sorted(chosen)
    code, out, err = apply(capsys, ws, ws / "l.csv", "--min-confidence", "0", "--json")  # a minimum replaces it
    assert code == 0, err
    assert json.loads(out)["labeled"] == len(rows) - 2


def test_nothing_recommended_moves_nothing_and_says_why(ws, capsys):
    rows = list(csv.DictReader(open(ws / "m" / "pseudo_labels.csv")))
    header = list(rows[0])
    write_csv(ws / "l.csv", [[r[c] if c != "accept" else 0 for c in header] for r in rows], header=header)
    before = all_bytes(ws / "d")
    code, out, err = apply(capsys, ws, ws / "l.csv")
    assert code == 0 and "labeled 0 image(s)" in out and f"{len(rows)} not recommended" in out
    assert all_bytes(ws / "d") == before


def test_an_accept_cell_that_is_not_0_or_1_refuses_the_file(ws, capsys):
    write_csv(ws / "l.csv", [["unlabeled/p0.png", "a", "yes"]], header=("path", "label", "accept"))
    before = all_bytes(ws / "d")
    code, _, err = apply(capsys, ws, ws / "l.csv")
    assert code == 2 and "line 2" in one_line(err) and "accept 'yes' is not 0 or 1" in err
    assert all_bytes(ws / "d") == before


def test_new_classes_need_the_flag(ws, capsys):
    write_csv(ws / "l.csv", [["unlabeled/p0.png", "kiwi"]])
    code, _, err = apply(capsys, ws, ws / "l.csv")
    assert code == 2 and "line 2" in one_line(err) and "kiwi" in err and "--new-classes" in err
    code, _, err = apply(capsys, ws, ws / "l.csv", "--new-classes")
    assert code == 0, err
    assert (ws / "d" / "train" / "kiwi" / "p0.png").exists()


BAD = {
    "unknown path": ([["unlabeled/p0.png", "a"], ["unlabeled/nope.png", "b"]], "line 3", "unknown path"),
    "outside pool": ([["train/a/a_0.png", "b"]], "line 2", "outside the pool"),
    "dot-dot": ([["unlabeled/../train/a/a_0.png", "b"]], "line 2", "outside the pool"),
    "absolute": ([["/etc/passwd", "b"]], "line 2", "outside the pool"),
    "twice": ([["unlabeled/p0.png", "a"], ["unlabeled/p2.png", "a"], ["unlabeled/p0.png", "b"]], "line 4",
              "listed twice (first on line 2)"),
    "unknown class": ([["unlabeled/p0.png", "zebra"]], "line 2", "unknown class 'zebra'"),
    "bad class name": ([["unlabeled/p0.png", "../x"]], "line 2", "invalid class name"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_apply_refuses_the_whole_file(ws, capsys, case):
    rows, where, what = BAD[case]
    write_csv(ws / "l.csv", rows)
    before = pool_files(ws / "d")
    code, _, err = apply(capsys, ws, ws / "l.csv", "--new-classes" if case == "bad class name" else "--json")
    line = one_line(err)
    assert code == 2 and where in line and what in line and "l.csv" in line
    assert pool_files(ws / "d") == before


@pytest.mark.parametrize("text,what", [
    ("path,label\nunlabeled/p0.png,a\nunlabeled/p2.png,a,extra\n", "line 3: malformed CSV"),
    ("file,class\nunlabeled/p0.png,a\n", "line 1: malformed CSV: no path or label column"),
    ('path,label\n"unlabeled/p0.png,a\n', "malformed CSV"),
    ("path,label,confidence\nunlabeled/p0.png,a,high\n", "line 2: confidence 'high'"),
])
def test_malformed_csv_is_refused(ws, capsys, text, what):
    (ws / "l.csv").write_text(text)
    before = pool_files(ws / "d")
    code, _, err = apply(capsys, ws, ws / "l.csv")
    assert code == 2 and what in one_line(err) and pool_files(ws / "d") == before


def test_symlinks_leaving_the_data_dir_are_refused(ws, capsys, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (32, 32), (1, 1, 1)).save(outside / "x.png")
    os.symlink(outside / "x.png", ws / "d" / "unlabeled" / "link.png")
    write_csv(ws / "l.csv", [["unlabeled/link.png", "a"]])
    code, _, err = apply(capsys, ws, ws / "l.csv")
    assert code == 2 and "symlink" in one_line(err)
    os.symlink(outside, ws / "d" / "train" / "evil")
    write_csv(ws / "l.csv", [["unlabeled/p0.png", "evil"]])
    code, _, err = apply(capsys, ws, ws / "l.csv", "--new-classes")
    assert code == 2 and "symlink" in one_line(err)
    assert (ws / "d" / "unlabeled" / "p0.png").exists() and sorted(os.listdir(outside)) == ["x.png"]


def test_min_confidence_needs_a_confidence_column(ws, capsys):
    write_csv(ws / "l.csv", [["unlabeled/p0.png", "a"]])
    code, _, err = apply(capsys, ws, ws / "l.csv", "--min-confidence", "0.9")
    assert code == 2 and "confidence column" in one_line(err)


KILLER = """
import os, signal, sys
import src.curation.apply as ap
real, n = os.rename, [0]
def rename(a, b):
    if n[0] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    n[0] += 1
    real(a, b)
ap.os.rename = rename
from src.labeling import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_apply_loses_and_duplicates_nothing_and_is_completed_next_time(ws, capsys):
    from src.data_versioning import load_dataset_artifact

    rows = [[p, "c"] for p in pool_files(ws / "d")]
    write_csv(ws / "l.csv", rows)
    before = all_bytes(ws / "d")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", KILLER, "apply", "--data-dir", str(ws / "d"), "--labels",
                           str(ws / "l.csv"), "--store", str(ws / "s"), "--wandb-mode", "disabled"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert all_bytes(ws / "d") == before  # every image exactly once
    assert len(pool_files(ws / "d")) == 4
    write_csv(ws / "none.csv", [])
    code, out, err = apply(capsys, ws, ws / "none.csv", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["resumed"]["moves"] == 6 and pool_files(ws / "d") == [] and all_bytes(ws / "d") == before
    assert "6 images labeled" in load_dataset_artifact("d", "latest", store=ws / "s")["description"]


def test_rerunning_a_killed_apply_with_its_own_csv_ends_cleanly(ws, capsys):
    from src.data_versioning import load_dataset_artifact
    from src.data.scan import scan_dataset

    write_csv(ws / "l.csv", [[p, "c"] for p in pool_files(ws / "d")])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["apply", "--data-dir", str(ws / "d"), "--labels", str(ws / "l.csv"), "--store", str(ws / "s"),
            "--wandb-mode", "disabled"]
    proc = subprocess.run([sys.executable, "-c", KILLER, *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    code, out, err = apply(capsys, ws, ws / "l.csv")
    assert code == 0, err
    assert "completed an interrupted apply first: 6 images" in out and "already applied" in out
    assert pool_files(ws / "d") == [] and not list((ws / "s" / "labeling").glob("journal-*"))
    v = load_dataset_artifact("d", "latest", store=ws / "s")
    disk = {e["path"] for e in scan_dataset(ws / "d")["manifest"]}
    assert {e["path"] for e in v["manifest"]} == disk
    code, out, err = apply(capsys, ws, ws / "l.csv")  # and once more: nothing to do, no new version
    assert code == 0 and "nothing to do: all 6 labeled row(s)" in out, err
    assert load_dataset_artifact("d", "latest", store=ws / "s")["version"] == v["version"]


def test_an_applied_row_with_another_label_is_refused(ws, capsys):
    write_csv(ws / "l.csv", [["unlabeled/p0.png", "a"]])
    assert apply(capsys, ws, ws / "l.csv")[0] == 0
    write_csv(ws / "l.csv", [["unlabeled/p0.png", "b"]])
    code, _, err = apply(capsys, ws, ws / "l.csv")
    assert code == 2 and "already labeled 'a'" in one_line(err) and "line 2" in err
    assert (ws / "d" / "train" / "a" / "p0.png").exists()


def test_a_dangling_link_in_a_class_folder_moves_nothing_and_blocks_nothing(ws, capsys):
    os.symlink(ws / "d" / "train" / "c" / "gone.png", ws / "d" / "train" / "c" / "p2.png")  # inside, dangling
    write_csv(ws / "l.csv", [["unlabeled/p0.png", "c"], ["unlabeled/p2.png", "c"]])
    before = pool_files(ws / "d")
    code, _, err = apply(capsys, ws, ws / "l.csv")
    assert code == 2 and "p2.png" in one_line(err)
    assert pool_files(ws / "d") == before and not list((ws / "s" / "labeling").glob("journal-*"))
    os.unlink(ws / "d" / "train" / "c" / "p2.png")
    os.symlink("/nonexistent/gone.png", ws / "d" / "train" / "c" / "p2.png")  # leads outside: left out of scans
    code, out, err = apply(capsys, ws, ws / "l.csv", "--json")
    assert code == 0, err
    to = {m["path"]: m["to"] for m in json.loads(out)["moves"]}
    assert to["unlabeled/p2.png"].startswith("train/c/p2_") and (ws / "d" / to["unlabeled/p2.png"]).is_file()
    assert os.path.islink(ws / "d" / "train" / "c" / "p2.png")  # the link is untouched


def test_concurrent_applies_take_turns_and_the_history_matches_the_disk(ws, capsys, caplog, monkeypatch):
    import threading
    import time

    import src.data.version_builder as versioning
    from src.curation import apply_labels
    from src.data.scan import scan_dataset
    from src.data_versioning import load_dataset_artifact

    pool = pool_files(ws / "d")
    write_csv(ws / "one.csv", [[p, "a"] for p in pool[:3]])
    write_csv(ws / "two.csv", [[p, "b"] for p in pool[3:]])
    real, first_in, release = versioning.create_dataset_artifact, threading.Event(), threading.Event()

    def slow_version(*a, **k):  # the first apply pauses after its moves, before its version
        if threading.current_thread().name == "one":
            first_in.set()
            release.wait(60)
        return real(*a, **k)

    monkeypatch.setattr(versioning, "create_dataset_artifact", slow_version)
    results = {}

    def run_apply(name):
        results[name] = apply_labels(ws / "d", ws / f"{name}.csv", store=ws / "s", wandb_mode="disabled")

    one = threading.Thread(target=run_apply, args=("one",), name="one")
    two = threading.Thread(target=run_apply, args=("two",), name="two")
    one.start()
    assert first_in.wait(120)
    two.start()
    deadline = time.monotonic() + 60
    while two.is_alive() and "waiting for another labeling apply" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    release.set()
    one.join(120)
    two.join(120)
    assert set(results) == {"one", "two"}
    assert results["one"]["created"] and results["two"]["created"]
    v2 = load_dataset_artifact("d", "latest", store=ws / "s")
    v1 = load_dataset_artifact("d", f"v{int(v2['version'][1:]) - 1}", store=ws / "s")
    assert "3 images labeled" in v1["description"] and "3 images labeled" in v2["description"]
    assert {e["path"] for e in v2["manifest"]} == {e["path"] for e in scan_dataset(ws / "d")["manifest"]}
    assert sum(e["path"].startswith("unlabeled/") for e in v1["manifest"]) == 3
    assert pool_files(ws / "d") == []


def test_an_apply_that_cannot_get_the_lock_in_time_moves_nothing(ws):
    from src.core.errors import DataError
    from src.curation import apply_labels
    from src.curation.journal import apply_lock

    write_csv(ws / "l.csv", [["unlabeled/p0.png", "a"]])
    with apply_lock((ws / "d").resolve()):
        with pytest.raises(DataError, match="another labeling apply .* still running.*nothing was moved"):
            apply_labels(ws / "d", ws / "l.csv", store=ws / "s", wandb_mode="disabled", lock_timeout=0.3)
    assert "unlabeled/p0.png" in pool_files(ws / "d")


@pytest.mark.parametrize("label", ["=1+1", "@SUM(A1)", "=cmd|' -c calc'!A0", "+x", "-x", "ap\u200bple", "ap\x7fple",
                                   "\u202eelppa", "x" * 300])
@pytest.mark.parametrize("flag", ["--new-classes", "--json"])
def test_labels_against_the_class_name_rule_are_refused(ws, capsys, label, flag):
    write_csv(ws / "l.csv", [["unlabeled/p2.png", "a"], ["unlabeled/p0.png", label]])
    before = sorted(os.listdir(ws / "d" / "train"))
    code, _, err = apply(capsys, ws, ws / "l.csv", flag)
    line = one_line(err)
    assert code == 2 and "line 3" in line and "class name" in line
    assert sorted(os.listdir(ws / "d" / "train")) == before and "unlabeled/p2.png" in pool_files(ws / "d")


def test_nfc_and_nfd_spellings_are_one_class(ws, capsys):
    import unicodedata

    nfd, nfc = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")
    write_csv(ws / "l.csv", [["unlabeled/p0.png", nfd]])
    assert apply(capsys, ws, ws / "l.csv", "--new-classes")[0] == 0
    write_csv(ws / "l.csv", [["unlabeled/p2.png", nfc]])
    code, _, err = apply(capsys, ws, ws / "l.csv")  # no --new-classes needed: it is the same class
    assert code == 0, err
    assert [n for n in os.listdir(ws / "d" / "train") if n.startswith("caf")] == [nfc]
    assert sorted(os.listdir(ws / "d" / "train" / nfc)) == ["p0.png", "p2.png"]


@pytest.mark.parametrize("name,data", [("notes.txt", b"remember the milk"), ("empty.jpg", b""),
                                       ("broken.png", b"\x89PNG\r\n\x1a\n not really")])
def test_only_decodable_images_are_moved(ws, capsys, name, data):
    (ws / "d" / "unlabeled" / name).write_bytes(data)
    write_csv(ws / "l.csv", [["unlabeled/p0.png", "a"], [f"unlabeled/{name}", "a"]])
    before = pool_files(ws / "d")
    code, _, err = apply(capsys, ws, ws / "l.csv")
    assert code == 2 and "line 3" in one_line(err) and "not an image" in err and name in err
    assert pool_files(ws / "d") == before


@pytest.mark.parametrize("conf", ["7", "1e999", "inf", "-0.5", "nan"])
def test_confidences_outside_0_1_are_refused_with_their_line(ws, capsys, conf):
    write_csv(ws / "l.csv", [["unlabeled/p0.png", "a", "0.995"], ["unlabeled/p2.png", "a", conf]],
              header=("path", "label", "confidence"))
    code, _, err = apply(capsys, ws, ws / "l.csv", "--min-confidence", "0.99")
    assert code == 2 and "line 3" in one_line(err) and "[0, 1]" in err
    assert "unlabeled/p0.png" in pool_files(ws / "d")


def test_names_longer_than_the_system_allows_are_one_line(ws, capsys):
    long = "x" * 300
    code, _, err = apply(capsys, ws, ws / f"{long}.csv")
    assert code == 2 and "labels file" in one_line(err)
    code, _, err = run(capsys, "apply", "--data-dir", str(ws / long), "--labels", str(ws / "l.csv"))
    assert code == 2 and "dataset folder" in one_line(err)
    write_csv(ws / "l.csv", [[f"unlabeled/{long}.png", "a"]])
    code, _, err = apply(capsys, ws, ws / "l.csv")
    assert code == 2 and "unknown path" in one_line(err)


def test_an_oversized_field_is_reported_on_its_own_line(ws, capsys):
    big = "x" * 140_000
    (ws / "l.csv").write_text(f"path,label\nunlabeled/p0.png,a\nunlabeled/p2.png,a\nunlabeled/a/p1.png,{big}\n")
    code, _, err = apply(capsys, ws, ws / "l.csv")
    assert code == 2 and "line 4: malformed CSV" in one_line(err)


def test_formula_cells_in_pseudo_labels_csv_are_escaped_and_read_back(tmp_path):
    from src.curation.labels_csv import read_labels
    from src.training.pseudo_labels import write_csv as write_pseudo

    write_pseudo(tmp_path / "p.csv", [["unlabeled/x.png", "=1+1", 0.5, "label_spreading", 0.9, 1],
                                      ["unlabeled/y.png", "@SUM(A1)", 0.9, "label_spreading", 0.99, 1]])
    text = (tmp_path / "p.csv").read_text()
    assert "'=1+1" in text and "'@SUM(A1)" in text and "\n=" not in text and ",=" not in text and ",@" not in text
    assert [(r.path, r.label) for r in read_labels(tmp_path / "p.csv").rows] == [
        ("unlabeled/x.png", "=1+1"), ("unlabeled/y.png", "@SUM(A1)")]


# -- issues --------------------------------------------------------------------------------
def test_issues_finds_a_planted_wrong_folder(tmp_path, capsys):
    data = make_image_folder(tmp_path / "d", per_split={"train": 6, "test": 1})
    shutil.move(data / "train" / "a" / "a_3.png", data / "train" / "b" / "a_3.png")  # a red square filed as b
    code, out, err = run(capsys, "issues", "--data-dir", str(data), "--image-size", "32", "--json")
    assert code == 0, err
    issues = json.loads(out)
    assert issues and issues[0]["path"] == "train/b/a_3.png"
    assert issues[0]["given_label"] == "b" and issues[0]["likely_label"] == "a"
    assert [i["score"] for i in issues] == sorted(i["score"] for i in issues)


def test_issues_needs_two_images_per_class(tmp_path, capsys):
    data = make_image_folder(tmp_path / "d", per_split={"train": 1, "test": 1})
    code, _, err = run(capsys, "issues", "--data-dir", str(data), "--image-size", "32")
    assert code == 2 and "at least 2" in one_line(err)


def test_issues_ignores_an_extractor_fine_tuned_on_the_labels(tmp_path):
    from src.core.store import Store
    from src.curation.issues import _unfinetuned_extractor

    m = tmp_path / "m"
    m.mkdir()
    (m / "training_results.json").write_text(json.dumps({"extractor": {"fine_tune": {"epochs": 3}}}))
    (m / "feature_extractor.pth").write_bytes(b"x")
    assert _unfinetuned_extractor(m, Store(tmp_path / "s")) is None
