"""The training CLI: bad input, agent-style flags, and one real end-to-end run offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_image_folder, shipped
from wandb_records import read_run

from src.train_with_wandb import build_parser, main
from src.training.results import select_best

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED_KEYS = ["dataset/train_samples", "dataset/test_samples", "data/labeled_samples",
                   "data/unlabeled_samples", "timing/fine_tune_seconds", "training/fine_tune_epochs",
                   "summary/best_algorithm", "summary/best_test_accuracy"]
ALGOS = ["label_propagation", "label_spreading", "self_training"]


def run_main(capsys, *args):
    code = main(list(args))
    return code, capsys.readouterr()


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("ratio", ["0", "1.5", "-0.2"])
def test_labeled_ratio_out_of_range(capsys, tmp_path, ratio):
    data = make_image_folder(tmp_path / "d")
    code, out = run_main(capsys, "--data-dir", str(data), "--labeled-ratio", ratio, "--wandb-mode", "disabled")
    assert code != 0
    assert "(0, 1]" in one_error_line(out.err)


def test_unknown_algorithm(capsys):
    code, out = run_main(capsys, "--algorithms", "kmeans")
    assert code == 2
    line = one_error_line(out.err)
    assert "kmeans" in line and "label_spreading" in line


def test_missing_dataset(capsys, tmp_path):
    code, out = run_main(capsys, "--data-dir", str(tmp_path / "missing"), "--wandb-mode", "disabled")
    assert code == 2 and "does not exist" in one_error_line(out.err)


def test_missing_split(capsys, tmp_path):
    data = make_image_folder(tmp_path / "d", per_split={"train": 3})
    code, out = run_main(capsys, "--data-dir", str(data), "--wandb-mode", "disabled")
    assert code == 2 and "no 'test' folder" in one_error_line(out.err)


def test_fewer_labeled_than_classes(capsys, tmp_path):
    data = make_image_folder(tmp_path / "d", per_split={"train": 4, "test": 1})
    code, out = run_main(capsys, "--data-dir", str(data), "--labeled-ratio", "0.1", "--wandb-mode", "disabled")
    assert code == 2 and "for 3 classes" in one_error_line(out.err)


def test_corrupted_image_names_the_file(capsys, tmp_path):
    data = make_image_folder(tmp_path / "d")
    (data / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    code, out = run_main(capsys, "--data-dir", str(data), "--labeled-ratio", "1", "--fine-tune-epochs", "0",
                         "--wandb-mode", "disabled", "--store", str(tmp_path / "s"), "--models-dir",
                         str(tmp_path / "m"), "--image-size", "32", "--no-progress", "-q")
    assert code == 2 and "broken.jpg" in one_error_line(out.err)


def test_one_class_only_is_one_line_before_any_work(capsys, tmp_path):
    data = make_image_folder(tmp_path / "d", classes=("a",))
    code, out = run_main(capsys, "--data-dir", str(data), "--n-neighbors", "3", "--fine-tune-epochs", "0",
                         "--models-dir", str(tmp_path / "m"), "--no-progress")
    assert code == 2 and "needs at least 2 classes" in one_error_line(out.err)
    assert not (tmp_path / "m").exists() and not (tmp_path / "wandb_root").exists()  # no W&B run, no outputs


@pytest.mark.parametrize("flag, value, message", [("--seed", "-1", "seed must be in [0, 2**32)"),
                                                  ("--fine-tune-lr", "nan", "fine_tune_lr must be a finite number"),
                                                  ("--fine-tune-lr", "inf", "fine_tune_lr must be a finite number"),
                                                  ("--image-size", "5000", "image_size must be in [32, 1024]")])
def test_out_of_range_numbers_are_one_line_before_any_work(capsys, tmp_path, flag, value, message):
    import time

    data = make_image_folder(tmp_path / "d")
    t0 = time.perf_counter()
    code, out = run_main(capsys, "--data-dir", str(data), flag, value, "--models-dir", str(tmp_path / "m"),
                         "--no-progress")
    assert code == 2 and message in one_error_line(out.err)
    assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "m").exists() and not (tmp_path / "wandb_root").exists() and not (tmp_path / "store").exists()


def test_agent_style_flags():
    args = build_parser().parse_args(["--labeled_ratio=0.2", "--algorithm=label_spreading", "--n_neighbors=7",
                                      "--fine_tune_epochs=5", "--fine_tune_lr=0.0001"])
    assert args.labeled_ratio == 0.2 and args.algorithms == ["label_spreading"]
    assert args.n_neighbors == 7 and args.fine_tune_epochs == 5 and args.fine_tune_lr == 1e-4


def test_help_is_instant():
    out = subprocess.run([sys.executable, str(ROOT / "src" / "train_with_wandb.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--labeled-ratio" in out.stdout


def test_tags_and_dataset_name_flags_reach_the_config():
    from src.train_with_wandb import build_parser

    args = build_parser().parse_args(["--tags", "a", "b", "--dataset-name", "shelf-photos"])
    assert args.tags == ["a", "b"] and args.dataset_name == "shelf-photos"


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """One real run as a user would start it: a fresh process, stdin closed, HOME empty,
    no W&B variables at all — it must resolve to offline, never prompt, never hang."""
    from src.data.synth import generate_dataset

    tmp = tmp_path_factory.mktemp("e2e")
    data = generate_dataset(tmp / "data", n_classes=4, train_per_class=12, test_per_class=6, image_size=64, seed=1,
                            classes=("banana", "milk", "soda_can", "broccoli"))
    (tmp / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp / "home"), MLOPS_STORE=str(tmp / "store"), WANDB_DIR=str(tmp))
    cmd = [sys.executable, str(ROOT / "src" / "train_with_wandb.py"), "--data-dir", str(data),
           "--models-dir", str(tmp / "models"), "--labeled-ratio", "0.25", "--fine-tune-epochs", "2",
           "--n-neighbors", "5", "--image-size", "96", "--json", "--no-progress"]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, env=env, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"tmp": tmp, "data": data, "results": json.loads(proc.stdout), "stderr": proc.stderr, "cmd": cmd, "env": env}


def test_e2e_offline_run_directory_and_keys(e2e):
    res = e2e["results"]
    assert res["run"]["mode"] == "offline"
    run_dir = Path(res["run"]["dir"])
    assert run_dir.is_dir() and run_dir.name.startswith("offline-run-")
    assert f"wandb sync {run_dir}" in e2e["stderr"]
    logged = read_run(run_dir)
    keys = logged["history_keys"]
    for k in DOCUMENTED_KEYS + [f"{a}/{m}" for a in ALGOS for m in ("val_accuracy", "test_accuracy", "f1_score")]:
        assert k in keys, k
    for a in ALGOS:
        assert f"_wandb/visualize/{a}_confusion_matrix" in logged["config"]
    assert logged["summary"]["test_accuracy"] == pytest.approx(res["summary"]["best_test_accuracy"])
    assert logged["summary"]["val_accuracy"] == pytest.approx(res["summary"]["best_val_accuracy"])
    best, summ = res["summary"]["best_algorithm"], res["summary"]  # chosen by validation, never by test accuracy
    top = max(m["val_accuracy"] for m in res["algorithms"].values())
    assert summ["top_val_accuracy"] == top and 0 < summ["val_images"] <= res["dataset"]["labeled_samples"]
    pick = summ["best_semi_supervised"]  # the baseline ships unless validation shows the pick better
    assert res["algorithms"][pick]["val_accuracy"] >= top - summ["val_standard_error"]  # the one-standard-error rule
    assert pick == select_best(res["algorithms"], summ["val_images"]) and best in (pick, "baseline")
    assert res["summary"]["best_test_accuracy"] == shipped(res)["test_accuracy"]
    assert logged["config"]["dataset_digest"] == res["dataset"]["digest"]
    assert logged["metrics"]["finetune/*"] == "finetune/epoch"  # fine-tune epochs on their own x axis
    assert res["config"]["dataset_name"] == "data" and res["dataset"]["version"] == "data:v1"  # the folder's name


def _training_record(e2e) -> dict:
    return read_run(Path(e2e["results"]["run"]["dir"]))


def test_e2e_training_run_logs_its_models_and_only_uses_the_dataset(e2e):
    """Lineage: each trained model is a `model` artifact of the training run; the dataset is not its output."""
    res, logged = e2e["results"], _training_record(e2e)
    info = logged["artifact_info"]
    # named after the dataset (never a registered name: training moves no registered `latest`), plus the extractor
    trained = {algo: f"{algo.replace('_', '-')}-classifier-data" for algo in ALGOS}
    assert {n for n, a in info.items() if a["type"] == "model"} == {*trained.values(), "data-feature-extractor"}
    assert not [n for n, a in info.items() if a["type"] == "dataset"]  # produced by its own dataset-version run
    for algo in ALGOS:
        a = info[trained[algo]]
        assert sorted(logged["artifact_files"][trained[algo]]) == ["feature_extractor.pth", "model.skops"]
        meta, m = a["metadata"], res["algorithms"][algo]
        assert meta["algorithm"] == algo and meta["best"] == (algo == res["summary"]["best_algorithm"])
        assert meta["metrics"]["val_accuracy"] == pytest.approx(m["val_accuracy"])
        assert meta["metrics"]["test_accuracy"] == pytest.approx(m["test_accuracy"])
        assert meta["model_digest"] == m["model_digest"] and meta["extractor_digest"] == res["extractor"]["digest"]
        assert meta["dataset_version"] == res["dataset"]["version"] == "data:v1"
        assert not [x for x in a["aliases"] if x.startswith("v")]
    # offline W&B refuses use_artifact: the input is in the config
    assert logged["config"]["dataset_version"] == "data:v1"
    assert logged["config"]["dataset_digest"] == res["dataset"]["digest"]
    dataset_runs = [d for d in (e2e["tmp"] / "wandb").glob("offline-run-*") if d != Path(res["run"]["dir"])]
    produced = [read_run(d)["artifact_info"].get("data") for d in dataset_runs]
    [ds] = [a for a in produced if a]
    assert ds["type"] == "dataset" and sorted(ds["aliases"]) == ["latest", "local-v1"] and ds["metadata"]["local_version"] == "v1"


def test_e2e_registry_runs_log_the_training_runs_model_versions(e2e, monkeypatch):
    """Registered under their default names, the registry's artifacts hold the training run's files (the same
    W&B digest) in collections only the registry logs to, pinned by their local version."""
    from src.model_registry import register_all

    trained = _training_record(e2e)["artifact_info"]
    registered = register_all(e2e["tmp"] / "models", aliases=["staging"], wandb_mode="offline")
    assert len(registered) == 3
    [reg_dir] = (Path(os.environ["WANDB_DIR"]) / "wandb").glob("offline-run-*")
    mirrored = read_run(reg_dir)["artifact_info"]
    for name, a in mirrored.items():
        assert a["type"] == "model" and a["digest"] == trained[f"{name}-data"]["digest"], name
        assert sorted(a["aliases"]) == ["latest", "local-v0", "staging"] and a["metadata"]["local_version"] == "v0"


def test_seed_registry_example_runs_as_written(e2e, monkeypatch, caplog):
    """The seed's example, verbatim but for the file suffix: best_model.<ext> exists and `latest` is accepted."""
    import logging

    from src.model_registry import register_model

    monkeypatch.chdir(e2e["tmp"])
    caplog.set_level(logging.DEBUG, logger="src.registry.api")
    res = register_model(model_path="models/best_model.skops", model_name="grocery-classifier",
                         metrics={"accuracy": 0.9, "f1": 0.88}, aliases=["latest", "best"])
    assert res["version"] == "v0" and res["created"] and sorted(res["aliases"]) == ["best", "latest"]
    best = e2e["results"]["summary"]["best_algorithm"]
    assert res["metadata"]["algorithm"] == best
    assert "alias 'latest' ignored" in caplog.text
    assert "using those, not the given" in caplog.text  # 0.9 claimed vs what training measured


