"""Performance figures of the suite in one run, one JSON document on stdout.

    python benchmarks/bench.py [--only extraction,monitor,...] [--quick]

Sections: extraction, monitor, training, training_20k, semi_supervised, hashing, registry, drift.
Each section runs in its own subprocess (``--child``) so its peak RSS is its own;
the machine's load average is recorded next to every figure (numbers from a shared
machine are noisy). Progress goes to stderr, the JSON to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # src is importable through the editable install

SECTIONS = ("extraction", "guard", "monitor", "training", "training_20k", "semi_supervised", "hashing", "registry",
            "drift")
TARGETS = {"extraction_img_s": 250, "extraction_speedup": 8, "extraction_int8_img_s": 250,
           "extraction_int8_speedup": 8, "default_speedup": 20, "monitor_p50_ms_no_decode": 10,
           "warm_speedup": 5, "registry_ms": 100, "peak_20k_gb": 4}


def _log(msg: str) -> None:
    print(f"[benchmark] {msg}", file=sys.stderr, flush=True)


def _rss_mb(who=resource.RUSAGE_SELF) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # Linux: KiB


def _pct(values, q: float) -> float:
    v = sorted(values)
    return round(v[min(len(v) - 1, round(q * (len(v) - 1)))], 3)


def _jpegs(root: Path, n: int, size: int = 128) -> list[Path]:
    from src.data.synth import generate_dataset

    per = max(1, n // 8)
    generate_dataset(root, n_classes=8, train_per_class=per, test_per_class=1, image_size=size, seed=0)
    return sorted((root / "train").rglob("*.jpg"))[:n]


# -- sections ------------------------------------------------------------------------------
def bench_extraction(tmp: Path, quick: bool) -> dict:
    """Project path (threaded decode + ORT via features.extract) vs ResNet50 eager with full decode."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from src.features.backbone import Preprocessing, create_model, save_extractor
    from src.features.runtimes import load_runtime
    from src.features.extraction import load_batch
    from src.core.images import open_image
    from src.core.store import Store, sha256_file

    paths = _jpegs(tmp / "imgs", 128 if quick else 512)
    ext_path = tmp / "feature_extractor.pth"
    save_extractor(create_model(num_classes=0, pretrained=True), ext_path, Preprocessing.for_size(224))
    digest = sha256_file(ext_path)
    store = Store(tmp / "store")
    ext, export_s, fp32, project = _timed_extraction("onnx", ext_path, digest, store, paths)

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        t0 = time.perf_counter()
        batches = [load_batch(paths[i:i + 32], ext.preprocessing, pool) for i in range(0, len(paths), 32)]
        decode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for b in batches:
        ext(b)
    infer_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in paths[:64]:
        ext.preprocessing(open_image(p))  # no draft, single thread
    decode_1t_ms = (time.perf_counter() - t0) / 64 * 1000
    torch_ext = load_runtime(ext_path, digest, runtime="torch")
    n_t = 64 if quick else 128
    torch_ext(batches[0][:16])
    t0 = time.perf_counter()
    for i in range(0, n_t, 32):
        torch_ext(np.concatenate(batches)[i:i + 32])
    torch_eager = n_t / (time.perf_counter() - t0)

    int8 = _int8_extraction(ext_path, digest, store, paths, batches, fp32)
    usual = _usual_approach(paths[:32 if quick else 64])
    ceiling = _compute_ceiling(project, len(paths) / infer_s)
    int8["int8_speedup_vs_usual"] = round(int8["int8_project_img_s"] / usual, 1)
    default = _default_path(ext_path, digest, store, paths, fp32)
    default["default_speedup_vs_usual"] = round(default["default_img_s"] / usual, 1)
    int8.update(default)
    return {**ceiling, **int8, "images": len(paths), "image_px": 128, "input": 224,
            "onnx_export_s": round(export_s, 2),
            "project_img_s": round(project, 1), "usual_resnet50_img_s": round(usual, 1),
            "speedup_vs_usual": round(project / usual, 1),
            "decode_img_s_threaded": round(len(paths) / decode_s, 1),
            "decode_ms_per_img_single_thread": round(decode_1t_ms, 2),
            "ort_inference_img_s": round(len(paths) / infer_s, 1),
            "torch_eager_efficientnet_img_s": round(torch_eager, 1),
            "decode_share_if_serial": round(decode_s / (decode_s + infer_s), 2)}


