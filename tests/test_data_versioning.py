"""Dataset versions: create, re-version, immutability, diff, restore, quality, incremental, concurrency."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import make_image_folder

from src import data_versioning as dv
from src.data.scan import dataset_digest
from src.core.errors import StoreError

D = "disabled"


pytestmark = pytest.mark.usefixtures("drop_log_handlers")  # main() points logging at captured stderr


def smooth_image(seed: int, size: int = 32, mode: str = "RGB") -> Image.Image:
    """A smooth random picture: distinct images get distinct perceptual hashes."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    return small.resize((size, size), Image.Resampling.BICUBIC).convert(mode)


def make_dataset(root: Path, classes=("apple", "milk"), per_class: int = 3, seed: int = 0) -> Path:
    n = seed * 1000
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                n += 1
                smooth_image(n).save(d / f"{c}_{i}.png")
    return root


@pytest.fixture
def ds(tmp_path) -> Path:
    return make_dataset(tmp_path / "ds")


def create(path, **kw):
    return dv.create_dataset_artifact(path, kw.pop("artifact_name", "groc"), wandb_mode=D, **kw)


def test_create_load_and_reversion_unchanged(ds, capsys):
    r = create(ds, description="first")
    assert (r["version"], r["created"]) == ("v1", True)
    info = dv.load_dataset_artifact("groc", "latest")
    m = info["metadata"]
    assert m["total_samples"] == 12
    assert m["class_distribution"] == {"apple": 6, "milk": 6}
    assert m["split_counts"] == {"test": 6, "train": 6}
    assert m["imbalance_ratio"] == 1.0
    assert info["digest"] == dataset_digest(info["manifest"]) == r["digest"]
    e = info["manifest"][0]
    assert {e["split"], e["class"], e["width"], e["height"], e["mode"]} >= {"test", "apple", 32, "RGB"}
    assert [h["version"] for h in info["history"]] == ["v1"]
    again = create(ds)
    assert (again["created"], again["equals"]) == (False, "v1")
    assert dv.main(["--data-dir", str(ds), "--artifact-name", "groc", "--wandb-mode", D]) == 0
    assert "equals groc:v1" in capsys.readouterr().out
    assert len(dv.list_versions("groc")) == 1


def test_offline_mode_writes_run_dir(ds, tmp_path):
    r = dv.create_dataset_artifact(ds, "groc", wandb_mode="offline", samples_per_class=1)
    assert r["run_dir"] and Path(r["run_dir"]).is_dir()
    assert Path(r["run_dir"]).is_relative_to(tmp_path / "wandb_root")
    assert list((tmp_path / "wandb_root" / "wandb").glob("offline-run-*"))


