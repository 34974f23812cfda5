"""The offline dashboard: one static HTML page of runs, datasets, registry, sweeps and monitoring.

For users without the W&B UI (or before ``wandb sync``): everything is read from the local
store, so the page shows exactly what the suite recorded. Images (confusion matrices, sweep
plots) are embedded, so the file can be mailed or archived on its own.

    python src/report.py --out report.html [--store DIR]   (the command line; this module builds the page)
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import logging
from pathlib import Path
from typing import Any, Callable


from src.core.errors import ConfigError

log = logging.getLogger(__name__)
CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4}tr.best td{background:#eefbea}.muted{color:#888}img{max-width:560px;margin:4px;border:1px solid #eee}
.bad{color:#b00;font-weight:bold}.ok{color:#070}"""


def _e(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape("-" if v is None else str(v))


def _when(ts: float | str | None) -> str:
    if isinstance(ts, (int, float)):
        return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return _e(ts)


def table(headers: list[str], rows: list[list[Any]], best_row: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(f"<tr{' class=best' if i == best_row else ''}>" + "".join(f"<td>{c if isinstance(c, Raw) else _e(c)}</td>"
                                                                            for c in r) + "</tr>"
                   for i, r in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


class Raw(str):
    """Already-escaped HTML inside a table cell."""


def img(path: str | Path, title: str = "") -> str:
    p = Path(path)
    if not p.is_file():
        return ""
    data = base64.b64encode(p.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" title="{html.escape(title)}" alt="{html.escape(title)}">'


def runs_section(store) -> str:
    from src.training.runs import list_runs

    runs = list_runs(store)
    if not runs:
        return "<p class=muted>No training runs recorded yet (python src/train_with_wandb.py).</p>"
    rows = [[r["id"], _when(r["created_at"]), r["name"], r["wandb_id"], r["mode"], r["best_algorithm"],
             r["best_test_accuracy"], r["baseline_test_accuracy"], r["dataset_version"],
             r["results"]["config"]["labeled_ratio"], r["results"]["config"]["fine_tune_epochs"]] for r in runs]
    out = [table(["#", "when", "name", "W&B run", "mode", "best algorithm", "test acc", "baseline acc",
                  "dataset", "labeled ratio", "ft epochs"], rows)]
    latest = runs[0]["results"]
    algos = latest["algorithms"]
    best = latest["summary"]["best_algorithm"]
    rows = [[a, m["test_accuracy"], m["f1_score"], m["precision"], m["recall"], m["unlabeled_accuracy"],
             m["fit_seconds"]] for a, m in algos.items()]
    b = latest["baseline"]
    rows.append(["baseline (labeled only)", b["test_accuracy"], b["f1_score"], b["precision"], b["recall"],
                 b["unlabeled_accuracy"], b["fit_seconds"]])
    out.append(f"<h3>Latest run #{runs[0]['id']}</h3>")
    out.append(table(["algorithm", "test acc", "macro F1", "precision", "recall", "unlabeled acc", "fit s"], rows,
                     best_row=list(algos).index(best)))
    models = Path(latest.get("models_dir") or "models")
    out.append("".join(img(models / m.get("confusion_matrix_png", ""), a) for a, m in algos.items()
                       if m.get("confusion_matrix_png")))
    return "\n".join(out)


def datasets_section(store) -> str:
    from src.data.versions import list_versions

    versions = list_versions(None, store)
    if not versions:
        return "<p class=muted>No dataset versions yet (python src/data_versioning.py).</p>"
    rows = [[v["name"], v["version"], _when(v["created_at"]), v["total_samples"], v["num_classes"],
             v["quality_issues"], v["digest"][:12], v["description"]] for v in versions]
    return table(["name", "version", "created", "images", "classes", "quality issues", "digest", "description"], rows)


def registry_section(store) -> str:
    from src.registry.api import list_models, model_history

    models = list_models(store=store)
    if not models:
        return "<p class=muted>Registry is empty (python src/model_registry.py register-all).</p>"
    out = []
    for m in models:
        rows = [[v["version"], v["created_at"], ", ".join(v["aliases"]), v["digest"][:12],
                 *[v["metrics"].get(k) for k in ("test_accuracy", "f1_score")]] for v in m["versions"]]
        out.append(f"<h3>{_e(m['name'])}</h3>" + table(["version", "created", "aliases", "digest", "test acc", "F1"], rows))
        events = model_history(m["name"], store=store)
        if events:
            out.append(table(list(events[0].keys()), [list(e.values()) for e in events[-20:]]))
    return "\n".join(out)


def sweeps_section(store) -> str:
    from src.hpo.agent import sweep_status
    from src.hpo.study import SCHEMA, open_sweep, sweep_dir

    store.ensure_schema("sweep_sweeps", SCHEMA)
    with store.read() as con:
        ids = [r["id"] for r in con.execute("SELECT id FROM sweep_sweeps ORDER BY created_at DESC")]
    if not ids:
        return "<p class=muted>No local sweeps yet (python src/sweep_runner.py create).</p>"
    out = []
    for sid in ids:
        st = sweep_status(open_sweep(sid, store=store))
        best = st["best"] or {}
        out.append(f"<h3>{_e(st['name'])} <span class=muted>({sid}, {st['state']}, {st['method']})</span></h3>")
        out.append(f"<p>{_e(st['counts'])}; best {st['metric']['name']} = {_e(best.get('value'))} "
                   f"with <code>{_e(json.dumps(best.get('params', {}), sort_keys=True))}</code></p>")
        d = sweep_dir(store, sid)
        out.append(img(d / "optimization_history.png", "optimization history") + img(d / "param_importances.png", "importance"))
    return "\n".join(out)


def monitoring_section(store) -> str:
    """Monitoring sessions and the latest alerts."""
    from src.monitoring.records import alerts, open_monitor_store, sessions

    st = open_monitor_store(store)
    rows = [[s["id"], s["model"], s["summary"].get("monitor/samples"), s["summary"].get("monitor/accuracy"),
             s["summary"].get("monitor/avg_confidence"), s["summary"].get("latency", {}).get("p50_ms"),
             s["summary"].get("monitor/throughput_samples_per_sec"), s["summary"].get("monitor/drift_score"),
             (s["summary"].get("drift") or {}).get("is_drift")] for s in sessions(st)]
    if not rows:
        return "<p class=muted>No monitoring sessions yet (python src/inference_monitor.py).</p>"
    out = table(["session", "model", "images", "accuracy", "avg conf", "p50 ms", "img/s", "drift score", "drift"], rows)
    al = alerts(st, 20)
    if al:
        out += table(["when", "level", "alert"], [[_when(a["at"]), a["level"], a["text"]] for a in al])
    return out


SECTIONS: dict[str, Callable] = {"Training runs": runs_section, "Dataset versions": datasets_section,
                                 "Model registry": registry_section, "Sweeps": sweeps_section,
                                 "Monitoring": monitoring_section}


def build_report(out: str | Path = "report.html", store=None) -> Path:
    """Write the dashboard; a section that cannot be read says why instead of failing the page."""
    from src.core.store import Store

    st = Store.of(store)
    parts = [f"<!doctype html><meta charset=utf-8><title>grocery-mlops report</title><style>{CSS}</style>",
             f"<h1>grocery-mlops report</h1><p class=muted>store {html.escape(str(st.root))}, generated "
             f"{_when(dt.datetime.now(dt.timezone.utc).timestamp())}</p>"]
    for title, section in SECTIONS.items():
        try:
            body = section(st)
        except Exception as e:  # noqa: BLE001 - one unreadable section must not hide the others
            log.warning("report section %s failed: %s", title, e)
            body = f"<p class=bad>could not read this section: {html.escape(str(e))}</p>"
        parts.append(f"<h2>{html.escape(title)}</h2>\n{body}")
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(parts), encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot write the report to {out}: {e.strerror or e}",
                          hint="pass --out with a writable path") from e
    return out