def _timed_extraction(runtime: str, ext_path: Path, digest: str, store, paths: list[Path]):
    """(extractor, load seconds, features, images/s) of ``features.extract`` on ``runtime``, after a warm-up."""
    from src.features.runtimes import load_runtime
    from src.features.extraction import extract

    t0 = time.perf_counter()
    ext = load_runtime(ext_path, digest, runtime=runtime, store=store)
    load_s = time.perf_counter() - t0
    extract(ext, paths[:32], progress=False)  # warm-up
    t0 = time.perf_counter()
    feats = extract(ext, paths, batch_size=32, progress=False)
    return ext, load_s, feats, len(paths) / (time.perf_counter() - t0)


def _int8_extraction(ext_path: Path, digest: str, store, paths: list[Path], batches: list, fp32) -> dict:
    """The opt-in ``onnx-int8`` runtime on the same images: speed, and how far its features move."""
    import numpy as np

    q, quantize_s, feats, project = _timed_extraction("onnx-int8", ext_path, digest, store, paths)
    t0 = time.perf_counter()
    for b in batches:
        q(b)
    infer = len(paths) / (time.perf_counter() - t0)
    cos = (feats * fp32).sum(1) / (np.linalg.norm(feats, axis=1) * np.linalg.norm(fp32, axis=1))
    return {"int8_quantize_s": round(quantize_s, 2), "int8_project_img_s": round(project, 1),
            "int8_ort_inference_img_s": round(infer, 1),
            "int8_cosine_to_float32_mean": round(float(cos.mean()), 4),
            "int8_cosine_to_float32_min": round(float(cos.min()), 4)}


def _default_path(ext_path: Path, digest: str, store, paths: list[Path], fp32) -> dict:
    """What training uses by default where the guard proves int8 harmless: int8 calibrated on a seeded
    64-image sample of the user's own images (here: these images), extracted through ``features.extract``."""
    import numpy as np

    from src.features.extraction import extract
    from src.features.int8_calibration import calibrate_int8, calibration_sample

    idx = calibration_sample(np.zeros(len(paths), dtype=int), np.zeros(len(paths), dtype=bool), seed=0)
    t0 = time.perf_counter()
    q = calibrate_int8(ext_path, digest, [paths[i] for i in idx], [str(paths[i]) for i in idx], store)
    calibrate_s = time.perf_counter() - t0
    extract(q, paths[:32], progress=False)  # warm-up
    t0 = time.perf_counter()
    feats = extract(q, paths, batch_size=32, progress=False)
    rate = len(paths) / (time.perf_counter() - t0)
    q.takes_pixels = False  # the same model fed normalised float batches, as before 2026-12-01 evening
    extract(q, paths[:32], progress=False)
    t0 = time.perf_counter()
    extract(q, paths, batch_size=32, progress=False)
    float_input = len(paths) / (time.perf_counter() - t0)
    cos = (feats * fp32).sum(1) / (np.linalg.norm(feats, axis=1) * np.linalg.norm(fp32, axis=1))
    return {"default_precision": "int8 (calibrated on the user's images, where the guard allows)",
            "default_img_s": round(rate, 1), "default_img_s_float_input": round(float_input, 1),
            "int8_user_calibration_s": round(calibrate_s, 2),
            "int8_user_calibration_images": len(idx),
            "int8_user_cosine_to_float32_mean": round(float(cos.mean()), 4),
            "int8_user_cosine_to_float32_min": round(float(cos.min()), 4)}