def test_explicit_version_is_immutable(ds, capsys):
    assert create(ds, version="v5")["version"] == "v5"
    smooth_image(999).save(ds / "train" / "apple" / "new.png")
    with pytest.raises(StoreError, match="already exists"):
        create(ds, version="v5")
    assert dv.main(["--data-dir", str(ds), "--artifact-name", "groc", "--version", "v5", "--wandb-mode", D]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: dataset groc:v5 already exists")
    assert create(ds)["version"] == "v6"
    assert create(ds, version="v7")["equals"] == "v6"  # same content: no new version
    assert dv.load_dataset_artifact("groc", "v5")["metadata"]["total_samples"] == 12


def test_unreachable_wandb_keeps_the_local_version(ds, monkeypatch, capsys):
    from src import wandb_config
    from src.core.errors import TrackingError

    def refuse(*a, **k):
        raise TrackingError("W&B init failed in online mode at http://nowhere: timeout")

    monkeypatch.setattr(wandb_config, "Tracker", refuse)
    assert dv.main(["--data-dir", str(ds), "--artifact-name", "groc", "--wandb-mode", "online"]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "groc:v1 is stored locally" in err[0]
    assert dv.load_dataset_artifact("groc", "v1")["metadata"]["total_samples"] == 12


def test_dataset_digest_is_order_independent():
    m = [{"path": "train/a/1.png", "sha256": "aa"}, {"path": "test/b/2.png", "sha256": "bb"}]
    assert dataset_digest(m) == dataset_digest(m[::-1])
    assert dataset_digest(m) != dataset_digest([m[0], {**m[1], "sha256": "cc"}])


def test_diff_reports_each_change_kind(ds, capsys):
    create(ds)
    smooth_image(500).save(ds / "train" / "apple" / "added.png")                         # added
    (ds / "test" / "milk" / "milk_0.png").unlink()                                       # removed
    (ds / "train" / "milk" / "milk_1.png").unlink()
    smooth_image(501).save(ds / "train" / "milk" / "milk_1.png")                         # modified
    os.rename(ds / "train" / "apple" / "apple_0.png", ds / "train" / "milk" / "was_apple.png")  # relabeled
    os.rename(ds / "test" / "apple" / "apple_1.png", ds / "test" / "apple" / "renamed.png")     # moved
    create(ds)
    d = dv.diff_versions("groc", "v1", "v2")
    assert d["added"] == ["train/apple/added.png"]
    assert d["removed"] == ["test/milk/milk_0.png"]
    assert d["modified"] == ["train/milk/milk_1.png"]
    assert d["relabeled"] == [{"from": "train/apple/apple_0.png", "to": "train/milk/was_apple.png",
                               "from_class": "apple", "to_class": "milk"}]
    assert [m["to"] for m in d["moved"]] == ["test/apple/renamed.png"]
    assert d["class_changes"] == {}  # apple: -1 relabel +1 added; milk: +1 relabel -1 removed
    assert dv.main(["--artifact-name", "groc", "--diff", "v1", "v2", "--json"]) == 0
    assert '"relabeled": 1' in capsys.readouterr().out


def test_restore_round_trip_byte_for_byte(ds, tmp_path):
    (ds / "train" / "milk" / "notes.txt").write_text("keep me")  # non-images are versioned too
    create(ds)
    orig = tmp_path / "orig"
    import shutil

    shutil.copytree(ds, orig)
    (ds / "train" / "apple" / "apple_0.png").unlink()
    smooth_image(77).save(ds / "train" / "apple" / "apple_1.png")
    create(ds)
    assert dv.main(["--artifact-name", "groc", "--restore", "v1", "--to", str(tmp_path / "r1")]) == 0
    cmp = filecmp.dircmp(orig, tmp_path / "r1")
    files = sorted(p.relative_to(orig).as_posix() for p in orig.rglob("*") if p.is_file())
    restored = sorted(p.relative_to(tmp_path / "r1").as_posix() for p in (tmp_path / "r1").rglob("*") if p.is_file())
    assert files == restored and not cmp.diff_files
    for f in files:
        assert (orig / f).read_bytes() == (tmp_path / "r1" / f).read_bytes()
    with pytest.raises(Exception, match="not an empty folder"):
        dv.restore_version("groc", "v1", tmp_path / "r1")


def test_incremental_rehashes_only_changed_files(ds):
    first = create(ds)
    assert first["scan"]["hashed"] == 12
    p = ds / "train" / "apple" / "apple_2.png"
    smooth_image(4242).save(p)
    second = create(ds)
    assert (second["scan"]["hashed"], second["scan"]["cached"]) == (1, 11)
    assert second["version"] == "v2" and second["new_blobs"] == 1
    assert create(ds)["scan"]["hashed"] == 0


def test_hard_links_share_bytes_with_the_dataset(ds):
    r = create(ds, link=True)
    e = dv.load_dataset_artifact("groc", r["version"])["manifest"][0]
    from src.core.store import Store

    blob = Store().blob_path(e["sha256"])
    assert os.stat(blob).st_ino == os.stat(ds / e["path"]).st_ino  # tmp_path and store share a file system


def _bad_dataset(root: Path) -> Path:
    make_dataset(root, per_class=3)
    tr, te = root / "train", root / "test"
    buf = tr / "apple" / "full.jpg"
    smooth_image(900).save(buf, quality=90)
    (tr / "apple" / "truncated.jpg").write_bytes(buf.read_bytes()[: buf.stat().st_size // 2])
    buf.unlink()
    (tr / "apple" / "empty.png").write_bytes(b"")
    (tr / "milk" / "text.jpg").write_text("not an image")
    (tr / "milk" / "dup.png").write_bytes((tr / "milk" / "milk_0.png").read_bytes())
    (te / "milk" / "leak.png").write_bytes((tr / "milk" / "milk_1.png").read_bytes())
    smooth_image(2).convert("RGB").save(te / "apple" / "near.jpg", quality=92)  # ~ train/apple/apple_1.png
    smooth_image(901, size=8).save(tr / "milk" / "tiny.png")
    smooth_image(902, mode="CMYK").save(tr / "milk" / "cmyk.jpg")
    for i in range(30):  # imbalance: 'tea' has 30 images, the others 7-10
        (tr / "tea").mkdir(exist_ok=True)
        smooth_image(3000 + i).save(tr / "tea" / f"t{i}.png")
    (te / "empty_class").mkdir()
    return root


def test_quality_check_names_each_finding(tmp_path, capsys):
    ds = _bad_dataset(tmp_path / "bad")
    rep = dv.quality_check(ds)
    kinds = rep["counts"]
    for k in ("corrupt", "zero_byte", "non_image", "duplicate", "leakage", "near_duplicate", "tiny_image",
              "unusual_mode", "class_imbalance", "empty_class"):
        assert kinds.get(k), (k, kinds)
    paths = {f["kind"]: f["paths"] for f in rep["findings"]}
    assert paths["corrupt"] == ["train/apple/truncated.jpg"]
    assert paths["leakage"] == ["train/milk/milk_1.png", "test/milk/leak.png"]
    assert set(paths["near_duplicate"]) == {"train/apple/apple_1.png", "test/apple/near.jpg"}
    assert kinds["near_duplicate"] == 1 and kinds["unusual_mode"] == 1 and kinds["tiny_image"] == 1
    assert dv.main(["--quality-check", "--data-dir", str(ds), "--fail-on-issues"]) == 1
    out = capsys.readouterr().out
    assert "truncated.jpg" in out and "leakage" in out
    assert dv.main(["--quality-check", "--data-dir", str(ds)]) == 0
    assert dv.list_versions() == []  # check only


def test_clean_dataset_passes_quality_gate(ds):
    rep = dv.quality_check(ds)
    assert rep["ok"], rep["findings"]
    assert dv.main(["--quality-check", "--data-dir", str(ds), "--fail-on-issues", "-q"]) == 0


def test_version_stores_quality_report(tmp_path):
    r = create(_bad_dataset(tmp_path / "bad"))
    q = dv.load_dataset_artifact("groc", r["version"])["quality"]
    assert q["counts"]["corrupt"] == 1 and q["counts"]["leakage"] == 1
    assert r["metadata"]["invalid_files"] == 3  # truncated, empty, text


def test_find_or_create_version(ds):
    a = dv.find_or_create_version(ds, "groc")
    assert a == {"name": "groc", "version": "v1", "digest": a["digest"], "created": True}
    assert dv.find_or_create_version(ds, "groc")["created"] is False


def test_find_or_create_version_logs_through_callers_tracker(ds):
    class FakeTracker:
        run_dir = None

        def __init__(self):
            self.calls = []

        def __getattr__(self, name):
            return lambda *a, **k: self.calls.append((name, a, k))

    tr = FakeTracker()
    dv.find_or_create_version(ds, "groc", tracker=tr)
    assert [c[0] for c in tr.calls] == ["log_artifact"]  # no tables: the caller owns the step counter
    _, (name, type_), kw = tr.calls[0]
    assert (name, type_) == ("groc", "dataset") and kw["metadata"]["total_samples"] == 12
    # the local number is metadata and the alias local-vN (lineage pins it): W&B reads `vN` as its own number
    assert "manifest.json" in kw["immutable_files"] and kw["aliases"] == ["latest", "local-v1"]
    assert kw["metadata"]["local_version"] == "v1"
    dv.find_or_create_version(ds, "groc", tracker=tr)
    assert len(tr.calls) == 1


def test_concurrent_creation_gets_distinct_versions(tmp_path):
    dirs = [make_dataset(tmp_path / f"d{i}", per_class=2, seed=i + 1) for i in range(2)]
    code = ("import sys; from src.data_versioning import create_dataset_artifact as c; "
            "print(c(sys.argv[1], 'groc', wandb_mode='disabled')['version'])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(d)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=os.environ.copy()) for d in dirs]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sorted(o[0].strip() for o in outs) == ["v1", "v2"]
    assert [v["version"] for v in dv.list_versions("groc")] == ["v1", "v2"]


@pytest.mark.parametrize("case", ["missing", "no_splits", "empty", "no_images", "bad_name", "bad_version", "no_to",
                                  "unknown_version", "restore_into_file", "restore_under_file", "huge_version",
                                  "fifo", "non_utf8_name", "list_bad_name"])
def test_bad_input_one_line_nonzero_and_nothing_lost(case, ds, tmp_path, capsys):
    create(ds)
    args = {
        "missing": ["--data-dir", str(tmp_path / "nope")],
        "no_splits": ["--data-dir", str(tmp_path)],
        "empty": ["--data-dir", str(make_empty(tmp_path / "e"))],
        "no_images": ["--data-dir", str(make_empty(tmp_path / "t", text=True))],
        "bad_name": ["--data-dir", str(ds), "--artifact-name", "../evil"],
        "bad_version": ["--data-dir", str(ds), "--version", "x1"],
        "no_to": ["--artifact-name", "groc", "--restore", "v1"],
        "unknown_version": ["--artifact-name", "groc", "--show", "v9"],
        "restore_into_file": ["--artifact-name", "groc", "--restore", "v1", "--to", str(ds / "train" / "apple" / "apple_0.png")],
        "restore_under_file": ["--artifact-name", "groc", "--restore", "v1", "--to",
                               str(ds / "train" / "apple" / "apple_0.png" / "sub")],
        "huge_version": ["--data-dir", str(ds), "--version", "v99999999999999999999999"],
        "fifo": ["--data-dir", str(ds)],
        "non_utf8_name": ["--data-dir", str(ds)],
        "list_bad_name": ["--list", "--artifact-name", "../etc"],
    }[case]
    if case == "fifo":  # reading it would block forever
        os.mkfifo(ds / "train" / "apple" / "pipe.png")
    if case == "non_utf8_name":
        with open(os.fsencode(ds / "train" / "apple") + b"/bad\xff.png", "wb") as f:
            f.write(b"x")
    capsys.readouterr()
    rc = dv.main(args + ["--wandb-mode", D])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    assert dv.load_dataset_artifact("groc", "v1")["metadata"]["total_samples"] == 12


def test_description_for_unchanged_content_updates_the_version(ds, capsys):
    create(ds, description="first")
    assert dv.main(["--data-dir", str(ds), "--artifact-name", "groc", "--wandb-mode", D,
                    "--description", "shelf photos, March"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("unchanged: content equals groc:v1") and "description updated" in out
    [v] = dv.list_versions("groc")
    assert v["description"] == "shelf photos, March"
    assert dv.load_dataset_artifact("groc", "v1")["description"] == "shelf photos, March"
    assert dv.main(["--data-dir", str(ds), "--artifact-name", "groc", "--wandb-mode", D,
                    "--description", "shelf photos, March"]) == 0
    assert "description updated" not in capsys.readouterr().out  # the same text again changes nothing
    assert "description_updated" not in create(ds)  # no --description: the recorded one stays
    assert dv.list_versions("groc")[0]["description"] == "shelf photos, March"


def test_unchanged_content_keeps_its_quality_verdict(tmp_path, capsys):
    """A CI gate must not flip: the second run on the same data fails like the first."""
    ds = make_dataset(tmp_path / "ds")
    (ds / "train" / "apple" / "empty.png").write_bytes(b"")
    assert dv.main(["--data-dir", str(ds), "--wandb-mode", D, "--fail-on-issues"]) == 1
    capsys.readouterr()
    assert dv.main(["--data-dir", str(ds), "--wandb-mode", D, "--fail-on-issues"]) == 1
    out = capsys.readouterr().out
    assert "unchanged" in out and "empty.png" in out
    assert len(dv.list_versions()) == 1


def test_failed_restore_leaves_nothing_and_can_be_retried(ds, tmp_path):
    create(ds)
    entry = dv.load_dataset_artifact("groc", "v1")["manifest"][3]
    from src.core.store import Store

    blob = Store().blob_path(entry["sha256"])
    good = blob.read_bytes()
    os.chmod(blob, 0o644)
    blob.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    target = tmp_path / "r"
    with pytest.raises(StoreError, match="corrupted"):
        dv.restore_version("groc", "v1", target)
    assert not target.exists() and not list(tmp_path.glob(".r.partial-*"))
    blob.write_bytes(good)
    target.mkdir()  # an empty folder made by the caller is fine
    assert dv.restore_version("groc", "v1", target)["files"] == 12
    assert not list(tmp_path.glob(".r.partial-*"))


def test_file_vanishing_before_it_is_stored_is_one_clean_error(ds, monkeypatch, capsys):
    from src.data import scan as dataset_scan

    real = dataset_scan.scan_dataset

    def scan_then_delete(*a, **k):
        out = real(*a, **k)
        (ds / "train" / "apple" / "apple_0.png").unlink()
        return out

    monkeypatch.setattr(dataset_scan, "scan_dataset", scan_then_delete)
    assert dv.main(["--data-dir", str(ds), "--wandb-mode", D]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "apple_0.png" in err[0] and "disappeared" in err[0]
    assert dv.list_versions() == []


def test_diff_class_counts_only_usable_images(ds):
    create(ds)
    (ds / "train" / "apple" / ".DS_Store").write_bytes(b"junk")
    (ds / "train" / "apple" / "Thumbs.db").write_bytes(b"junk")
    create(ds)
    d = dv.diff_versions("groc", "v1", "v2")
    assert d["counts"]["added"] == 2 and "apple" not in d["class_changes"]


def make_empty(root: Path, text: bool = False) -> Path:
    (root / "train" / "apple").mkdir(parents=True)
    (root / "test").mkdir()
    if text:
        (root / "train" / "apple" / "readme.txt").write_text("no images here")
    return root


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_is_a_clean_error(ds, capsys):
    p = ds / "train" / "apple" / "apple_0.png"
    p.chmod(0)
    try:
        assert dv.main(["--data-dir", str(ds), "--wandb-mode", D]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot read" in err[0]
    finally:
        p.chmod(0o644)


def test_default_dataset_name_follows_the_folder(tmp_path):
    from src.data.version_store import default_dataset_name

    assert default_dataset_name(None) == "grocery-dataset"
    assert default_dataset_name(tmp_path / "DS2GROCERIES") == "grocery-dataset"
    assert default_dataset_name(tmp_path / "toy set (5 classes)") == "toy-set-5-classes"
    root = make_image_folder(tmp_path / "toyset")
    assert dv.main(["--data-dir", str(root), "--wandb-mode", "disabled", "-q"]) == 0
    assert [v["name"] for v in dv.list_versions()] == ["toyset"]  # not grocery-dataset:vN


def test_diff_and_list_escape_names_and_json_keeps_them_raw(ds, capsys):
    """A newline in a file name split a ``--diff`` line (and one in a description a ``--list`` line), and an
    escape sequence reached the terminal: the human output escapes them as the quality report does."""
    import json

    create(ds, description="first\nsecond line")
    smooth_image(600).save(ds / "train" / "apple" / "new\nline\x1b[2J.png")
    os.rename(ds / "train" / "apple" / "apple_0.png", ds / "train" / "milk" / "was\napple.png")
    create(ds)
    assert dv.main(["--artifact-name", "groc", "--diff", "v1", "v2"]) == 0
    out = capsys.readouterr().out
    assert "  added     train/apple/new\\nline\\x1b[2J.png\n" in out and "\x1b" not in out
    assert "  relabeled train/apple/apple_0.png -> train/milk/was\\napple.png\n" in out
    assert all(line.startswith(("groc:", "  ")) for line in out.splitlines()), out
    assert dv.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 2 and "first\\nsecond line" in out
    assert dv.main(["--artifact-name", "groc", "--diff", "v1", "v2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == ["train/apple/new\nline\x1b[2J.png"]
    assert dv.main(["--list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["description"] == "first\nsecond line"
