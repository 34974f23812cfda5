"""Model files that cannot run code: bundles saved with ``skops.io``, loaded with a fixed list of trusted types.

A model file (``models/{algorithm}_model.skops``) holds the *bundle*, a dict with the
fitted classifier and everything inference needs: class names, the extractor digest,
preprocessing, metrics, config, seed, dataset record and drift reference statistics.

Loading never unpickles. ``skops.io`` rebuilds only the types it trusts by default
(builtins, numpy, scipy, scikit-learn estimators) plus :data:`TRUSTED_TYPES`; a file that
names any other type is refused before an object is built, whatever digest sits beside
it. The ``.sha256`` sidecar (and the registry's and results record's digests) still guard
against a swapped or damaged file; they are no trust anchor against code, the format is.
Old pickle bundles (``*_model.pkl``) are refused unopened; ``model_registry.py convert
--i-trust-these-files`` turns them into ``.skops`` files once (see :mod:`src.learning.legacy`).

A skops file is a zip, and skops inflates every member it names (``schema.json`` whole, then
``json.loads``): a 1 MB zip holding a 1 GB ``schema.json`` took 21.8 s and 2.8 GB before it was
refused. So the zip's central directory is checked first (:func:`check_zip_limits`: member count,
declared sizes, expansion ratio, a cap on ``schema.json``), from the directory alone, in
milliseconds (the bomb: 8 ms, 24 MB). A deflated member that lies about its size would still be
inflated whole by ``zipfile``'s one-shot read, so such members are read in bounded steps and
re-packed stored before skops sees them. The suite writes bundles stored, not deflated (ratio 1.0,
passed through untouched; the ``schema.json`` of a 4-class bundle is 118 KB).

Measured (skops 0.16.0, scikit-learn 1.9.1): the three algorithms' pipelines round-trip;
label spreading/propagation add the two scikit-learn internals below when their k-NN graph
uses a KD-tree (fewer than 16 feature dimensions), and the project's own
:class:`~src.learning.semi_supervised.InductiveGraphClassifier` must be listed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from src.core.errors import ModelError
from src.core.paths import EXTRACTOR_FILE
from src.core.store import sha256_bytes

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "grocery-mlops/model-v1"
REQUIRED_KEYS = ("format", "algorithm", "classifier", "class_names", "extractor_digest", "preprocessing")
MODEL_SUFFIX = ".skops"
LEGACY_SUFFIX = ".pkl"
# Beyond skops' defaults, and fixed: never computed from the file being loaded.
TRUSTED_TYPES = (
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
    "src.learning.semi_supervised.InductiveGraphClassifier",
)
ARTIFACT_MODEL_FILE = f"model{MODEL_SUFFIX}"
CONVERT_COMMAND = "python src/model_registry.py convert --i-trust-these-files"
# Zip limits, checked on the central directory before skops reads a byte of any member.
MAX_MEMBERS = 10_000              # a bundle has one member per array, about 20
MAX_SCHEMA_BYTES = 64 << 20       # schema.json is parsed whole; it grows with the bundle's structure, not the data
MAX_RATIO = 100                   # declared size / compressed size of a member over RATIO_FLOOR bytes
RATIO_FLOOR = 1 << 20
READ_CHUNK = 1 << 20              # a deflated member is inflated at most this much per read


def sidecar(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".sha256")


def model_file_name(algorithm: str) -> str:
    return f"{algorithm}_model{MODEL_SUFFIX}"


def model_name_for(algorithm: str) -> str:
    """``label_spreading`` → ``label-spreading-classifier``: the registry name and the W&B artifact name."""
    return f"{algorithm.replace('_', '-')}-classifier"


def artifact_files(model: str | os.PathLike, extractor: str | os.PathLike) -> dict[str, Path]:
    """The files of a W&B ``model`` artifact, named the same wherever it is logged (the training run,
    the registry's runs): W&B's digest covers names and contents, so the same bytes under the same
    artifact name are one W&B version, not two."""
    return {ARTIFACT_MODEL_FILE: Path(model), EXTRACTOR_FILE: Path(extractor)}


def is_pickle(data: bytes) -> bool:
    """Pickle protocol 2+ starts with PROTO (0x80); what the suite wrote before skops."""
    return data[:1] == b"\x80"


def convert_hint(path: Path | None = None) -> str:
    where = f" --models-dir {path.parent}" if path is not None and path.suffix == LEGACY_SUFFIX else ""
    return f"if you trust it, convert it once: {CONVERT_COMMAND}{where}"


def resolve_model_path(path: str | os.PathLike) -> Path:
    """The model file ``path`` means. The original guide's commands name ``*_model.pkl``: where the ``.skops``
    sibling exists it is used, with one notice line (the ``.pkl`` is never opened); a ``.pkl`` with no sibling
    that does not exist either is one error naming the ``.skops`` file and ``convert``."""
    p = Path(path)
    if p.suffix != LEGACY_SUFFIX:
        return p
    new = p.with_suffix(MODEL_SUFFIX)
    if new.is_file():
        log.warning("using %s for %s: models are %s files now (the .pkl is not opened)", new, p.name, MODEL_SUFFIX)
        return new
    if not p.exists():
        raise ModelError(f"model file {p} does not exist, nor does {new}",
                         hint=f"models are {MODEL_SUFFIX} files now: train first, or turn old pickles into "
                              f"{MODEL_SUFFIX} with {CONVERT_COMMAND} --models-dir {p.parent}")
    return p  # an old pickle alone: load_model_bundle refuses it unopened, with the convert hint


def untrusted_types(data: bytes, where: str | os.PathLike) -> list[str]:
    """Types in a skops file that are neither trusted by skops nor in :data:`TRUSTED_TYPES` (builds nothing)."""
    from skops.io import get_untrusted_types

    try:
        found = get_untrusted_types(data=data)
    except Exception as e:  # a damaged zip or schema can fail in many ways; nothing was built
        raise ModelError(f"{where} is not a readable model file ({type(e).__name__})",
                         hint=f"pass a models/*_model{MODEL_SUFFIX} written by train_with_wandb") from e
    return sorted(set(found) - set(TRUSTED_TYPES))


def check_zip_limits(data: bytes, where: str | os.PathLike) -> bytes:
    """Refuse a zip (a skops file) whose central directory declares more than a model could hold, and
    return bytes skops may read without inflating more than that.

    Refused from the directory alone: too many members, a member expanding over :data:`MAX_RATIO`
    times, more in all than ``MAX_RATIO`` times the file, a ``schema.json`` over
    :data:`MAX_SCHEMA_BYTES`, a compression other than stored or deflated. A zip of stored members
    (what the suite writes) is returned as it is: :mod:`zipfile` reads a stored member within its
    declared size. A deflated member is not handed to skops: ``zipfile``'s whole-member read
    inflates everything its stream holds before cutting it at the declared size (a member declaring
    1,000 bytes inflated 512 MB, 10 s, 1.8 GB). It is read 1 MiB at a time, never past its declared
    size, CRC-checked, and the members are re-packed stored."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as e:
        raise ModelError(f"{where} is not a readable model file ({type(e).__name__})",
                         hint=f"pass a models/*_model{MODEL_SUFFIX} written by train_with_wandb") from e
    _check_directory(members, len(data), where)
    if all(m.compress_type == zipfile.ZIP_STORED for m in members):
        return data
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as z, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as repacked:
        for m in members:
            repacked.writestr(m.filename, _bounded_read(z, m, where))
    return out.getvalue()


def _check_directory(members: list, size: int, where: str | os.PathLike) -> None:
    import zipfile

    hint = "a zip bomb or a damaged file; it was not unpacked: retrain or re-fetch it"
    if len(members) > MAX_MEMBERS:
        raise ModelError(f"refusing to load {where}: it holds {len(members):,} files (at most {MAX_MEMBERS:,})",
                         hint=hint)
    total = 0
    for m in members:
        total += m.file_size
        if m.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelError(f"refusing to load {where}: its member {m.filename[:80]!r} uses compression "
                             f"{m.compress_type} (model files are stored or deflated)", hint=hint)
        stored_mismatch = m.compress_type == zipfile.ZIP_STORED and m.file_size != m.compress_size
        ratio = m.file_size / max(m.compress_size, 1)
        if stored_mismatch or (m.file_size > RATIO_FLOOR and ratio > MAX_RATIO):
            raise ModelError(f"refusing to load {where}: its member {m.filename[:80]!r} would expand from "
                             f"{m.compress_size:,} to {m.file_size:,} bytes", hint=hint)
        if m.filename == "schema.json" and m.file_size > MAX_SCHEMA_BYTES:
            raise ModelError(f"refusing to load {where}: its schema.json would be {m.file_size:,} bytes "
                             f"(at most {MAX_SCHEMA_BYTES:,})", hint=hint)
    if total > MAX_RATIO * size + RATIO_FLOOR:
        raise ModelError(f"refusing to load {where}: its members would expand from {size:,} to "
                         f"{total:,} bytes", hint=hint)


def _bounded_read(z, member, where: str | os.PathLike) -> bytes:
    """A member's bytes read 1 MiB at a time (each read inflates at most that much), stopping at its
    declared size; :mod:`zipfile` checks the CRC there."""
    import zipfile
    import zlib

    buf = bytearray()
    try:
        with z.open(member) as f:
            while chunk := f.read(READ_CHUNK):
                buf += chunk
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        raise ModelError(f"{where} is not a readable model file ({type(e).__name__} in {member.filename[:80]!r})",
                         hint=f"pass a models/*_model{MODEL_SUFFIX} written by train_with_wandb") from e
    return bytes(buf)


def check_model_bytes(data: bytes, where: str | os.PathLike, path: Path | None = None) -> bytes:
    """Refuse, without building anything, bytes that are not a skops model file of trusted types only;
    returns the bytes to hand to skops (see :func:`check_zip_limits`).

    Every load path comes through here (a model file, a registry blob, a W&B mirror), so the zip
    limits are checked before skops reads any member, and skops only ever reads stored members."""
    if is_pickle(data):
        raise ModelError(f"{where} is an old pickle model file, which could run code when loaded; it was not opened",
                         hint=convert_hint(path))
    if not data.startswith(b"PK\x03\x04"):
        raise ModelError(f"{where} is not a model file (not a skops file)",
                         hint=f"pass a models/*_model{MODEL_SUFFIX} file")
    data = check_zip_limits(data, where)
    bad = untrusted_types(data, where)
    if bad:
        raise ModelError(f"refusing to load {where}: it contains types that could run code: {', '.join(bad)}",
                         hint="only files written by train_with_wandb load; retrain or re-fetch it")
    return data


def bundle_bytes(bundle: dict[str, Any]) -> bytes:
    """A complete bundle as skops bytes; refuses one that would not load again."""
    from skops.io import dumps

    bundle = {"format": BUNDLE_FORMAT, **{k: v for k, v in bundle.items() if k != "_digest"}}
    missing = [k for k in REQUIRED_KEYS if k not in bundle]
    if missing:
        raise ValueError(f"model bundle lacks {missing}")
    data = dumps(bundle)  # stored, not deflated: 8 % smaller for 20× the time on float32 features
    bad = untrusted_types(data, "the bundle")
    if bad:
        raise ValueError(f"model bundle holds types outside the trusted list: {', '.join(bad)} "
                         "(add them to src.learning.bundles.TRUSTED_TYPES only if they cannot run code)")
    return data


def write_model_file(path: str | os.PathLike, data: bytes) -> str:
    """Write model bytes and their ``.sha256`` sidecar as a pair; returns the digest.

    Both go to temporary files first and are renamed into place only once both are written, so a
    full disk leaves the previous pair as it was (a model replaced beside a half-written sidecar
    would fail its digest check) and no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = sha256_bytes(data)
    tmps: list[str] = []
    try:
        for content in (data, f"{digest}\n".encode()):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            tmps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
        os.replace(tmps[0], path)
        os.replace(tmps[1], sidecar(path))
    finally:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return digest


def save_model_bundle(path: str | os.PathLike, bundle: dict[str, Any]) -> str:
    """Write ``bundle`` to ``path`` (a ``.skops`` file) atomically with its sidecar; returns the digest."""
    if Path(path).suffix != MODEL_SUFFIX:
        raise ValueError(f"model files end in {MODEL_SUFFIX}, got {path}")
    return write_model_file(path, bundle_bytes(bundle))


def load_model_bundle(path: str | os.PathLike, expected_digest: str | None = None) -> dict[str, Any]:
    """Load a bundle: digest check (``expected_digest`` or the sidecar), trusted types only, then build it."""
    path = resolve_model_path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist", hint="train first, or check the model path")
    if expected_digest is None and sidecar(path).exists():
        expected_digest = sidecar(path).read_text().strip()
    data = path.read_bytes()  # hashed and loaded from the same bytes
    actual = sha256_bytes(data)
    if expected_digest and actual != expected_digest:
        raise ModelError(f"model file {path} fails its digest check (expected {expected_digest[:12]}, "
                         f"found {actual[:12]})", hint="the file was modified or swapped; retrain or re-fetch it")
    safe = check_model_bytes(data, path, path)
    from skops.io import loads  # after the checks: importing skops (and scikit-learn) takes seconds

    try:
        bundle = loads(safe, trusted=list(TRUSTED_TYPES))
    except Exception as e:  # a crafted or damaged file; its types were all trusted, so nothing foreign ran
        raise ModelError(f"{path} is not a readable model file ({type(e).__name__})",
                         hint=f"pass a models/*_model{MODEL_SUFFIX} written by train_with_wandb") from e
    return validate_bundle(bundle, path) | {"_digest": actual}


def validate_bundle(bundle: Any, where: str | os.PathLike) -> dict[str, Any]:
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise ModelError(f"{where} is not a grocery-mlops model bundle",
                         hint=f"pass a models/*_model{MODEL_SUFFIX} file")
    missing = [k for k in REQUIRED_KEYS if k not in bundle]
    if missing:
        raise ModelError(f"{where} is an incomplete model bundle (no {', '.join(missing)})",
                         hint="retrain it with train_with_wandb")
    return bundle


__all__ = ["BUNDLE_FORMAT", "CONVERT_COMMAND", "LEGACY_SUFFIX", "MODEL_SUFFIX", "TRUSTED_TYPES", "bundle_bytes",
           "check_model_bytes", "check_zip_limits", "is_pickle", "load_model_bundle", "model_file_name",
           "resolve_model_path",
           "save_model_bundle", "sidecar", "untrusted_types", "validate_bundle", "write_model_file"]
