"""The monitored prediction endpoint on a real (tiny) trained model, over real HTTP on 127.0.0.1."""

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageFilter, ImageOps

from src.inference_monitor import main
from src.monitoring.records import alerts, open_monitor_store, predictions, sessions
from src.serving.server import Server, ServeOptions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from helpers import train_tiny_models

    from src.model_registry import register_model

    tmp = tmp_path_factory.mktemp("serve")
    data = train_tiny_models(tmp, test_per_class=6)
    store = tmp / "store"  # one store for every server here: the ONNX export is made once
    register_model(tmp / "models" / "label_spreading_model.skops", "tiny", {}, ["production"], store=store,
                   wandb_mode="disabled")
    return {"tmp": tmp, "data": data, "models": tmp / "models", "store": store,
            "images": sorted((data / "test").rglob("*.jpg"))}


def start(trained, **kw):
    opts = {"model": "tiny:production", "port": 0, "store": str(trained["store"]), "wandb_mode": "disabled",
            "poll_s": 0.2, "max_upload_mb": 0.05, **kw}
    srv = Server(ServeOptions(**opts)).start()
    return srv, httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=30)


@pytest.fixture(scope="module")
def server(trained):
    srv, client = start(trained)
    yield srv, client
    client.close()
    srv.stop()


