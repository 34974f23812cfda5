"""The monitored prediction endpoint: FastAPI on uvicorn, monitored like batch inference.

    python src/inference_monitor.py serve --model label-spreading-classifier:production --port 8000

``POST /predict`` (the image as the raw body, or a multipart field ``file``), ``POST /feedback``
(``{"prediction_id": ..., "label": ...}``), ``GET /health``, ``GET /metrics`` (Prometheus text).
Bad input gets a 4xx with a one-line JSON ``{"error": ...}`` and is counted in /metrics; the
request path touches neither the store nor W&B (see :mod:`src.monitoring.live`).

What it guarantees against hostile clients (limits from :mod:`src.core.limits`): uploads over
``--max-upload-mb`` get 413 before they are read in full; images are decoded only in the accepted
formats and within the pixel and aspect-ratio limits (415 / 413 / 422); a request must arrive in
full within ``--read-timeout-s`` (408, connection closed); past ``--max-connections`` new requests
get 503, and so do uploads past ``--max-buffered-mb`` held at once; when the store cannot keep up,
at most ``--max-pending`` monitoring records wait in memory and predictions get 503 instead of
being answered unrecorded. SIGTERM stops it within ``--shutdown-timeout-s`` plus the time to store
what is queued (bounded by the same figure): what could not be stored is counted in one line. The
server has no authentication: bind a loopback address (the default) and put a reverse proxy in
front to expose it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from fastapi import Request  # module level: FastAPI resolves the endpoints' annotations here

from src.core.errors import ConfigError, DataError
from src.core.limits import LIMITS
from src.monitoring.live import LiveMonitor, Overloaded, UnknownPrediction
from src.serving.engine import Engine, ServedModel
from src.serving.http import exposure_warning, http_protocol, listen, timed_protocol, url
from src.serving.options import ServeOptions  # defined there (no FastAPI); imported from here too
from src.serving.requests import (MAX_FEEDBACK_BYTES, ApiError, BodyBudget, classify, image_bytes, parse_feedback,
                                  read_body)

log = logging.getLogger(__name__)


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


def create_app(engine: Engine, monitor: LiveMonitor, metrics, *, max_upload_bytes: int, top_k: int = 5,
               max_buffered_bytes: int = LIMITS.max_buffered_bytes):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="grocery-mlops prediction endpoint", docs_url=None, redoc_url=None, openapi_url=None)
    started = time.time()
    budget = BodyBudget(max(max_buffered_bytes, max_upload_bytes))

    def error(endpoint: str, status: int, reason: str, message: str) -> JSONResponse:
        metrics.errors.labels(endpoint, reason).inc()
        headers = {"Retry-After": "5"} if status == 503 else None
        return JSONResponse({"error": " ".join(message.split()), "reason": reason}, status_code=status,
                            headers=headers)

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
            _admit(monitor)  # before the upload is read: a store that cannot keep up sheds load here
            with budget.hold() as held:  # the upload's bytes count until its inference is done
                data = await image_bytes(request, max_upload_bytes, held)
                if not data:
                    raise ApiError(400, "empty_body", "empty body: send the image bytes (or a multipart field "
                                                      "'file')")
                try:
                    res = await asyncio.wrap_future(engine.submit(served, data))  # decoded and run by a worker
                except DataError as e:
                    raise ApiError(*classify(e), str(e)) from e
            _admit(monitor)  # the store may have fallen behind meanwhile: answer nothing that is not recorded
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
            _admit(monitor)
            with budget.hold() as held:
                body = await read_body(request, MAX_FEEDBACK_BYTES, "feedback", held)
            doc = parse_feedback(body)
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
                "store_error": snap["store_error"], "uploads_held_bytes": budget.used,
                "model_switches": engine.switches}

    @app.get("/metrics")
    async def prometheus():
        body, ctype = metrics.render(monitor.snapshot())
        return Response(body, media_type=ctype)

    return app


def _admit(monitor: LiveMonitor) -> None:
    try:
        monitor.admit()
    except Overloaded as e:
        raise ApiError(503, "store_backlog", str(e)) from e


class Server:
    """Engine + monitor + app + uvicorn, started in :meth:`run` (blocking) or :meth:`start` (a thread)."""

    def __init__(self, o: ServeOptions):
        import uvicorn

        from src.serving.metrics import ServerMetrics

        o.check()
        self.options = o
        self.socket = listen(o.host, o.port)  # first: a busy port fails before the model loads
        self.port = self.socket.getsockname()[1]
        self.metrics = ServerMetrics()
        try:
            self.monitor = LiveMonitor(o.store, o.wandb_mode, window=o.window, alpha=o.alpha,
                                       log_every_s=o.log_every_s, drift_every=o.drift_every, run_name=o.run_name,
                                       config={"model": o.model}, max_pending=o.max_pending,
                                       close_timeout_s=o.shutdown_timeout_s)
            self.engine = Engine(o.model, extractor_path=o.extractor_path, store=o.store, max_batch=o.max_batch,
                                 workers=o.workers, threads=o.threads, poll_s=o.poll_s, on_switch=self._switched)
        except BaseException:
            self.close()
            raise
        app = create_app(self.engine, self.monitor, self.metrics, max_upload_bytes=int(o.max_upload_mb * 2**20),
                         max_buffered_bytes=int(o.max_buffered_mb * 2**20), top_k=o.top_k)
        io = _fast_io()
        http = timed_protocol(http_protocol(io.pop("http", "h11")), o.read_timeout_s, self._timed_out)
        self.uvicorn = uvicorn.Server(uvicorn.Config(
            app, host=o.host, port=o.port, log_level="warning", access_log=o.access_log, lifespan="off", http=http,
            limit_concurrency=o.max_connections, timeout_graceful_shutdown=o.shutdown_timeout_s, **io))
        self._thread = None
        warning = exposure_warning(o.host, self.port)
        if warning:
            log.warning(warning)

    def _timed_out(self, in_body: bool) -> None:
        if not in_body:  # a request with its headers is counted by the application, like any other
            self.metrics.errors.labels("other", "read_timeout").inc()
            self.metrics.requests.labels("other", "408").inc()

    def _switched(self, new: ServedModel, old: ServedModel | None) -> None:
        new.session = self.monitor.start_model(new.ref, new.predictor.bundle)
        self.metrics.set_model(new.model, new.version, new.digest)
        if old is not None:
            self.metrics.model_switches.inc()

    def run(self) -> dict[str, Any] | None:
        """Serve until Ctrl-C / SIGTERM; then store the queued records (for at most ``shutdown_timeout_s``)
        and return the session summary (``unstored_records``: what the store did not take)."""
        log.info("serving %s %s on %s", self.engine.current.model, self.engine.current.version,
                 url(self.options.host, self.port))
        import signal

        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal: make both a normal stop
        # (SIGTERM's default action would kill the process before the queued records are stored)
        previous = signal.signal(signal.SIGTERM, _stop_signal)
        from threadpoolctl import threadpool_limits

        # the process is the server: its cores belong to the inference workers. Multi-threaded BLAS on the
        # small matrices of the classifier and the drift test only spins (drift test: 25 ms CPU -> 2 ms)
        blas = threadpool_limits(1, user_api="blas")
        _give_back_big_blocks()
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
                raise ConfigError(f"server did not start on {url(self.options.host, self.options.port)}")
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


def _give_back_big_blocks(threshold: int = 4 << 20) -> None:
    """glibc: serve allocations over ``threshold`` from their own mappings, returned to the system when freed.

    By default glibc raises that threshold to the largest block freed so far (up to 32 MB): after one
    64 Mpixel upload, Pillow's 16 MB image blocks came from the heap and stayed there (RSS stayed
    ~360 MB above idle, and the next big upload peaked on top of it). Requests of normal size
    allocate less than this per buffer and are unaffected."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-3, threshold)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


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


def serve(o: ServeOptions) -> dict[str, Any] | None:
    return Server(o).run()
