"""The monitored prediction endpoint: FastAPI on uvicorn, monitored like batch inference.

    python src/inference_monitor.py serve --model label-spreading-classifier:production --port 8000

``POST /predict`` (the image as the raw body, or a multipart field ``file``), ``POST /feedback``
(``{"prediction_id": ..., "label": ...}``), ``GET /health``, ``GET /metrics`` (Prometheus text).
Bad input gets a 4xx with a one-line JSON ``{"error": ...}`` and is counted in /metrics; the
request path touches neither the store nor W&B (see :mod:`src.monitoring.live`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import Request  # module level: FastAPI resolves the endpoints' annotations here

from src.core.errors import ConfigError, DataError
from src.monitoring.live import LiveMonitor, UnknownPrediction
from src.serving.engine import Engine, ServedModel

log = logging.getLogger(__name__)
MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and headers around the file
MAX_FEEDBACK_BYTES = 16 * 1024


class ApiError(Exception):
    """A request the server refuses: HTTP ``status``, a metrics ``reason`` and a one-line message."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class ServeOptions:
    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = 10.0
    extractor_path: str | None = None
    store: str | None = None
    wandb_mode: str | None = None
    window: int = 200
    alpha: float = 0.05
    top_k: int = 5
    drift_every: int = 50
    max_batch: int = 4
    workers: int | None = None  # inference workers (None: one per core)
    threads: int | None = None  # intra-op threads per model call (None: cores / workers)
    poll_s: float = 2.0
    log_every_s: float = 30.0
    run_name: str | None = None
    access_log: bool = False

    def check(self) -> None:
        if not 0 < self.port < 65536 and self.port != 0:
            raise ConfigError(f"--port must be in 1..65535 (0 = any free port), got {self.port}")
        if not self.max_upload_mb > 0:
            raise ConfigError(f"--max-upload-mb must be > 0, got {self.max_upload_mb}")
        if self.top_k < 1 or self.max_batch < 1 or self.drift_every < 1 or self.poll_s <= 0 or self.log_every_s <= 0:
            raise ConfigError("--top-k, --max-batch and --drift-every must be >= 1; --poll-s and --log-every-s > 0")
        if (self.workers is not None and self.workers < 1) or (self.threads is not None and self.threads < 1):
            raise ConfigError("--workers and --threads must be >= 1")


def _classify(e: DataError) -> tuple[int, str]:
    """HTTP status and metrics reason for an image that could not be decoded."""
    text = str(e)
    if "empty" in text:
        return 400, "empty_body"
    if "not an image" in text:
        return 415, "not_an_image"
    if "pixel limit" in text or "too large" in text:
        return 413, "decompression_bomb"
    return 422, "corrupt_image"