def metric(client, name, **labels):
    """One sample's value from /metrics (None when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(client.get("/metrics").text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def wait_for(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_predict_raw_and_multipart_match_the_predictor(trained, server):
    from src.inference.predictor import Predictor

    srv, client = server
    img = trained["images"][0]
    raw = client.post("/predict", content=img.read_bytes())
    assert raw.status_code == 200, raw.text
    body = raw.json()
    expected_label, expected_conf, _ = Predictor.load(trained["models"] / "label_spreading_model.skops").predict(img)
    assert body["label"] == expected_label and body["confidence"] == pytest.approx(expected_conf, abs=1e-4)
    assert body["model"] == "tiny" and body["version"] == "v0" and len(body["prediction_id"]) == 32
    assert list(body["probabilities"])[0] == body["label"] and len(body["probabilities"]) == 4  # top 5 of 4 classes
    form = client.post("/predict?top=2", files={"file": (img.name, img.read_bytes(), "image/jpeg")})
    assert form.status_code == 200 and form.json()["label"] == body["label"]
    assert len(form.json()["probabilities"]) == 2 and form.json()["prediction_id"] != body["prediction_id"]
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["version"] == "v0"


def test_every_prediction_is_recorded_like_batch_and_feedback_sets_the_truth(trained, server):
    srv, client = server
    st = open_monitor_store(trained["store"])
    session = client.get("/health").json()["session"]
    ids = [client.post("/predict", content=p.read_bytes()).json() for p in trained["images"][:6]]
    keys = {"request:" + i["prediction_id"] for i in ids}
    rows = wait_for(lambda: (r := predictions(st, session)) and keys <= {x["image"] for x in r} and r)
    assert len(keys) == 6 and len(rows) == len({x["image"] for x in rows})  # each stored once
    row = rows[-1]
    assert row["image"] == "request:" + ids[-1]["prediction_id"] and len(row["image_sha256"]) == 64
    assert row["prediction"] == ids[-1]["label"] and row["feature"].shape == (1280,)
    assert row["latency_ms"] >= row["inference_ms"] > 0 and row["true_label"] is None
    truth = trained["images"][5].parent.name
    fb = client.post("/feedback", json={"prediction_id": ids[-1]["prediction_id"], "label": truth})
    assert fb.status_code == 200 and fb.json()["correct"] == (truth == ids[-1]["label"])
    wait_for(lambda: predictions(st, session)[-1]["true_label"] == truth)
    assert metric(client, "grocery_feedback_accuracy") == float(truth == ids[-1]["label"])
    assert metric(client, "grocery_predictions_total", label=ids[-1]["label"]) >= 1
    assert metric(client, "grocery_monitor_records_written") >= 6


def bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, "PNG")  # 81 M pixels in a few kB
    return buf.getvalue()


def strip_png(width=4000) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, 1)).save(buf, "PNG")  # 93 bytes; scaled to the 256-px side it was 1.1 GB
    return buf.getvalue()


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"  # Pillow would call Ghostscript

BAD = [  # (what, request kwargs, status, reason)
    ("empty body", {"content": b""}, 400, "empty_body"),
    ("not an image", {"content": b"hello, not an image" * 10}, 415, "not_an_image"),
    ("over the size limit", {"content": b"\xff" * 60_000}, 413, "too_large"),
    ("chunked, over the size limit", {"content": iter([b"\xff" * 30_000] * 2)}, 413, "too_large"),
    ("multipart without file", {"files": {"photo": ("a.jpg", b"x", "image/jpeg")}}, 400, "missing_file"),
    ("bad top", {"content": b"x", "params": {"top": "zero"}}, 400, "bad_request"),
    ("unicode digit top", {"content": b"x", "params": {"top": "\u00b2"}}, 400, "bad_request"),
    ("thin strip", {"content": strip_png()}, 422, "bad_aspect_ratio"),
    ("EPS", {"content": EPS}, 415, "not_an_image"),
]


@pytest.mark.parametrize("what,kwargs,status,reason", BAD, ids=[b[0] for b in BAD])
def test_bad_predict_input_gets_a_4xx_and_the_server_stays_up(server, what, kwargs, status, reason):
    srv, client = server
    before = metric(client, "grocery_errors_total", endpoint="/predict", reason=reason) or 0
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert "\n" not in r.text.strip() and r.json()["reason"] == reason and r.json()["error"]
    assert metric(client, "grocery_errors_total", endpoint="/predict", reason=reason) == before + 1
    assert client.get("/health").status_code == 200


def test_truncated_file_and_decompression_bomb(trained, server):
    srv, client = server
    r = client.post("/predict", content=trained["images"][0].read_bytes()[:300])
    assert r.status_code == 422 and r.json()["reason"] == "corrupt_image" and "truncated" in r.json()["error"]
    r = client.post("/predict", content=bomb_png())
    assert r.status_code == 413 and r.json()["reason"] == "decompression_bomb"
    assert client.post("/predict", content=trained["images"][1].read_bytes()).status_code == 200


@pytest.mark.parametrize("body,status,reason", [
    (b"{not json", 400, "bad_json"),
    (b'["a list"]', 422, "bad_feedback"),
    (b"[" * 5000 + b"]" * 5000, 400, "bad_json"),
    (json.dumps({"prediction_id": "0" * 32, "label": "apple"}).encode(), 404, "unknown_prediction"),
])
def test_bad_feedback(server, body, status, reason):
    srv, client = server
    r = client.post("/feedback", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and r.json()["reason"] == reason, r.text
    assert metric(client, "grocery_errors_total", endpoint="/feedback", reason=reason) >= 1


def test_feedback_with_a_label_that_is_no_class(trained, server):
    srv, client = server
    pid = client.post("/predict", content=trained["images"][0].read_bytes()).json()["prediction_id"]
    r = client.post("/feedback", json={"prediction_id": pid, "label": "spaceship"})
    assert r.status_code == 422 and "spaceship" in r.json()["error"]
    assert client.get("/nowhere").status_code == 404 and client.get("/predict").status_code == 405


def test_a_failing_model_call_is_a_json_500_and_the_next_request_works(trained, server, monkeypatch):
    srv, client = server

    def boom(feats):
        raise RuntimeError("classifier exploded")

    monkeypatch.setattr(srv.engine.current.predictor, "predict_features", boom)
    r = client.post("/predict", content=trained["images"][0].read_bytes())
    assert r.status_code == 500 and r.json() == {"error": "the model failed on this image (see the server log)",
                                                 "reason": "inference_failed"}
    assert metric(client, "grocery_requests_total", endpoint="/predict", status="500") == 1
    monkeypatch.undo()
    assert client.post("/predict", content=trained["images"][0].read_bytes()).status_code == 200


def test_alias_switch_under_load_drops_nothing(trained, caplog):
    from src.model_registry import promote_model, register_model

    # a name of its own: the module's server follows tiny:production and must not switch too
    register_model(trained["models"] / "label_spreading_model.skops", "tiny-b", {}, ["production"],
                   store=trained["store"], wandb_mode="disabled")
    srv, client = start(trained, model="tiny-b:production")
    first_session = client.get("/health").json()["session"]
    caplog.set_level(logging.INFO, logger="src.serving.engine")
    seen, failures, stop = [], [], threading.Event()

    def load():
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=30) as c:
            i = 0
            while not stop.is_set():
                r = c.post("/predict", content=trained["images"][i % len(trained["images"])].read_bytes())
                (seen if r.status_code == 200 else failures).append(r.json().get("version", r.text))
                i += 1

    try:
        workers = [threading.Thread(target=load) for _ in range(3)]
        for w in workers:
            w.start()
        wait_for(lambda: len(seen) >= 5)
        register_model(trained["models"] / "label_propagation_model.skops", "tiny-b", {}, store=trained["store"],
                       wandb_mode="disabled")
        promote_model("tiny-b", "production", "v1", force=True, reason="test", store=trained["store"],
                      wandb_mode="disabled")
        wait_for(lambda: seen and seen[-1] == "v1")
        n = len(seen)
        wait_for(lambda: len(seen) >= n + 5)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert not failures and "v0" in seen and seen[-1] == "v1"
    assert seen.index("v1") > seen.index("v0") and "v0" not in seen[seen.index("v1") + 3 * 2:]
    health = client.get("/health").json()
    assert health["version"] == "v1" and health["session"] != first_session
    assert metric(client, "grocery_model_switches_total") == 1
    assert metric(client, "grocery_model_info", version="v1") == 1
    assert metric(client, "grocery_model_info", version="v0") is None
    assert any("now serving tiny-b:v1" in r.getMessage() for r in caplog.records)
    client.close()
    srv.stop()
    st = open_monitor_store(trained["store"])
    by_id = {s["id"]: s for s in sessions(st)}
    assert by_id[first_session]["model"] == "tiny-b:v0" and by_id[health["session"]]["model"] == "tiny-b:v1"
    assert by_id[first_session]["finished_at"] and by_id[health["session"]]["finished_at"]
    stored = sum(len(predictions(st, s)) for s in (first_session, health["session"]))
    assert stored == len(seen)  # every answered prediction is in the store, none lost across the swap


def test_drift_is_tested_off_the_request_path_and_alerts(trained, tmp_path):
    sketches = []
    for p in trained["images"]:  # the same objects drawn in another style: feature drift
        buf = io.BytesIO()
        ImageOps.grayscale(Image.open(p)).filter(ImageFilter.CONTOUR).convert("RGB").save(buf, "JPEG")
        sketches.append(buf.getvalue())
    srv, client = start(trained, model=str(trained["models"] / "label_spreading_model.skops"), window=24,
                        drift_every=24)
    try:
        for data in sketches:
            assert client.post("/predict", content=data).status_code == 200
        score = wait_for(lambda: (v := metric(client, "grocery_drift_score")) is not None and v == v and v)
        assert score > 1 and metric(client, "grocery_drift_detected") == 1
        log = wait_for(lambda: alerts(open_monitor_store(trained["store"])))
        assert "drift" in log[0]["text"] and log[0]["details"]["is_drift"]
        assert wait_for(lambda: metric(client, "grocery_drift_alerts")) == 1
    finally:
        client.close()
        summary = srv.stop()
    assert summary["drift"]["is_drift"] and summary["monitor/samples"] == len(sketches)


def test_wandb_gets_periodic_figures_never_one_log_per_request(trained, monkeypatch):
    from src.tracking import Tracker

    calls = []
    original = Tracker.log
    monkeypatch.setattr(Tracker, "log", lambda self, metrics, step=None: (calls.append(dict(metrics)),
                                                                          original(self, metrics, step))[1])
    srv, client = start(trained, wandb_mode="offline", log_every_s=60)
    run_dir = Path(srv.monitor.tracker.run_dir)
    try:
        for p in trained["images"][:10]:
            assert client.post("/predict", content=p.read_bytes()).status_code == 200
        assert calls == []  # nothing logged on the request path
    finally:
        client.close()
        srv.stop()
    assert len(calls) == 1 and calls[0]["monitor/samples"] == 10  # the final flush
    assert {"monitor/avg_confidence", "monitor/avg_inference_time_ms", "monitor/avg_model_time_ms"} <= set(calls[0])
    # one meaning per key, as in batch monitoring: the whole prediction, and the model call inside it
    assert 0 < calls[0]["monitor/avg_model_time_ms"] <= calls[0]["monitor/avg_inference_time_ms"]
    assert list(run_dir.glob("run-*.wandb"))  # a real offline run, ready for `wandb sync`


def test_cli_refuses_bad_flags_before_loading(trained, capsys):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        code = main(["serve", "--model-path", str(trained["models"] / "label_spreading_model.skops"),
                     "--port", str(busy.getsockname()[1])])
    finally:
        busy.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: cannot listen on 127.0.0.1:")
    assert main(["serve", "--model", "x.pkl", "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be > 0" in capsys.readouterr().err
    assert main(["--alerts", "--store", str(trained["store"])]) == 0  # the flag-only batch CLI is unchanged


@pytest.mark.slow
def test_cli_serve_stores_everything_on_sigterm(trained, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "src" / "inference_monitor.py"), "serve", "--model",
                             "tiny:production", "--port", str(port), "--store", str(trained["store"]),
                             "--wandb-mode", "disabled", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)
    try:
        def up():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return proc.poll() is not None  # died: stop waiting, the asserts below tell why

        wait_for(up, timeout=120)
        r = [httpx.post(f"http://127.0.0.1:{port}/predict", content=p.read_bytes(), timeout=30)
             for p in trained["images"][:3]]
        assert all(x.status_code == 200 for x in r)
    finally:
        proc.send_signal(signal.SIGTERM)  # what a process manager sends
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["monitor/samples"] == 3 and summary["model"] == "tiny:v0"
    assert len(predictions(open_monitor_store(trained["store"]), summary["session"])) == 3


def _post_all(port, bodies, threads):
    """Post every body from ``threads`` concurrent clients; (index, status, json) per body."""
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()

    def post(i):
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        r = local.client.post("/predict", content=bodies[i])
        return i, r.status_code, r.json()

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(post, range(len(bodies))))


@pytest.mark.parametrize("workers,max_batch", [(1, 8), (2, 4)])
def test_concurrent_requests_batched_together_each_get_their_own_answer_recorded_once(trained, workers, max_batch):
    from src.inference.predictor import Predictor

    pred = Predictor.load(trained["models"] / "label_spreading_model.skops")
    images = trained["images"]
    bodies = [p.read_bytes() for p in images] * 2
    bad = len(bodies)  # a truncated upload in the middle of the batches: a 4xx for it alone
    bodies.append(images[0].read_bytes()[:300])
    srv, client = start(trained, workers=workers, max_batch=max_batch)
    original = srv.engine.current.predictor.extractor

    class Slow:  # a slow model call, so requests queue up and are taken together
        preprocessing = original.preprocessing

        def __call__(self, batch):
            time.sleep(0.03)
            return original(batch)

    srv.engine.current.predictor.extractor = Slow()
    session = client.get("/health").json()["session"]
    try:
        answers = _post_all(srv.port, bodies, threads=8)
        calls = [metric(client, f"grocery_inference_batch_size_{k}") for k in ("sum", "count")]
    finally:
        client.close()
        summary = srv.stop()
    assert calls[0] > calls[1]  # the mean call size over predictions is above 1: some calls ran several requests
    ids = []
    for i, status, doc in answers:
        if i == bad:
            assert status == 422 and doc["reason"] == "corrupt_image"
            continue
        assert status == 200, doc
        label, conf, probs = pred.predict(images[i % len(images)])  # this image alone, in process
        assert doc["label"] == label and doc["confidence"] == pytest.approx(conf, abs=1e-4)
        for name, p in doc["probabilities"].items():
            assert p == pytest.approx(probs[pred.class_names.index(name)], abs=1e-4)
        ids.append(doc["prediction_id"])
    rows = predictions(open_monitor_store(trained["store"]), session)
    assert sorted(r["image"] for r in rows) == sorted("request:" + i for i in ids)  # each exactly once
    assert summary["monitor/samples"] == len(ids) == len(bodies) - 1


def test_cli_refuses_bad_worker_settings_before_loading(capsys):
    assert main(["serve", "--model", "x.pkl", "--workers", "0"]) == 2
    assert main(["serve", "--model", "x.pkl", "--threads", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --workers and --threads must be >= 1"] * 2


# -- hostile clients, exposure and a failing store ------------------------------------------
def raw(port: int, data: bytes) -> socket.socket:
    """A connection that sends ``data`` and then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    return sock


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    sock.close()
    return out


