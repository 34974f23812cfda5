"""The one module that imports ``wandb``: mode resolution, the run tracker, online sweeps.

Mode resolution (SPEC §3.1): ``--wandb-mode`` beats ``WANDB_MODE``; otherwise ``online``
only when an API key is configured (``WANDB_API_KEY`` or a netrc entry for the server),
else ``offline``. The mode is always passed explicitly to ``wandb.init`` so it never
prompts for a login or hangs; online use gets short timeouts. Everything else in the
project logs through :class:`Tracker`, which behaves the same in every mode
(``disabled`` writes no W&B files at all).
"""

from __future__ import annotations

import contextlib
import logging
import netrc
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlparse

from src.core.errors import ConfigError, TrackingError
from src.core.paths import project_root
from src.tracking.settings import WANDB_ENTITY, WANDB_PROJECT, default_entity, default_project  # noqa: F401

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")

# Short timeouts for online use: an unreachable server fails in seconds, not minutes.
ONLINE_TIMEOUTS = {"WANDB_INIT_TIMEOUT": 30.0, "WANDB_HTTP_TIMEOUT": 10.0}


def _timeout(var: str) -> float:
    """A timeout in seconds: the user's environment variable when set, else our short default."""
    try:
        return float(os.environ.get(var, ONLINE_TIMEOUTS[var]))
    except ValueError:
        raise ConfigError(f"{var} must be a number of seconds, got {os.environ[var]!r}") from None


def base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def has_api_key() -> bool:
    """True when W&B credentials are configured for the current server."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(base_url()).hostname or ""
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(flag: str | None = None) -> str:
    """The W&B mode to use; never ``None``."""
    mode = flag or os.environ.get("WANDB_MODE") or ("online" if has_api_key() else "offline")
    if mode == "dryrun":
        mode = "offline"
    if mode not in MODES:
        raise ConfigError(f"unknown W&B mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
    return mode


def wandb_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where ``wandb/`` goes: ``explicit``, else ``WANDB_DIR``, else the project root (the nearest
    folder at or above the working directory holding ``.mlops/``, else the working directory)."""
    return Path(explicit or os.environ.get("WANDB_DIR") or project_root())


def run_output() -> dict[str, Any]:
    """The System tab (system metrics, sampled by wandb-core) and the Logs tab (``output.log``, the run's console)
    are on, as a W&B user expects: measured with ``benchmarks/wandb_overhead.py`` they cost under 2 % of a
    run's time. W&B's own variables turn them off: ``WANDB_CONSOLE=off``, ``WANDB_X_DISABLE_STATS=true``."""
    off = os.environ.get("WANDB_X_DISABLE_STATS", "").strip().lower() in ("1", "true", "yes")
    return {"console": os.environ.get("WANDB_CONSOLE") or "wrap", "x_disable_stats": off}


@contextlib.contextmanager
def _quiet_login():
    """``WANDB_SILENT`` only while ``wandb.init`` runs (its login banner ignores ``Settings.silent``),
    then the environment is as the caller left it."""
    had = "WANDB_SILENT" in os.environ
    if not had:
        os.environ["WANDB_SILENT"] = "true"
    try:
        yield
    finally:
        if not had:
            os.environ.pop("WANDB_SILENT", None)


def _import_wandb():
    try:
        import wandb
    except ImportError as e:  # pragma: no cover - it is a pinned dependency
        raise TrackingError("wandb is not installed", hint="pip install -r requirements.txt") from e
    return wandb


