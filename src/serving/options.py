"""What one server run is asked for: the one place the serve options' defaults and help are written.

``inference_monitor.py serve`` builds its flags from :class:`ServeOptions`' fields (``--max-upload-mb`` for
``max_upload_mb``, the field's default and its ``help``), as ``train_with_wandb``'s derive from
``TrainConfig``; drift's ``window`` and ``alpha`` come from :mod:`src.monitoring.settings`, request limits
from :mod:`src.core.limits`. This module imports no web framework: building the parser loads no server.
``from src.serving.server import ServeOptions`` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from src.core.cli import STORE_HELP
from src.core.errors import ConfigError
from src.core.limits import LIMITS
from src.core.paths import EXTRACTOR_FILE
from src.monitoring.settings import DEFAULTS, HELP as DRIFT_HELP


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServeOptions:
    """A server run's options; each field is the ``serve`` flag of the same name (``_`` → ``-``)."""

    model: str = field(metadata={"help": "NAME:ALIAS (followed when the alias moves) or a model file (default: "
                                         "the best model in models/training_results.json)"})
    extractor_path: str | None = _opt(None, f"default: {EXTRACTOR_FILE} next to the model")
    host: str = _opt("127.0.0.1", "interface to listen on (default 127.0.0.1: this machine only). The server has "
                     "no authentication: to expose it, keep 127.0.0.1 and put a reverse proxy that authenticates "
                     "in front; any other address logs a warning")
    port: int = _opt(8000, "0 = any free port")
    max_upload_mb: float = _opt(LIMITS.max_upload_bytes / 2**20, "larger uploads get 413")
    max_buffered_mb: float = _opt(LIMITS.max_buffered_bytes / 2**20,
                                  "uploads held at once, all clients together; past it requests get 503")
    read_timeout_s: float = _opt(LIMITS.read_timeout_s,
                                 "a request (headers and body) must arrive within this many seconds, else 408")
    max_connections: int = _opt(LIMITS.max_connections, "open connections before new requests get 503")
    max_pending: int = _opt(LIMITS.max_pending_records,
                            "monitoring records waiting for the store before predictions get 503")
    shutdown_timeout_s: float = _opt(LIMITS.shutdown_timeout_s,
                                     "on SIGTERM: how long requests in flight may finish, then how long storing "
                                     "the queued records may take")
    window: int = _opt(DEFAULTS.window, DRIFT_HELP["window"])  # drift: as batch monitoring
    alpha: float = _opt(DEFAULTS.alpha, DRIFT_HELP["alpha"])
    drift_every: int = _opt(50, "predictions between drift tests (in the background, at most one every 5 s)")
    top_k: int = _opt(5, "probabilities returned per prediction (?top=N overrides)")
    max_batch: int = _opt(4, "most queued requests one worker runs in one model call")
    workers: int | None = _opt(None, "inference workers, each decoding and running its requests "
                                     "(default: one per core)")
    threads: int | None = _opt(None, "threads per model call (default: cores / workers)")
    poll_s: float = _opt(2.0, "how often a NAME:ALIAS is checked for a promotion")
    log_every_s: float = _opt(30.0, "W&B logging period (never per request)")
    access_log: bool = _opt(False, "log every request (uvicorn's access log)")
    run_name: str | None = _opt(None, "W&B run name")
    store: str | None = _opt(None, STORE_HELP)
    wandb_mode: str | None = _opt(None, "default: $WANDB_MODE, else online if an API key is configured, else "
                                        "offline")

    def check(self) -> None:
        if not 0 < self.port < 65536 and self.port != 0:
            raise ConfigError(f"`port` must be in 1..65535 (0 = any free port), got {self.port}", params=("port",))
        if not self.max_upload_mb > 0:
            raise ConfigError(f"`max_upload_mb` must be > 0, got {self.max_upload_mb}", params=("max_upload_mb",))
        if self.top_k < 1 or self.max_batch < 1 or self.drift_every < 1 or self.poll_s <= 0 or self.log_every_s <= 0:
            raise ConfigError("`top_k`, `max_batch` and `drift_every` must be >= 1; `poll_s` and `log_every_s` > 0",
                              params=("top_k", "max_batch", "drift_every", "poll_s", "log_every_s"))
        if (self.workers is not None and self.workers < 1) or (self.threads is not None and self.threads < 1):
            raise ConfigError("`workers` and `threads` must be >= 1", params=("workers", "threads"))
        if not (self.read_timeout_s > 0 and self.shutdown_timeout_s > 0):
            raise ConfigError("`read_timeout_s` and `shutdown_timeout_s` must be > 0",
                              params=("read_timeout_s", "shutdown_timeout_s"))
        if self.max_connections < 1 or self.max_pending < 1:
            raise ConfigError("`max_connections` and `max_pending` must be >= 1", params=("max_connections", "max_pending"))
        if not self.max_buffered_mb >= self.max_upload_mb:
            raise ConfigError(f"`max_buffered_mb` must be at least `max_upload_mb` ({self.max_upload_mb:g}), "
                              f"got {self.max_buffered_mb}", params=("max_buffered_mb", "max_upload_mb"))
