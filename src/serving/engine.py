"""The served model: inference workers sharing the cores, and a hot swap when the alias moves.

A request hands its raw image bytes to :meth:`Engine.submit`; ``workers`` threads (one per
core by default) each take the oldest queued requests (FIFO, at most ``max_batch``, and no
more than their share of the queue), decode them and run them through the network in one
call. Decoding and the network both release the GIL, so the workers run in parallel while
the event loop only does HTTP. Each worker's ONNX Runtime call is single-threaded and its
idle threads do not spin (:func:`serving_threads`): on a 2-core machine, two requests on
one core each cost less CPU than one request spread over both, and a spinning pool would
steal the cores the event loop and the decoding need. A request keeps the
:class:`ServedModel` it started with (decoding and inference by the same version), so
swapping ``Engine.current`` is atomic for every request. A registry reference
``NAME:ALIAS`` is polled every ``poll_s`` seconds; when the alias moves, the new version is
loaded and warmed beside the old one, then swapped in: nothing is dropped.

A request whose future was cancelled (its HTTP task cut by the server's shutdown timeout) is
skipped, and :meth:`Engine.close` (called once the HTTP side has stopped, when nobody waits for
an answer any more) drops what is still queued instead of running it: a queue of slow uploads
(one 64 Mpixel PNG decodes in ~2 s) no longer holds up SIGTERM.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from src.core.errors import DataError, ModelError
from src.registry.api import is_registry_ref

log = logging.getLogger(__name__)


def default_workers() -> int:
    """One inference worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(eq=False)  # hashable by identity: a batch is grouped by the version each request started with
class ServedModel:
    predictor: Any
    model: str  # registry name, or the file's path
    version: str  # registry "vK", or the file digest's first 12 characters
    digest: str
    session: int | None = None

    @property
    def ref(self) -> str:
        """What the monitoring session records: ``NAME:vK`` or the file."""
        return f"{self.model}:{self.version}" if is_registry_ref(f"{self.model}:{self.version}") else self.model

    @property
    def preprocessing(self):
        return self.predictor.extractor.preprocessing


def serving_threads(predictor, threads: int) -> None:
    """Give the predictor's ONNX Runtime extractor ``threads`` intra-op threads that sleep when idle.

    Same network file, same preprocessing; a torch extractor is left as it is."""
    from src.features.onnx_runtime import OrtExtractor

    if isinstance(predictor.extractor, OrtExtractor):
        predictor.extractor = predictor.extractor.with_threads(threads, spinning=False)


def load_served(ref: str, extractor_path: str | None = None, store=None, threads: int | None = None) -> ServedModel:
    """Load ``ref`` (a file or ``NAME:ALIAS``); a registry alias is pinned to the version it points at now.

    ``threads``: intra-op threads of each model call (None: the predictor's own setting)."""
    from src.inference.predictor import require_reference
    from src.registry.api import get_model_version, load_model_from_registry, load_predictor

    if is_registry_ref(ref):
        mv = get_model_version(ref, store=store)
        predictor = load_model_from_registry(mv.name, f"v{mv.version}", store=store)
        served = ServedModel(predictor, mv.name, f"v{mv.version}", mv.digest)
    else:
        predictor = load_predictor(ref, extractor_path, store=store)
        served = ServedModel(predictor, str(ref), predictor.bundle["_digest"][:12], predictor.bundle["_digest"])
    require_reference(predictor, ref)
    if threads:
        serving_threads(predictor, threads)
    warm_up(served)
    return served


def warm_up(served: ServedModel) -> None:
    """One inference on a blank image, so the first request does not pay for lazy initialisation."""
    from PIL import Image

    pre = served.preprocessing
    arr = pre(Image.new("RGB", (64, 64), (128, 128, 128)))
    served.predictor.predict_features(served.predictor.extractor(arr[None]))


def decode(data: bytes, served: ServedModel) -> np.ndarray:
    """Request bytes → the network's input for ``served``; :class:`DataError` for anything not a usable image."""
    from src.core.images import decode_image_bytes

    pre = served.preprocessing
    return pre(decode_image_bytes(data, "upload", draft_size=pre.resize))


@dataclass
class Inference:
    probabilities: np.ndarray
    feature: np.ndarray
    inference_ms: float  # the model call this request was part of (network + classifier)
    batch: int
    sha256: str
    queued_ms: float = 0.0  # waiting for a worker
    decode_ms: float = 0.0