def bench_guard(tmp: Path, quick: bool) -> dict:
    """The int8 guard's own cost at training time, on 320 synthetic training images (its minimum is 300)."""
    import numpy as np

    from src.core.store import Store, sha256_file
    from src.data.dataset import image_dataset
    from src.data.splits import labeled_split
    from src.data.synth import generate_dataset
    from src.features.backbone import Preprocessing, create_model, save_extractor
    from src.features.runtimes import load_runtime
    from src.training.config import TrainConfig
    from src.training.precision import choose_precision

    class NoTracker:
        def update_config(self, _):
            pass

    data = generate_dataset(tmp / "d", n_classes=20, train_per_class=16, test_per_class=1, image_size=128)
    store = Store(tmp / "store")
    ds = image_dataset(data, store=store)
    cfg = TrainConfig(data_dir=str(data), progress=False)
    mask = labeled_split(ds.train.labels, cfg.labeled_ratio, len(ds.classes), cfg.seed)
    ext_path = tmp / "feature_extractor.pth"
    save_extractor(create_model(num_classes=0, pretrained=True), ext_path, Preprocessing.for_size(224))
    digest = sha256_file(ext_path)
    fp32 = load_runtime(ext_path, digest, runtime="onnx", store=store)  # exported before the clock starts
    g = choose_precision(cfg, ds, mask, fp32, ext_path, digest, store, NoTracker()).guard
    rnd = {k: round(v, 4) if isinstance(v, float) else v for k, v in g.items()}
    overhead = g["seconds"] - (g.get("float32_extract_seconds") or 0.0)
    return {"train_images": len(ds.train), "labeled": int(np.sum(mask)), **{f"guard_{k}": v for k, v in rnd.items()},
            "guard_overhead_s": round(overhead, 2)}


def _network_gflop() -> float:
    """Multiply-adds × 2 of the extractor's convolutions for one 224-px image (the work ORT must do)."""
    import torch

    from src.features.backbone import create_model

    model, macs = create_model(num_classes=0, pretrained=False).eval(), [0]

    def count(mod, args, out):
        w = mod.weight
        macs[0] += out[0].numel() * w.shape[1] * w.shape[2] * w.shape[3]

    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            mod.register_forward_hook(count)
    with torch.inference_mode():
        model(torch.zeros(1, 3, 224, 224))
    return 2 * macs[0] / 1e9


def _compute_ceiling(project_img_s: float, ort_img_s: float) -> dict:
    """How close extraction runs to this CPU's float32 limit: dense SGEMM GFLOP/s on all cores."""
    import numpy as np

    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    a @ a
    t0, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ a
    sgemm = 2 * 1024 ** 3 * reps / (time.perf_counter() - t0) / 1e9
    gflop = _network_gflop()
    return {"network_gflop_per_img": round(gflop, 3), "cpu_sgemm_gflops_all_cores": round(sgemm, 1),
            "ort_gflops": round(ort_img_s * gflop, 1),
            "ort_fraction_of_sgemm_peak": round(ort_img_s * gflop / sgemm, 2),
            "img_s_ceiling_at_sgemm_peak_no_decode": round(sgemm / gflop, 1),
            "project_fraction_of_ceiling": round(project_img_s * gflop / sgemm, 2)}


def _usual_approach(paths: list[Path]) -> float:
    """torchvision ResNet50 eager, NCHW, batch 16, full PIL decode per image, standard transforms."""
    import torch
    from PIL import Image
    from torchvision import transforms
    from torchvision.models import resnet50

    model = resnet50(weights=None).eval()
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    def run(ps):
        for i in range(0, len(ps), 16):
            x = torch.stack([tf(Image.open(p).convert("RGB")) for p in ps[i:i + 16]])
            with torch.inference_mode():
                model(x)

    run(paths[:16])  # warm-up
    t0 = time.perf_counter()
    run(paths)
    return len(paths) / (time.perf_counter() - t0)


