"""Hostile model files never run: no load path unpickles, untrusted skops types are refused,
tampered blobs are never promoted or mirrored, and old pickles convert only with consent.

The payload is a pickle whose ``__reduce__`` writes a marker file: if any path unpickles it,
the marker appears. Each load path is tried with the ``.sha256`` sidecar deleted, recomputed
to match the payload, and left over from the genuine model the payload replaced.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import skops.io
from helpers import make_image_folder
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression

from src import inference_monitor, model_registry
from src.core.errors import ConfigError, ModelError
from src.core.store import Store, sha256_bytes, sha256_file
from src.learning.bundles import BUNDLE_FORMAT, load_model_bundle, save_model_bundle, sidecar
from src.registry.tables import insert_version, move_alias, open_registry

NAME = "label-spreading-classifier"
SIDECARS = ["deleted", "recomputed", "present"]


@pytest.fixture(autouse=True)
def _reset_logging():
    yield
    for h in logging.getLogger().handlers[:]:
        logging.getLogger().removeHandler(h)


class Payload:
    """Unpickling this runs ``exec``: it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('payload ran')",)


class Hostile:
    """A type skops would rebuild with ``__setstate__`` if it were trusted."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __setstate__(self, state):
        Path(state["marker"]).write_text("payload ran")


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith(("INFO", "WARNING"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def genuine_bundle(ext: Path, seed: int = 0, n_features: int = 4) -> dict:
    X, y = make_blobs(n_samples=30, centers=3, n_features=n_features, random_state=seed)
    return {"format": BUNDLE_FORMAT, "algorithm": "label_spreading",
            "classifier": LogisticRegression(max_iter=200).fit(X, y), "class_names": ["apple", "milk", "bread"],
            "extractor_digest": sha256_file(ext), "preprocessing": {"image_size": 32}, "seed": seed,
            "run_id": f"run{seed}", "dataset": {"digest": "d" * 64, "version": "groceries:v2"},
            "metrics": {"test_accuracy": 0.9, "f1_score": 0.88}, "config": {"labeled_ratio": 0.1},
            "reference": {"features": X[:5].astype(np.float32), "class_distribution": [1 / 3] * 3,
                          "confidences": np.ones(5, np.float32)}}


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    (d / "feature_extractor.pth").write_bytes(b"dummy extractor weights")
    return d


def payload_bytes(marker: Path) -> bytes:
    """An old-style bundle (a pickled dict) with code in it, as a hostile party would ship it."""
    return pickle.dumps({"format": BUNDLE_FORMAT, "classifier": Payload(marker)}, protocol=pickle.HIGHEST_PROTOCOL)


def plant(folder: Path, marker: Path, how: str, name: str = "label_spreading_model.pkl") -> Path:
    """The payload at ``folder/name`` with its sidecar deleted, recomputed, or left from a genuine model."""
    path = folder / name
    genuine = folder / "genuine.skops"
    save_model_bundle(genuine, genuine_bundle(folder / "feature_extractor.pth"))
    path.write_bytes(payload_bytes(marker))
    if how == "present":
        sidecar(path).write_text(sidecar(genuine).read_text())
    elif how == "recomputed":
        sidecar(path).write_text(sha256_file(path) + "\n")
    else:
        sidecar(path).unlink(missing_ok=True)
    return path


def results_naming(folder: Path, path: Path, recorded: bool) -> None:
    info = {"test_accuracy": 0.9, "f1_score": 0.88, "model_path": path.name}
    if recorded:
        info["model_digest"] = sha256_file(path)
    (folder / "training_results.json").write_text(json.dumps({
        "algorithms": {"label_spreading": info}, "summary": {"best_algorithm": "label_spreading"},
        "extractor": {"path": "feature_extractor.pth"}}))


# -- every load path, every sidecar state ---------------------------------------------------
@pytest.mark.parametrize("how", SIDECARS)
@pytest.mark.parametrize("suffix", [".pkl", ".skops"])  # a pickle renamed to look new is no better
def test_payload_never_runs_through_file_load_paths(tmp_path, folder, capsys, how, suffix):
    from src.monitoring.monitor import InferenceMonitor
    from src.predictor import Predictor

    marker = tmp_path / "PWNED"
    path = plant(folder, marker, how, f"label_spreading_model{suffix}")
    ext = folder / "feature_extractor.pth"
    images = make_image_folder(tmp_path / "imgs", per_split={"test": 1})
    expected = "digest check" if how == "present" else "old pickle model file"

    rc = inference_monitor.main(["--model-path", str(path), "--test-dir", str(images / "test"),
                                 "--wandb-mode", "disabled", "--window", "20"])
    assert rc == ModelError.exit_code and expected in one_error_line(capsys.readouterr().err)
    with pytest.raises(ModelError, match=expected):
        Predictor.load(path, ext)
    with pytest.raises(ModelError, match=expected):
        InferenceMonitor(path, ext, wandb_mode="disabled")
    rc = model_registry.main(["register", str(path), "--name", NAME, "--accuracy", "0.9", "--f1", "0.9",
                              "--wandb-mode", "disabled"])
    assert rc == ModelError.exit_code and expected in one_error_line(capsys.readouterr().err)
    results_naming(folder, path, recorded=how == "recomputed")
    rc = model_registry.main(["register-all", "--models-dir", str(folder), "--wandb-mode", "disabled"])
    assert rc == ModelError.exit_code and expected in one_error_line(capsys.readouterr().err)
    assert not marker.exists()
    assert model_registry.list_models() == []


def test_payload_never_runs_as_the_monitors_default_model(tmp_path, folder, capsys, monkeypatch):
    marker = tmp_path / "PWNED"
    path = plant(folder, marker, "recomputed")
    results_naming(folder, path, recorded=True)
    images = make_image_folder(tmp_path / "imgs", per_split={"test": 1})
    monkeypatch.chdir(tmp_path)  # default_model() reads models/training_results.json
    rc = inference_monitor.main(["--test-dir", str(images / "test"), "--wandb-mode", "disabled", "--window", "20"])
    line = one_error_line(capsys.readouterr().err)
    assert rc == ModelError.exit_code and "old pickle model file" in line and "--i-trust-these-files" in line
    assert not marker.exists()


def legacy_registered(st: Store, data: bytes, ext_digest: str, aliases=("production",)) -> int:
    """A version registered before skops (its blob a pickle), as the registry's tables hold it."""
    digest = st.put_bytes(data)
    with st.transaction() as con:
        version, _ = insert_version(con, NAME, digest, ext_digest, {"test_accuracy": 0.9},
                                    {"run_id": "legacy-run", "dataset": {"version": "groceries:v1"}})
        for alias in ("latest", *aliases):
            move_alias(con, NAME, alias, version, reason="registered before skops")
    return version