HALF_HEADERS = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Le"
HALF_BODY = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"\xff" * 100


def test_a_client_leaving_mid_body_is_counted_but_is_no_server_error(server):
    srv, client = server
    server_errors = metric(client, "grocery_requests_total", endpoint="/predict", status="500") or 0
    raw(srv.port, HALF_BODY).close()
    wait_for(lambda: metric(client, "grocery_errors_total", endpoint="/predict", reason="client_disconnected"))
    assert (metric(client, "grocery_requests_total", endpoint="/predict", status="500") or 0) == server_errors


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_half_sent_requests_get_408_after_the_read_timeout_and_slow_inference_does_not(trained, parser, monkeypatch):
    import src.serving.server as server_module

    if parser == "h11":  # the pure-Python parser uvicorn falls back to without httptools
        monkeypatch.setattr(server_module, "_fast_io", dict)
    srv, client = start(trained, read_timeout_s=0.5)
    original = srv.engine.current.predictor.extractor

    class Slow:  # a model call longer than the read timeout: the request was read in full, it is not cut
        preprocessing = original.preprocessing

        def __call__(self, batch):
            time.sleep(0.8)
            return original(batch)

    try:
        t0 = time.monotonic()
        socks = [raw(srv.port, HALF_HEADERS), raw(srv.port, HALF_BODY), raw(srv.port, b"")]
        replies = [answer(s) for s in socks]
        assert time.monotonic() - t0 < 5
        assert all(r.startswith(b"HTTP/1.1 408 ") and b"read_timeout" in r for r in replies), replies
        assert metric(client, "grocery_errors_total", endpoint="/predict", reason="read_timeout") == 1
        assert metric(client, "grocery_errors_total", endpoint="other", reason="read_timeout") == 2
        srv.engine.current.predictor.extractor = Slow()
        assert client.post("/predict", content=trained["images"][0].read_bytes()).status_code == 200
    finally:
        srv.engine.current.predictor.extractor = original
        client.close()
        srv.stop()


