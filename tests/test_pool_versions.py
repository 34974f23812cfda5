"""Dataset versions know the pool: rows without a label, `labeled` in diffs, quality checks over the pool."""

import shutil

from helpers import make_image_folder
from PIL import Image
from test_pool import add_pool

from src.data.quality import analyze
from src.data.scan import scan_dataset
from src.data_versioning import create_dataset_artifact, diff_versions, load_dataset_artifact, main


def version(data, store):
    return create_dataset_artifact(data, store=store, wandb_mode="disabled")


def kinds(data):
    report = analyze(scan_dataset(data)["manifest"])
    return {f["kind"]: f for f in report["findings"]}, report


def test_manifest_records_pool_without_label_and_metadata_has_no_pool_class(tmp_path):
    data = add_pool(make_image_folder(tmp_path / "d"))
    version(data, tmp_path / "s")
    v = load_dataset_artifact(store=tmp_path / "s")
    pool = [e for e in v["manifest"] if e["split"] == "unlabeled"]
    assert len(pool) == 4 and all(e["class"] == "" and e["source"] is None for e in pool)
    assert v["metadata"]["num_classes"] == 3 and v["metadata"]["pool_samples"] == 4
    assert "" not in v["metadata"]["class_distribution"]


def test_diff_reports_labeled_apart_from_relabeled_added_removed(tmp_path, capsys):
    from src.curation import apply_labels

    data = add_pool(make_image_folder(tmp_path / "d"))
    store = tmp_path / "s"
    version(data, store)
    (tmp_path / "l.csv").write_text("path,label\nunlabeled/p0.png,a\nunlabeled/a/p1.png,b\n")
    apply_labels(data, tmp_path / "l.csv", store=store, wandb_mode="disabled", artifact_name="grocery-dataset")
    shutil.move(data / "train" / "c" / "c_0.png", data / "train" / "a" / "c_0.png")  # a relabel
    Image.new("RGB", (32, 32), (1, 99, 7)).save(data / "train" / "b" / "new.png")
    version(data, store)
    d = diff_versions("grocery-dataset", "v1", "v3", store)
    assert d["counts"] == {"added": 1, "removed": 0, "modified": 0, "labeled": 2, "relabeled": 1, "moved": 0}
    assert {(r["from"], r["to"], r["to_class"], r["source"]) for r in d["labeled"]} == {
        ("unlabeled/p0.png", "train/a/p0.png", "a", "human"), ("unlabeled/a/p1.png", "train/b/p1.png", "b", "human")}
    assert d["class_changes"]["(unlabeled)"] == {"a": 4, "b": 2, "delta": -2}
    assert main(["--diff", "v1", "v3", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "labeled   unlabeled/p0.png -> train/a/p0.png (human)" in out and "2 labeled" in out


def test_quality_check_covers_the_pool(tmp_path):
    data = add_pool(make_image_folder(tmp_path / "d"), n=2, nested=False)
    found, report = kinds(data)
    assert "class_imbalance" not in found and "corrupt" not in found
    pool = data / "unlabeled"
    (pool / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    shutil.copy(pool / "p0.png", pool / "p0_copy.png")
    shutil.copy(data / "test" / "a" / "a_0.png", pool / "from_test.png")
    found, _ = kinds(data)
    assert found["corrupt"]["paths"] == ["unlabeled/broken.jpg"]
    assert any(f["kind"] == "duplicate" and set(f["paths"]) == {"unlabeled/p0.png", "unlabeled/p0_copy.png"}
               for f in analyze(scan_dataset(data)["manifest"])["findings"])
    leaks = [f for f in analyze(scan_dataset(data)["manifest"])["findings"] if f["kind"] == "leakage"]
    assert any(set(f["paths"]) >= {"unlabeled/from_test.png", "test/a/a_0.png"} for f in leaks)


def test_pool_image_already_labeled_is_a_duplicate_not_a_leak(tmp_path):
    data = make_image_folder(tmp_path / "d", per_split={"train": 3, "test": 1})
    (data / "unlabeled").mkdir()
    shutil.copy(data / "train" / "b" / "b_2.png", data / "unlabeled" / "again.png")  # test has b_0 only
    findings = analyze(scan_dataset(data)["manifest"])["findings"]
    mine = [f for f in findings if "unlabeled/again.png" in f["paths"] and f["kind"] != "near_duplicate"]
    assert [f["kind"] for f in mine] == ["duplicate"] and "already labeled" in mine[0]["message"]
