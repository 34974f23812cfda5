"""Registry read latency with many versions: `list` and digest-checked load (target <= 100 ms each).

    python benchmarks/registry_bench.py [--versions 1000] [--repeat 5]

Registers N small bundles under one name in a temporary store (through the public API,
W&B disabled), then times ``list_models`` (all versions, aliases, key metrics), the CLI
``list --json``, and loading ``NAME:production`` (alias resolution, both digest checks,
the skops load with its trusted-type check), plus the full ``load_model_from_registry``
(which also builds the torch extractor) when ``src.predictor`` is importable. Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def _timed(fn, repeat: int) -> float:
    """Median wall time in milliseconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def _real_extractor(path: Path) -> bool:
    """A loadable (random-weight) extractor, so the predictor path can be timed too."""
    try:
        import src.predictor  # noqa: F401
        from src.features.backbone import Preprocessing, create_model, save_extractor
    except ImportError:
        return False
    save_extractor(create_model(num_classes=0, pretrained=False), path, Preprocessing())
    return True


def build(store: Path, work: Path, n: int) -> float:
    from sklearn.datasets import make_blobs
    from sklearn.linear_model import LogisticRegression

    from src import model_registry as mr
    from src.learning.bundles import save_model_bundle
    from src.core.store import sha256_file

    ext = work / "feature_extractor.pth"
    if not _real_extractor(ext):
        ext.write_bytes(os.urandom(1 << 16))
    X, y = make_blobs(n_samples=60, centers=3, n_features=16, random_state=0)
    clf = LogisticRegression(max_iter=200).fit(X, y)
    t0 = time.perf_counter()
    for i in range(n):
        path = work / f"v{i}_model.skops"
        save_model_bundle(path, {"algorithm": "label_spreading", "classifier": clf, "class_names": ["a", "b", "c"],
                                 "extractor_digest": sha256_file(ext), "preprocessing": {}, "seed": i})
        acc = 0.5 + 0.4 * i / n
        mr.register_model(path, "bench-classifier", {"accuracy": acc, "f1": acc}, ["production"] if i % 100 == 0
                          else None, store=str(store), wandb_mode="disabled")
        path.unlink()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from src import model_registry as mr

    with tempfile.TemporaryDirectory() as tmp:
        store, work = Path(tmp, "store"), Path(tmp, "work")
        work.mkdir()
        build_s = build(store, work, args.versions)

        def cli_list() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                assert mr.main(["list", "--json", "--store", str(store), "-q"]) == 0

        with_predictor = _real_extractor(work / "probe.pth")
        listed = mr.list_models(store=str(store))
        result = {
            "versions": len(listed[0]["versions"]),
            "register_ms_per_version": round(build_s * 1000 / args.versions, 2),
            "list_models_ms": _timed(lambda: mr.list_models(store=str(store)), args.repeat),
            "cli_list_json_ms": _timed(cli_list, args.repeat),
            "compare_all_ms": _timed(lambda: mr.compare_models(["bench-classifier"], store=str(store)), args.repeat),
            # resolve alias + verify both blob digests + load the skops classifier bundle
            "load_ms": _timed(lambda: mr.load_registered_bundle("bench-classifier", "production",
                                                                store=str(store)), args.repeat),
            "target_ms": 100,
        }
        if with_predictor:  # plus building the torch extractor: dominated by torch, not the registry
            result["load_model_from_registry_ms"] = _timed(
                lambda: mr.load_model_from_registry("bench-classifier", "production", store=str(store)), args.repeat)
    result["pass"] = result["list_models_ms"] <= 100 and result["load_ms"] <= 100
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
