"""Model registry: versions, aliases, gated promotion, lineage, tamper detection, concurrency, crashes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import time
import types
from pathlib import Path

import pytest
import skops.io
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression

from src import model_registry as mr
from src.core.errors import ConfigError, ModelError, StoreError
from src.learning.bundles import save_model_bundle
from src.core.store import Store, sha256_file

NAME = "label-spreading-classifier"
EXTRACTOR_BYTES = b"dummy feature extractor weights"


@pytest.fixture(autouse=True)
def _reset_logging():
    """main() binds a log handler to the (captured) stderr of its test; drop it afterwards."""
    yield
    import logging

    for h in logging.getLogger().handlers[:]:
        logging.getLogger().removeHandler(h)


def make_bundle(folder: Path, seed: int = 0, accuracy: float | None = None, **extra) -> Path:
    """A tiny real bundle (LogisticRegression on blobs) next to a dummy extractor file."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = folder / "feature_extractor.pth"
    if not ext.exists():
        ext.write_bytes(EXTRACTOR_BYTES)
    X, y = make_blobs(n_samples=30, centers=3, n_features=4, random_state=seed)
    bundle = {"algorithm": "label_spreading", "classifier": LogisticRegression(max_iter=200).fit(X, y),
              "class_names": ["apple", "milk", "bread"], "extractor_digest": sha256_file(ext),
              "preprocessing": {"image_size": 224}, "seed": seed, "run_id": f"run{seed}",
              "dataset": {"digest": "d" * 64, "version": "groceries:v2"}, "config": {"labeled_ratio": 0.1},
              "code_version": "abc123", **extra}
    if accuracy is not None:
        bundle["metrics"] = {"test_accuracy": accuracy, "f1_score": accuracy - 0.01}
    path = folder / f"m{seed}_model.skops"
    save_model_bundle(path, bundle)
    return path


def reg(path, acc=0.9, aliases=None, name=NAME, **kw):
    return mr.register_model(path, name, {"accuracy": acc, "f1": acc - 0.02}, aliases, wandb_mode="disabled", **kw)