def _tiny_model(tmp: Path) -> tuple[Path, list[Path]]:
    from src.data.synth import generate_dataset
    from src.train_with_wandb import train_with_wandb

    data = generate_dataset(tmp / "d", n_classes=5, train_per_class=20, test_per_class=10, image_size=128)
    train_with_wandb(data_dir=data, fine_tune_epochs=0, wandb_mode="disabled", store=tmp / "store",
                     models_dir=tmp / "models", progress=False, algorithms="label_spreading")
    return tmp / "models" / "label_spreading_model.skops", sorted((data / "test").rglob("*.jpg"))


def bench_monitor(tmp: Path, quick: bool) -> dict:
    """Single-image latency through Predictor, with and without decoding."""
    from src.core.images import open_image
    from src.predictor import Predictor

    model_path, images = _tiny_model(tmp)
    out = {}
    for runtime in ("onnx", "onnx-int8", "torch"):
        t0 = time.perf_counter()
        pred = Predictor.load(model_path, runtime=runtime)
        load_ms = (time.perf_counter() - t0) * 1000
        arrays = [pred.extractor.preprocessing(open_image(p, draft_size=pred.extractor.preprocessing.resize))
                  for p in images]
        n = 30 if quick else 100
        for p in images[:5]:
            pred.predict(p)
        with_decode, without, network = [], [], []
        for i in range(n):
            p, a = images[i % len(images)], arrays[i % len(arrays)]
            t0 = time.perf_counter()
            pred.predict(p)
            with_decode.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            feats = pred.extractor(a[None])
            network.append((time.perf_counter() - t0) * 1000)
            pred.predict_features(feats)
            without.append((time.perf_counter() - t0) * 1000)
        out[runtime] = {"load_ms": round(load_ms, 1), "p50_ms": _pct(with_decode, 0.5),
                        "p99_ms": _pct(with_decode, 0.99), "p50_ms_no_decode": _pct(without, 0.5),
                        "p99_ms_no_decode": _pct(without, 0.99), "p50_ms_network_only": _pct(network, 0.5),
                        "n": n}
    return out