@pytest.mark.parametrize("how", ["registered-before-skops", "blob-swapped"])
def test_payload_never_runs_through_registry_load_paths(tmp_path, folder, capsys, how):
    from src.monitoring.monitor import InferenceMonitor

    marker = tmp_path / "PWNED"
    st = open_registry()
    ext = folder / "feature_extractor.pth"
    st.put_file(ext)
    if how == "registered-before-skops":  # digest and blob agree: only the format can refuse it
        legacy_registered(st, payload_bytes(marker), sha256_file(ext), aliases=("production", "staging"))
        expected = "old pickle model file"
    else:  # a genuine version whose stored bytes were replaced afterwards
        genuine = folder / "label_spreading_model.skops"
        save_model_bundle(genuine, genuine_bundle(ext))
        rec = model_registry.register_model(genuine, NAME, {}, ["production", "staging"], wandb_mode="disabled")
        blob = st.blob_path(rec["digest"])
        os.chmod(blob, 0o644)
        blob.write_bytes(payload_bytes(marker))
        expected = "digest check"
    with pytest.raises(ModelError, match=expected):
        model_registry.load_model_from_registry(NAME, "production")
    with pytest.raises(ModelError, match=expected):
        model_registry.load_registered_bundle(NAME, "production")
    with pytest.raises(ModelError, match=expected):
        InferenceMonitor(f"{NAME}:production", wandb_mode="disabled")
    before = model_registry.model_history(NAME)
    rc = model_registry.main(["promote", NAME, "--to-alias", "staging", "--version", "latest", "--wandb-mode",
                              "offline"])  # latest == staging: unchanged, but still checked first
    assert rc == ModelError.exit_code and expected in one_error_line(capsys.readouterr().err)
    rc = model_registry.main(["promote", NAME, "--to-alias", "candidate", "--force", "--reason", "try",
                              "--wandb-mode", "offline"])
    assert rc == ModelError.exit_code and expected in one_error_line(capsys.readouterr().err)
    assert model_registry.model_history(NAME) == before  # nothing moved, nothing logged
    assert not list((tmp_path / "wandb_root").rglob("offline-run-*"))  # nothing mirrored
    assert not marker.exists()