def cli(capsys, *args):
    rc = mr.main([*args, "--wandb-mode", "disabled"] if args[0] in ("register", "register-all", "promote")
                 else list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# -- register -----------------------------------------------------------------------------
def test_register_versions_latest_and_idempotence(tmp_path):
    a, b = make_bundle(tmp_path / "m", 0), make_bundle(tmp_path / "m", 1)
    r0 = reg(a)
    assert (r0["version"], r0["created"], r0["aliases"]) == ("v0", True, ["latest"])
    again = reg(a, acc=0.1)
    assert (again["version"], again["created"]) == ("v0", False)
    assert again["metrics"]["test_accuracy"] == 0.9  # first registration's record is kept
    r1 = reg(b, aliases=["staging"])
    assert (r1["version"], sorted(r1["aliases"])) == ("v1", ["latest", "staging"])
    [entry] = mr.list_models()
    assert entry["aliases"] == {"latest": "v1", "staging": "v1"}
    assert [v["version"] for v in entry["versions"]] == ["v0", "v1"]
    assert entry["versions"][0]["metrics"] == {"test_accuracy": 0.9, "f1_score": pytest.approx(0.88)}


def test_register_records_lineage(tmp_path, capsys):
    path = make_bundle(tmp_path / "m", 3)
    reg(path, aliases=["production"], context={"run_id": "train-42"})
    lin = mr.model_lineage(f"{NAME}:production")
    assert lin["model"]["ref"] == f"{NAME}:v0"
    assert lin["run"]["id"] == "train-42" and lin["run"]["code_version"] == "abc123" and lin["run"]["seed"] == 3
    assert lin["dataset"] == {"version": "groceries:v2", "digest": "d" * 64}
    assert lin["extractor"]["digest"] == sha256_file(tmp_path / "m" / "feature_extractor.pth")
    rc, out, _ = cli(capsys, "lineage", f"{NAME}:production")
    assert rc == 0 and "groceries:v2" in out and "train-42" in out


def test_register_refuses_non_models(tmp_path):
    folder = tmp_path / "m"
    make_bundle(folder, 0)
    (folder / "notes_model.skops").write_text("not a model")
    with pytest.raises(ModelError, match="not a model"):
        reg(folder / "notes_model.skops")
    (folder / "list_model.skops").write_bytes(skops.io.dumps([1, 2, 3]))
    with pytest.raises(ModelError, match="not a grocery-mlops model bundle"):
        reg(folder / "list_model.skops")
    other = tmp_path / "other.pth"
    other.write_bytes(b"a different extractor")
    with pytest.raises(ModelError, match="not the one"):
        reg(folder / "m0_model.skops", extractor_path=other)
    lone = tmp_path / "lone"
    make_bundle(lone, 1)
    (lone / "feature_extractor.pth").unlink()
    with pytest.raises(ModelError, match="extractor"):
        reg(lone / "m1_model.skops")
    assert mr.list_models() == []


def test_register_all_uses_training_results(tmp_path, capsys):
    models = tmp_path / "models"
    algos = {}
    for i, algo in enumerate(["label_spreading", "self_training"]):
        p = make_bundle(models, i)
        target = models / f"{algo}_model.skops"
        p.rename(target)
        algos[algo] = {"test_accuracy": 0.8 + i / 10, "f1_score": 0.75, "precision": 0.7, "recall": 0.72,
                       "fit_seconds": 1.5, "model_path": target.name, "model_digest": sha256_file(target)}
    results = {"config": {"labeled_ratio": 0.2}, "seed": 7, "dataset": {"digest": "e" * 64, "version": "ds:v1"},
               "extractor": {"path": "feature_extractor.pth", "digest": sha256_file(models / "feature_extractor.pth")},
               "run": {"id": "r-77", "mode": "offline", "dir": None}, "code_version": "deadbeef",
               "algorithms": algos, "summary": {"best_algorithm": "self_training", "best_test_accuracy": 0.9}}
    (models / "training_results.json").write_text(json.dumps(results))
    rc, out, err = cli(capsys, "register-all", "--models-dir", str(models), "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert [r["name"] for r in res] == ["label-spreading-classifier", "self-training-classifier"]
    assert res[1]["metrics"]["test_accuracy"] == pytest.approx(0.9) and res[1]["metrics"]["fit_seconds"] == 1.5
    lin = mr.model_lineage("self-training-classifier:latest")
    assert lin["run"]["id"] == "r-77" and lin["dataset"]["version"] == "ds:v1" and lin["run"]["seed"] == 7
    # the cross-model comparison marks the best
    cmp_ = mr.compare_models(["label-spreading-classifier", "self-training-classifier:latest"])
    assert cmp_["best"]["test_accuracy"] == ["self-training-classifier:v0"]
    rc, _, err = cli(capsys, "register-all", "--models-dir", str(tmp_path / "nothing"))
    assert rc != 0 and "training_results.json" in one_error_line(err)


# -- CLI ----------------------------------------------------------------------------------
def test_cli_subcommands_json(tmp_path, capsys):
    a, b = make_bundle(tmp_path / "m", 0), make_bundle(tmp_path / "m", 1)
    assert cli(capsys, "register", str(a), "--name", NAME, "--accuracy", "0.9", "--f1", "0.88",
               "--alias", "production")[0] == 0
    rc, out, _ = cli(capsys, "register", str(b), "--name", NAME, "--accuracy", "0.92", "--f1", "0.9", "--json")
    assert rc == 0 and json.loads(out)["version"] == "v1"
    rc, out, _ = cli(capsys, "list", "--json")
    assert rc == 0 and json.loads(out)[0]["aliases"] == {"latest": "v1", "production": "v0"}
    rc, out, _ = cli(capsys, "list")
    assert rc == 0 and "production=v0" in out
    rc, out, _ = cli(capsys, "compare", NAME, "--json")
    res = json.loads(out)
    assert [m["ref"] for m in res["models"]] == [f"{NAME}:v0", f"{NAME}:v1"]
    assert res["best"]["test_accuracy"] == [f"{NAME}:v1"]
    rc, out, _ = cli(capsys, "compare", f"{NAME}:production", f"{NAME}:v1")
    assert rc == 0 and "0.9200*" in out
    rc, out, _ = cli(capsys, "promote", NAME, "--to-alias", "production", "--json")
    assert rc == 0 and json.loads(out)["action"] == "moved"
    rc, out, _ = cli(capsys, "history", NAME, "--json")
    hist = json.loads(out)
    assert [(e["alias"], e["from"], e["to"], e["action"]) for e in hist] == [
        ("latest", None, "v0", "moved"), ("production", None, "v0", "moved"),
        ("latest", "v0", "v1", "moved"), ("production", "v0", "v1", "moved")]
    rc, out, _ = cli(capsys, "history", NAME)
    assert rc == 0 and out.count("\n") == 4
    rc, out, _ = cli(capsys, "lineage", f"{NAME}:production", "--json")
    assert json.loads(out)["model"]["version"] == "v1"


@pytest.mark.parametrize("args", [
    ["register", "MISSING", "--name", NAME, "--accuracy", "0.9", "--f1", "0.9"],
    ["register", "MODEL", "--name", "a/b", "--accuracy", "0.9", "--f1", "0.9"],
    ["register", "MODEL", "--name", "", "--accuracy", "0.9", "--f1", "0.9"],
    ["register", "MODEL", "--name", "..", "--accuracy", "0.9", "--f1", "0.9"],
    ["register", "MODEL", "--name", NAME, "--accuracy", "91", "--f1", "0.9"],
    ["register", "MODEL", "--name", NAME, "--accuracy", "nan", "--f1", "0.9"],
    ["register", "MODEL", "--name", NAME, "--accuracy", "0.9", "--f1", "0.9", "--alias", "../prod"],
    ["register", "MODEL", "--name", NAME, "--accuracy", "0.9", "--f1", "0.9", "--alias", "v3"],
    ["register", "MODEL", "--name", NAME, "--accuracy", "0.9", "--f1", "0.9", "--extractor", "MISSING"],
    ["promote", NAME, "--to-alias", "latest"],
    ["promote", NAME, "--to-alias", "pro/duction"],
    ["promote", NAME, "--to-alias", "staging", "--version", "v9"],
    ["promote", NAME, "--to-alias", "staging", "--version", "nosuchalias"],
    ["promote", "unknown-model", "--to-alias", "staging"],
    ["list", "unknown-model"],
    ["compare", f"{NAME}:v5"],
    ["history", "unknown-model"],
    ["lineage", f"{NAME}:production"],
    ["lineage", "a\\b:latest"],
])
def test_bad_input_one_error_line(tmp_path, capsys, args):
    model = make_bundle(tmp_path / "m", 0)
    reg(model)
    args = [str(model) if a == "MODEL" else str(tmp_path / "missing") if a == "MISSING" else a for a in args]
    rc, out, err = cli(capsys, *args)
    assert rc != 0
    one_error_line(err)
    assert len(mr.list_models()[0]["versions"]) == 1  # nothing stored changed


def test_cli_register_takes_recorded_metrics_and_latest(tmp_path, capsys):
    """--accuracy/--f1 are optional for a bundle that records them; `--alias latest` is accepted (it moves by itself)."""
    trained = make_bundle(tmp_path / "m", 0, accuracy=0.8)
    rc, out, err = cli(capsys, "register", str(trained), "--name", NAME, "--alias", "latest", "--alias", "staging",
                       "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert res["metrics"]["test_accuracy"] == 0.8 and res["metrics"]["f1_score"] == pytest.approx(0.79)
    assert res["aliases"] == ["latest", "staging"]
    assert [e["alias"] for e in mr.model_history(NAME)] == ["latest", "staging"]  # latest moved once, not twice


def test_cli_register_needs_metrics_the_bundle_does_not_record(tmp_path, capsys):
    untrained = make_bundle(tmp_path / "m", 0)  # no metrics recorded
    rc, _, err = cli(capsys, "register", str(untrained), "--name", NAME, "--accuracy", "0.9")
    assert rc == ConfigError.exit_code
    line = one_error_line(err)
    assert "records no f1_score" in line and "--f1" in line and "--accuracy" not in line
    assert mr.list_models() == []
    assert cli(capsys, "register", str(untrained), "--name", NAME, "--accuracy", "0.9", "--f1", "0.8")[0] == 0


def test_cli_register_says_when_given_metrics_differ_from_recorded_ones(tmp_path, capsys):
    trained = make_bundle(tmp_path / "m", 0, accuracy=0.8)
    rc, out, err = cli(capsys, "register", str(trained), "--name", NAME, "--accuracy", "0.95", "--f1", "0.79")
    assert rc == 0
    warnings = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "test_accuracy 0.8000" in warnings[0] and "test_accuracy 0.9500" in warnings[0]
    assert "f1_score" not in warnings[0]  # the same value given and recorded is no conflict
    assert mr.get_model_version(NAME).metrics["test_accuracy"] == 0.8  # the recorded one wins


def test_latest_in_aliases_is_ignored_everywhere_but_promote(tmp_path, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="src.registry.api")
    a, b = make_bundle(tmp_path / "m", 0), make_bundle(tmp_path / "m", 1)
    assert reg(a, aliases=["latest", "best"])["aliases"] == ["best", "latest"]
    assert reg(b, aliases=["latest"])["aliases"] == ["latest"]
    assert mr.list_models()[0]["aliases"] == {"best": "v0", "latest": "v1"}
    assert "alias 'latest' ignored" in caplog.text
    with pytest.raises(StoreError, match="moves automatically"):
        mr.promote_model(NAME, "latest", "v0")


# -- promotion gate -----------------------------------------------------------------------
def test_promotion_gate_refuses_then_force_and_audit(tmp_path, capsys):
    good, worse, close = (make_bundle(tmp_path / "m", i) for i in range(3))
    reg(good, acc=0.90, aliases=["production"])
    reg(worse, acc=0.80)
    rc, _, err = cli(capsys, "promote", NAME, "--to-alias", "production", "--version", "v1")
    line = one_error_line(err)
    assert rc == StoreError.exit_code and "0.8000" in line and "0.9000" in line and "0.1000" in line
    with pytest.raises(ConfigError, match="reason"):
        mr.promote_model(NAME, "production", "v1", force=True)
    rc, out, err = cli(capsys, "promote", NAME, "--to-alias", "production", "--version", "v1",
                       "--force", "--reason", "hotfix for label bug")
    assert rc == 0 and "forced" in out
    assert mr.list_models()[0]["aliases"]["production"] == "v1"
    reg(close, acc=0.795)  # within the 0.01 tolerance of the current holder (0.80)
    assert mr.promote_model(NAME, "production", "v2", wandb_mode="disabled")["action"] == "moved"
    prod = [e for e in mr.model_history(NAME) if e["alias"] == "production"]
    assert [(e["from"], e["to"], e["action"]) for e in prod] == [
        (None, "v0", "moved"), ("v0", "v1", "refused"), ("v0", "v1", "forced"), ("v1", "v2", "moved")]
    assert prod[1]["details"]["from_value"] == 0.9 and prod[1]["details"]["to_value"] == 0.8
    assert prod[2]["reason"] == "hotfix for label bug"
    # non-protected aliases are not gated
    assert mr.promote_model(NAME, "staging", "v1", wandb_mode="disabled")["action"] == "moved"


def test_register_with_production_alias_is_gated(tmp_path):
    reg(make_bundle(tmp_path / "m", 0), acc=0.9, aliases=["production"])
    with pytest.raises(mr.PromotionRefused, match="did not move production"):
        reg(make_bundle(tmp_path / "m", 1), acc=0.5, aliases=["production"])
    [entry] = mr.list_models()
    assert entry["aliases"] == {"latest": "v1", "production": "v0"}


def test_tolerance_is_capped_bigger_drops_need_force(tmp_path, capsys):
    reg(make_bundle(tmp_path / "m", 0), acc=0.90, aliases=["production"])
    reg(make_bundle(tmp_path / "m", 1), acc=0.50)
    rc, _, err = cli(capsys, "promote", NAME, "--to-alias", "production", "--version", "v1", "--tolerance", "1")
    assert rc == ConfigError.exit_code and "--force" in one_error_line(err)
    assert mr.list_models()[0]["aliases"]["production"] == "v0"
    rc, _, err = cli(capsys, "promote", NAME, "--to-alias", "production", "--version", "")
    assert rc == ConfigError.exit_code and "empty" in one_error_line(err)


def test_recorded_metrics_win_over_claimed_ones(tmp_path, caplog):
    """The gate compares what training measured, not what a caller types."""
    reg(make_bundle(tmp_path / "m", 0, accuracy=0.90), acc=0.90, aliases=["production"])
    with pytest.raises(mr.PromotionRefused, match="did not move production"):
        reg(make_bundle(tmp_path / "m", 1, accuracy=0.5625), acc=0.99, aliases=["production"])
    v1 = mr.get_model_version(f"{NAME}:v1")
    assert v1.metrics["test_accuracy"] == 0.5625
    assert v1.metadata["claimed_metrics"]["test_accuracy"] == 0.99
    assert "records test_accuracy 0.5625" in caplog.text


def test_compare_marks_every_tied_best(tmp_path):
    for i in range(2):
        reg(make_bundle(tmp_path / "m", i), acc=0.9)
    res = mr.compare_models([f"{NAME}:v0", f"{NAME}:v1"])
    assert res["best"]["test_accuracy"] == [f"{NAME}:v0", f"{NAME}:v1"]
    assert all("test_accuracy" in m["best"] for m in res["models"])


@pytest.mark.parametrize("name", ["stag\n", "v1\n", "a/b"])
def test_names_with_a_trailing_newline_are_refused(tmp_path, name):
    with pytest.raises(StoreError, match="invalid"):
        reg(make_bundle(tmp_path / "m", 0), name=name)
    reg(make_bundle(tmp_path / "m", 0))
    with pytest.raises(StoreError, match="invalid"):
        mr.promote_model(NAME, name, wandb_mode="disabled")


def test_register_all_registers_every_model_then_reports_refusals(tmp_path, capsys):
    def models_dir(folder, accs):
        algos = {}
        for i, (algo, acc) in enumerate(accs.items()):
            target = folder / f"{algo}_model.skops"
            make_bundle(folder, i + 10 * int(acc * 100), accuracy=acc).rename(target)
            algos[algo] = {"test_accuracy": acc, "f1_score": acc - 0.01, "model_path": target.name}
        (folder / "training_results.json").write_text(json.dumps({"algorithms": algos}))
        return folder

    first = models_dir(tmp_path / "a", {"label_propagation": 0.9, "label_spreading": 0.9, "self_training": 0.9})
    assert cli(capsys, "register-all", "--models-dir", str(first), "--alias", "production")[0] == 0
    second = models_dir(tmp_path / "b", {"label_propagation": 0.5, "label_spreading": 0.95, "self_training": 0.5})
    rc, _, err = cli(capsys, "register-all", "--models-dir", str(second), "--alias", "production")
    [line] = [x for x in err.splitlines() if x.startswith("error: ")]  # after the INFO progress lines
    assert rc == mr.PromotionRefused.exit_code
    assert "label-propagation-classifier:production" in line and "self-training-classifier:production" in line
    listing = {e["name"]: e for e in mr.list_models()}
    assert all(len(e["versions"]) == 2 for e in listing.values())  # nothing skipped after the first refusal
    assert listing["label-spreading-classifier"]["aliases"]["production"] == "v1"  # the better one moved
    assert listing["self-training-classifier"]["aliases"]["production"] == "v0"


@pytest.mark.parametrize("content", [
    {"algorithms": ["label_spreading"]},
    {"algorithms": {"label_spreading": "x"}},
    {"algorithms": {"label_spreading": {}}, "run": "abc"},
    ["not", "a", "dict"],
])
def test_malformed_training_results_one_error_line(tmp_path, capsys, content):
    models = tmp_path / "models"
    make_bundle(models, 0).rename(models / "label_spreading_model.skops")
    (models / "training_results.json").write_text(json.dumps(content))
    rc, _, err = cli(capsys, "register-all", "--models-dir", str(models))
    assert rc == ModelError.exit_code and "training results" in one_error_line(err)


def test_incomplete_bundle_refused_at_registration(tmp_path, capsys):
    folder = tmp_path / "fake"
    folder.mkdir()
    (folder / "feature_extractor.pth").write_bytes(EXTRACTOR_BYTES)
    (folder / "f.skops").write_bytes(skops.io.dumps({"format": "grocery-mlops/model-v1"}))
    rc, _, err = cli(capsys, "register", str(folder / "f.skops"), "--name", "fk", "--accuracy", "0.9", "--f1", "0.9")
    assert rc == ModelError.exit_code and "incomplete model bundle" in one_error_line(err)


def test_damaged_blob_is_repaired_by_registering_again(tmp_path, fake_predictor):
    path = make_bundle(tmp_path / "m", 0)
    rec = reg(path)
    blob = Store().blob_path(rec["digest"])
    os.chmod(blob, 0o644)
    with open(blob, "ab") as f:
        f.write(b"junk")
    with pytest.raises(ModelError, match="digest check"):
        mr.load_model_from_registry(NAME, "latest")
    reg(path, name="fresh-name")  # same bytes: the damaged blob is noticed and replaced
    assert sha256_file(blob) == rec["digest"]
    mr.load_model_from_registry(NAME, "latest")


@pytest.mark.parametrize("kind", ["garbage", "folder"])
def test_unusable_store_database_one_error_line(tmp_path, capsys, kind):
    store = tmp_path / "store"
    store.mkdir()
    if kind == "garbage":
        (store / "mlops.db").write_bytes(b"this is not a database" * 100)
    else:
        (store / "mlops.db").mkdir()
    rc, _, err = cli(capsys, "list", "--store", str(store))
    assert rc == StoreError.exit_code and "mlops.db" in one_error_line(err)


# -- safe loading -------------------------------------------------------------------------
@pytest.fixture
def fake_predictor(monkeypatch):
    """Records what load_model_from_registry hands to Predictor.load (the real one needs torch weights)."""
    calls = []

    class Predictor:
        @classmethod
        def load(cls, model_path, extractor_path=None, *, model_digest=None, extractor_digest=None, store=None,
                 runtime="auto"):
            calls.append((Path(model_path), Path(extractor_path), model_digest, extractor_digest))
            return cls()

    monkeypatch.setitem(sys.modules, "src.inference.predictor", types.SimpleNamespace(Predictor=Predictor))
    return calls


def test_load_model_from_registry_passes_verified_blobs(tmp_path, fake_predictor):
    path = make_bundle(tmp_path / "m", 0)
    rec = reg(path, aliases=["production"])
    mr.load_model_from_registry(NAME)  # alias defaults to production
    [(model, ext, md, ed)] = fake_predictor
    assert md == rec["digest"] == sha256_file(model) and ed == rec["extractor_digest"] == sha256_file(ext)
    bundle = mr.load_registered_bundle(NAME, "latest")
    assert bundle["class_names"] == ["apple", "milk", "bread"] and bundle["_digest"] == rec["digest"]


@pytest.mark.parametrize("victim", ["model", "extractor"])
def test_tampered_blob_refused_before_loading(tmp_path, monkeypatch, fake_predictor, victim):
    rec = reg(make_bundle(tmp_path / "m", 0), aliases=["production"])
    swapped = make_bundle(tmp_path / "other", 1)  # a valid bundle with different bytes
    blob = Store().blob_path(rec["digest"] if victim == "model" else rec["extractor_digest"])
    os.chmod(blob, 0o644)
    blob.write_bytes(swapped.read_bytes() if victim == "model" else b"evil")

    def no_load(*a, **k):
        raise AssertionError("loaded before the digest check")

    monkeypatch.setattr(skops.io, "loads", no_load)
    with pytest.raises(ModelError, match="digest check"):
        mr.load_model_from_registry(NAME, "production")
    with pytest.raises(ModelError, match="digest check"):
        mr.load_registered_bundle(NAME, "v0")
    assert fake_predictor == []
    blob.unlink()
    with pytest.raises(ModelError, match="missing"):
        mr.load_model_from_registry(NAME, "production")


@pytest.mark.slow
def test_end_to_end_predict_from_trained_models(tmp_path):
    pytest.importorskip("src.predictor")
    models = Path(__file__).resolve().parents[1] / "models"
    images = sorted((Path(__file__).resolve().parents[1] / "DS2GROCERIES" / "test").glob("*/*"))
    if not (models / "training_results.json").is_file() or not images:
        pytest.skip("no trained models / dataset (run training first)")
    res = mr.register_all(models, ["production"], wandb_mode="disabled")
    predictor = mr.load_model_from_registry(res[0]["name"], "production")
    label, confidence, probs = predictor.predict(images[0])
    assert label in predictor.class_names and 0.0 <= confidence <= 1.0 and len(probs) == len(predictor.class_names)


@pytest.mark.slow
def test_end_to_end_predict_with_random_weight_extractor(tmp_path):
    pytest.importorskip("src.predictor")
    import numpy as np
    from PIL import Image

    from helpers import random_weight_bundle

    models = tmp_path / "models"
    random_weight_bundle(models, "self_training_model.skops")
    rng = np.random.default_rng(0)
    reg(models / "self_training_model.skops", aliases=["production"])
    image = tmp_path / "img.png"
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(image)
    predictor = mr.load_model_from_registry(NAME)
    label, confidence, probs = predictor.predict(image)
    assert label in ["apple", "milk", "bread"] and 0 <= confidence <= 1 and probs.shape == (3,)


# -- W&B mirror ---------------------------------------------------------------------------
def test_offline_mirror_writes_model_artifact(tmp_path):
    rec = mr.register_model(make_bundle(tmp_path / "m", 0), NAME, {"accuracy": 0.9, "f1": 0.8}, ["staging"],
                            wandb_mode="offline")
    assert rec["metadata"]["wandb_run_id"]
    runs = list((tmp_path / "wandb_root" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


# -- concurrency and crashes ---------------------------------------------------------------
def _register_at_barrier(path: str, barrier, store: str) -> None:
    barrier.wait(timeout=60)
    mr.register_model(path, NAME, {"accuracy": 0.9, "f1": 0.9}, store=store, wandb_mode="disabled")


def test_eight_concurrent_registrations(tmp_path):
    paths = [str(make_bundle(tmp_path / "m", i)) for i in range(8)]
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_register_at_barrier, args=(p, barrier, os.environ["MLOPS_STORE"])) for p in paths]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 8
    [entry] = mr.list_models()
    assert [v["version"] for v in entry["versions"]] == [f"v{i}" for i in range(8)]
    assert len({v["digest"] for v in entry["versions"]}) == 8
    latest_moves = [e for e in mr.model_history(NAME) if e["alias"] == "latest"]
    assert [e["to"] for e in latest_moves] == [f"v{i}" for i in range(8)]
    assert [e["from"] for e in latest_moves] == [None] + [f"v{i}" for i in range(7)]
    assert entry["aliases"]["latest"] == latest_moves[-1]["to"]


def _register_paused(path: str, point: str, marker: str) -> None:
    """In the forked child only: stop at ``point`` (blobs written, or inside the transaction) until killed."""
    from src.core.store import Store
    from src.registry import api

    def pause() -> None:
        Path(marker).write_text(str(os.getpid()))
        time.sleep(120)

    if point == "before-commit-blobs":
        real_transaction = Store.transaction

        def paused_transaction(self):
            pause()
            return real_transaction(self)
        Store.transaction = paused_transaction
    else:
        real_insert = api.insert_version

        def paused_insert(*args, **kwargs):
            out = real_insert(*args, **kwargs)
            pause()
            return out
        api.insert_version = paused_insert
    reg(path)


@pytest.mark.parametrize("point", ["before-commit-blobs", "in-transaction"])
def test_kill_9_mid_registration_leaves_consistent_registry(tmp_path, point):
    reg(make_bundle(tmp_path / "m", 0))
    marker = tmp_path / "paused"
    proc = mp.get_context("fork").Process(target=_register_paused,
                                          args=(str(make_bundle(tmp_path / "m", 1)), point, str(marker)))
    proc.start()
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "child never reached the pause point"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    [entry] = mr.list_models()
    assert [v["version"] for v in entry["versions"]] == ["v0"] and entry["aliases"] == {"latest": "v0"}
    assert reg(make_bundle(tmp_path / "m", 2))["version"] == "v1"
    assert [e["to"] for e in mr.model_history(NAME)] == ["v0", "v1"]
