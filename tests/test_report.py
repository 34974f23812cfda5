import json

from helpers import make_image_folder

from src.report import build_report, main
from src.training.runs import list_runs, record_run
from src.core.store import Store


def fake_results(models_dir):
    algo = {"test_accuracy": 0.91, "f1_score": 0.9, "precision": 0.9, "recall": 0.9, "unlabeled_accuracy": 0.88,
            "fit_seconds": 0.5, "confusion_matrix_png": "label_spreading_confusion_matrix.png"}
    return {"config": {"labeled_ratio": 0.1, "fine_tune_epochs": 5}, "dataset": {"version": "grocery-dataset:v1",
            "digest": "d" * 64}, "run": {"id": "abc123", "mode": "offline", "dir": None},
            "algorithms": {"label_spreading": algo}, "baseline": {**algo, "test_accuracy": 0.85},
            "summary": {"best_algorithm": "label_spreading", "best_test_accuracy": 0.91,
                        "baseline_test_accuracy": 0.85}, "models_dir": str(models_dir)}


def test_report_shows_runs_datasets_and_empty_sections(tmp_path):
    from src.data_versioning import create_dataset_artifact

    store = Store(tmp_path / "store")
    create_dataset_artifact(make_image_folder(tmp_path / "d"), "groceries", store=store, wandb_mode="disabled")
    models = tmp_path / "models"
    models.mkdir()
    from src.learning.evaluation import save_confusion_png

    save_confusion_png([0, 1], [0, 1], ["a", "b"], models / "label_spreading_confusion_matrix.png")
    record_run(store, fake_results(models), name="first")
    assert list_runs(store)[0]["name"] == "first"
    page = build_report(tmp_path / "r.html", store).read_text()
    assert "abc123" in page and "label_spreading" in page and "0.9100" in page and "0.8500" in page
    assert "groceries" in page and "<td>v1</td>" in page
    assert "data:image/png;base64," in page
    assert "Registry is empty" in page and "No local sweeps yet" in page
    assert "could not read" not in page


def test_report_cli(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "x.html"), "--store", str(tmp_path / "s"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["report"].endswith("x.html")
    assert "No training runs recorded yet" in (tmp_path / "x.html").read_text()


def test_report_to_an_unwritable_path_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["--out", str(blocker / "report.html"), "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write the report to") and "Traceback" not in err[0]


def test_report_on_a_full_disk_is_exit_4_and_keeps_the_previous_page(tmp_path, capsys, monkeypatch):
    """ENOSPC while writing the page was a ConfigError (exit 2) and had already truncated the old page;
    a full disk is exit 4 for every command, naming the file, and the previous report stays whole."""
    import errno
    import io
    import os

    out = tmp_path / "site" / "report.html"
    out.parent.mkdir()
    out.write_text("the previous report")
    real_open = io.open

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __getattr__(self, name):
            return getattr(self.f, name)

    def full_disk_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return FullDisk(f) if "w" in mode and os.fspath(file).startswith(str(out.parent)) else f

    monkeypatch.setattr(io, "open", full_disk_open)
    monkeypatch.setattr("builtins.open", full_disk_open)
    assert main(["--out", str(out), "--store", str(tmp_path / "store")]) == 4
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: no space left to write") and str(out) in line and "Traceback" not in line
    assert out.read_text() == "the previous report" and os.listdir(out.parent) == ["report.html"]
