"""The served model: one inference thread batching concurrent requests, and a hot swap when the alias moves.

Requests decode their image on their own thread, then queue the preprocessed array; the
inference thread takes everything queued (up to ``max_batch``) in one model call, so
concurrent clients share the network's batch efficiency. A request keeps the
:class:`ServedModel` it started with (decoding and inference by the same version), so
swapping ``Engine.current`` is atomic for every request. A registry reference
``NAME:ALIAS`` is polled every ``poll_s`` seconds; when the alias moves, the new version is
loaded and warmed beside the old one, then swapped in: nothing is dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from src.core.errors import ModelError

log = logging.getLogger(__name__)


def is_registry_ref(model: str) -> bool:
    """``NAME:ALIAS`` / ``NAME:vK`` rather than a file (the rule :func:`load_predictor` uses)."""
    return not Path(model).exists() and ":" in model and "/" not in model


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


def load_served(ref: str, extractor_path: str | None = None, store=None) -> ServedModel:
    """Load ``ref`` (a file or ``NAME:ALIAS``); a registry alias is pinned to the version it points at now."""
    from src.monitoring.monitor import load_predictor

    if is_registry_ref(ref):
        from src.registry.api import get_model_version, load_model_from_registry

        mv = get_model_version(ref, store=store)
        predictor = load_model_from_registry(mv.name, f"v{mv.version}", store=store)
        served = ServedModel(predictor, mv.name, f"v{mv.version}", mv.digest)
    else:
        predictor = load_predictor(ref, extractor_path, store=store)
        served = ServedModel(predictor, str(ref), predictor.bundle["_digest"][:12], predictor.bundle["_digest"])
    if "reference" not in predictor.bundle:
        raise ModelError(f"{ref} has no reference statistics for drift detection",
                         hint="retrain it with this version of train_with_wandb")
    warm_up(served)
    return served


def warm_up(served: ServedModel) -> None:
    """One inference on a blank image, so the first request does not pay for lazy initialisation."""
    from PIL import Image

    pre = served.preprocessing
    arr = pre(Image.new("RGB", (64, 64), (128, 128, 128)))
    served.predictor.predict_features(served.predictor.extractor(arr[None]))


@dataclass
class Inference:
    probabilities: np.ndarray
    feature: np.ndarray
    inference_ms: float
    batch: int


class Engine:
    """The current model, its inference thread and (for registry references) the alias watcher."""

    def __init__(self, ref: str, *, extractor_path: str | None = None, store=None, max_batch: int = 32,
                 poll_s: float = 2.0, on_switch: Callable[[ServedModel, ServedModel | None], None] | None = None):
        if max_batch < 1:
            raise ModelError("max_batch must be >= 1")
        self.ref, self.extractor_path, self.store = ref, extractor_path, store
        self.max_batch, self.poll_s = max_batch, poll_s
        self.on_switch = on_switch
        self.current = load_served(ref, extractor_path, store)
        self.switches = 0
        self.reload_failures = 0
        self._failed: str | None = None
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        if on_switch:
            on_switch(self.current, None)
        self._threads = [threading.Thread(target=self._infer_loop, name="inference", daemon=True)]
        if is_registry_ref(ref):
            self._threads.append(threading.Thread(target=self._watch_loop, name="alias-watcher", daemon=True))
        for t in self._threads:
            t.start()

    # -- inference -----------------------------------------------------------------------
    def submit(self, served: ServedModel, array: np.ndarray) -> Future:
        fut: Future = Future()
        self._queue.put((served, array, fut))
        return fut

    def _infer_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            try:
                for served in dict.fromkeys(s for s, _, _ in batch):  # one model call per version in the batch
                    self._run([b for b in batch if b[0] is served])
            except BaseException as e:  # noqa: BLE001 — never leave a request waiting
                log.exception("inference thread error")
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)

    def _run(self, items: list) -> None:
        served = items[0][0]
        try:
            t0 = time.perf_counter()
            feats = served.predictor.extractor(np.stack([a for _, a, _ in items]))
            probs = served.predictor.predict_features(feats)
            ms = (time.perf_counter() - t0) * 1e3
        except Exception as e:  # noqa: BLE001 — fail these requests, keep serving
            log.exception("inference failed for a batch of %d", len(items))
            for _, _, fut in items:
                fut.set_exception(e)
            return
        for i, (_, _, fut) in enumerate(items):
            fut.set_result(Inference(probs[i], feats[i], ms, len(items)))

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
            new = load_served(f"{mv.name}:{target}", store=self.store)
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
        """Finish queued inferences, then stop the threads."""
        self._stop.set()
        self._queue.put(None)
        for t in self._threads:
            t.join()
