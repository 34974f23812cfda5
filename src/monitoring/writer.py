"""The monitoring records' way to the store: batched, bounded, and retried off the request path.

A server's request thread hands each record to :meth:`RecordWriter.row` (memory and a queue); one
thread stores them in batches. What may wait is bounded: past ``max_pending`` records
:meth:`RecordWriter.admit` raises :class:`Overloaded`, and the server answers 503 instead of holding
more in memory or answering predictions it could not record. A failing store (disk full, read-only,
measured before: 398 tracebacks and a server that ignored SIGTERM for over 60 s while the pending
records grew) is retried after a pause that doubles up to ``MAX_RETRY_S`` and logged once per
distinct error; :meth:`RecordWriter.close` gives it ``close_timeout_s`` and then says how many
records could not be stored (``unstored``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from src.core.errors import GroceryError, StoreError

log = logging.getLogger(__name__)
MAX_RETRY_S = 5.0  # longest pause between two attempts to write to a failing store


class Overloaded(StoreError):
    """The store has fallen behind: ``max_pending`` records wait for it."""


class RecordWriter:
    """Prediction rows, feedback and session ends, stored in that order by one thread."""

    def __init__(self, store, *, flush_every: int, flush_s: float, max_pending: int, close_timeout_s: float,
                 run_id: Callable[[], str | None]):
        self.store, self.run_id = store, run_id
        self.flush_every, self.flush_s = flush_every, flush_s
        self.max_pending, self.close_timeout_s = max_pending, close_timeout_s
        self.written = 0
        self.write_errors = 0
        self.pending = 0  # records (predictions and feedback) accepted and not stored yet
        self.unstored = 0  # records still not stored when close() gave up
        self.store_error: str | None = None  # the last failed write, until one succeeds
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._write_loop, name="monitor-writer", daemon=True)
        self._thread.start()

    def admit(self) -> None:
        """Raise :class:`Overloaded` while ``max_pending`` records wait for the store."""
        if self.pending >= self.max_pending:
            cause = f"last error: {self.store_error}" if self.store_error else "the store is too slow"
            raise Overloaded(f"{self.pending:,} monitoring records are waiting for the store ({cause}); "
                             f"not taking new requests until they are stored", hint="retry later")

    def row(self, row: tuple) -> None:
        with self._lock:
            self.pending += 1
        self._queue.put(("row", row))

    def feedback(self, item: tuple) -> None:
        with self._lock:
            self.pending += 1
        self._queue.put(("feedback", item))

    def finish(self, session: int, summary: dict) -> None:
        self._queue.put(("finish", session, summary))

    def close(self) -> None:
        """Store what is queued, trying for at most ``close_timeout_s``; then stop the thread."""
        self._queue.put(("stop", None))
        self._thread.join()

    def _write_loop(self) -> None:
        """Store what the queue brings, in order: prediction rows in batches, then feedback and session ends
        (which refer to the rows). A failed write keeps everything and is retried after a growing pause."""
        w = _Backlog()
        retry_at, pause, deadline = 0.0, self.flush_s, None
        while True:
            now = time.monotonic()
            wait = max(0.0, retry_at - now) if retry_at else self.flush_s / 2
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
            if w.take(self._queue, wait) and deadline is None:  # "stop": store what is left, for a bounded time
                deadline, retry_at = time.monotonic() + self.close_timeout_s, 0.0
            now = time.monotonic()
            due = w.feedback or w.finish or deadline is not None or (w.rows and (
                len(w.rows) >= self.flush_every or now - w.first >= self.flush_s))
            if due and now >= retry_at:
                if self._store(w):
                    retry_at, pause = 0.0, self.flush_s
                else:
                    retry_at, pause = time.monotonic() + pause, min(pause * 2, MAX_RETRY_S)
            if deadline is not None and (w.empty() or time.monotonic() >= deadline):
                self.unstored = len(w.rows) + len(w.feedback)
                if not w.empty():
                    log.error("%d monitoring records could not be stored (%s)", self.unstored, self.store_error)
                return

    def _store(self, w: "_Backlog") -> bool:
        from src.monitoring.records import add_feedback, add_predictions, finish_session

        try:
            if w.rows:
                add_predictions(self.store, w.rows)
                n, w.rows, w.first = len(w.rows), [], 0.0
                with self._lock:
                    self.written += n
                    self.pending -= n
            while w.feedback:
                add_feedback(self.store, [w.feedback[0]])
                w.feedback.pop(0)
                with self._lock:
                    self.pending -= 1
            while w.finish:
                session, summary = w.finish[0]
                finish_session(self.store, session, summary, self.run_id())
                w.finish.pop(0)
        except Exception as e:  # noqa: BLE001 — keep everything, retry later; one line per distinct problem
            self.write_errors += 1
            text = str(e) if isinstance(e, GroceryError) else f"{type(e).__name__}: {e}"
            if text != self.store_error:
                log.error("cannot store the monitoring records, retrying (%s)", text)
                log.debug("store write failed", exc_info=True)
            self.store_error = text
            return False
        if self.store_error is not None:
            log.warning("the store takes monitoring records again; the waiting ones are stored")
            self.store_error = None
        return True


class _Backlog:
    """What the writer holds: prediction rows, feedback and session ends taken from the queue, not yet stored."""

    def __init__(self):
        self.rows: list[tuple] = []
        self.feedback: list[tuple] = []
        self.finish: list[tuple] = []
        self.first = 0.0

    def empty(self) -> bool:
        return not (self.rows or self.feedback or self.finish)

    def take(self, q: queue.Queue, wait: float) -> bool:
        """Everything queued now (waiting up to ``wait`` s for the first item); True once "stop" came."""
        stop = False
        try:
            item = q.get(timeout=wait) if wait > 0 else q.get_nowait()
            while True:
                kind, value, *rest = item
                if kind == "row":
                    self.first = self.first or time.monotonic()
                    self.rows.append(value)
                elif kind == "feedback":
                    self.feedback.append(value)
                elif kind == "finish":
                    self.finish.append((value, rest[0]))
                else:
                    stop = True
                item = q.get_nowait()
        except queue.Empty:
            pass
        return stop
