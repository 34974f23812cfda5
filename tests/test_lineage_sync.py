"""Lineage that survives offline runs (issue 27.1-2).

One offline workflow (version → train → register → promote → monitor) runs for real; its W&B run files are
decoded, and the lineage journal must hold every input edge and Model Registry link W&B refused offline.
Then ``sync-lineage`` runs against wandb's own public-API classes over a fake transport holding what
``wandb sync`` would have uploaded: every edge is declared exactly once, every registered version linked
with its aliases, and a second sync declares nothing.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from wandb_fake_server import fake_server  # noqa: F401  (fixture)
from wandb_records import read_run

NAME = "label-spreading-classifier"
ENTITY = "team"


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    from src.data.synth import generate_dataset
    from src.data_versioning import create_dataset_artifact
    from src.inference_monitor import InferenceMonitor
    from src.model_registry import promote_model, register_model
    from src.train_with_wandb import train_with_wandb

    tmp = tmp_path_factory.mktemp("lineage")
    store = tmp / "store"
    with pytest.MonkeyPatch.context() as mp:
        for var, value in {"WANDB_DIR": str(tmp / "wb"), "MLOPS_STORE": str(store), "WANDB_MODE": "offline",
                           "WANDB_ENTITY": ENTITY, "WANDB_SILENT": "true", "HOME": str(tmp)}.items():
            mp.setenv(var, value)
        for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_SWEEP_ID"):
            mp.delenv(var, raising=False)
        data = generate_dataset(tmp / "shelf", n_classes=3, train_per_class=12, test_per_class=4, image_size=48,
                                seed=2, classes=("apple", "milk", "soda_can"))
        other = generate_dataset(tmp / "other", n_classes=3, train_per_class=12, test_per_class=4, image_size=48,
                                 seed=5, classes=("apple", "milk", "soda_can"))
        create_dataset_artifact(data, "shelf", progress=False)
        common = dict(labeled_ratio=0.5, fine_tune_epochs=0, pseudo_finetune_epochs=0, n_neighbors=5, image_size=48,
                      progress=False, algorithms=["label_spreading"])
        train_with_wandb(data_dir=data, models_dir=tmp / "models", **common)
        model = tmp / "models" / "label_spreading_model.skops"
        register_model(model, NAME, aliases=["staging"])
        promote_model(NAME, "production")
        mon = InferenceMonitor(f"{NAME}:production", window=20)
        for p in sorted((data / "test").rglob("*.jpg"))[:6]:
            mon.predict(p)
        mon.finish()
        # a sweep trial on another dataset, after the user's model was registered
        train_with_wandb(data_dir=other, models_dir=tmp / "trial", group="sweep-abc", **common)
    # in start order: folder names only resolve to the second, and two registry runs can share one
    runs = sorted((read_run(d) for d in glob.glob(str(tmp / "wb" / "wandb" / "offline-run-*"))),
                  key=lambda r: r["run"]["start"])
    return {"store": store, "runs": runs, "tmp": tmp}


def _by_job(runs, job_type):
    return [r for r in runs if r["run"]["job_type"] == job_type]


def _edges(store):
    from src.tracking.journal import edges

    return [(e.kind, e.run_path, e.artifact, e.target, e.aliases) for e in edges(store)]


def test_the_journal_lists_every_edge_offline_runs_could_not_record(workflow):
    runs, store = workflow["runs"], workflow["store"]
    assert all(r["run"]["entity"] == ENTITY for r in runs)
    path = {r["run"]["id"]: f"{ENTITY}/{r['run']['project']}/{r['run']['id']}" for r in runs}
    [train, trial] = _by_job(runs, "train")
    [monitor] = _by_job(runs, "monitor")
    register, promote = _by_job(runs, "model-registry")
    extractor = next(a for a in train["artifacts"] if a.endswith("-feature-extractor"))
    ext_ref = f"{extractor}:{next(x for x in train['artifact_info'][extractor]['aliases'] if x.startswith('sha-'))}"
    expected = [
        ("use", path[train["run"]["id"]], "shelf:local-v1", "", ()),
        ("use", path[register["run"]["id"]], ext_ref, "", ()),
        ("link", path[register["run"]["id"]], f"{NAME}:local-v0", NAME, ("staging",)),
        ("use", path[promote["run"]["id"]], ext_ref, "", ()),
        ("link", path[promote["run"]["id"]], f"{NAME}:local-v0", NAME, ("production", "staging")),
        ("use", path[monitor["run"]["id"]], f"{NAME}:local-v0", "", ()),
        ("use", path[trial["run"]["id"]], "other:local-v1", "", ()),
    ]
    assert _edges(store) == expected
    # every artifact an edge names was logged offline under that alias, so `wandb sync` uploads it
    logged = {f"{name}:{alias}" for r in runs for name, info in r["artifact_info"].items() for alias in info["aliases"]}
    assert {e[2] for e in expected} <= logged
    for r in runs:  # W&B refused these offline: no run file holds a use or link record
        assert "use_artifact" not in r and "link_artifact" not in r


def test_a_sweep_trial_on_another_dataset_leaves_the_registered_latest_alone(workflow):
    runs = workflow["runs"]
    [train, trial] = _by_job(runs, "train")
    logged_to_registered = [r["run"]["job_type"] for r in runs if NAME in r["artifacts"]]
    assert set(logged_to_registered) == {"model-registry"}  # only the registry's runs log to the registered name
    assert f"{NAME}-shelf" in train["artifacts"] and f"{NAME}-other-sweep-abc" in trial["artifacts"]


def _replay_sync(server, runs) -> None:
    """What `wandb sync` of every offline run puts on the server."""
    for r in runs:
        server.add_run(ENTITY, r["run"]["project"], r["run"]["id"])
        for name, info in r["artifact_info"].items():
            server.add_artifact(ENTITY, r["run"]["project"], name, info["type"], info["digest"], info["aliases"])


def test_sync_lineage_declares_every_edge_once_and_links_with_aliases(workflow, fake_server, capsys, tmp_path):
    import shutil

    from src.model_registry import main

    store = tmp_path / "store"
    shutil.copytree(workflow["store"], store)
    _replay_sync(fake_server, workflow["runs"])
    assert main(["sync-lineage", "--store", str(store), "--wandb-mode", "online"]) == 0
    assert "declared 7 lineage edge(s) in W&B; 0 still waiting" in capsys.readouterr().out
    uses = [(u["runName"], u["artifactID"]) for u in fake_server.mutations("useArtifact")]
    assert len(uses) == len(set(uses)) == 5
    by_id = {v.id: f"{v.collection}:{a}" for v in fake_server.versions for a in v.aliases
             if a.startswith(("local-", "sha-"))}
    expected = {(e[1].rpartition("/")[2], e[2]) for e in _edges(store) if e[0] == "use"}
    assert {(run, by_id[aid]) for run, aid in uses} == expected
    links = fake_server.mutations("linkArtifact")
    assert [(link["artifactPortfolioName"], sorted(a["alias"] for a in link["aliases"])) for link in links] == [
        (NAME, ["staging"]), (NAME, ["production", "staging"])]
    assert fake_server.registered(ENTITY, NAME) == {f"{NAME}:local-v0": {"production", "staging"}}

    calls = len(fake_server.calls)
    assert main(["sync-lineage", "--store", str(store), "--wandb-mode", "online", "--json"]) == 0
    assert len(fake_server.calls) == calls  # a second sync declares nothing
    assert '"done": []' in capsys.readouterr().out


def test_an_edge_whose_run_was_not_synced_waits_and_says_why(workflow, fake_server, tmp_path):
    import shutil

    from src.tracking.journal import edges, sync_lineage

    store = tmp_path / "store"
    shutil.copytree(workflow["store"], store)
    monitor = _by_job(workflow["runs"], "monitor")[0]
    _replay_sync(fake_server, [r for r in workflow["runs"] if r is not monitor])
    res = sync_lineage(store, wandb_mode="online")
    [waiting] = res["waiting"]
    assert waiting["artifact"] == f"{NAME}:local-v0" and "wandb sync" in waiting["reason"]
    assert monitor["run"]["id"] in waiting["reason"]
    _replay_sync(fake_server, [monitor])
    res = sync_lineage(store, wandb_mode="online")
    assert [d["artifact"] for d in res["done"]] == [f"{NAME}:local-v0"] and not res["waiting"]
    assert all(e.done for e in edges(store))


def test_sync_lineage_needs_the_server(workflow, capsys):
    from src.model_registry import main

    assert main(["sync-lineage", "--wandb-mode", "offline"]) == 2
    assert "online" in capsys.readouterr().err
