"""End-to-end dataset-versioning scenario on a generated 3,000-image dataset; prints JSON.

v1; then 5 files added, 3 removed, 2 moved to another class, 1 overwritten in place,
1 train image copied into test, 1 file truncated; v2. Checks that the diff reports exactly
those changes, the quality check names the truncated file and the leak, restoring v1
reproduces the original tree byte for byte, and v2 stored only the new bytes.

    python benchmarks/dataset_scenario.py [--n 3000] [--work /tmp/dv_scenario] [--wandb-mode disabled]
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import os
import shutil
import time
from pathlib import Path


def _img(seed: int, size: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    noise = rng.integers(-12, 13, (size, size, 3))
    a = np.asarray(small.resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16) + noise
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def generate(root: Path, n: int, classes: int = 10, size: int = 64) -> None:
    per = n // classes
    k = 0
    for c in range(classes):
        for i in range(per):
            split = "test" if i % 5 == 0 else "train"
            d = root / split / f"class_{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            _img(k, size).save(d / f"img_{i:04d}.jpg", quality=85)
            k += 1


def blob_bytes(store_root: Path) -> int:
    return sum(p.stat().st_size for p in (store_root / "blobs").rglob("*") if p.is_file())


def mutate(ds: Path) -> dict:
    """The scenario's edits; returns the expected diff."""
    added = [f"train/class_00/new_{i}.jpg" for i in range(5)]
    for i, rel in enumerate(added):
        _img(10_000 + i, 64).save(ds / rel, quality=85)
    removed = ["train/class_01/img_0001.jpg", "train/class_01/img_0002.jpg", "test/class_02/img_0005.jpg"]
    for rel in removed:
        (ds / rel).unlink()
    relabeled = [("train/class_03/img_0001.jpg", "train/class_04/img_0001_from3.jpg"),
                 ("train/class_05/img_0002.jpg", "train/class_06/img_0002_from5.jpg")]
    for a, b in relabeled:
        os.rename(ds / a, ds / b)
    overwritten = "train/class_07/img_0003.jpg"
    _img(20_000, 64).save(ds / overwritten, quality=85)  # in place, same inode
    leak_src, leak_dst = "train/class_08/img_0001.jpg", "test/class_08/leaked_img_0001.jpg"
    shutil.copyfile(ds / leak_src, ds / leak_dst)
    truncated = "train/class_09/img_0004.jpg"
    data = (ds / truncated).read_bytes()
    with open(ds / truncated, "r+b") as f:  # in place
        f.truncate(len(data) // 2)
    return {"added": sorted(added + [leak_dst]), "removed": sorted(removed),
            "modified": sorted([overwritten, truncated]),
            "relabeled": sorted(b for _, b in relabeled), "truncated": truncated, "leak": [leak_src, leak_dst]}


def sha_throughput(ds: Path) -> float:
    files = [p for p in ds.rglob("*") if p.is_file()]
    t0 = time.perf_counter()
    total = 0
    for p in files:
        data = p.read_bytes()
        hashlib.sha256(data).digest()
        total += len(data)
    return total / 1e6 / (time.perf_counter() - t0)


def run(n: int, work: Path, mode: str) -> dict:
    if work.exists():
        shutil.rmtree(work)
    ds, pristine, store_dir = work / "ds", work / "pristine", work / "store"
    os.environ["MLOPS_STORE"] = str(store_dir)
    os.environ.setdefault("WANDB_DIR", str(work / "wandb"))
    from src import data_versioning as dv
    from src.data.quality import quality_check

    t = time.perf_counter()
    generate(ds, n)
    gen_s = time.perf_counter() - t
    shutil.copytree(ds, pristine)
    fig: dict = {"images": sum(1 for p in ds.rglob("*.jpg")),
                 "dataset_mb": round(sum(p.stat().st_size for p in ds.rglob("*.jpg")) / 1e6, 2),
                 "generate_s": round(gen_s, 2), "wandb_mode": mode}

    t = time.perf_counter()
    v1 = dv.create_dataset_artifact(ds, "scenario", wandb_mode=mode)
    fig["v1"] = {"version": v1["version"], "seconds": round(time.perf_counter() - t, 2), "scan": v1["scan"],
                 "hash_decode_mb_per_s": round(v1["scan"]["bytes_hashed"] / 1e6 / v1["scan"]["seconds"], 1),
                 "hash_decode_files_per_s": round(v1["scan"]["hashed"] / v1["scan"]["seconds"])}
    fig["sha256_only_mb_per_s"] = round(sha_throughput(ds), 1)
    store_after_v1 = blob_bytes(store_dir)

    t = time.perf_counter()
    same = dv.create_dataset_artifact(ds, "scenario", wandb_mode=mode)
    fig["reversion_unchanged"] = {"seconds": round(time.perf_counter() - t, 3), "created": same["created"],
                                  "equals": same.get("equals"), "hashed": same["scan"]["hashed"]}

    expected = mutate(ds)
    t = time.perf_counter()
    v2 = dv.create_dataset_artifact(ds, "scenario", wandb_mode=mode)
    fig["v2"] = {"version": v2["version"], "seconds": round(time.perf_counter() - t, 2), "scan": v2["scan"],
                 "new_blobs": v2["new_blobs"]}
    new_contents = {hashlib.sha256((ds / p).read_bytes()).hexdigest(): (ds / p).stat().st_size
                    for p in expected["added"] + expected["modified"] if p != expected["leak"][1]}
    fig["store"] = {"blob_bytes_after_v1": store_after_v1, "blob_bytes_added_by_v2": blob_bytes(store_dir) - store_after_v1,
                    "bytes_of_new_contents": sum(new_contents.values())}
    fig["store"]["v2_stored_only_new_bytes"] = fig["store"]["blob_bytes_added_by_v2"] == fig["store"]["bytes_of_new_contents"]

    d = dv.diff_versions("scenario", "v1", "v2")
    fig["diff"] = {"counts": d["counts"], "class_changes": d["class_changes"],
                   "matches_expected": (d["added"] == expected["added"] and d["removed"] == expected["removed"]
                                        and d["modified"] == expected["modified"]
                                        and sorted(r["to"] for r in d["relabeled"]) == expected["relabeled"]
                                        and not d["moved"])}

    t = time.perf_counter()
    rep = quality_check(ds, store=dv._store(None))
    kinds = {f["kind"]: f["paths"] for f in rep["findings"]}
    fig["quality"] = {"seconds": round(time.perf_counter() - t, 2), "counts": rep["counts"],
                      "names_truncated": kinds.get("corrupt") == [expected["truncated"]],
                      "names_leak": kinds.get("leakage") == expected["leak"]}

    t = time.perf_counter()
    r = dv.restore_version("scenario", "v1", work / "restored")
    cmp_ok = _same_tree(pristine, work / "restored")
    fig["restore_v1"] = {"seconds": round(time.perf_counter() - t, 2), "files": r["files"], "identical": cmp_ok}
    return fig


def _same_tree(a: Path, b: Path) -> bool:
    fa = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    return fa == fb and all(filecmp.cmp(a / f, b / f, shallow=False) for f in fa)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--work", type=Path, default=Path("/tmp/dv_scenario"))
    p.add_argument("--wandb-mode", default="disabled", choices=("online", "offline", "disabled"))
    a = p.parse_args()
    print(json.dumps(run(a.n, a.work, a.wandb_mode), indent=2))


if __name__ == "__main__":
    main()