class Engine:
    """The current model, its inference workers and (for registry references) the alias watcher."""

    def __init__(self, ref: str, *, extractor_path: str | None = None, store=None, max_batch: int = 4,
                 workers: int | None = None, threads: int | None = None, poll_s: float = 2.0,
                 on_switch: Callable[[ServedModel, ServedModel | None], None] | None = None):
        if max_batch < 1 or (workers is not None and workers < 1) or (threads is not None and threads < 1):
            raise ModelError("max_batch, workers and threads must be >= 1")
        self.ref, self.extractor_path, self.store = ref, extractor_path, store
        self.max_batch, self.poll_s = max_batch, poll_s
        self.workers = workers or default_workers()
        # the cores are shared out between concurrent model calls: 2 workers on 2 cores -> 1 thread each
        self.threads = threads or max(1, default_workers() // self.workers)
        self.on_switch = on_switch
        self.current = load_served(ref, extractor_path, store, self.threads)
        self.switches = 0
        self.reload_failures = 0
        self._failed: str | None = None
        self._queue: queue.Queue = queue.Queue()  # FIFO: the oldest request is always served first
        self._stop = threading.Event()
        self._closing = False
        if on_switch:
            on_switch(self.current, None)
        self._threads = [threading.Thread(target=self._work_loop, name=f"inference-{k}", daemon=True)
                         for k in range(self.workers)]
        if is_registry_ref(ref):
            self._threads.append(threading.Thread(target=self._watch_loop, name="alias-watcher", daemon=True))
        for t in self._threads:
            t.start()

    # -- inference -----------------------------------------------------------------------
    def submit(self, served: ServedModel, data: bytes) -> Future:
        """Queue one request's image bytes; the future gives an :class:`Inference` or raises
        :class:`DataError` (not a usable image) or the model's exception."""
        fut: Future = Future()
        self._queue.put((served, data, fut, time.perf_counter()))
        return fut

    def _take(self) -> list | None:
        """The oldest request (blocking), then as many more as are queued, up to ``max_batch`` and this
        worker's share of the queue (so one worker does not take everything while the others idle)."""
        item = self._queue.get()
        if item is None:
            self._queue.put(None)  # for the next worker
            return None
        batch = [item]
        share = min(self.max_batch, 1 + self._queue.qsize() // self.workers)
        while len(batch) < share:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._queue.put(None)  # another worker's stop signal, or ours after this batch
                break
            batch.append(nxt)
        return batch

    def _work_loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                for served in dict.fromkeys(b[0] for b in batch):  # one model call per version in the batch
                    self._run([b for b in batch if b[0] is served])
            except BaseException as e:  # noqa: BLE001 — never leave a request waiting
                log.exception("inference worker error")
                for item in batch:
                    if not item[2].done():
                        item[2].set_exception(e)

    def _run(self, items: list) -> None:
        from src.core.store import sha256_bytes

        served, t_start = items[0][0], time.perf_counter()
        items = [item for item in items if item[2].set_running_or_notify_cancel()]  # cancelled: nobody waits
        ok, arrays = [], []
        for item in items:
            if self._closing:
                item[2].set_exception(ModelError("the server stopped before this request was served"))
                continue
            try:
                arrays.append(decode(item[1], served))
                ok.append(item)
            except DataError as e:  # this request's answer is a 4xx; the others go on
                item[2].set_exception(e)
            except Exception as e:  # noqa: BLE001 — a decoder bug fails this request alone (a 500)
                log.exception("decoding a request failed")
                item[2].set_exception(e)
        if not ok:
            return
        t0 = time.perf_counter()
        try:
            feats = served.predictor.extractor(np.stack(arrays))
            probs = served.predictor.predict_features(feats)
        except Exception as e:  # noqa: BLE001 — fail these requests, keep serving
            log.exception("inference failed for a batch of %d", len(ok))
            for item in ok:
                item[2].set_exception(e)
            return
        t1 = time.perf_counter()
        ms, decode_ms = (t1 - t0) * 1e3, (t0 - t_start) * 1e3 / len(items)
        for i, (_, data, fut, queued_at) in enumerate(ok):
            fut.set_result(Inference(probs[i], feats[i], ms, len(ok), sha256_bytes(data),
                                     (t_start - queued_at) * 1e3, decode_ms))

    # -- hot swap ------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        last_error = None
        while not self._stop.wait(self.poll_s):
            try:
                self.check_alias()
                last_error = None
            except Exception as e:  # noqa: BLE001 — a broken registry must not stop serving
                if str(e) != last_error:  # once per distinct problem, not every poll
                    log.error("checking %s failed (%s); still serving %s %s", self.ref, e, self.current.model,
                              self.current.version)
                last_error = str(e)

    def check_alias(self) -> bool:
        """Switch to the version the alias points at now, if it moved; True when it switched."""
        from src.registry.api import get_model_version

        mv = get_model_version(self.ref, store=self.store)
        target = f"v{mv.version}"
        if target == self.current.version or target == self._failed:
            return False
        old = self.current
        log.info("%s moved from %s to %s; loading it beside the served version", self.ref, old.version, target)
        try:
            new = load_served(f"{mv.name}:{target}", store=self.store, threads=self.threads)
        except Exception as e:  # noqa: BLE001
            self._failed = target
            self.reload_failures += 1
            log.error("could not load %s:%s (%s); still serving %s", mv.name, target, e, old.version)
            return False
        if self.on_switch:
            self.on_switch(new, old)
        self.current = new  # atomic: requests in flight keep the version they started with
        self._failed = None
        self.switches += 1
        log.warning("now serving %s:%s (was %s) for %s", new.model, new.version, old.version, self.ref)
        return True

    def close(self) -> None:
        """Stop the threads; the HTTP side has stopped, so what is still queued is dropped (its futures
        cancelled) and a batch being decoded stops at its next image."""
        self._stop.set()
        self._closing = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[2].cancel()
        self._queue.put(None)  # each worker passes it on before it stops
        for t in self._threads:
            t.join()