def test_listening_beyond_this_machine_warns_and_hosts_are_named_clearly(trained, capsys, caplog):
    from src.serving.http import exposure_warning, url

    model = str(trained["models"] / "label_spreading_model.skops")
    caplog.set_level(logging.WARNING, logger="src.serving")
    srv = Server(ServeOptions(model=model, host="0.0.0.0", port=0, store=str(trained["store"]),
                              wandb_mode="disabled"))
    srv.close()
    warned = [r.getMessage() for r in caplog.records
              if r.name == "src.serving.server" and "reachable from other machines" in r.getMessage()]
    assert len(warned) == 1 and "no authentication" in warned[0] and "reverse proxy" in warned[0]
    assert exposure_warning("127.0.0.1", 8000) is None and exposure_warning("localhost", 8000) is None
    assert "http://[::]:8000" in exposure_warning("::", 8000) and url("::", 8000) == "http://[::]:8000"
    capsys.readouterr()
    assert main(["serve", "--model", model, "--host", "no-such-host.invalid", "--port", "8000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-host.invalid:8000" in err[0] and "does not resolve" in err[0]
    assert "--port" not in err[0]


def fill_the_store(monkeypatch) -> None:
    """From now on the store's database cannot grow: SQLite's own 'database or disk is full' (SQLITE_FULL),
    the error a full disk gives, without root or a small file system."""
    from src.core.store import Store

    connect = Store.connect

    def full(self, readonly=None):
        con = connect(self, readonly)
        con.execute(f"PRAGMA max_page_count = {con.execute('PRAGMA page_count').fetchone()[0]}")
        return con

    monkeypatch.setattr(Store, "connect", full)


def predict_until_refused(port: int, body: bytes, most: int = 20) -> tuple[int, httpx.Response]:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        for answered in range(most):
            r = c.post("/predict", content=body)
            if r.status_code != 200:
                return answered, r
    raise AssertionError(f"{most} predictions answered while the store was full")


def test_a_full_store_sheds_load_with_503_then_catches_up_and_loses_nothing(trained, monkeypatch, caplog):
    srv, client = start(trained, max_pending=4)
    session = client.get("/health").json()["session"]
    body = trained["images"][0].read_bytes()
    try:
        fill_the_store(monkeypatch)
        answered, refused = predict_until_refused(srv.port, body)
        assert answered == 4 and refused.status_code == 503 and refused.headers["retry-after"]
        assert refused.json()["reason"] == "store_backlog" and "waiting for the store" in refused.json()["error"]
        health = wait_for(lambda: (h := client.get("/health").json())["store_error"] and h)
        assert health["records_pending"] == 4 and "no space left" in health["store_error"]
        assert "no space left" in client.post("/predict", content=body).json()["error"]
        assert client.post("/feedback", json={"prediction_id": "0" * 32, "label": "x"}).status_code == 503
        monkeypatch.undo()  # space freed: the waiting records are stored and predictions are taken again
        wait_for(lambda: client.get("/health").json()["records_pending"] == 0)
        assert client.post("/predict", content=body).status_code == 200
    finally:
        client.close()
        summary = srv.stop()
    assert summary["unstored_records"] == 0 and summary["monitor/samples"] == 5
    assert len(predictions(open_monitor_store(trained["store"]), session)) == 5
    assert not [r for r in caplog.records if r.exc_info]  # retried in one line per distinct error, no tracebacks
    assert sum("cannot store the monitoring records" in r.getMessage() for r in caplog.records) == 1


def test_sigterm_stops_a_server_whose_store_is_full_within_seconds(trained, monkeypatch, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    body, done, returned = trained["images"][0].read_bytes(), {}, threading.Event()

    def client():  # fill the store, hold a half-sent request open, then do what a process manager does
        try:
            wait_for(lambda: _up(port) or returned.is_set(), timeout=60)
            fill_the_store(monkeypatch)
            done["answered"], done["refused"] = predict_until_refused(port, body)
            done["slow"] = raw(port, HALF_BODY)
        finally:
            done["killed_at"] = time.monotonic()
            if not returned.is_set():
                os.kill(os.getpid(), signal.SIGTERM)

    # a SIGTERM that comes after main() returned (a regression) must not end the test run
    previous = signal.signal(signal.SIGTERM, lambda *a: None)
    t = threading.Thread(target=client)
    t.start()
    try:
        code = main(["serve", "--model", "tiny:production", "--port", str(port), "--store", str(trained["store"]),
                     "--wandb-mode", "disabled", "--max-pending", "3", "--shutdown-timeout-s", "1",
                     "--read-timeout-s", "60"])
        returned.set()
        t.join()
        stopped_in = time.monotonic() - done["killed_at"]
    finally:
        signal.signal(signal.SIGTERM, previous)
    done["slow"].close()
    err = capsys.readouterr().err.strip().splitlines()
    assert done["answered"] == 3 and done["refused"].status_code == 503
    assert stopped_in < 10, stopped_in
    assert code == 4 and err[-1].startswith("error: 3 monitoring records could not be stored (no space left")
    assert not any(line.startswith("Traceback") for line in err)


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_uploads_held_at_once_are_bounded_and_given_back(trained):
    # 512 slow clients with 10 MB each would hold 5 GB: past --max-buffered-mb a request gets 503
    srv, client = start(trained, max_upload_mb=0.05, max_buffered_mb=0.08)
    body = trained["images"][0].read_bytes()
    try:
        slow = raw(srv.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n" + b"\xff" * 10)
        wait_for(lambda: client.get("/health").json()["uploads_held_bytes"] == 50_000)
        busy = client.post("/predict", content=b"\xff" * 40_000)
        assert busy.status_code == 503 and busy.json()["reason"] == "busy" and busy.headers["retry-after"]
        assert client.post("/predict", content=body).status_code == 200  # a photo still fits beside it
        slow.close()
        wait_for(lambda: client.get("/health").json()["uploads_held_bytes"] == 0)
        assert client.post("/predict", content=b"\xff" * 40_000).json()["reason"] == "not_an_image"
    finally:
        client.close()
        srv.stop()
    assert main(["serve", "--model", "x.pkl", "--max-upload-mb", "20", "--max-buffered-mb", "10"]) == 2


def test_stopping_drops_the_queued_work_nobody_waits_for(trained, caplog):
    # slow requests queued behind one worker: stop() used to run every one of them first
    srv, client = start(trained, workers=1, max_batch=1, shutdown_timeout_s=0.3)
    original = srv.engine.current.predictor.extractor

    class Slow:
        preprocessing = original.preprocessing

        def __call__(self, batch):
            time.sleep(0.5)
            return original(batch)

    srv.engine.current.predictor.extractor = Slow()
    body = trained["images"][0].read_bytes()

    def post():
        try:
            httpx.post(f"http://127.0.0.1:{srv.port}/predict", content=body, timeout=30)
        except httpx.HTTPError:
            pass  # the server stopped under it

    clients = [threading.Thread(target=post) for _ in range(8)]
    for c in clients:
        c.start()
    wait_for(lambda: srv.engine._queue.qsize() >= 5)
    client.close()
    t0 = time.monotonic()
    summary = srv.stop()
    assert time.monotonic() - t0 < 3  # 0.3 s for the requests, then at most the batch running (0.5 s)
    for c in clients:
        c.join()
    assert summary["unstored_records"] == 0
    assert not [r for r in caplog.records if r.exc_info]  # no InvalidStateError from cancelled futures