async def _read_body(request, limit: int, what: str) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
            raise ApiError(400, "bad_request", "invalid Content-Length header")
        if int(length) > limit:
            raise ApiError(413, "too_large", f"{what} is {int(length):,} bytes, over the {limit:,}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"{what} is over the {limit:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _image_bytes(request, limit: int) -> bytes:
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        return await _read_body(request, limit, "upload")
    from starlette.formparsers import MultiPartException, MultiPartParser

    body = await _read_body(request, limit + MULTIPART_OVERHEAD, "upload")

    async def stream():
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=8).parse()
    except MultiPartException as e:
        raise ApiError(400, "bad_multipart", f"malformed multipart upload: {e.message}") from e
    file = form.get("file")
    if file is None or isinstance(file, str):
        raise ApiError(400, "missing_file", "multipart upload needs the image in a field named 'file'")
    data = await file.read()
    if len(data) > limit:
        raise ApiError(413, "too_large", f"upload is {len(data):,} bytes, over the {limit:,}-byte limit")
    return data


ENDPOINTS = frozenset({"/predict", "/feedback", "/health", "/metrics"})


def _endpoint(path: str) -> str:
    return path if path in ENDPOINTS else "other"


class _Counting:
    """Plain ASGI middleware: requests by status and latency per endpoint (cheaper than ``@app.middleware``)."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [500]  # what an exception becomes

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = _endpoint(scope["path"])
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)


def create_app(engine: Engine, monitor: LiveMonitor, metrics, *, max_upload_bytes: int, top_k: int = 5):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="grocery-mlops prediction endpoint", docs_url=None, redoc_url=None, openapi_url=None)
    started = time.time()

    def error(endpoint: str, status: int, reason: str, message: str) -> JSONResponse:
        metrics.errors.labels(endpoint, reason).inc()
        return JSONResponse({"error": " ".join(message.split()), "reason": reason}, status_code=status)

    app.add_middleware(_Counting, metrics=metrics)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):  # a bug: 500, logged; the server stays up
        log.error("unhandled error on %s: %s: %s", request.url.path, type(exc).__name__, exc)
        return error(_endpoint(request.url.path), 500, "internal", "internal server error (see the server log)")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error("other", exc.status_code, reason, f"{request.method} {request.url.path}: {exc.detail}")

    @app.post("/predict")
    async def predict(request: Request):
        t0 = time.perf_counter()
        top = request.query_params.get("top", str(top_k))
        served = engine.current  # this request's version, whatever the watcher swaps in meanwhile
        try:
            if not (top.isascii() and top.isdigit()) or int(top) < 1:
                raise ApiError(400, "bad_request", f"top must be a positive integer, got {top!r}")
            data = await _image_bytes(request, max_upload_bytes)
            if not data:
                raise ApiError(400, "empty_body", "empty body: send the image bytes (or a multipart field 'file')")
            try:
                res = await asyncio.wrap_future(engine.submit(served, data))  # decoded and run by a worker
            except DataError as e:
                raise ApiError(*_classify(e), str(e)) from e
        except ApiError as e:
            return error("/predict", e.status, e.reason, str(e))
        except Exception:  # noqa: BLE001 — logged by the engine; this request fails, the connection lives on
            return error("/predict", 500, "inference_failed", "the model failed on this image (see the server log)")
        names = served.predictor.class_names
        order = res.probabilities.argsort()[::-1]
        label, conf = names[int(order[0])], float(res.probabilities[order[0]])
        pid = uuid.uuid4().hex
        latency_ms = (time.perf_counter() - t0) * 1e3
        monitor.record(pid, served.session, res.sha256, label, conf, latency_ms, res.inference_ms, res.feature)
        metrics.predictions.labels(label).inc()
        metrics.batch_size.observe(res.batch)
        body = {"label": label, "confidence": conf,
                "probabilities": {names[int(i)]: float(res.probabilities[i]) for i in order[:int(top)]},
                "model": served.model, "version": served.version, "prediction_id": pid,
                "latency_ms": round(latency_ms, 3)}
        # serialised here: FastAPI's encoder walks the dict first, which costs more than the JSON itself
        return Response(json.dumps(body, separators=(",", ":")).encode(), media_type="application/json")

    @app.post("/feedback")
    async def feedback(request: Request):
        try:
            body = await _read_body(request, MAX_FEEDBACK_BYTES, "feedback")
            try:
                doc = json.loads(body)
            except (ValueError, UnicodeDecodeError) as e:
                raise ApiError(400, "bad_json", f"malformed JSON: {e}") from e
            if not isinstance(doc, dict) or not isinstance(doc.get("prediction_id"), str) \
                    or not isinstance(doc.get("label"), str):
                raise ApiError(422, "bad_feedback", 'feedback must be {"prediction_id": "<id>", "label": "<class>"}')
            try:
                out = await run_in_threadpool(monitor.feedback, doc["prediction_id"], doc["label"])
            except UnknownPrediction as e:
                raise ApiError(404, "unknown_prediction", str(e)) from e
            except ConfigError as e:
                raise ApiError(422, "bad_feedback", str(e)) from e
        except ApiError as e:
            return error("/feedback", e.status, e.reason, str(e))
        return {**out, "accuracy": monitor.accuracy()}

    @app.get("/health")
    async def health():
        served, snap = engine.current, monitor.snapshot()
        return {"status": "ok", "model": served.model, "version": served.version, "digest": served.digest,
                "session": served.session, "uptime_s": round(time.time() - started, 3),
                "records_written": snap["written"], "records_pending": snap["pending"],
                "model_switches": engine.switches}

    @app.get("/metrics")
    async def prometheus():
        body, ctype = metrics.render(monitor.snapshot())
        return Response(body, media_type=ctype)

    return app


class Server:
    """Engine + monitor + app + uvicorn, started in :meth:`run` (blocking) or :meth:`start` (a thread)."""

    def __init__(self, o: ServeOptions):
        import uvicorn

        from src.serving.metrics import ServerMetrics

        o.check()
        self.options = o
        self.socket = _listen(o.host, o.port)  # first: a busy port fails before the model loads
        self.port = self.socket.getsockname()[1]
        self.metrics = ServerMetrics()
        try:
            self.monitor = LiveMonitor(o.store, o.wandb_mode, window=o.window, alpha=o.alpha,
                                       log_every_s=o.log_every_s, drift_every=o.drift_every, run_name=o.run_name,
                                       config={"model": o.model})
            self.engine = Engine(o.model, extractor_path=o.extractor_path, store=o.store, max_batch=o.max_batch,
                                 workers=o.workers, threads=o.threads, poll_s=o.poll_s, on_switch=self._switched)
        except BaseException:
            self.close()
            raise
        app = create_app(self.engine, self.monitor, self.metrics, max_upload_bytes=int(o.max_upload_mb * 2**20),
                         top_k=o.top_k)
        self.uvicorn = uvicorn.Server(uvicorn.Config(app, host=o.host, port=o.port, log_level="warning",
                                                     access_log=o.access_log, lifespan="off", **_fast_io()))
        self._thread = None

    def _switched(self, new: ServedModel, old: ServedModel | None) -> None:
        new.session = self.monitor.start_model(new.ref, new.predictor.bundle)
        self.metrics.set_model(new.model, new.version, new.digest)
        if old is not None:
            self.metrics.model_switches.inc()

    def run(self) -> dict[str, Any] | None:
        """Serve until Ctrl-C / SIGTERM; then store every record and return the session summary."""
        log.info("serving %s %s on http://%s:%d", self.engine.current.model, self.engine.current.version,
                 self.options.host, self.port)
        import signal

        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal: make both a normal stop
        # (SIGTERM's default action would kill the process before the queued records are stored)
        previous = signal.signal(signal.SIGTERM, _stop_signal)
        from threadpoolctl import threadpool_limits

        # the process is the server: its cores belong to the inference workers. Multi-threaded BLAS on the
        # small matrices of the classifier and the drift test only spins (drift test: 25 ms CPU -> 2 ms)
        blas = threadpool_limits(1, user_api="blas")
        try:
            self.uvicorn.run(sockets=[self.socket])
        except (KeyboardInterrupt, _Stopped):
            log.info("stopping: storing the queued monitoring records")
        finally:
            signal.signal(signal.SIGTERM, previous)
            summary = self.close()
            blas.restore_original_limits()
        return summary

    def start(self, timeout: float = 30.0) -> "Server":
        """Serve from a thread (tests, benchmarks); :meth:`stop` ends it."""
        import threading

        self._thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [self.socket]}, name="uvicorn",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise ConfigError(f"server did not start on {self.options.host}:{self.options.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> dict[str, Any] | None:
        self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join()
        return self.close()

    def close(self) -> dict[str, Any] | None:
        """After the HTTP side stopped: finish inferences, store every record, close session and W&B run."""
        if getattr(self, "_closed", False):
            return None
        self._closed = True
        if getattr(self, "socket", None) is not None:
            self.socket.close()
        if getattr(self, "engine", None) is not None:
            self.engine.close()
        return self.monitor.close() if getattr(self, "monitor", None) is not None else None


def _fast_io() -> dict[str, str]:
    """uvicorn's C HTTP parser and libuv event loop where installed (requirements.txt pins both). Measured
    (GET /health, 8 keep-alive clients): 110-130 us of server CPU per request against 185-195 us with h11 on
    asyncio's loop; small next to the ~6 ms a prediction costs, but on the same two cores."""
    import importlib.util

    fast = {}
    if importlib.util.find_spec("httptools"):
        fast["http"] = "httptools"
    if importlib.util.find_spec("uvloop"):
        fast["loop"] = "uvloop"
    return fast


class _Stopped(Exception):
    pass


def _stop_signal(signum, frame):
    raise _Stopped()


def _listen(host: str, port: int):
    """The listening socket, bound here so a busy port is one clear error (uvicorn would exit the process)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto spelled out: asyncio sets TCP_NODELAY only on IPPROTO_TCP sockets, and without it every response
    # waits ~40 ms for the client's delayed ACK (measured: /health 44 ms with proto 0, under 2 ms with it)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                          hint="pick another --port or stop what is using it") from e
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(o: ServeOptions) -> dict[str, Any] | None:
    return Server(o).run()
