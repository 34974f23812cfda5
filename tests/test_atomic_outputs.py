"""Training outputs are published as one set: a failed or killed run leaves the previous set loadable,
a rerun removes only files the suite wrote, and ``best_model.*`` is the best algorithm's bundle."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_image_folder, shipped

from src.core.errors import DataError
from src.core.store import sha256_file
from src.predictor import Predictor
from src.training import outputs
from src.training.outputs import JOURNAL, MANIFEST, RESULTS_FILE
from src.train_with_wandb import train_with_wandb

ROOT = Path(__file__).resolve().parents[1]
TWO = ["label_spreading", "self_training"]
TRAIN_FLAGS = ["--labeled-ratio", "0.5", "--fine-tune-epochs", "0", "--n-neighbors", "3", "--image-size", "32",
               "--wandb-mode", "disabled", "--no-progress", "-q"]


def train(data, models, seed=0, algorithms=TWO):
    return train_with_wandb(labeled_ratio=0.5, fine_tune_epochs=0, n_neighbors=3, data_dir=data, models_dir=models,
                            seed=seed, algorithms=algorithms, wandb_mode="disabled", image_size=32, progress=False)


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def staging_folders(models: Path) -> list[Path]:
    return sorted(models.parent.glob(f".{models.name}.staging-*"))


def assert_usable(models: Path, tmp_path: Path) -> None:
    """The set in ``models`` loads and registers: every bundle matches the extractor beside it."""
    from src.registry.api import register_all

    results = json.loads((models / RESULTS_FILE).read_text())
    for info in results["algorithms"].values():
        assert Predictor.load(models / info["model_path"]).class_names == ["a", "b", "c"]
    registered = register_all(models, store=tmp_path / "registry", wandb_mode="disabled")
    assert {r["name"] for r in registered} == {f"{a.replace('_', '-')}-classifier" for a in results["algorithms"]}


@pytest.fixture
def trained(tmp_path):
    """One finished run in ``models/``, beside a ``.gitkeep`` and a user's own file."""
    data = make_image_folder(tmp_path / "d", per_split={"train": 6, "test": 2})
    models = tmp_path / "models"
    models.mkdir()
    (models / ".gitkeep").write_text("")
    (models / "notes.txt").write_text("mine")
    results = train(data, models)
    return {"data": data, "models": models, "results": results, "before": snapshot(models)}


def test_failed_run_after_fine_tuning_keeps_the_previous_set(trained, tmp_path, monkeypatch):
    from src.training import pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pipeline, "_features", broken)  # fails after feature_extractor.pth was written
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(trained["data"], trained["models"], seed=1)  # another seed: other extractor bytes
    assert snapshot(trained["models"]) == trained["before"]
    assert staging_folders(trained["models"]) == []
    assert_usable(trained["models"], tmp_path)


@pytest.mark.slow
def test_test_image_truncated_during_the_run_keeps_the_previous_set(trained, tmp_path, monkeypatch):
    """A file that was fine at the scan and is truncated by the time features are extracted."""
    from src.training import pipeline

    late = trained["data"] / "test" / "a" / "late.png"
    late.write_bytes((trained["data"] / "test" / "a" / "a_1.png").read_bytes()[:-1] + b"\x01")  # other digest
    real = pipeline.build_extractor

    def then_truncate(*args, **kwargs):
        built = real(*args, **kwargs)
        late.write_bytes(late.read_bytes()[:40])
        return built

    monkeypatch.setattr(pipeline, "build_extractor", then_truncate)
    with pytest.raises(DataError, match="late.png"):
        train(trained["data"], trained["models"], seed=1)
    assert snapshot(trained["models"]) == trained["before"]
    assert staging_folders(trained["models"]) == []
    assert_usable(trained["models"], tmp_path)


def start_killable(stage: str, marker: Path, data: Path, models: Path, seed: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "tests" / "train_until_killed.py"), str(marker), stage,
           "--data-dir", str(data), "--models-dir", str(models), "--seed", str(seed), "--algorithms", *TWO,
           *TRAIN_FLAGS]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 300
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {stage}: {proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, f"no {stage} marker"
        time.sleep(0.2)
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)  # reaped: a zombie would still answer os.kill(pid, 0)
    proc.stdout.close()
    proc.stderr.close()


@pytest.mark.slow
def test_killed_run_keeps_the_previous_set_and_the_next_run_cleans_up(trained, tmp_path):
    models = trained["models"]
    proc = start_killable("extract", tmp_path / "marker", trained["data"], models, seed=1)
    try:
        [staging] = staging_folders(models)
        assert (staging / "feature_extractor.pth").is_file()  # the new extractor went to staging ...
        assert snapshot(models) == trained["before"]  # ... not over the one the bundles were trained with
    finally:
        kill(proc)
    assert snapshot(models) == trained["before"]
    assert_usable(models, tmp_path)

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:  # a live run's staging folder is never touched, a dead one's always
        live = models.parent / f".models.staging-{sleeper.pid}-00aa"
        live.mkdir()
        results = train(trained["data"], models, seed=1)
        assert staging_folders(models) == [live]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert results["seed"] == 1 and json.loads((models / RESULTS_FILE).read_text())["seed"] == 1
    assert_usable(models, tmp_path)


