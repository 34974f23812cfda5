"""Peak memory and stop time of a served model under the hostile requests of issue 25 (hardening round 3).

    python benchmarks/hostile_uploads.py --model m/label_spreading_model.skops [--json]

Starts ``inference_monitor.py serve`` as a child process and, for each hostile request, resets the
child's peak-RSS counter (``/proc/PID/clear_refs``, Linux), sends the request, and reads the peak
(``VmHWM``) and the answer. Then it fills the store (the child is started with a hook that lets
its database stop growing: SQLite's own "database or disk is full"), sends predictions until the
server sheds load, opens half-sent requests, and times SIGTERM to exit. Figures are in MB.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# run in the child: serve, with the store's database frozen at its size once $FULL_FLAG exists
CHILD = """
import os, sys
from src.core.store import Store
connect, flag = Store.connect, os.environ["FULL_FLAG"]
def frozen(self, readonly=None):
    con = connect(self, readonly)
    if os.path.exists(flag):
        con.execute(f"PRAGMA max_page_count = {con.execute('PRAGMA page_count').fetchone()[0]}")
    return con
Store.connect = frozen
from src.inference_monitor import main
raise SystemExit(main(sys.argv[1:]))
"""


def png(size, mode="L") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


def photo() -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (378, 504, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((4032, 3024), Image.BICUBIC).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def uploads() -> dict[str, bytes]:
    return {
        "photo 4032x3024 JPEG": photo(),
        "100000x1 PNG": png((100_000, 1)),
        "4000x1 PNG": png((4000, 1)),
        "64000000x1 PNG": png((64_000_000, 1), "1"),
        "EPS (3 lines)": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
        "8000x8000 PNG, 1-bit": png((8000, 8000), "1"),
        "8000x8000 PNG, 16-bit": png((8000, 8000), "I;16"),
        "8000x8000 PNG, RGBA": png((8000, 8000), "RGBA"),
    }


def rss(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def http(port: int, method: str, path: str, body: bytes = b"", timeout: float = 120) -> tuple[int, dict]:
    import httpx

    r = httpx.request(method, f"http://127.0.0.1:{port}{path}", content=body, timeout=timeout)
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, {"text": r.text[:200]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--half-open", type=int, default=200, help="half-sent requests held open at once")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hostile-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flag = tmp / "full"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FULL_FLAG": str(flag), "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "serve", "--model", args.model, "--port", str(port),
                             "--store", str(tmp / "store"), "--wandb-mode", "disabled", "--max-pending", "50",
                             "--read-timeout-s", "5"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: dict = {"uploads": {}}
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if http(port, "GET", "/health", timeout=2)[0] == 200:
                    break
            except Exception:  # noqa: BLE001 — not up yet
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start: {proc.stderr.read()}")
                time.sleep(0.3)
        body = uploads()["photo 4032x3024 JPEG"]
        for _ in range(3):  # warm: first requests allocate the worker's buffers
            http(port, "POST", "/predict", body)
        time.sleep(1)
        out["idle_mb"] = rss(proc.pid)["VmRSS"]
        for name, data in uploads().items():
            reset_peak(proc.pid)
            t0 = time.perf_counter()
            status, doc = http(port, "POST", "/predict", data)
            out["uploads"][name] = {"bytes": len(data), "status": status, "reason": doc.get("reason"),
                                    "seconds": round(time.perf_counter() - t0, 3),
                                    "peak_mb": round(rss(proc.pid)["VmHWM"], 1)}
        from concurrent.futures import ThreadPoolExecutor

        for name in ("8000x8000 PNG, RGBA", "8000x8000 PNG, 16-bit"):  # one per core at once
            data = uploads()[name]
            reset_peak(proc.pid)
            with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
                answers = list(pool.map(lambda b: http(port, "POST", "/predict", b), [data] * (os.cpu_count() or 2)))
            out["uploads"][f"{name} x{len(answers)} at once"] = {
                "status": answers[0][0], "reason": answers[0][1].get("reason"),
                "peak_mb": round(rss(proc.pid)["VmHWM"], 1)}
        reset_peak(proc.pid)
        status, doc = http(port, "POST", "/feedback", b"[" * 5000 + b"]" * 5000)
        out["uploads"]["feedback nested 5000 deep"] = {"status": status, "reason": doc.get("reason"),
                                                       "peak_mb": round(rss(proc.pid)["VmHWM"], 1)}
        # half-sent requests: all cut at the read deadline (5 s here)
        socks = []
        for i in range(args.half_open):
            sk = socket.create_connection(("127.0.0.1", port))
            sk.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"\xff" * 10
                       if i % 2 else b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Le")
            socks.append(sk)
        t0 = time.monotonic()
        closed = 0
        for sk in socks:
            sk.settimeout(30)
            try:
                while sk.recv(65536):
                    pass
                closed += 1
            except OSError:
                pass
            sk.close()
        out["half_open"] = {"connections": args.half_open, "closed_by_server": closed,
                            "all_closed_after_s": round(time.monotonic() - t0, 2)}
        # a full store: predictions until 503, then SIGTERM with requests half-sent
        flag.touch()
        answered, status = 0, 200
        while status == 200 and answered < 500:
            status, doc = http(port, "POST", "/predict", body)
            answered += status == 200
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
        for sk in slow:
            sk.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
        out["full_store"] = {"answered_before_503": answered, "then": {"status": status, "reason": doc.get("reason")},
                             "sigterm_to_exit_s": round(time.monotonic() - t0, 2), "exit_code": proc.returncode,
                             "last_stderr_line": stderr.strip().splitlines()[-1] if stderr.strip() else "",
                             "tracebacks": stderr.count("Traceback")}
        for sk in slow:
            sk.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"idle RSS {out['idle_mb']:.0f} MB")
        for name, r in out["uploads"].items():
            print(f"  {name:28s} {r.get('status')} {str(r.get('reason')):18s} peak {r['peak_mb']:7.1f} MB"
                  f"  ({r['peak_mb'] / out['idle_mb']:.2f}x idle)")
        print(f"half-sent requests: {out['half_open']}")
        print(f"full store: {out['full_store']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