def bench_training(tmp: Path, quick: bool) -> dict:
    """End-to-end train_with_wandb on a synthetic dataset: cold store, then warm rerun."""
    from src.data.synth import generate_dataset
    from src.train_with_wandb import train_with_wandb

    n_classes, per = (10, 30) if quick else (20, 120)
    data = generate_dataset(tmp / "d", n_classes=n_classes, train_per_class=per, test_per_class=per // 4,
                            image_size=128)
    times = {}
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        res = train_with_wandb(data_dir=data, wandb_mode="disabled", store=tmp / "store",
                               models_dir=tmp / "models", progress=False)
        times[label] = round(time.perf_counter() - t0, 1)
        _log(f"training {label}: {times[label]} s")
    return {"train_images": n_classes * per, "test_images": n_classes * (per // 4),
            "cold_s": times["cold"], "warm_s": times["warm"],
            "warm_speedup": round(times["cold"] / max(times["warm"], 1e-9), 1),
            "best_test_accuracy": res.get("summary", {}).get("best_test_accuracy")}


def bench_training_20k(tmp: Path, quick: bool) -> dict:
    """Peak memory of a 20k-image train_with_wandb run (no fine-tuning: extraction + SSL dominate)."""
    from src.data.synth import generate_dataset
    from src.train_with_wandb import train_with_wandb

    n_classes, per, test = (20, 100, 10) if quick else (20, 1000, 50)
    t0 = time.perf_counter()
    data = generate_dataset(tmp / "d", n_classes=n_classes, train_per_class=per, test_per_class=test,
                            image_size=128)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = train_with_wandb(data_dir=data, fine_tune_epochs=0, wandb_mode="disabled", store=tmp / "store",
                           models_dir=tmp / "models", progress=False)
    train_s = time.perf_counter() - t0
    return {"train_images": n_classes * per, "test_images": n_classes * test, "fine_tune_epochs": 0,
            "generate_s": round(gen_s, 1), "train_s": round(train_s, 1), "train_peak_rss_mb": _rss_mb(),
            "best_test_accuracy": res.get("summary", {}).get("best_test_accuracy")}


def _graph_check(model) -> dict:
    """Kernel of a fitted graph method and whether its affinity matrix is sparse (no dense N × N)."""
    import scipy.sparse

    graph = getattr(model[-1], "graph_", None)
    if graph is None:
        return {}
    g = graph._build_graph()
    return {"kernel": graph.kernel, "graph_sparse": bool(scipy.sparse.issparse(g)),
            "graph_nnz": int(g.nnz) if scipy.sparse.issparse(g) else int(g.size),
            "dense_n_x_n_would_be_mb": round(g.shape[0] ** 2 * 8 / 2**20, 1)}


def bench_semi_supervised(tmp: Path, quick: bool) -> dict:
    import numpy as np
    from sklearn.datasets import make_blobs

    from src.learning.semi_supervised import ALGORITHMS, UNLABELED, fit_semi_supervised

    out = {}
    for n in ((2000,) if quick else (5000, 20000)):
        X, y = make_blobs(n_samples=n, n_features=1280, centers=20, cluster_std=8.0, random_state=0)
        X = X.astype(np.float32)
        y_partial = np.where(np.random.default_rng(0).random(n) < 0.1, y, UNLABELED)
        row = {"feature_matrix_mb": round(X.nbytes / 2**20, 1)}
        for name in sorted(ALGORITHMS):
            t0 = time.perf_counter()
            model = fit_semi_supervised(name, X, y_partial, n_neighbors=10, seed=0)
            row[f"{name}_s"] = round(time.perf_counter() - t0, 2)
            if check := _graph_check(model):
                row[f"{name}_graph"] = check
            _log(f"semi-supervised {name} n={n}: {row[f'{name}_s']} s")
        row["peak_rss_mb_so_far"] = _rss_mb()
        out[str(n)] = row
    return out


def bench_hashing(tmp: Path, quick: bool) -> dict:
    from src.data_versioning import create_dataset_artifact
    from src.core.store import Store, sha256_file
    from src.data.synth import generate_dataset

    data = generate_dataset(tmp / "d", n_classes=10, train_per_class=30 if quick else 120, test_per_class=10,
                            image_size=128)
    files = sorted(data.rglob("*.jpg"))
    t0 = time.perf_counter()
    total = sum(f.stat().st_size for f in files if sha256_file(f))
    dt = time.perf_counter() - t0
    store = Store(tmp / "store")
    t0 = time.perf_counter()
    create_dataset_artifact(data, store=store, wandb_mode="disabled")
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = create_dataset_artifact(data, store=store, wandb_mode="disabled")
    again = time.perf_counter() - t0
    return {"files": len(files), "mb": round(total / 2**20, 1), "sha256_mb_s": round(total / 2**20 / dt, 1),
            "version_first_s": round(first, 2), "version_unchanged_s": round(again, 2),
            "unchanged_created_new": bool(second.get("created"))}


def bench_registry(tmp: Path, quick: bool) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "registry_bench.py"), "--versions",
           "200" if quick else "1000", "--repeat", "3" if quick else "5"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def bench_drift(tmp: Path, quick: bool) -> dict:
    import numpy as np

    try:
        from src.monitoring.drift import FeatureDrift
    except ImportError:
        return {"skipped": "src.monitoring.drift is not available"}
    rng = np.random.default_rng(0)
    n = 2000 if quick else 10000
    ref = rng.standard_normal((n, 1280)).astype(np.float32)
    t0 = time.perf_counter()
    det = FeatureDrift(ref, seed=0)
    build = time.perf_counter() - t0
    size = min(500, int(getattr(det, "max_window", 500)))
    window = rng.standard_normal((size, 1280)).astype(np.float32) + 0.3
    t0 = time.perf_counter()
    result = det.test(window)
    test = time.perf_counter() - t0
    return {"reference": n, "window": len(window), "build_s": round(build, 2), "test_s": round(test, 2),
            "drift_detected": bool(result.get("is_drift"))}


