"""Load test of the monitored prediction endpoint (`inference_monitor.py serve`), bounded, 127.0.0.1 only.

    python benchmarks/serve_bench.py [--duration 10] [--clients 1,8,32] [--quick]

Trains a tiny model (synthetic 128-px JPEGs, 224-px network input, ``fine_tune_epochs=0``) and
registers two versions (label spreading v0 = ``production``, label propagation v1) in a
temporary store, then:

1. baseline: one in-process ``Predictor.predict(path)`` at a time on the same images
   (throughput, p50/p99), and ``predict_paths`` in batches of 32 for reference;
2. starts ``python src/inference_monitor.py serve --model bench:production`` as a subprocess
   (W&B disabled) and, for each client count, runs that many concurrent asyncio/httpx
   clients for ``--duration`` seconds: throughput, p50/p95/p99, errors;
3. alias switch under load: 8 clients, ``promote bench production v1`` a third of the way in;
   responses per version, errors, time until the first v1 answer;
4. stops the server (SIGTERM: it stores every queued record) and counts the
   ``monitor_predictions`` rows against the 200 answers it gave.

Figures depend on what else runs on the machine: ``machine.loadavg_start`` / ``_end`` say how
busy it was. The temporary folder is removed at the end unless ``--keep``.

Prints one JSON document (progress on stderr), with ``targets``: served throughput at 8
clients >= 70 % of the in-process one, p99 at 8 clients <= 10x the single-request p50,
0 errors, 0 lost records, no dropped request across the switch. Everything stops by itself:
each phase is time-bounded and the server is killed if it does not stop within 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def say(msg: str) -> None:
    print(f"[serve_bench] {msg}", file=sys.stderr, flush=True)


def pct(values, q: float) -> float:
    import numpy as np

    return round(float(np.percentile(values, q)), 2) if len(values) else 0.0


def build(tmp: Path, n_classes: int, per_class: int) -> tuple[Path, list[Path]]:
    from src.data.synth import generate_dataset
    from src.model_registry import register_model
    from src.train_with_wandb import train_with_wandb

    data = generate_dataset(tmp / "d", n_classes=n_classes, train_per_class=20, test_per_class=per_class,
                            image_size=128)
    train_with_wandb(data_dir=data, fine_tune_epochs=0, wandb_mode="disabled", store=tmp / "train_store",
                     models_dir=tmp / "models", progress=False, algorithms=["label_spreading", "label_propagation"])
    store = tmp / "store"
    register_model(tmp / "models" / "label_spreading_model.skops", "bench", {}, ["production"], store=store,
                   wandb_mode="disabled")
    register_model(tmp / "models" / "label_propagation_model.skops", "bench", {}, store=store, wandb_mode="disabled")
    return store, sorted((data / "test").rglob("*.jpg"))


def baseline(store: Path, images: list[Path], seconds: float) -> dict:
    """The in-process reference: the registry's predictor, one image at a time, then batched."""
    from src.registry.api import load_model_from_registry

    pred = load_model_from_registry("bench", "production", store=store)
    for p in images[:5]:
        pred.predict(p)
    lat, t0, i = [], time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        pred.predict(images[i % len(images)])
        lat.append((time.perf_counter() - t) * 1e3)
        i += 1
    single = len(lat) / (time.perf_counter() - t0)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        n += len(pred.predict_paths(images[:32], batch_size=32))
    return {"images_per_s": round(single, 1), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "n": len(lat),
            "batched_32_images_per_s": round(n / (time.perf_counter() - t0), 1)}


async def load(url: str, bodies: list[bytes], clients: int, seconds: float, on_tick=None) -> dict:
    """``clients`` concurrent keep-alive clients posting images for ``seconds``."""
    import httpx

    lat, errors, versions = [], [], {}
    first_at: dict[str, float] = {}
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        async def worker(k: int):
            i = k
            while time.monotonic() < stop_at:
                t = time.perf_counter()
                try:
                    r = await client.post("/predict", content=bodies[i % len(bodies)])
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    continue
                finally:
                    i += clients
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                    continue
                lat.append((time.perf_counter() - t) * 1e3)
                v = r.json()["version"]
                versions[v] = versions.get(v, 0) + 1
                first_at.setdefault(v, time.monotonic())

        t0 = time.monotonic()
        tasks = [asyncio.create_task(worker(k)) for k in range(clients)]
        if on_tick is not None:
            tasks.append(asyncio.create_task(on_tick()))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
    return {"clients": clients, "seconds": round(elapsed, 2), "ok": len(lat), "errors": len(errors),
            "error_samples": errors[:3], "requests_per_s": round(len(lat) / elapsed, 1), "p50_ms": pct(lat, 50),
            "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99), "versions": versions,
            "_first_at": first_at}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: Path, port: int, log: Path) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, str(ROOT / "src" / "inference_monitor.py"), "serve", "--model", "bench:production",
           "--host", "127.0.0.1", "--port", str(port), "--store", str(store), "--wandb-mode", "disabled",
           "--poll-s", "1", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log.open("w"), env=env, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not come up within 180 s")


