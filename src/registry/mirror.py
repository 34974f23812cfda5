"""The registry's W&B mirror: digest-checked publishing and the per-version ``mirrored`` state.

The local store is the system of record; W&B mirrors it. A version is ``mirrored`` once its
artifact (with its aliases of the moment) was logged; until then (a crash between commit and
publish, W&B unreachable, W&B disabled, a blob that fails its check) it stays pending and is
mirrored by the next ``register``/``register-all`` of the same bytes or by ``mirror-pending``.
Every mirror checks the stored bytes against their digests first.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator, Mapping

from src.core.errors import ConfigError, ModelError, StoreError, TrackingError
from src.core.store import sha256_bytes
from src.learning.bundles import artifact_files, check_model_bytes
from src.registry.tables import get_version, open_registry, pending_mirrors, set_mirrored
from src.tracking.journal import content_alias, extractor_artifact_name, local_alias, record_link, record_use

MIRROR_COMMAND = "python src/model_registry.py mirror-pending"


def _tracker(mode: str | None, command: str, config: Mapping[str, Any] | None = None):
    from src.tracking import Tracker

    return Tracker("model-registry", {"command": command, **dict(config or {})}, mode=mode)


@contextlib.contextmanager
def mirror_run(tracker, mode: str | None, command: str) -> Iterator[Any]:
    """The W&B run a registry ``command`` mirrors through: the caller's ``tracker``, or one opened on first
    use (and finished, with the command's exit code) for this call."""
    if tracker is not None:
        yield tracker
        return
    t = _LazyTracker(mode, command)
    try:
        yield t
    except BaseException as e:  # the W&B run fails with the command (130 after Ctrl-C), never shows finished
        t.finish(exit_code=130 if isinstance(e, KeyboardInterrupt) else 1)
        raise
    t.finish()


class _LazyTracker:
    """A registry run opened on first use: a command that changes nothing (a version registered again with
    the aliases it has) opens no W&B run at all. ``mode`` and ``enabled`` are known without opening one."""

    def __init__(self, mode: str | None, command: str):
        from src.tracking import resolve_mode

        self.mode, self._command, self._tracker = resolve_mode(mode), command, None

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def __getattr__(self, name: str) -> Any:
        if self._tracker is None:
            self._tracker = _tracker(self.mode, self._command)
        return getattr(self._tracker, name)

    def finish(self, exit_code: int = 0) -> None:
        if self._tracker is not None:
            self._tracker.finish(exit_code=exit_code)




def publish(tracker, mv, store) -> None:
    """Mirror ``mv`` to W&B, after its stored bytes pass their digest checks (never a tampered blob).

    The artifact is named after the registered model and holds the same files under the same names as
    the training run's model artifact (:func:`~src.learning.bundles.artifact_files`), so a trained model
    registered under its default name is the training run's W&B version (same digest), not a second
    copy. The local version number goes into the metadata (``local_version``), never into an alias:
    W&B numbers its versions itself and reads a ``vN`` alias as its own version index.
    """
    if not tracker.enabled:
        return
    model, extractor = verified_blobs(store, mv)
    files = artifact_files(model, extractor)
    pinned = f"{mv.name}:{local_alias(mv.version)}"
    used = extractor_ref(mv)
    if used:  # extractor -> this run -> the model version: the extractor's edge in W&B's graph
        tracker.use_artifact(used, "model")  # online; offline W&B refuses it: the journal keeps it
        record_use(store, tracker, used, "model")
    tracker.log_artifact(mv.name, "model", immutable_files=files, metadata=artifact_metadata(mv),
                         aliases=sorted(set(mv.aliases) | {local_alias(mv.version)}))
    record_link(store, tracker, pinned, mv.name, mv.aliases)  # offline: linked by sync-lineage once synced
    if tracker.mode == "online":
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            for (arcname, src), digest in zip(files.items(), (mv.digest, mv.extractor_digest)):
                data = Path(src).read_bytes()
                if sha256_bytes(data) != digest:  # changed since the check above: upload nothing more
                    raise ModelError(f"stored {arcname} of {mv.ref} changed while it was mirrored",
                                     hint="the store was tampered with; re-register the model")
                Path(d, arcname).write_bytes(data)
            tracker.link_model(d, mv.name, sorted(mv.aliases), artifact_name=mv.name)


def extractor_ref(mv) -> str | None:
    """``DATASET-feature-extractor:sha-…``, the extractor artifact the training run of ``mv`` logged; ``None``
    for a model this suite did not train (no run or dataset on record: no such artifact exists)."""
    dataset = (mv.metadata.get("dataset") or {}) if isinstance(mv.metadata.get("dataset"), dict) else {}
    name = str(dataset.get("version") or "").partition(":")[0]
    if not (mv.metadata.get("run_id") and name):
        return None
    return f"{extractor_artifact_name(name)}:{content_alias(mv.extractor_digest)}"


def artifact_metadata(mv) -> dict[str, Any]:
    """What the registry's W&B model artifact records: the training run's keys plus the local version."""
    meta = {"local_version": f"v{mv.version}", "registered_name": mv.name, "model_digest": mv.digest,
            "extractor_digest": mv.extractor_digest, "metrics": mv.metrics,
            **{k: mv.metadata.get(k) for k in ("algorithm", "run_id", "dataset", "code_version")}}
    return json.loads(json.dumps(meta, default=str))




def verified_blob(st, digest: str, what: str) -> Path:
    """The blob of ``digest`` after its bytes were hashed; a model blob must also be a skops file of trusted types."""
    p = st.blob_path(digest)
    if not p.is_file():
        raise ModelError(f"stored {what} {digest[:12]} is missing from {st.blob_root}",
                         hint="the store was edited by hand; re-register the model")
    data = p.read_bytes()
    actual = sha256_bytes(data)
    if actual != digest:
        raise ModelError(f"stored {what} fails its digest check (expected {digest[:12]}, found {actual[:12]})",
                         hint="the store was tampered with; re-register the model from a trusted file")
    if what == "model":
        check_model_bytes(data, f"stored model {digest[:12]}")
    return p


def verified_blobs(st, mv) -> tuple[Path, Path]:
    """Model and extractor blobs of ``mv``, both checked against their recorded digests."""
    return verified_blob(st, mv.digest, "model"), verified_blob(st, mv.extractor_digest, "extractor")




def publish_recorded(tracker, mv, store) -> bool:
    """:func:`publish` ``mv`` and record the outcome in its ``mirrored`` state; True when it was mirrored.

    W&B disabled sends nothing, so the version is left (or becomes) pending; a failed mirror leaves it
    pending and is one line (a digest failure stays the ModelError it is).
    """
    if not tracker.enabled:
        _record(store, mv, False)
        return False
    try:
        publish(tracker, mv, store)
    except BaseException as e:
        _record(store, mv, False)
        if isinstance(e, (TrackingError, OSError)):
            why = e.args[0] if isinstance(e, TrackingError) else f"{e.strerror or e}"
            raise TrackingError(f"{mv.ref} is stored locally, but mirroring it to W&B failed: {why}",
                                hint=f"it is mirrored again on the next register of the same file, or with "
                                     f"`{MIRROR_COMMAND}`") from e
        raise
    _record(store, mv, True)
    return True


def _record(store, mv, mirrored: bool) -> None:
    if not store.writable:
        return
    with store.transaction() as con:
        set_mirrored(con, mv.name, mv.version, mirrored)


def mirror_pending(name: str | None = None, *, store: Any = None, wandb_mode: str | None = None) -> list[str]:
    """Mirror every registry version whose W&B mirror failed or never ran; returns the refs mirrored."""
    from src.core.store import validate_name
    from src.tracking import resolve_mode

    if name is not None:
        validate_name(name, "model name")
    mode = resolve_mode(wandb_mode)
    if mode == "disabled":
        raise ConfigError("mirror-pending needs W&B: the mode is 'disabled'",
                          hint="pass `wandb_mode=offline` (then `wandb sync`) or online", params=("wandb_mode",))
    st = open_registry(store)
    st.require_writable()
    with st.read() as con:
        if name is not None and not con.execute("SELECT 1 FROM registry_versions WHERE name = ? LIMIT 1",
                                                (name,)).fetchone():
            raise StoreError(f"no model named {name!r} in the registry", hint="see `list` without a name")
        todo = [get_version(con, n, v) for n, v in pending_mirrors(con, name)]
    done: list[str] = []
    if not todo:
        return done
    with mirror_run(None, mode, "mirror-pending") as t:
        for mv in todo:
            publish_recorded(t, mv, st)
            done.append(mv.ref)
    return done


def use_registered_model(tracker, store, digest: str, ref: str | None = None) -> str | None:
    """Declare the registered version a run serves (its model file's ``digest``) as the run's input: a
    monitoring run's edge from the model in W&B. ``ref`` (``NAME:ALIAS``) picks the name where one file is
    registered under several. Online in-run; offline a pending edge of the lineage journal. Returns the
    W&B reference, ``None`` when the file is not registered (then no registry artifact exists to use)."""
    if not tracker.enabled:
        return None
    st = open_registry(store)
    with st.read() as con:
        rows = con.execute("SELECT name, version FROM registry_versions WHERE digest = ? ORDER BY created_at",
                           (digest,)).fetchall()
    wanted = (ref or "").partition(":")[0]
    rows = [r for r in rows if r["name"] == wanted] or rows
    if not rows:
        return None
    used = f"{rows[0]['name']}:{local_alias(rows[0]['version'])}"
    tracker.use_artifact(used, "model")
    record_use(st, tracker, used, "model")
    return used
