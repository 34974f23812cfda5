"""Read a W&B run file (``run-*.wandb``) back, to check what was really logged offline.

The file is a LevelDB-style log (7-byte header, 32 KiB blocks, records of
crc32 | length | type | data) of ``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import glob
import json
import struct
import time
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, buf = HEADER, b""
    while pos + 7 <= len(data):
        left = BLOCK - (pos % BLOCK)
        if left < 7:
            pos += left
            continue
        _crc, length, rtype = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if rtype == 0 and length == 0:
            continue
        if rtype == FULL:
            yield chunk
        elif rtype == FIRST:
            buf = chunk
        elif rtype == MIDDLE:
            buf += chunk
        elif rtype == LAST:
            yield buf + chunk
            buf = b""


def _has_exit(path: Path, pb) -> bool:
    try:
        for raw in _records(path):
            r = pb.Record()
            r.ParseFromString(raw)
            if r.WhichOneof("record_type") == "exit":
                return True
    except Exception:  # a record still being written
        pass
    return False


def read_run(run_dir: str | Path) -> dict:
    """``{"history_keys": set, "summary": dict, "config": dict, "artifacts": [names],
    "metrics": {name or glob: step_metric}, "artifact_files": {name: [paths in its manifest]},
    "artifact_info": {name: {"type", "digest", "aliases", "metadata", "description"}},
    "run": {"id", "project", "entity", "job_type", "start" (ns)}, "exit_code": int,
    "record_kinds": {kind: count}}`` (the last logged version of each name)."""
    from wandb.proto import wandb_internal_pb2 as pb

    files = glob.glob(str(Path(run_dir) / "run-*.wandb"))
    assert files, f"no run-*.wandb file in {run_dir}"
    # wandb's writer may still be flushing the file after run.finish() returned (seen under load:
    # config on disk, history not yet): wait for the run's closing `exit` record.
    deadline = time.monotonic() + 60
    while not _has_exit(Path(files[0]), pb) and time.monotonic() < deadline:
        time.sleep(0.1)
    out = {"history_keys": set(), "summary": {}, "config": {}, "artifacts": [], "metrics": {}, "artifact_files": {},
           "artifact_info": {}, "run": {}, "exit_code": None, "record_kinds": {}}
    for raw in _records(Path(files[0])):
        r = pb.Record()
        r.ParseFromString(raw)
        kind = r.WhichOneof("record_type")
        out["record_kinds"][kind] = out["record_kinds"].get(kind, 0) + 1
        if kind == "exit":
            out["exit_code"] = r.exit.exit_code
        elif kind == "run":
            out["run"] = {"id": r.run.run_id, "project": r.run.project, "entity": r.run.entity,
                          "job_type": r.run.job_type, "start": r.run.start_time.ToNanoseconds()}
        elif kind == "history":
            out["history_keys"].update(i.key or "/".join(i.nested_key) for i in r.history.item)
        elif kind == "summary":
            for i in r.summary.update:
                out["summary"][i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
        elif kind == "config":
            for i in r.config.update:
                out["config"][i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
        elif kind == "artifact":
            out["artifacts"].append(r.artifact.name)
            out["artifact_files"][r.artifact.name] = [c.path for c in r.artifact.manifest.contents]
            a = r.artifact
            out["artifact_info"][a.name] = {"type": a.type, "digest": a.digest, "aliases": list(a.aliases),
                                            "metadata": json.loads(a.metadata) if a.metadata else {},
                                            "description": a.description}
        elif kind == "metric":
            out["metrics"][r.metric.name or r.metric.glob_name] = r.metric.step_metric
    return out