# -- skops files with types outside the fixed list ----------------------------------------
@pytest.mark.parametrize("smuggled", ["instance", "function"])
def test_skops_file_with_untrusted_types_is_refused(tmp_path, folder, capsys, smuggled):
    marker = tmp_path / "PWNED"
    bundle = genuine_bundle(folder / "feature_extractor.pth")
    bundle["config"] = Hostile(marker) if smuggled == "instance" else os.system
    path = folder / "label_spreading_model.skops"
    path.write_bytes(skops.io.dumps(bundle))  # written by hand: save_model_bundle would refuse it
    sidecar(path).write_text(sha256_file(path) + "\n")
    type_name = "test_hostile_models.Hostile" if smuggled == "instance" else "system"
    with pytest.raises(ModelError, match=f"refusing to load .*could run code: .*{type_name}"):
        load_model_bundle(path)
    rc = model_registry.main(["register", str(path), "--name", NAME, "--accuracy", "0.9", "--f1", "0.9",
                              "--wandb-mode", "disabled"])
    assert rc == ModelError.exit_code and "could run code" in one_error_line(capsys.readouterr().err)
    assert not marker.exists()


def zip_bomb(path: Path, how: str) -> Path:
    """A ``.skops`` zip whose schema.json unpacks far beyond its packed size (the reporter's was
    1 MB -> 1 GB, 21.8 s and 2.8 GB to refuse), or one that merely declares too much."""
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        if how == "deflated":  # 8 MiB of spaces in about 8 KB
            z.writestr("schema.json", b'{"a": "' + b" " * (8 << 20) + b'"}', compress_type=zipfile.ZIP_DEFLATED)
        else:  # many members: each small, together beyond a model's limits
            for i in range(10_001):
                z.writestr(f"{i}.npy", b"")
    return path


@pytest.mark.parametrize("how", ["deflated", "members"])
def test_zip_bomb_is_refused_from_its_directory_before_skops_reads_it(tmp_path, folder, capsys, monkeypatch, how):
    from src.predictor import Predictor

    read = []
    real = skops.io.get_untrusted_types
    monkeypatch.setattr(skops.io, "get_untrusted_types", lambda **kw: read.append(1) or real(**kw))
    path = zip_bomb(folder / "label_spreading_model.skops", how)
    expected = "would expand" if how == "deflated" else "holds 10,001 files"
    with pytest.raises(ModelError, match=f"refusing to load .*{expected}"):
        load_model_bundle(path)
    with pytest.raises(ModelError, match=expected):
        Predictor.load(path, folder / "feature_extractor.pth")
    rc = model_registry.main(["register", str(path), "--name", NAME, "--accuracy", "0.9", "--f1", "0.9",
                              "--wandb-mode", "disabled"])
    assert rc == ModelError.exit_code and expected in one_error_line(capsys.readouterr().err)
    assert read == []  # skops never opened a member
    assert model_registry.list_models() == []


def lying_zip(path: Path, declared: int = 1000, real: int = 64 << 20) -> Path:
    """A zip whose one deflated schema.json declares ``declared`` bytes (CRC of those bytes included)
    while its stream inflates to ``real``: within every directory limit, a bomb for a one-shot read."""
    import struct
    import zlib

    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = b"".join(co.compress(b" " * (1 << 20)) for _ in range(real >> 20)) + co.flush()
    name, crc = b"schema.json", zlib.crc32(b" " * declared)
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(raw), declared, len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(raw), declared,
                          len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(raw), 0)
    path.write_bytes(local + raw + central + end)
    return path


def test_deflated_members_are_read_in_bounded_steps(tmp_path, folder):
    """zipfile's one-shot read inflated a lying member whole (1,000 bytes declared: 512 MB, 10 s, 1.8 GB)."""
    import tracemalloc
    import zipfile

    path = lying_zip(folder / "label_spreading_model.skops")
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match="not a readable model file"):
            load_model_bundle(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak:,} bytes"  # 64 MiB when the member was inflated whole
    deflated = folder / "deflated_model.skops"  # a genuine bundle written deflated still loads
    deflated.write_bytes(skops.io.dumps(genuine_bundle(folder / "feature_extractor.pth"),
                                        compression=zipfile.ZIP_DEFLATED))
    assert load_model_bundle(deflated)["class_names"] == ["apple", "milk", "bread"]


