"""Monitoring on a real (tiny) trained model."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from src.inference_monitor import DRIFT_EXIT_CODE, InferenceMonitor, main
from src.monitoring.records import alerts, open_monitor_store, predictions


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from helpers import train_tiny_models

    tmp = tmp_path_factory.mktemp("mon")
    data = train_tiny_models(tmp, test_per_class=12)
    sketch = tmp / "sketch"
    for p in (data / "test").rglob("*.jpg"):  # the same objects drawn in another style
        out = sketch / p.parent.name / p.name
        out.parent.mkdir(parents=True, exist_ok=True)
        ImageOps.grayscale(Image.open(p)).filter(ImageFilter.CONTOUR).convert("RGB").save(out)
    return {"tmp": tmp, "data": data, "model": tmp / "models" / "label_spreading_model.skops", "sketch": sketch}


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out


def one_error_line(err):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_batch_cli_reports_all_figures(trained, capsys, tmp_path):
    code, out = run(capsys, "--model-path", str(trained["model"]), "--test-dir", str(trained["data"] / "test"),
                    "--n-samples", "0", "--window", "48", "--json", "--store", str(tmp_path / "s"))
    assert code == 0, out.err
    s = json.loads(out.out)
    assert s["monitor/samples"] == 48
    assert s["monitor/accuracy"] > 0.5  # chance is 0.25
    assert 0 < s["monitor/avg_confidence"] <= 1 and s["monitor/throughput_samples_per_sec"] > 0
    lat = s["latency"]
    assert 0 < lat["inference_p50_ms"] <= lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"]
    assert s["drift"]["is_drift"] is False and s["drift"]["drift_score"] < 1.5
    assert sum(s["prediction_distribution"].values()) == 48


def test_predictions_are_recorded_in_the_store(trained, tmp_path):
    mon = InferenceMonitor(trained["model"], store=tmp_path / "s", wandb_mode="disabled", log_every=5)
    img = next((trained["data"] / "test" / "apple").glob("*.jpg"))
    label, conf, probs = mon.predict(img, true_label="apple")
    assert label in mon.predictor.class_names and conf == pytest.approx(probs.max())
    for p in list((trained["data"] / "test" / "orange").glob("*.jpg"))[:5]:
        mon.predict(p, true_label="orange")
    summary = mon.finish()
    rows = predictions(open_monitor_store(tmp_path / "s"), mon.session)
    assert len(rows) == 6 and summary["monitor/samples"] == 6
    assert rows[0]["true_label"] == "apple" and len(rows[0]["image_sha256"]) == 64
    assert rows[0]["feature"].shape == (1280,) and rows[0]["latency_ms"] >= rows[0]["inference_ms"] > 0


def test_the_monitor_takes_in_memory_images(trained, tmp_path):
    mon = InferenceMonitor(trained["model"], store=tmp_path / "s", wandb_mode="disabled")
    path = next((trained["data"] / "test" / "apple").glob("*.jpg"))
    by_path = mon.predict(path)
    pil = Image.open(path)
    for one in (pil, np.asarray(pil.convert("RGB"))):
        label, conf, probs = mon.predict(one, true_label="apple")
        assert label == by_path[0] and np.allclose(probs, by_path[2], atol=1e-4)
    mon.finish()
    rows = predictions(open_monitor_store(tmp_path / "s"), mon.session)
    assert rows[1]["image"].startswith("<PIL image") and rows[2]["image"].startswith("<array")
    assert rows[1]["image_sha256"] == rows[2]["image_sha256"] != rows[0]["image_sha256"]  # pixels, not file bytes


def test_other_style_raises_drift_and_alerts(trained, tmp_path, monkeypatch, capsys):
    from src.wandb_config import Tracker

    sent = []
    monkeypatch.setattr(Tracker, "alert", lambda self, title, text, level="WARN": sent.append((title, text)))
    same = InferenceMonitor(trained["model"], store=tmp_path / "s", wandb_mode="disabled", window=48)
    for p in sorted((trained["data"] / "test").rglob("*.jpg")):
        same.predict(p)
    ok = same.detect_drift()
    same.finish()
    code, out = run(capsys, "--model-path", str(trained["model"]), "--test-dir", str(trained["sketch"]),
                    "--n-samples", "0", "--window", "48", "--fail-on-drift", "--json", "--store", str(tmp_path / "s"),
                    "--wandb-mode", "offline")
    assert code == DRIFT_EXIT_CODE
    drifted = json.loads(out.out)["drift"]
    assert not ok["is_drift"]
    assert drifted["is_drift"] and "feature" in drifted["drifted"]
    assert drifted["drift_score"] > 2 * ok["drift_score"]
    assert sent and sent[0][0] == "Data drift detected"
    log = alerts(open_monitor_store(tmp_path / "s"))
    assert log and "drift" in log[0]["text"] and log[0]["details"]["is_drift"]
    assert out.err.strip().splitlines()[-1].startswith("error: drift detected in ")


def test_offline_run_logs_documented_keys(trained, tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from wandb_records import read_run

    code, out = run(capsys, "--model-path", str(trained["model"]), "--test-dir", str(trained["data"] / "test"),
                    "--n-samples", "0", "--window", "48", "--json", "--store", str(tmp_path / "s"),
                    "--wandb-mode", "offline")
    assert code == 0
    logged = read_run(json.loads(out.out)["wandb_run"])
    for key in ("monitor/accuracy", "monitor/avg_confidence", "monitor/avg_inference_time_ms",
                "monitor/avg_model_time_ms", "monitor/throughput_samples_per_sec", "monitor/drift_score"):
        assert key in logged["history_keys"], key
    assert any(k.startswith("prediction_distribution") for k in logged["history_keys"] | set(logged["config"]))
    assert any(k.startswith("confidence_histogram") for k in logged["history_keys"])


def test_registry_reference(trained, tmp_path):
    from src.model_registry import register_model

    register_model(trained["model"], "tiny-classifier", {"test_accuracy": 0.9}, ["production"],
                   store=tmp_path / "s", wandb_mode="disabled")
    mon = InferenceMonitor("tiny-classifier:production", store=tmp_path / "s", wandb_mode="disabled")
    assert mon.predict(next((trained["data"] / "test").rglob("*.jpg")))[0] in mon.predictor.class_names
    mon.finish()


def test_missing_model(trained, capsys, tmp_path):
    code, out = run(capsys, "--model-path", str(tmp_path / "nope.skops"), "--test-dir", str(trained["data"] / "test"))
    assert code == 3 and "does not exist" in one_error_line(out.err)


def test_wrong_extractor_for_model(trained, capsys, tmp_path):
    from src.features.backbone import Preprocessing, create_model, save_extractor

    other = tmp_path / "other.pth"
    save_extractor(create_model(num_classes=0), other, Preprocessing.for_size(64))
    code, out = run(capsys, "--model-path", str(trained["model"]), "--extractor-path", str(other),
                    "--test-dir", str(trained["data"] / "test"), "--store", str(tmp_path / "s"))
    assert code == 3 and "is not the one" in one_error_line(out.err)


def test_unreadable_image(trained, capsys, tmp_path):
    d = tmp_path / "imgs" / "apple"
    d.mkdir(parents=True)
    shutil.copy(next((trained["data"] / "test" / "apple").glob("*.jpg")), d / "good.jpg")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    code, out = run(capsys, "--model-path", str(trained["model"]), "--test-dir", str(tmp_path / "imgs"),
                    "--store", str(tmp_path / "s"), "--wandb-mode", "disabled", "-q")
    assert code == 2 and "broken.jpg" in one_error_line(out.err)


def test_empty_test_dir(trained, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out = run(capsys, "--model-path", str(trained["model"]), "--test-dir", str(tmp_path / "empty"))
    assert code == 2 and "no images" in one_error_line(out.err)


def test_dashboard_help_and_alerts(capsys, tmp_path):
    code, out = run(capsys, "--dashboard-help")
    assert code == 0 and "monitor/drift_score" in out.out and "wandb sync" in out.out
    code, out = run(capsys, "--alerts", "--store", str(tmp_path / "s"))
    assert code == 0 and "no alerts" in out.out


def test_latency_without_decode_is_recorded_separately(trained, tmp_path):
    mon = InferenceMonitor(trained["model"], store=tmp_path / "s", wandb_mode="disabled")
    for p in list((trained["data"] / "test").rglob("*.jpg"))[:5]:
        mon.predict(p)
    lat = mon.latency()
    mon.finish()
    assert np.isfinite(list(lat.values())).all() and lat["inference_p50_ms"] <= lat["p50_ms"]


def test_dashboard_shows_sessions_and_alerts(trained, tmp_path):
    from src.monitoring.records import add_alert
    from src.report import build_report

    mon = InferenceMonitor(trained["model"], store=tmp_path / "s", wandb_mode="disabled")
    for p in list((trained["data"] / "test").rglob("*.jpg"))[:3]:
        mon.predict(p)
    mon.finish()
    add_alert(open_monitor_store(tmp_path / "s"), mon.session, "WARN", "Data drift detected", "drift in feature", {})
    page = build_report(tmp_path / "r.html", tmp_path / "s").read_text()
    assert "label_spreading_model.skops" in page and "drift in feature" in page and "could not read" not in page


def _images(trained, key="data", n=None):
    root = trained[key] / "test" if key == "data" else trained[key]
    return sorted(root.rglob("*.jpg"))[:n]


def test_finish_recomputes_drift_after_new_predictions(trained, tmp_path, monkeypatch):
    from src.monitoring.drift import DriftSuite

    seen = []
    real = DriftSuite.test
    monkeypatch.setattr(DriftSuite, "test", lambda self, f, p, c: seen.append(list(c)) or real(self, f, p, c))
    mon = InferenceMonitor(trained["model"], store=tmp_path / "s", wandb_mode="disabled", window=20, log_every=20)
    for p in _images(trained, n=20) + _images(trained, "sketch", n=19):  # drift computed at 20, not after
        mon.predict(p)
    assert len(seen) == 1
    summary = mon.finish()
    assert seen[-1] == [r["confidence"] for r in mon.records[-20:]]  # the last 20, not a stale report
    assert summary["drift"]["n"] == 20 and summary["drift"]["is_drift"]
    assert len(mon.features) == 20  # only the last window of features is kept


@pytest.mark.parametrize("flag,value", [("--window", "10"), ("--window", "0"), ("--window", "-5"),
                                        ("--alpha", "1.5"), ("--alpha", "3"), ("--alpha", "0")])
def test_window_and_alpha_are_checked_before_predicting(trained, capsys, tmp_path, flag, value):
    code, out = run(capsys, "--model-path", str(trained["model"]), "--test-dir", str(trained["data"] / "test"),
                    "--n-samples", "0", "--store", str(tmp_path / "s"), "--wandb-mode", "disabled", flag, value)
    assert code == 2 and flag in one_error_line(out.err) and out.out == ""
    from src.monitoring.records import sessions

    assert sessions(open_monitor_store(tmp_path / "s")) == []


def test_library_checks_window_and_alpha(trained, tmp_path):
    from src.core.errors import ConfigError

    for kwargs in ({"window": 5}, {"alpha": 1.0}, {"alpha": -0.1}):
        with pytest.raises(ConfigError):
            InferenceMonitor(trained["model"], store=tmp_path / "s", wandb_mode="disabled", **kwargs)


def test_detect_drift_without_predictions_is_a_clear_error(trained, tmp_path):
    from src.core.errors import ConfigError

    mon = InferenceMonitor(trained["model"], store=tmp_path / "s", wandb_mode="disabled")
    with pytest.raises(ConfigError, match="at least 20 predictions, got 0"):
        mon.detect_drift()
    mon.finish()


def test_unreadable_images_are_skipped_and_listed(trained, capsys, tmp_path):
    d = tmp_path / "imgs" / "apple"
    d.mkdir(parents=True)
    for i, p in enumerate(list((trained["data"] / "test" / "apple").glob("*.jpg"))[:3]):
        shutil.copy(p, d / f"good{i}.jpg")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (d / "empty.jpg").write_bytes(b"")
    code, out = run(capsys, "--model-path", str(trained["model"]), "--test-dir", str(tmp_path / "imgs"),
                    "--n-samples", "0", "--store", str(tmp_path / "s"), "--wandb-mode", "disabled", "-q", "--json")
    line = one_error_line(out.err)
    assert code == 2 and "broken.jpg" in line and "empty.jpg" in line and "2 of 5" in line
    s = json.loads(out.out)  # the summary is still printed
    assert s["monitor/samples"] == 3 and sorted(x["image"].rsplit("/", 1)[-1] for x in s["skipped"]) == [
        "broken.jpg", "empty.jpg"]


def test_real_error_is_not_masked_by_finish(trained, capsys, tmp_path, monkeypatch):
    from src.monitoring.records import sessions

    real, drift_calls = InferenceMonitor.predict, []

    def predict(self, path, true_label=None):
        if len(self.records) == 25:
            raise RuntimeError("boom")
        return real(self, path, true_label)

    monkeypatch.setattr(InferenceMonitor, "predict", predict)
    monkeypatch.setattr(InferenceMonitor, "detect_drift", lambda self, window=None: drift_calls.append(1))
    with pytest.raises(RuntimeError, match="boom"):
        main(["--model-path", str(trained["model"]), "--test-dir", str(trained["data"] / "test"), "--n-samples", "0",
              "--window", "48", "--store", str(tmp_path / "s"), "--wandb-mode", "disabled", "-q"])
    assert drift_calls == []  # no drift verdict (or alert) on a partial batch
    (sess,) = sessions(open_monitor_store(tmp_path / "s"))
    assert sess["finished_at"] and "boom" in sess["summary"]["aborted"] and sess["summary"]["monitor/samples"] == 25


def test_finish_is_final(trained, tmp_path):
    from src.core.errors import ConfigError
    from src.monitoring.records import sessions

    mon = InferenceMonitor(trained["model"], store=tmp_path / "s", wandb_mode="offline")
    imgs = _images(trained, n=3)
    mon.predict(imgs[0])
    first = mon.finish()
    before = sessions(open_monitor_store(tmp_path / "s"))
    assert mon.finish() is first
    assert sessions(open_monitor_store(tmp_path / "s")) == before
    with pytest.raises(ConfigError, match="finished"):
        mon.predict(imgs[1])
    assert len(predictions(open_monitor_store(tmp_path / "s"), mon.session)) == 1


def test_unknown_true_label_is_refused(trained, tmp_path):
    from src.core.errors import ConfigError

    mon = InferenceMonitor(trained["model"], store=tmp_path / "s", wandb_mode="disabled")
    img = _images(trained, n=1)[0]
    for bad in ("banana", 0):
        with pytest.raises(ConfigError, match="apple"):
            mon.predict(img, true_label=bad)
    assert mon.records == []
    mon.finish()


def test_unmatched_test_folders_are_warned_once(trained, capsys, tmp_path):
    for name in ("apple", "banana", "kiwi"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i, p in enumerate(list((trained["data"] / "test" / "apple").glob("*.jpg"))[:2]):
            shutil.copy(p, tmp_path / "imgs" / name / f"{i}.jpg")
    code, out = run(capsys, "--model-path", str(trained["model"]), "--test-dir", str(tmp_path / "imgs"),
                    "--n-samples", "0", "--store", str(tmp_path / "s"), "--wandb-mode", "disabled", "-q", "--json")
    assert code == 0, out.err
    warned = [line for line in out.err.splitlines() if "banana" in line]
    assert len(warned) == 1 and "kiwi" in warned[0] and "apple" in warned[0]  # lists the model's classes too
    assert json.loads(out.out)["monitor/samples"] == 6


def test_throughput_is_wall_clock(trained, tmp_path):
    import time

    mon = InferenceMonitor(trained["model"], store=tmp_path / "s", wandb_mode="disabled")
    imgs = _images(trained, n=3)
    mon.predict(imgs[0])
    t0 = time.perf_counter()
    for p in imgs[1:]:
        time.sleep(0.25)
        mon.predict(p)
    wall = time.perf_counter() - t0
    assert mon.metrics()["monitor/throughput_samples_per_sec"] <= 3 / wall
    mon.finish()


def test_model_with_small_reference_is_monitored_without_feature_signal(trained, tmp_path, monkeypatch):
    from src.inference_monitor import format_summary

    mon = InferenceMonitor(trained["model"], store=tmp_path / "s", wandb_mode="disabled", window=20)
    ref = mon.bundle["reference"]  # as if trained on 30 images:
    monkeypatch.setitem(mon.bundle, "reference", {**ref, "features": np.asarray(ref["features"])[:30]})
    for p in _images(trained, n=20):
        mon.predict(p)
    s = mon.finish()
    assert s["drift"]["signals"]["feature"]["available"] is False and "reference rows" in \
        s["drift"]["signals"]["feature"]["skipped"]
    assert "feature unavailable" in format_summary(s) and "monitor/drift_score" not in s