@pytest.mark.slow
def test_run_killed_while_publishing_is_finished_by_the_next_run(trained, tmp_path):
    models = trained["models"]
    proc = start_killable("publish", tmp_path / "marker", trained["data"], models, seed=1)
    kill(proc)
    [staging] = staging_folders(models)
    assert (staging / JOURNAL).is_file()
    outputs.recover(models.resolve())  # what the next run does first
    assert staging_folders(models) == []
    assert json.loads((models / RESULTS_FILE).read_text())["seed"] == 1
    assert_usable(models, tmp_path)


@pytest.mark.slow
def test_rerun_with_fewer_algorithms_removes_only_stale_suite_files(trained):
    models = trained["models"]
    assert (models / "self_training_model.skops").is_file()
    results = train(trained["data"], models, algorithms=["label_spreading"])
    names = {p.name for p in models.iterdir()}
    assert not [n for n in names if n.startswith("self_training")]
    assert {".gitkeep", "notes.txt"} <= names and (models / "notes.txt").read_text() == "mine"
    owned = json.loads((models / MANIFEST).read_text())["files"]
    assert set(owned) == names - {".gitkeep", "notes.txt", MANIFEST}
    assert set(results["algorithms"]) == {"label_spreading"}
    # the only algorithm, or the labeled-only baseline where validation cannot show it better (these solid-colour
    # images of a class are near-identical, so little or nothing is held out)
    assert results["best_model"]["algorithm"] in ("label_spreading", "baseline")
    assert results["models_dir"] == str(models.resolve())


def test_best_model_is_the_best_algorithms_bundle(trained):
    models, results = trained["models"], trained["results"]
    best = results["summary"]["best_algorithm"]
    record = json.loads((models / RESULTS_FILE).read_text())["best_model"]
    assert record == results["best_model"] and record["algorithm"] == best
    model_path = shipped(results)["model_path"]
    assert record["path"] == "best_model" + Path(model_path).suffix
    assert (models / record["path"]).read_bytes() == (models / model_path).read_bytes()
    assert sha256_file(models / record["path"]) == record["digest"]
    assert Predictor.load(models / record["path"]).bundle["algorithm"] == best
    assert record["path"] in json.loads((models / MANIFEST).read_text())["files"]


def stage(tmp_path, files: dict[str, str]) -> Path:
    staging = tmp_path / f".models.staging-{os.getpid()}-0bad"
    staging.mkdir()
    for name, text in files.items():
        (staging / name).write_text(text)
    return staging