class Tracker:
    """A W&B run, or nothing at all in ``disabled`` mode, behind one small interface."""

    def __init__(self, job_type: str, config: Mapping[str, Any] | None = None, *,
                 mode: str | None = None, name: str | None = None, group: str | None = None,
                 tags: Iterable[str] | None = None, directory: str | os.PathLike | None = None,
                 project: str | None = None):
        self.mode = resolve_mode(mode)
        self.run = None
        self.job_type = job_type
        if self.mode == "disabled":
            return
        wandb = _import_wandb()
        d = wandb_dir(directory)
        d.mkdir(parents=True, exist_ok=True)
        # Settings, not os.environ: a library call leaves the process's environment alone.
        settings = wandb.Settings(
            init_timeout=_timeout("WANDB_INIT_TIMEOUT"),
            x_graphql_timeout_seconds=_timeout("WANDB_HTTP_TIMEOUT"),
            silent=True, disable_git=False, **run_output(),
        )
        try:
            with _quiet_login():
                self.run = wandb.init(
                    project=project or default_project(), entity=default_entity(),
                    job_type=job_type, config=dict(config or {}), name=name, group=group,
                    tags=list(tags or []), dir=str(d), mode=self.mode, settings=settings,
                    reinit="create_new",
                )
        except Exception as e:  # wandb raises many types (CommError, UsageError, timeouts)
            raise TrackingError(
                f"W&B init failed in {self.mode} mode at {base_url()}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                hint="check the server and key, or run with `wandb_mode=offline`", params=("wandb_mode",),
            ) from e

    # -- identity ------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self.run is not None

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run else None

    @property
    def run_path(self) -> str | None:
        """``entity/project/run_id`` as the server will know the run (an offline run's entity may be empty:
        the API key's default entity then)."""
        return f"{self.run.entity or ''}/{self.run.project}/{self.run.id}" if self.run else None

    @property
    def run_dir(self) -> str | None:
        """The offline/online run directory (``.../wandb/offline-run-...``)."""
        return str(Path(self.run.dir).parent) if self.run else None

    @property
    def config(self) -> dict[str, Any]:
        """The run config as W&B sees it (a sweep agent injects its parameters here)."""
        return dict(self.run.config) if self.run else {}

    # -- logging -------------------------------------------------------------------------
    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if self.run:
            self.run.log(dict(metrics), step=step)

    def define_metric(self, pattern: str, step_metric: str) -> None:
        """Plot the metrics matching ``pattern`` against ``step_metric`` (their own x axis)."""
        if self.run:
            self.run.define_metric(step_metric, hidden=True)
            self.run.define_metric(pattern, step_metric=step_metric)

    def summary(self, values: Mapping[str, Any]) -> None:
        if self.run:
            for k, v in values.items():
                self.run.summary[k] = v

    def update_config(self, values: Mapping[str, Any]) -> None:
        if self.run:
            self.run.config.update(dict(values), allow_val_change=True)

    def table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        if self.run:
            import wandb

            self.run.log({key: wandb.Table(columns=columns, data=rows)})

    def image_table(self, key: str, columns: list[str], rows: list[list[Any]], image_col: int) -> None:
        """A table whose ``image_col`` holds image paths (copied as they are) or PIL images (RGB and grey ones
        stored as JPEG: PNG-encoding 112 photos of 256 px took 1.7 s of a training, JPEG 0.03 s)."""
        if self.run:
            import wandb

            def image(c):
                if isinstance(c, (str, os.PathLike)):
                    return wandb.Image(str(c))
                return wandb.Image(c, file_type="jpg" if getattr(c, "mode", None) in ("RGB", "L") else None)

            data = [[image(c) if i == image_col else c for i, c in enumerate(r)] for r in rows]
            self.run.log({key: wandb.Table(columns=columns, data=data)})

    def image(self, key: str, path: str | os.PathLike, caption: str | None = None) -> None:
        if self.run:
            import wandb

            self.run.log({key: wandb.Image(str(path), caption=caption)})

    def confusion_matrix(self, key: str, y_true, y_pred, class_names: list[str]) -> None:
        if self.run:
            import wandb

            self.run.log({key: wandb.plot.confusion_matrix(
                y_true=list(map(int, y_true)), preds=list(map(int, y_pred)), class_names=list(class_names))})

    def histogram(self, key: str, values) -> None:
        if self.run:
            import wandb

            self.run.log({key: wandb.Histogram(list(values))})

    def bar(self, key: str, labels: list[str], values: list[float], title: str) -> None:
        if self.run:
            import wandb

            t = wandb.Table(columns=["label", "value"], data=[[l, v] for l, v in zip(labels, values)])
            self.run.log({key: wandb.plot.bar(t, "label", "value", title=title)})

    def log_artifact(self, name: str, type_: str, files: Mapping[str, str | os.PathLike] | None = None,
                     metadata: Mapping[str, Any] | None = None, aliases: Iterable[str] | None = None,
                     description: str | None = None,
                     immutable_files: Mapping[str, str | os.PathLike] | None = None) -> None:
        """Mirror a stored object as a W&B artifact (offline: synced later).

        ``files`` are copied into W&B's staging area; ``immutable_files`` (the store's
        read-only, content-addressed blobs) are referenced in place, so a dataset version
        does not cost a second copy of every image.
        """
        if not self.run:
            return
        art = _artifact(name, type_, files, metadata, description, immutable_files)
        self.run.log_artifact(art, aliases=list(aliases or []))

    def use_artifact(self, ref: str, type_: str | None = None, *,
                     immutable_files: Mapping[str, str | os.PathLike] | None = None,
                     metadata: Mapping[str, Any] | None = None) -> None:
        """Record lineage to an input artifact. W&B allows it online only (``use_artifact`` raises
        offline); offline runs record their inputs in their config instead.

        With ``immutable_files`` the input is named by its content, not by a version number: W&B
        matches the files' digest to the version that holds them (local and W&B version numbers
        differ). ``ref`` is then ``NAME`` or ``NAME:anything``; without files, ``NAME:alias``.
        """
        if self.run and self.mode == "online":
            try:
                if immutable_files is not None:
                    name = ref.partition(":")[0]
                    self.run.use_artifact(_artifact(name, type_ or "dataset", None, metadata, None, immutable_files))
                else:
                    self.run.use_artifact(ref, type=type_)
            except Exception as e:  # lineage is a mirror nicety: never fail the run for it
                log.warning("W&B use_artifact(%s) failed: %s", ref, e)

    def link_model(self, path: str | os.PathLike, registered_name: str, aliases: Iterable[str],
                   artifact_name: str | None = None) -> None:
        """Link into the W&B model registry; needs a server, so online only.

        ``artifact_name`` is the model artifact the files are logged under first (W&B's default is a
        new ``run-<id>-<folder>`` artifact); the same name and files as an earlier log make no new version.
        """
        if self.run and self.mode == "online":
            try:
                self.run.link_model(str(path), registered_model_name=registered_name, name=artifact_name,
                                    aliases=list(aliases))
            except Exception as e:
                log.warning("W&B link_model(%s) failed: %s", registered_name, e)

    def alert(self, title: str, text: str, level: str = "WARN") -> None:
        if self.run and self.mode == "online":
            import wandb

            try:
                self.run.alert(title=title, text=text, level=getattr(wandb.AlertLevel, level))
            except Exception as e:
                log.warning("W&B alert failed: %s", e)

    def finish(self, exit_code: int = 0) -> None:
        if not self.run:
            return
        run_dir = self.run_dir
        self.run.finish(exit_code=exit_code)
        self.run = None
        if self.mode == "offline":
            _say(f"W&B offline {self.job_type} run saved; upload it later with: wandb sync {run_dir}")

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=1 if exc_type else 0)