def test_trusted_list_is_fixed_not_taken_from_the_file(tmp_path, folder, monkeypatch):
    """The loader never asks the file which types to trust."""
    calls = []
    real = skops.io.loads
    monkeypatch.setattr(skops.io, "loads", lambda data, trusted=None: calls.append(trusted) or real(data, trusted))
    path = folder / "m_model.skops"
    save_model_bundle(path, genuine_bundle(folder / "feature_extractor.pth"))
    load_model_bundle(path)
    from src.learning.bundles import TRUSTED_TYPES

    assert calls == [list(TRUSTED_TYPES)]


# -- verify before moving -----------------------------------------------------------------
def test_tampered_blob_is_never_promoted_or_mirrored(tmp_path, folder, capsys):
    ext = folder / "feature_extractor.pth"
    paths = []
    for seed in (0, 1):
        p = folder / f"v{seed}_model.skops"
        save_model_bundle(p, genuine_bundle(ext, seed))
        paths.append(p)
    model_registry.register_model(paths[0], NAME, {}, ["production"], wandb_mode="disabled")
    rec = model_registry.register_model(paths[1], NAME, {}, wandb_mode="disabled")
    blob = Store().blob_path(rec["digest"])
    os.chmod(blob, 0o644)
    blob.write_bytes(paths[0].read_bytes())  # a valid model, but not the bytes v1 recorded
    before = model_registry.model_history(NAME)
    for extra in ([], ["--force", "--reason", "ship it"]):  # --force does not skip the check
        rc = model_registry.main(["promote", NAME, "--to-alias", "production", "--version", "v1", "--wandb-mode",
                                  "offline", *extra])
        line = one_error_line(capsys.readouterr().err)
        assert rc == ModelError.exit_code and "fails its digest check" in line
    assert model_registry.list_models()[0]["aliases"]["production"] == "v0"
    assert model_registry.model_history(NAME) == before
    assert not list((tmp_path / "wandb_root").rglob("offline-run-*"))
    # the mirror itself checks too (a blob tampered with after the move, before the upload)
    from src.registry.mirror import publish
    from src.tracking import Tracker

    t = Tracker("model-registry", {}, mode="offline")
    logged = []
    t.log_artifact = lambda *a, **k: logged.append(a)
    try:
        with pytest.raises(ModelError, match="digest check"):
            publish(t, model_registry.get_model_version(f"{NAME}:v1"), Store())
    finally:
        t.finish()
    assert logged == []


# -- convert ------------------------------------------------------------------------------
def old_models_dir(folder: Path) -> dict[str, bytes]:
    """What training wrote before skops: pickled bundles, sidecars and a results record."""
    from src.learning.semi_supervised import fit_semi_supervised

    ext = folder / "feature_extractor.pth"
    X, y = make_blobs(n_samples=60, centers=3, n_features=8, random_state=0)  # 8 dims: a KD-tree graph
    y_partial = np.where(np.arange(60) < 20, y, -1)
    out, algos = {}, {}
    for algo in ("label_spreading", "self_training"):
        bundle = {**genuine_bundle(ext), "algorithm": algo,
                  "classifier": fit_semi_supervised(algo, X, y_partial, 5, 0),
                  "metrics": {"test_accuracy": np.float64(0.91), "f1_score": 0.9}}
        data = pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL)
        path = folder / f"{algo}_model.pkl"
        path.write_bytes(data)
        sidecar(path).write_text(sha256_bytes(data) + "\n")
        algos[algo] = {"test_accuracy": 0.91, "f1_score": 0.9, "model_path": path.name,
                       "model_digest": sha256_bytes(data)}
        out[algo] = data
    (folder / "training_results.json").write_text(json.dumps({
        "algorithms": algos, "summary": {"best_algorithm": "label_spreading"}, "run": {"id": "r1"},
        "extractor": {"path": "feature_extractor.pth", "digest": sha256_file(ext)}}))
    return out