def test_folder_from_before_the_manifest_is_read_through_its_results(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    old = {"algorithms": {"self_training": {"model_path": "self_training_model.pkl",
                                            "confusion_matrix_png": "self_training_confusion_matrix.png"}}}
    for name in ("self_training_model.pkl", "self_training_model.pkl.sha256", "self_training_confusion_matrix.png",
                 "feature_extractor.pth", "my_model.pkl"):
        (models / name).write_text("old")
    (models / RESULTS_FILE).write_text(json.dumps(old))
    outputs.publish(stage(tmp_path, {"feature_extractor.pth": "new", RESULTS_FILE: "{}"}), models)
    assert {p.name for p in models.iterdir()} == {"feature_extractor.pth", RESULTS_FILE, "my_model.pkl", MANIFEST}
    assert (models / "feature_extractor.pth").read_text() == "new"


def test_manifest_never_reaches_outside_the_folder(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "precious").write_text("keep")
    (models / MANIFEST).write_text(json.dumps({"files": ["../precious", str(tmp_path / "precious"), "x.pkl"]}))
    (models / "x.pkl").write_text("stale")
    outputs.publish(stage(tmp_path, {RESULTS_FILE: "{}"}), models)
    assert (tmp_path / "precious").read_text() == "keep" and not (models / "x.pkl").exists()


def test_results_file_moves_last(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    moved = []
    real = outputs._move
    monkeypatch.setattr(outputs, "_move", lambda src, dst: (moved.append(dst.name), real(src, dst)))
    outputs.publish(stage(tmp_path, {"a_model.pkl": "1", RESULTS_FILE: "{}", "z.png": "2"}), models)
    assert moved[-1] == RESULTS_FILE and sorted(moved) == sorted(["a_model.pkl", RESULTS_FILE, "z.png"])


@pytest.mark.usefixtures("drop_log_handlers")
def test_full_disk_while_writing_outputs_is_one_line_and_keeps_the_previous_set(trained, tmp_path, monkeypatch,
                                                                                capsys):
    """ENOSPC while a bundle is written was a traceback with exit 1; the guide promises exit 4."""
    import errno

    from src import train_with_wandb
    from src.learning import bundles

    def full(path, data):
        Path(path).write_bytes(data[: len(data) // 2])  # half a file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(bundles, "write_model_file", full)
    rc = train_with_wandb.main(["--data-dir", str(trained["data"]), "--models-dir", str(trained["models"]),
                                "--seed", "1", "--algorithms", *TWO, *TRAIN_FLAGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 4 and len(err) == 1 and err[0].startswith("error: no space left: cannot write"), err
    assert f"the previous outputs in {trained['models']} are unchanged" in err[0]
    assert snapshot(trained["models"]) == trained["before"]
    assert staging_folders(trained["models"]) == []
    assert_usable(trained["models"], tmp_path)


@pytest.mark.usefixtures("drop_log_handlers")
def test_models_dir_that_cannot_be_written_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    from src import train_with_wandb
    from src.training import pipeline

    data = make_image_folder(tmp_path / "d", per_split={"train": 6, "test": 2})
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setattr(pipeline, "_train", lambda *a, **k: pytest.fail("trained into a folder it cannot write"))
    rc = train_with_wandb.main(["--data-dir", str(data), "--models-dir", str(tmp_path / "file" / "models"),
                                *TRAIN_FLAGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 4 and len(err) == 1 and f"cannot write training outputs to {tmp_path / 'file' / 'models'}" in err[0]


def test_a_copy_across_file_systems_that_fills_the_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    """``models_dir`` on another file system (a mount point): files are copied in; a full disk keeps no half copy."""
    import errno
    import shutil

    models = tmp_path / "models"
    models.mkdir()
    real_replace = os.replace

    def replace(src, dst):
        if ".staging-" in str(src) and ".staging-" not in str(dst):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(src, dst)

    def copy_fills(src, dst):
        Path(dst).write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(shutil, "copyfile", copy_fills)
    with pytest.raises(OSError, match="No space"):
        outputs.publish(stage(tmp_path, {"a_model.skops": "1", RESULTS_FILE: "{}"}), models)
    assert [p.name for p in models.iterdir() if ".tmp-" in p.name] == []


def test_a_full_disk_while_writing_a_model_file_keeps_the_previous_pair(tmp_path, monkeypatch):
    """The model was replaced before its sidecar was written: ENOSPC there left a model that failed its
    digest check (convert writes straight into models/)."""
    import errno
    import io

    from src.learning.bundles import sidecar, write_model_file

    path = tmp_path / "models" / "a_model.skops"
    write_model_file(path, b"PK old model")
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    real, opened = io.open, []

    class Full(io.BytesIO):
        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_at_the_second_file(file, mode="r", *args, **kwargs):  # every open() and os.fdopen() comes here
        if "w" in mode:
            opened.append(file)
            if len(opened) == 2:
                if isinstance(file, int):
                    os.close(file)
                return Full()
        return real(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "open", full_at_the_second_file)
    with pytest.raises(OSError, match="No space"):
        write_model_file(path, b"PK new model")
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before  # no temporary file either
    assert sidecar(path).read_text().strip() == sha256_file(path)


@pytest.mark.usefixtures("drop_log_handlers")
def test_read_only_models_dir_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """Found only at the publish, after the whole run (root writes anywhere: the refusal is simulated)."""
    import errno
    import tempfile

    from src import train_with_wandb
    from src.training import pipeline

    data = make_image_folder(tmp_path / "d", per_split={"train": 6, "test": 2})
    models = tmp_path / "models"
    models.mkdir()
    real = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == models:
            raise OSError(errno.EROFS, "Read-only file system", str(models / ".probe"))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(pipeline, "_train", lambda *a, **k: pytest.fail("trained into a read-only folder"))
    rc = train_with_wandb.main(["--data-dir", str(data), "--models-dir", str(models), *TRAIN_FLAGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 4 and len(err) == 1 and f"cannot write training outputs to {models}" in err[0], err
    assert "Read-only file system" in err[0] and list(models.iterdir()) == []


@pytest.mark.usefixtures("drop_log_handlers")
def test_a_publish_refused_by_the_folder_is_one_line_and_keeps_the_previous_set(trained, tmp_path, capsys,
                                                                               monkeypatch):
    import errno

    from src import train_with_wandb

    models, real = trained["models"], os.replace

    def refused(src, dst):
        if Path(dst).parent == models and ".staging-" in str(src):
            raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", refused)
    rc = train_with_wandb.main(["--data-dir", str(trained["data"]), "--models-dir", str(models), "--seed", "1",
                                "--algorithms", *TWO, *TRAIN_FLAGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 4 and len(err) == 1 and err[0].startswith("error: Permission denied: cannot write"), err
    assert f"the previous outputs in {models} are unchanged" in err[0]
    assert snapshot(models) == trained["before"]
    assert_usable(models, tmp_path)