def test_e2e_outputs_load_and_predict(e2e):
    from src.predictor import Predictor

    res, models = e2e["results"], e2e["tmp"] / "models"
    saved = json.loads((models / "training_results.json").read_text())
    assert saved["summary"] == res["summary"] and saved["run"] == res["run"]
    for a in ALGOS:
        assert (models / f"{a}_confusion_matrix.png").stat().st_size > 1000
        pred = Predictor.load(models / f"{a}_model.skops")
        img = sorted((e2e["data"] / "test" / pred.class_names[0]).glob("*.jpg"))[0]
        label, conf, probs = pred.predict(img)
        assert label in pred.class_names and 0 < conf <= 1 and probs.sum() == pytest.approx(1)
        assert pred.bundle["code_version"] == res["code_version"]  # read once per run: files and results agree
    from src.core.paths import source_checkout

    head = subprocess.run(["git", "-C", str(source_checkout()), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip() if source_checkout() else None
    assert res["code_version"] == (head or None)


def test_e2e_run_recorded_in_store(e2e):
    from src.training.runs import list_runs
    from src.core.store import Store

    runs = list_runs(Store(e2e["tmp"] / "store"))
    first = runs[-1]  # later tests add reruns
    assert first["wandb_id"] == e2e["results"]["run"]["id"] and first["mode"] == "offline"
    assert first["best_test_accuracy"] == pytest.approx(e2e["results"]["summary"]["best_test_accuracy"])
    assert first["results"]["dataset"]["digest"] == e2e["results"]["dataset"]["digest"]


def test_e2e_accuracy_far_above_chance(e2e):
    res = e2e["results"]
    assert res["summary"]["best_test_accuracy"] >= 0.75  # chance is 0.25
    for a in ALGOS:
        m = res["algorithms"][a]
        assert 0 <= m["f1_score"] <= 1 and m["fit_seconds"] >= 0 and m["unlabeled_accuracy"] is not None
    assert res["baseline"]["test_accuracy"] > 0.25
    assert res["dataset"]["labeled_samples"] == 12 and res["dataset"]["unlabeled_samples"] == 36
    guard = res["extractor"]["int8_guard"]  # 48 images cannot prove int8 harmless: float32, said why
    assert res["extractor"]["precision"] == "float32" and guard["decision"] == "float32"
    assert guard["reason"].startswith("too few images to prove int8 harmless") and guard["n_images"] == 48


def test_e2e_rerun_extracts_nothing(e2e):
    proc = subprocess.run(e2e["cmd"][:-1] + ["--no-progress", "--wandb-mode", "disabled"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=600, env=e2e["env"], cwd=e2e["tmp"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["extractor"]["fine_tune"]["cached"] is True
    assert "train features: 48 from cache, 0 extracted" in proc.stderr
    assert res["summary"]["best_test_accuracy"] == e2e["results"]["summary"]["best_test_accuracy"]


def test_disabled_mode_writes_no_wandb_files(tmp_path, capsys, monkeypatch):
    data = make_image_folder(tmp_path / "d", per_split={"train": 4, "test": 2})
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    code, out = run_main(capsys, "--data-dir", str(data), "--labeled-ratio", "0.5", "--fine-tune-epochs", "0",
                         "--wandb-mode", "disabled", "--models-dir", str(tmp_path / "m"), "--image-size", "32",
                         "--n-neighbors", "3", "--json", "--no-progress")
    assert code == 0, out.err
    assert not (tmp_path / "wb").exists()
    assert json.loads(out.out)["run"]["mode"] == "disabled"


def test_unreachable_wandb_server_fails_fast_with_one_line(tmp_path):
    data = make_image_folder(tmp_path / "d", per_split={"train": 4, "test": 2})
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_API_KEY="x" * 40, WANDB_BASE_URL="http://127.0.0.1:9", WANDB_INIT_TIMEOUT="3",
               WANDB_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, str(ROOT / "src" / "train_with_wandb.py"), "--data-dir", str(data),
                           "--models-dir", str(tmp_path / "m"), "--labeled-ratio", "0.5", "--no-progress"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 5
    line = one_error_line(proc.stderr)
    assert "127.0.0.1:9" in line and "--wandb-mode offline" in line
    assert not (tmp_path / "m" / "training_results.json").exists()


def test_e2e_classifier_only_change_extracts_nothing(e2e):
    """What a sweep over classifier parameters does: other k, other algorithm, same extractor."""
    cmd = [c for c in e2e["cmd"] if c != "--json"]
    cmd[cmd.index("--n-neighbors") + 1] = "7"
    proc = subprocess.run(cmd + ["--algorithms", "label_spreading", "--wandb-mode", "disabled", "--json"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, env=e2e["env"],
                          cwd=e2e["tmp"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train features: 48 from cache, 0 extracted" in proc.stderr
    assert "test features: 24 from cache, 0 extracted" in proc.stderr
    assert json.loads(proc.stdout)["config"]["n_neighbors"] == 7


def test_e2e_int8_runtime_has_its_own_features_and_models_remember_it(e2e, monkeypatch):
    from src.predictor import Predictor

    cmd = list(e2e["cmd"])
    models = e2e["tmp"] / "models-int8"
    cmd[cmd.index("--models-dir") + 1] = str(models)
    proc = subprocess.run(cmd + ["--runtime", "onnx-int8", "--wandb-mode", "disabled"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=600, env=e2e["env"], cwd=e2e["tmp"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["extractor"]["precision"] == "int8" and e2e["results"]["extractor"]["precision"] == "float32"
    assert res["extractor"]["fine_tune"]["cached"] is True  # same extractor, ...
    assert "train features: 0 from cache, 48 extracted" in proc.stderr  # ... other features
    assert res["summary"]["best_test_accuracy"] >= 0.75
    monkeypatch.setenv("MLOPS_STORE", e2e["env"]["MLOPS_STORE"])
    monkeypatch.delenv("MLOPS_RUNTIME", raising=False)
    pred = Predictor.load(models / "label_spreading_model.skops")
    assert pred.bundle["extractor_precision"] == "int8" and pred.extractor.precision == "int8"
    assert pred.bundle["int8_calibration"]["images"] == 48  # calibrated on the training images
    assert pred.extractor.key.endswith(pred.bundle["int8_calibration"]["digest"][:16])
    img = sorted((e2e["data"] / "test" / "milk").glob("*.jpg"))[0]
    assert pred.predict(img)[0] in pred.class_names


def test_unknown_runtime_flag(capsys):
    code, out = run_main(capsys, "--runtime", "tensorrt")
    assert code == 2 and "tensorrt" in one_error_line(out.err)


class RecordingTracker:
    def __init__(self):
        self.logged = []

    def log(self, metrics):
        self.logged.append(dict(metrics))


def test_epoch_reports_feed_callback_and_sweep_metric(monkeypatch):
    from src.training.pipeline import _report_epoch

    seen, t = [], RecordingTracker()
    _report_epoch(t, {"epoch": 1, "loss": 2.0, "val_accuracy": 0.5}, lambda e, v: seen.append((e, v)))
    assert seen == [(1, 0.5)]
    assert t.logged == [{"finetune/epoch": 1, "finetune/loss": 2.0, "finetune/val_accuracy": 0.5}]
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc")  # under `wandb agent`, hyperband needs a metric curve
    _report_epoch(t, {"epoch": 2, "loss": 1.0, "val_accuracy": 0.75}, None)
    assert t.logged[-1]["val_accuracy"] == 0.75 and "test_accuracy" not in t.logged[-1]