def test_convert_needs_consent_then_keeps_versions_aliases_history_and_lineage(tmp_path, folder, capsys):
    old = old_models_dir(folder)
    st = open_registry()
    ext = folder / "feature_extractor.pth"
    st.put_file(ext)
    v0 = legacy_registered(st, old["label_spreading"], sha256_file(ext), aliases=("production",))
    history_before = model_registry.model_history(NAME)
    old_digest = model_registry.get_model_version(f"{NAME}:v{v0}").digest

    rc = model_registry.main(["convert", "--models-dir", str(folder), "--wandb-mode", "disabled"])
    line = one_error_line(capsys.readouterr().err)
    assert rc == ConfigError.exit_code and "--i-trust-these-files" in line
    assert "label_spreading_model.pkl" in line and f"{NAME}:v0" in line
    assert (folder / "label_spreading_model.pkl").exists() and not list(folder.glob("*.skops"))
    assert model_registry.get_model_version(f"{NAME}:production").digest == old_digest

    rc = model_registry.main(["convert", "--i-trust-these-files", "--models-dir", str(folder),
                              "--wandb-mode", "offline"])
    out, err = capsys.readouterr()
    assert rc == 0 and out.count("converted") == 3, err
    assert not list(folder.glob("*.pkl")) and not list(folder.glob("*.pkl.sha256"))
    results = json.loads((folder / "training_results.json").read_text())
    for algo, info in results["algorithms"].items():
        path = folder / info["model_path"]
        assert path.suffix == ".skops" and sha256_file(path) == info["model_digest"]
        bundle = load_model_bundle(path)
        assert bundle["algorithm"] == algo and bundle["classifier"].predict(np.zeros((1, 8))).shape == (1,)
    mv = model_registry.get_model_version(f"{NAME}:production")
    assert mv.version == v0 and mv.digest != old_digest and mv.metadata["converted_from"] == old_digest
    assert mv.metadata["run_id"] == "legacy-run" and mv.metadata["dataset"] == {"version": "groceries:v1"}
    assert sorted(mv.aliases) == ["latest", "production"]
    history = model_registry.model_history(NAME)
    assert history[:len(history_before)] == history_before
    [event] = history[len(history_before):]
    assert event["action"] == "converted" and event["details"] == {"from_digest": old_digest, "to_digest": mv.digest}
    assert model_registry.load_registered_bundle(NAME)["class_names"] == ["apple", "milk", "bread"]
    assert list((tmp_path / "wandb_root").rglob("offline-run-*"))  # the converted version is mirrored
    # the same pickle in models/ and in the registry became the same bytes: registering again changes nothing
    res = model_registry.register_all(folder, wandb_mode="disabled")
    assert [(r["name"], r["version"], r["created"]) for r in res][0] == (NAME, "v0", False)
    rc = model_registry.main(["convert", "--models-dir", str(folder)])
    assert rc == 0 and "nothing to convert" in capsys.readouterr().out
    rc = model_registry.main(["history", NAME])
    assert rc == 0 and "converted v0: pickle" in capsys.readouterr().out


def test_convert_refuses_hostile_or_swapped_pickles_even_with_consent(tmp_path, folder, capsys):
    marker = tmp_path / "PWNED"
    old_models_dir(folder)
    (folder / "evil_model.pkl").write_bytes(payload_bytes(marker))
    rc = model_registry.main(["convert", "--i-trust-these-files", "--models-dir", str(folder),
                              "--wandb-mode", "disabled"])
    line = one_error_line(capsys.readouterr().err)
    assert rc == ModelError.exit_code and "refusing to convert" in line and "builtins.exec" in line
    assert not marker.exists()
    assert not list(folder.glob("*.skops"))  # nothing converted when one file is refused
    (folder / "evil_model.pkl").unlink()
    swapped = folder / "self_training_model.pkl"
    swapped.write_bytes(swapped.read_bytes() + b".")  # no longer the bytes the sidecar and results name
    rc = model_registry.main(["convert", "--i-trust-these-files", "--models-dir", str(folder),
                              "--wandb-mode", "disabled"])
    assert rc == ModelError.exit_code and "digest check" in one_error_line(capsys.readouterr().err)
    assert not list(folder.glob("*.skops"))


def test_convert_never_replaces_a_newer_skops_file(folder, capsys):
    old_models_dir(folder)
    newer = folder / "self_training_model.skops"
    save_model_bundle(newer, genuine_bundle(folder / "feature_extractor.pth", seed=5))
    before = newer.read_bytes()
    rc = model_registry.main(["convert", "--i-trust-these-files", "--models-dir", str(folder),
                              "--wandb-mode", "disabled"])
    assert rc == ModelError.exit_code and "already exists" in one_error_line(capsys.readouterr().err)
    assert newer.read_bytes() == before and (folder / "self_training_model.pkl").exists()