def stop_server(proc: subprocess.Popen) -> dict | None:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    try:
        return json.loads(out)
    except ValueError:
        return None


def stored_rows(store: Path) -> int:
    from src.monitoring.records import open_monitor_store

    with open_monitor_store(store).read() as con:
        return con.execute("SELECT COUNT(*) FROM monitor_predictions").fetchone()[0]


def run(args, tmp: Path) -> dict:
    from src.model_registry import promote_model

    out: dict = {"machine": {"cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
                 "settings": {"duration_s": args.duration, "clients": args.clients}}
    say(f"training a tiny model in {tmp}")
    store, images = build(tmp, 5, 4 if args.quick else 13)
    bodies = [p.read_bytes() for p in images]
    out["images"] = {"n": len(images), "size_px": 128, "network_input_px": 224}
    say("in-process baseline")
    out["baseline"] = baseline(store, images, args.duration)
    port = free_port()
    proc = start_server(store, port, tmp / "server.log")
    url = f"http://127.0.0.1:{port}"
    sent_ok = 0
    try:
        say("warm-up")
        sent_ok += asyncio.run(load(url, bodies, 4, 2.0))["ok"]
        out["served"] = {}
        for c in args.clients:
            say(f"{c} concurrent clients for {args.duration} s")
            r = asyncio.run(load(url, bodies, c, args.duration))
            r.pop("_first_at")
            sent_ok += r["ok"]
            out["served"][str(c)] = r
        say("alias switch under load (8 clients)")
        promoted_at: list[float] = []

        async def promote_later():
            await asyncio.sleep(args.duration / 3)
            await asyncio.to_thread(promote_model, "bench", "production", "v1", force=True,
                                    reason="serve_bench switch", store=store, wandb_mode="disabled")
            promoted_at.append(time.monotonic())

        sw = asyncio.run(load(url, bodies, 8, args.duration, on_tick=promote_later))
        first = sw.pop("_first_at")
        sent_ok += sw["ok"]
        sw["switch_seconds"] = round(first["v1"] - promoted_at[0], 2) if "v1" in first and promoted_at else None
        out["switch"] = sw
        import httpx

        metrics = httpx.get(url + "/metrics", timeout=10).text
        out["switch"]["metrics_lines"] = [line for line in metrics.splitlines()
                                          if line.startswith(("grocery_model_info", "grocery_model_switches_total"))]
        out["batching"] = [line for line in metrics.splitlines() if line.startswith("grocery_inference_batch_size_")
                           and not line.startswith("grocery_inference_batch_size_bucket")]
    finally:
        summary = stop_server(proc)
    stored = stored_rows(store)
    out["records"] = {"answered_200": sent_ok, "stored": stored, "lost": sent_ok - stored,
                      "server_summary_samples": summary and summary.get("monitor/samples")}
    out["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    b, s8, s1 = out["baseline"], out["served"].get("8"), out["served"].get("1")
    targets = {}
    if s8:
        ratio = s8["requests_per_s"] / b["images_per_s"]
        targets["throughput_8_clients_vs_in_process"] = {"value": round(ratio, 3), "target": ">= 0.70",
                                                         "met": ratio >= 0.70}
    if s8 and s1:
        ratio = s8["p99_ms"] / s1["p50_ms"]
        targets["p99_8_clients_vs_single_request_p50"] = {"value": round(ratio, 2), "target": "<= 10",
                                                          "met": ratio <= 10}
    errors = sum(r["errors"] for r in out["served"].values()) + out["switch"]["errors"]
    targets["errors"] = {"value": errors, "target": 0, "met": errors == 0}
    targets["lost_records"] = {"value": out["records"]["lost"], "target": 0, "met": out["records"]["lost"] == 0}
    targets["switch_drops_nothing"] = {"value": out["switch"]["errors"], "target": 0,
                                       "met": out["switch"]["errors"] == 0 and "v1" in out["switch"]["versions"]}
    out["targets"] = targets
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per load phase")
    p.add_argument("--clients", default="1,8,32", help="comma-separated concurrent client counts")
    p.add_argument("--quick", action="store_true", help="fewer images, 3-second phases (smoke test)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (model, store, server.log)")
    args = p.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",")]
    if args.quick:
        args.duration = min(args.duration, 3.0)
    tmp = Path(tempfile.mkdtemp(prefix="serve_bench_"))
    try:
        print(json.dumps(run(args, tmp), indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