BENCHES = {"guard": bench_guard, "extraction": bench_extraction, "monitor": bench_monitor, "training": bench_training,
           "training_20k": bench_training_20k,
           "semi_supervised": bench_semi_supervised, "hashing": bench_hashing, "registry": bench_registry,
           "drift": bench_drift}


# -- driver --------------------------------------------------------------------------------
def run_child(section: str, quick: bool) -> dict:
    import logging

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix=f"bench-{section}-") as tmp:
        os.environ["MLOPS_STORE"] = str(Path(tmp) / "store")  # ONNX exports etc. stay in the temp store
        t0 = time.perf_counter()
        result = BENCHES[section](Path(tmp), quick)
        result["section_s"] = round(time.perf_counter() - t0, 1)
    result["peak_rss_mb"] = max(_rss_mb(), _rss_mb(resource.RUSAGE_CHILDREN))
    result["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    return result


def run_section(section: str, quick: bool) -> dict:
    _log(f"{section} … (load {os.getloadavg()[0]:.2f})")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    cmd = [sys.executable, str(Path(__file__).resolve()), "--only", section, "--child"] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode} (see stderr)"}
    result = json.loads(proc.stdout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if after > before:  # RUSAGE_CHILDREN is a running maximum: only a new peak is this section's
        result["peak_rss_mb_children"] = round(after / 1024, 1)
    return result


def summary(results: dict) -> dict:
    s: dict = {}
    ex, mon, tr, ss, reg = (results.get(k, {}) for k in ("extraction", "monitor", "training",
                                                         "semi_supervised", "registry"))
    if "project_img_s" in ex:
        s["extraction_img_s"] = (ex["project_img_s"], ex["project_img_s"] >= TARGETS["extraction_img_s"])
        s["extraction_speedup"] = (ex["speedup_vs_usual"], ex["speedup_vs_usual"] >= TARGETS["extraction_speedup"])
    if "int8_project_img_s" in ex:  # the opt-in --runtime onnx-int8
        v = ex["int8_project_img_s"]
        s["extraction_int8_img_s"] = (v, v >= TARGETS["extraction_int8_img_s"])
        v = ex["int8_speedup_vs_usual"]
        s["extraction_int8_speedup"] = (v, v >= TARGETS["extraction_int8_speedup"])
    if "default_speedup_vs_usual" in ex:  # what training uses where the guard proves int8 harmless
        v = ex["default_speedup_vs_usual"]
        s["default_speedup"] = (v, v >= TARGETS["default_speedup"])
    if "onnx" in mon:
        v = mon["onnx"]["p50_ms_no_decode"]
        s["monitor_p50_ms_no_decode"] = (v, v <= TARGETS["monitor_p50_ms_no_decode"])
    if "warm_speedup" in tr:
        s["warm_speedup"] = (tr["warm_speedup"], tr["warm_speedup"] >= TARGETS["warm_speedup"])
    t20 = results.get("training_20k", {})
    peak = t20.get("peak_rss_mb") if t20.get("train_images") == 20000 else ss.get("peak_rss_mb")
    if peak and ("20000" in ss or t20.get("train_images") == 20000):
        gb = round(peak / 1024, 2)
        s["peak_20k_gb"] = (gb, gb < TARGETS["peak_20k_gb"])
    slow = [reg[k] for k in ("list_models_ms", "cli_list_json_ms", "load_ms", "load_model_from_registry_ms")
            if isinstance(reg.get(k), (int, float))]
    if slow:
        s["registry_ms"] = (max(slow), max(slow) <= TARGETS["registry_ms"])
    return {k: {"value": v, "target": TARGETS[k], "met": met} for k, (v, met) in s.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.child:
        print(json.dumps(run_child(sections[0], args.quick)))
        return 0
    results = {"cpu_count": os.cpu_count(), "quick": args.quick,
               "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    for section in sections:
        results[section] = run_section(section, args.quick)
    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = summary(results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
