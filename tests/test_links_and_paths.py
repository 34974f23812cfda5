"""Links and paths: no byte from outside the dataset enters the store, nothing is written outside --to."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from helpers import make_image_folder
from src import data_versioning as dv
from src.core.errors import DataError
from src.core.paths import contained_path
from src.core.store import Store, sha256_file

D = "disabled"


pytestmark = pytest.mark.usefixtures("drop_log_handlers")  # main() points logging at captured stderr


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder beside the dataset with a secret image and a class folder of images."""
    out = tmp_path / "outside"
    (out / "pear").mkdir(parents=True)
    Image.new("RGB", (32, 32), (1, 2, 3)).save(out / "secret.png")
    for i in range(3):
        Image.new("RGB", (32, 32), (90 + i, 10, 200)).save(out / "pear" / f"p{i}.png")
    return out


@pytest.fixture
def linked(tmp_path, outside) -> Path:
    """A dataset with a file link, a class-folder link and a split link, all leading outside."""
    ds = make_image_folder(tmp_path / "ds", classes=("apple", "milk"), per_split={"train": 4, "test": 2})
    os.symlink(outside / "secret.png", ds / "train" / "apple" / "evil.png")
    os.symlink(outside / "pear", ds / "train" / "pear")
    os.symlink(outside, ds / "val")
    return ds


def _blobs(store: Path) -> set[str]:
    return {p.name for p in (store / "blobs").rglob("*") if p.is_file()}


def test_outside_links_never_enter_a_version_the_store_or_a_restore(linked, outside, tmp_path, capsys):
    store = tmp_path / "store"
    assert dv.main(["--data-dir", str(linked), "--artifact-name", "groc", "--wandb-mode", D]) == 0
    err = capsys.readouterr().err
    assert "left out 3 link(s) leading outside" in err and len(err.strip().splitlines()) == 1
    info = dv.load_dataset_artifact("groc", "v1")
    paths = {e["path"] for e in info["manifest"]}
    assert not {p for p in paths if "evil" in p or "/pear/" in p or p.startswith("val/")}
    assert info["metadata"]["classes"] == ["apple", "milk"]
    outside_digests = {sha256_file(p) for p in outside.rglob("*.png")}
    assert not outside_digests & _blobs(store)
    kinds = {f["kind"]: f for f in info["quality"]["findings"]}
    assert set(kinds["outside_link"]["paths"]) <= {"train/apple/evil.png", "train/pear", "val"}
    assert info["quality"]["counts"]["outside_link"] == 3
    dv.restore_version("groc", "v1", tmp_path / "back")
    restored = {p.relative_to(tmp_path / "back").as_posix() for p in (tmp_path / "back").rglob("*") if p.is_file()}
    assert restored == paths


def test_quality_check_reports_outside_links_and_fail_on_issues_refuses(linked, capsys):
    assert dv.main(["--quality-check", "--data-dir", str(linked), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["counts"]["outside_link"] == 3
    assert {f["severity"] for f in rep["findings"] if f["kind"] == "outside_link"} == {"error"}
    assert dv.main(["--quality-check", "--data-dir", str(linked), "--fail-on-issues"]) == 1
    assert dv.main(["--data-dir", str(linked), "--artifact-name", "groc", "--wandb-mode", D,
                    "--fail-on-issues"]) == 1


def test_outside_links_are_not_in_the_wandb_artifact(linked, tmp_path):
    from wandb_records import read_run

    r = dv.create_dataset_artifact(linked, "groc", wandb_mode="offline", samples_per_class=50)
    files = read_run(r["run_dir"])["artifact_files"]["groc"]
    data = {f for f in files if f.startswith("data/")}
    assert data and not {f for f in data if "evil" in f or "/pear/" in f or f.startswith("data/val/")}
    assert len(data) == len(dv.load_dataset_artifact("groc", "v1")["manifest"])


def test_training_never_reads_outside_files(linked):
    from src.data.dataset import image_dataset

    ds = image_dataset(linked, store=Store())
    assert ds.classes == ["apple", "milk"]
    assert set(ds.splits) == {"train", "test"}
    real_root = linked.resolve()
    for split in ds.splits.values():
        assert all(Path(os.path.realpath(p)).is_relative_to(real_root) for p in split.paths)


def test_a_link_inside_the_dataset_is_followed(tmp_path):
    ds = make_image_folder(tmp_path / "ds", classes=("apple", "milk"))
    os.symlink("../../test/apple/apple_0.png", ds / "train" / "apple" / "same.png")
    os.symlink("../train/milk", ds / "test" / "milk2")
    from src.data.scan import scan_dataset

    scan = scan_dataset(ds)
    paths = {e["path"] for e in scan["manifest"]}
    assert "train/apple/same.png" in paths and "test/milk2/milk_0.png" in paths
    assert not [n for n in scan["notes"] if n.startswith("outside_link")]


def test_a_link_to_a_fifo_is_still_refused(tmp_path):
    ds = make_image_folder(tmp_path / "ds", classes=("apple", "milk"))
    os.mkfifo(tmp_path / "ds" / "pipe")
    os.symlink("../../pipe", ds / "train" / "apple" / "pipe.png")
    with pytest.raises(DataError, match="not a regular file"):
        dv.quality_check(ds)


def test_a_split_that_links_outside_cannot_be_trained_on(tmp_path, outside):
    from src.data.dataset import image_dataset

    real = make_image_folder(tmp_path / "elsewhere", classes=("apple", "milk"))
    ds = tmp_path / "ds"
    (ds / "test").mkdir(parents=True)
    os.symlink(real / "train", ds / "train")
    with pytest.raises(DataError, match="leading outside"):
        image_dataset(ds)


# -- contained writes ------------------------------------------------------------------------
@pytest.mark.parametrize("rel", ["../evil.png", "train/../../evil.png", "/tmp/evil.png", "train//x.png",
                                 "./x.png", "", "a\0b", "C:/x.png"])
def test_contained_path_refuses_escaping_paths(tmp_path, rel):
    with pytest.raises(DataError):
        contained_path(tmp_path / "to", rel)


def test_contained_path_refuses_a_path_through_a_link(tmp_path):
    (tmp_path / "to").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "to" / "train")
    with pytest.raises(DataError, match="through a link"):
        contained_path(tmp_path / "to", "train/a/x.png")
    assert contained_path(tmp_path / "to", "test/a/x.png") == tmp_path / "to" / "test" / "a" / "x.png"


@pytest.mark.parametrize("evil", ["../escaped.png", "../../escaped.png", "ABSOLUTE"])
def test_restore_refuses_stored_paths_outside_the_target_and_writes_nothing(tmp_path, evil, capsys):
    ds = make_image_folder(tmp_path / "ds", classes=("apple", "milk"))
    dv.create_dataset_artifact(ds, "groc", wandb_mode=D)
    evil = str(tmp_path / "abs" / "escaped.png") if evil == "ABSOLUTE" else evil
    con = sqlite3.connect(tmp_path / "store" / "mlops.db")
    with con:
        first = con.execute("SELECT path FROM dataset_files ORDER BY path DESC LIMIT 1").fetchone()[0]
        con.execute("UPDATE dataset_files SET path=? WHERE path=?", (evil, first))
    con.close()
    target = tmp_path / "restore" / "to"
    def files():
        return {p for p in tmp_path.rglob("*") if not p.is_relative_to(tmp_path / "store")}

    before = files()
    assert dv.main(["--artifact-name", "groc", "--restore", "v1", "--to", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "outside" in err[0]
    assert files() == before  # nothing written: no target, no partial, no escape
    assert not list(tmp_path.rglob("escaped.png"))