def _say(line: str) -> None:
    """A line for the user: through logging where a command configured it (``-q`` silences it), else printed
    (a notebook, a script of the user's: no handler, and INFO would show nothing)."""
    if logging.getLogger().handlers:
        log.info("%s", line)
    else:
        print(line, file=sys.stderr)


def _artifact(name: str, type_: str, files: Mapping[str, str | os.PathLike] | None,
              metadata: Mapping[str, Any] | None, description: str | None,
              immutable_files: Mapping[str, str | os.PathLike] | None):
    import wandb

    art = wandb.Artifact(name, type=type_, metadata=dict(metadata or {}), description=description)
    for arcname, path in (files or {}).items():
        art.add_file(str(path), name=arcname)
    for arcname, path in (immutable_files or {}).items():
        art.add_file(str(path), name=arcname, policy="immutable")
    return art


class NotOnServer(TrackingError):
    """The run or artifact an edge names is not on the W&B server (yet): its offline run was not synced."""


class LineageApi:
    """Lineage through W&B's public API, for runs that already exist on the server (synced offline runs):
    declare an artifact version as a run's input; link a version into the Model Registry with aliases."""

    def __init__(self, api: Any = None):
        if api is None:
            wandb = _import_wandb()
            try:
                api = wandb.Api(timeout=int(_timeout("WANDB_HTTP_TIMEOUT")))
            except Exception as e:
                raise TrackingError(f"W&B API at {base_url()} failed: {_first_line(e)}",
                                    hint="check the server and key (WANDB_API_KEY, WANDB_BASE_URL)") from e
        self.api = api

    def _path(self, run_path: str) -> tuple[str, str, str]:
        entity, project, run_id = run_path.split("/", 2)
        return entity or default_entity() or self.api.default_entity, project, run_id

    def _run(self, run_path: str):
        entity, project, run_id = self._path(run_path)
        try:
            return self.api.run(f"{entity}/{project}/{run_id}")
        except Exception as e:
            raise NotOnServer(f"run {run_id} is not on {base_url()} ({_first_line(e)})") from e

    def _artifact(self, entity: str, project: str, ref: str, type_: str | None):
        try:
            return self.api.artifact(f"{entity}/{project}/{ref}", type=type_)
        except Exception as e:
            raise NotOnServer(f"artifact {ref} is not in {entity}/{project} ({_first_line(e)})") from e

    def declare_use(self, run_path: str, ref: str, type_: str) -> None:
        run = self._run(run_path)
        art = self._artifact(run.entity, run.project, ref, type_)
        try:
            run.use_artifact(art)
        except Exception as e:
            raise TrackingError(f"W&B refused {ref} as an input of run {run.id}: {_first_line(e)}") from e

    def link(self, run_path: str, ref: str, registered_name: str, aliases: Iterable[str]) -> None:
        entity, project, _ = self._path(run_path)
        art = self._artifact(entity, project, ref, None)
        try:
            art.link(f"{entity}/model-registry/{registered_name}", aliases=list(aliases))
        except Exception as e:
            raise TrackingError(f"W&B refused to link {ref} to {registered_name}: {_first_line(e)}") from e


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def in_sweep() -> bool:
    """True when this process runs as a trial of an online W&B sweep (``wandb agent`` sets the id)."""
    return bool(os.environ.get("WANDB_SWEEP_ID"))


def create_wandb_sweep(cfg: Mapping[str, Any]) -> str:
    """Register a validated sweep definition with the W&B server; returns its id."""
    wandb = _import_wandb()
    try:
        return wandb.sweep(dict(cfg), project=default_project(), entity=default_entity())
    except Exception as e:
        raise TrackingError(f"W&B sweep creation failed at {base_url()}: {e}",
                            hint="check the server and key, or create a local sweep") from e
