"""The dashboard's sections: training runs, dataset versions, registry, sweeps, monitoring.

Each takes a :class:`~src.core.store.Store` and returns an HTML fragment; sweep trials (training
runs too) are shown under their sweep, not among the training runs.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from src.reporting.markup import Raw, img, muted, pairs, png_bytes, table, when


def runs_section(store) -> str:
    from src.training.runs import is_trial, list_runs

    runs = list_runs(store)
    if not runs:
        return muted("No training runs recorded yet (python src/train_with_wandb.py).")
    own = [r for r in runs if not is_trial(r)]
    n_trials = len(runs) - len(own)
    note = muted(f"{n_trials} sweep trial run(s) are listed under their sweep (Sweeps below).") if n_trials else ""
    if not own:
        return muted("No training runs outside sweeps yet.") + note
    rows = [[r["id"], when(r["created_at"]), r["name"], r["wandb_id"], r["mode"], r["best_algorithm"],
             r["best_test_accuracy"], r["baseline_test_accuracy"], r["dataset_version"],
             r["results"].get("config", {}).get("labeled_ratio"),
             r["results"].get("config", {}).get("fine_tune_epochs")] for r in own]
    out = [table(["#", "when", "name", "W&B run", "mode", "best algorithm", "test acc", "baseline acc",
                  "dataset", "labeled ratio", "ft epochs"], rows), note, latest_run(store, own[0])]
    return "\n".join(out)


def latest_run(store, run: dict[str, Any]) -> str:
    """The newest training run's per-algorithm metrics and confusion matrices."""
    res = run["results"]
    algos, b = res["algorithms"], res["baseline"]
    best = res["summary"]["best_algorithm"]
    cols = ("test_accuracy", "f1_score", "precision", "recall", "unlabeled_accuracy", "fit_seconds")
    rows = [[a, *(m.get(c) for c in cols)] for a, m in algos.items()]
    rows.append(["baseline (labeled only)", *(b.get(c) for c in cols)])
    title = f"Latest training run #{run['id']}" + (f" ({run['name']})" if run.get("name") else "")
    out = [f"<h3>{html.escape(title)} <span class=muted>{when(run['created_at'])}</span></h3>",
           table(["algorithm", "test acc", "macro F1", "precision", "recall", "unlabeled acc", "fit s"], rows,
                 best_row=list(algos).index(best) if best in algos else None)]
    figures = []
    for algo, m in algos.items():
        digest = run.get("images", {}).get(algo)
        if digest and store.has_blob(digest):
            figures.append(png_bytes(store.get_bytes(digest), f"{algo} confusion matrix"))
        elif m.get("confusion_matrix_png") and not run.get("images"):  # runs recorded before the blobs
            figures.append(img(Path(res.get("models_dir") or "models") / m["confusion_matrix_png"],
                               f"{algo} confusion matrix"))
    out.append("".join(figures) or muted("No confusion matrices were kept for this run."))
    return "\n".join(out)


def datasets_section(store) -> str:
    from src.data.version_store import list_versions

    versions = list_versions(None, store)
    if not versions:
        return muted("No dataset versions yet (python src/data_versioning.py).")
    rows = [[v["name"], v["version"], when(v["created_at"]), v["total_samples"], v["num_classes"],
             v["quality_issues"], v["digest"][:12], v["description"]] for v in versions]
    return table(["name", "version", "created", "images", "classes", "quality issues", "digest", "description"], rows)


def registry_section(store) -> str:
    from src.registry.api import list_models, model_history

    models = list_models(store=store)
    if not models:
        return muted("Registry is empty (python src/model_registry.py register-all).")
    out = []
    for m in models:
        rows = [[v["version"], when(v["created_at"]), ", ".join(v["aliases"]) or None, v["digest"][:12],
                 *[v["metrics"].get(k) for k in ("test_accuracy", "f1_score")]] for v in m["versions"]]
        out.append(f"<h3>{html.escape(m['name'])}</h3>"
                   + table(["version", "created", "aliases", "digest", "test acc", "F1"], rows))
        events = model_history(m["name"], store=store)[-20:]
        if events:
            out.append(table(["when", "alias", "from", "to", "action", "reason", "details"],
                             [[when(e["at"]), e["alias"], e["from"], e["to"], e["action"], e["reason"], e["details"]]
                              for e in events]))
    return "\n".join(out)


def sweeps_section(store) -> str:
    from src.hpo.agent import sweep_status
    from src.hpo.study import list_sweeps, open_sweep, sweep_dir
    from src.training.runs import is_trial, list_runs

    ids = list_sweeps(store)
    if not ids:
        return muted("No local sweeps yet (python src/sweep_runner.py create).")
    trial_runs = [r for r in list_runs(store, limit=10_000) if is_trial(r)]
    out = []
    for sid in ids:
        st = sweep_status(open_sweep(sid, store=store))
        runs = {r["name"]: r for r in reversed(trial_runs)  # the newest run of a name wins
                if r.get("run_group") == st["name"] or sid in r.get("tags", ())
                or (r.get("name") or "").startswith(f"{st['name']}-trial-")}
        out.append(f"<h3>{html.escape(st.get('display_name') or st['name'])} <span class=muted>sweep {sid} · "
                   f"{html.escape(st['method'])} · {html.escape(st['state'].lower())}</span></h3>")
        counts = ", ".join(f"{n} {s.lower()}" for s, n in st["counts"].items()) or "no trials yet"
        best, metric = st["best"], st["metric"]["name"]
        line = f"Trials: {counts}."
        if best:
            line += (f" Best {metric} {best['value']:.4f} (trial {best['number']}) with "
                     f"<code>{html.escape(pairs(best['params']))}</code>.")
        out.append(f"<p>{line}</p>")
        rows, best_row = [], None
        for i, t in enumerate(st["trials"]):
            run = runs.get(f"{st['name']}-trial-{t['number']}")
            if best and t["number"] == best["number"]:
                best_row = i
            rows.append([t["number"], t["state"].lower(), t["value"], t["params"],
                         Raw(f"#{run['id']} · {html.escape(str(run['wandb_id'] or '-'))}") if run else None,
                         when(run["created_at"]) if run else None, t.get("error")])
        if rows:
            out.append(table(["trial", "state", metric, "parameters", "training run", "when", "error"], rows,
                             best_row=best_row))
        d = sweep_dir(store, sid)
        out.append(img(d / "optimization_history.png", "optimization history")
                   + img(d / "param_importances.png", "parameter importances"))
    return "\n".join(out)


def monitoring_section(store) -> str:
    """Monitoring sessions and the latest alerts."""
    from src.monitoring.records import alerts, open_monitor_store, sessions

    st = open_monitor_store(store)
    rows = []
    for s in sessions(st):
        m = s["summary"]
        rows.append([s["id"], when(s["started_at"]), s["model"], m.get("monitor/samples"), m.get("monitor/accuracy"),
                     m.get("monitor/avg_confidence"), (m.get("latency") or {}).get("p50_ms"),
                     m.get("monitor/throughput_samples_per_sec"), m.get("monitor/drift_score"),
                     (m.get("drift") or {}).get("is_drift")])
    if not rows:
        return muted("No monitoring sessions yet (python src/inference_monitor.py).")
    out = table(["session", "started", "model", "images", "accuracy", "avg conf", "p50 ms", "img/s", "drift score",
                 "drift"], rows)
    al = alerts(st, 20)
    if al:
        out += "<h3>Latest alerts</h3>" + table(["when", "level", "alert"],
                                                [[when(a["at"]), a["level"], a["text"]] for a in al])
    return out
