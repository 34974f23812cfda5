"""Contracts with W&B's online paths, which cannot run here (no server, no network).

1. The command line ``wandb agent`` would run for a trial of ``sweep_config.yaml``, built by wandb's own
   agent code (``wandb.wandb_agent.Agent._command_run``, which uses
   ``wandb.sdk.launch.sweeps.utils.create_sweep_command_args``) from parameter values drawn by the local
   runner, parses in the training script and gives a valid :class:`TrainConfig` with those values; in
   every argument form the agent offers (``${args}``, ``${args_no_hyphens}``, ``${args_no_equals}``).
2. Online, the code calls ``use_artifact`` / ``link_model`` / ``alert`` with the right names: ``wandb.init``
   returns a :class:`FakeRun` that records what the project's :class:`Tracker` asks of it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


# -- 1. the agent's command line ----------------------------------------------------------
def drawn_params(monkeypatch, n: int = 8) -> tuple[dict, list[dict[str, Any]]]:
    """``sweep_config.yaml`` and the parameters its first ``n`` local trials received, from a seeded
    sampler (unseeded, all 8 trials drew the same ``algorithm`` about once in a hundred runs)."""
    from src.hpo import study as study_module
    from src.hpo.agent import AgentOptions, run_agent
    from src.hpo.space import load_sweep_config, validate_sweep_config
    from src.hpo.study import create_local_sweep

    real_sampler = study_module.make_sampler
    monkeypatch.setattr(study_module, "make_sampler", lambda cfg, seed=None: real_sampler(cfg, seed=0))

    cfg = load_sweep_config(ROOT / "sweep_config.yaml")
    sweep_id = create_local_sweep(validate_sweep_config(dict(cfg)))
    seen: list[dict[str, Any]] = []

    def objective(params, epoch_callback, ctx):
        seen.append(dict(params))
        return 0.5 + 0.01 * len(seen)

    run_agent(sweep_id, n, objective=objective, options=AgentOptions(summary=False))
    return cfg, seen


def agent_command(monkeypatch, tmp_path, command: list[str], program: str, params: dict[str, Any]) -> list[str]:
    """What wandb's agent would execute for a run with ``params`` (its process start recorded, not run)."""
    import wandb
    from wandb import wandb_agent

    started = []

    class Recorder:
        def __init__(self, command=None, env=None, **_):
            started.append(list(command))

    monkeypatch.setattr(wandb_agent, "AgentProcess", Recorder)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    for var in (wandb.env.SWEEP_ID, wandb.env.RUN_ID, wandb.env.SWEEP_PARAM_PATH):  # the agent sets them
        monkeypatch.setenv(var, "unset-by-test")
    monkeypatch.setenv(wandb.env.SWEEP_ID, "sweep123")
    agent = wandb_agent.Agent(api=None, queue=None, sweep_id="sweep123")
    agent._sweep_command = list(command)
    agent._command_run({"run_id": "run123", "program": program, "args": {k: {"value": v} for k, v in params.items()}})
    [cmd] = started
    return cmd


SWEPT = ("labeled_ratio", "algorithms", "n_neighbors", "fine_tune_epochs", "fine_tune_lr")
FORMS = {"${args}": lambda k, v: f"--{k}={v}", "${args_no_hyphens}": lambda k, v: f"{k}={v}",
         "${args_no_equals}": None}


@pytest.mark.parametrize("form", FORMS)
def test_wandb_agent_command_lines_parse_in_the_training_script(form, monkeypatch, tmp_path):
    from src.train_with_wandb import build_parser, config_from_args
    from src.training.config import TrainConfig, apply_sweep_overrides

    cfg, drawn = drawn_params(monkeypatch)
    assert cfg["command"][-1] == "${args}" and cfg["program"] == "src/train_with_wandb.py"
    command = cfg["command"][:-1] + [form]
    algorithms = set()
    for params in drawn:
        assert set(params) == set(cfg["parameters"])  # a value for every parameter of the sweep
        argv = agent_command(monkeypatch, tmp_path, command, cfg["program"], params)
        assert argv[1:3] == ["python", "src/train_with_wandb.py"]
        args = argv[3:]
        if FORMS[form]:
            assert args == [FORMS[form](k, v) for k, v in params.items()]
        else:
            assert args == [x for k, v in params.items() for x in (f"--{k}", str(v))]
        tc = config_from_args(build_parser().parse_args(args)).validated()
        assert tc.labeled_ratio == params["labeled_ratio"] and tc.algorithms == (params["algorithm"],)
        assert tc.n_neighbors == params["n_neighbors"] and tc.fine_tune_epochs == params["fine_tune_epochs"]
        assert tc.fine_tune_lr == params["fine_tune_lr"]  # str() of a float reads back exactly
        over = apply_sweep_overrides(TrainConfig(), params)  # the same values through wandb.config
        assert {k: getattr(over, k) for k in SWEPT} == {k: getattr(tc, k) for k in SWEPT}
        algorithms.add(params["algorithm"])
    assert len(algorithms) >= 2  # the singular `algorithm` really varied


def test_name_value_tokens_only_stand_for_known_flags():
    from src.train_with_wandb import build_parser

    args = build_parser().parse_args(["labeled_ratio=0.3", "--run-name", "seed=7", "--tags", "a=b", "seed=3"])
    assert args.labeled_ratio == 0.3 and args.run_name == "seed=7" and args.tags == ["a=b"] and args.seed == 3
    with pytest.raises(SystemExit):
        build_parser().parse_args(["colour=red"])  # not a flag: still an error


# -- 2. online calls, recorded by a fake run ------------------------------------------------
class FakeConfig(dict):
    def update(self, values=(), allow_val_change=False, **kw):
        super().update(values, **kw)


class FakeRun:
    """The part of ``wandb.Run`` that :class:`~src.tracking.wandb_tracker.Tracker` uses; records lineage calls."""

    ids = itertools.count()

    def __init__(self, root: Path, **init):
        self.init = init
        self.id = f"fake{next(self.ids)}"
        self.dir = str(root / self.id / "files")
        self.config = FakeConfig(init.get("config") or {})
        self.summary: dict[str, Any] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.exit_code = None

    @property
    def job_type(self) -> str:
        return self.init["job_type"]

    def log(self, data, step=None):
        pass

    def define_metric(self, *a, **k):
        pass

    def log_artifact(self, artifact, aliases=None):
        self.calls.append(("log_artifact", {"artifact": artifact, "aliases": list(aliases or [])}))

    def use_artifact(self, artifact_or_name, type=None):
        self.calls.append(("use_artifact", {"artifact": artifact_or_name, "type": type}))

    def link_model(self, path, registered_model_name, name=None, aliases=None):
        files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(path).iterdir()}
        self.calls.append(("link_model", {"registered_model_name": registered_model_name, "name": name,
                                          "aliases": list(aliases or []), "files": files}))

    def alert(self, title, text, level=None, wait_duration=None):
        self.calls.append(("alert", {"title": title, "text": text, "level": level}))

    def finish(self, exit_code=0):
        self.exit_code = exit_code

    def called(self, what: str) -> list[dict[str, Any]]:
        return [c for name, c in self.calls if name == what]


def _patch_init(mp: pytest.MonkeyPatch, root: Path) -> list[FakeRun]:
    import wandb

    runs: list[FakeRun] = []

    def init(**kw):
        assert kw["mode"] == "online"
        runs.append(FakeRun(root, **kw))
        return runs[-1]

    mp.setattr(wandb, "init", init)
    return runs


@pytest.fixture
def fake_wandb(monkeypatch, tmp_path):
    """``wandb.init`` returns a :class:`FakeRun`; the list holds every run started."""
    return _patch_init(monkeypatch, tmp_path / "runs")


def one(runs: list[FakeRun], job_type: str) -> FakeRun:
    [run] = [r for r in runs if r.job_type == job_type]
    return run


@pytest.fixture(scope="module")
def trained_online(tmp_path_factory):
    """One real (tiny) training run in online mode, its W&B runs recorded by fakes; its own store."""
    from src.data.synth import generate_dataset
    from src.train_with_wandb import train_with_wandb

    tmp = tmp_path_factory.mktemp("online")
    data = generate_dataset(tmp / "shelf", n_classes=3, train_per_class=20, test_per_class=8, image_size=48,
                            seed=2, classes=("apple", "milk", "soda_can"))
    with pytest.MonkeyPatch.context() as mp:
        runs = _patch_init(mp, tmp / "runs")
        results = train_with_wandb(labeled_ratio=0.5, fine_tune_epochs=0, n_neighbors=5, data_dir=data,
                                   models_dir=tmp / "models", store=tmp / "store", wandb_mode="online",
                                   image_size=48, progress=False, algorithms=["label_spreading", "self_training"])
    return {"results": results, "models": tmp / "models", "runs": runs, "data": data}


def test_training_online_uses_the_dataset_version_it_trained_on(trained_online):
    runs, res = trained_online["runs"], trained_online["results"]
    produced = one(runs, "dataset-version").called("log_artifact")
    [dataset] = [c["artifact"] for c in produced if c["artifact"].type == "dataset"]
    train = one(runs, "train")
    [used] = train.called("use_artifact")
    art = used["artifact"]
    assert (art.name, art.type) == ("shelf", "dataset")  # the folder's name, as --dataset-name defaults
    assert art.manifest.digest() == dataset.manifest.digest()  # W&B finds the version by content, not number
    assert art.metadata["local_version"] == "v1" and res["dataset"]["version"] == "shelf:v1"
    assert not [c for c in train.called("log_artifact") if c["artifact"].type == "dataset"]  # used, not produced
    assert train.config["dataset_version"] == "shelf:v1"
    models = {c["artifact"].name: c["artifact"] for c in train.called("log_artifact") if c["artifact"].type == "model"}
    assert set(models) == {"label-spreading-classifier-shelf", "self-training-classifier-shelf",
                           "shelf-feature-extractor"}  # never a registered name: training moves no registered latest
    assert models["label-spreading-classifier-shelf"].metadata["dataset_version"] == "shelf:v1"
    assert train.exit_code == 0


def test_registry_promote_online_links_the_registered_name_with_its_aliases(trained_online, fake_wandb):
    from src.model_registry import promote_model, register_all

    fake_wandb.clear()
    register_all(trained_online["models"], aliases=["staging"], wandb_mode="online")
    reg = one(fake_wandb, "model-registry")
    links = {c["registered_model_name"]: c for c in reg.called("link_model")}
    assert set(links) == {"label-spreading-classifier", "self-training-classifier"}
    for name, link in links.items():
        assert link["name"] == name  # logged under the registered name, a collection only registry runs log to
        assert link["aliases"] == ["latest", "staging"] and sorted(link["files"]) == ["feature_extractor.pth",
                                                                                      "model.skops"]
    train = one(trained_online["runs"], "train")
    trained = {c["artifact"].name: c for c in train.called("log_artifact")}
    [extractor_alias] = [a for a in trained["shelf-feature-extractor"]["aliases"] if a.startswith("sha-")]
    # the extractor the training run logged is the registry run's input (the dataset edge is the training run's)
    assert {c["artifact"] for c in reg.called("use_artifact")} == {f"shelf-feature-extractor:{extractor_alias}"}
    for c in reg.called("log_artifact"):
        assert c["artifact"].manifest.digest() == trained[f"{c['artifact'].name}-shelf"]["artifact"].manifest.digest()
        assert not [a for a in c["aliases"] if a[:1] == "v" and a[1:].isdigit()] and "local-v0" in c["aliases"]
        assert c["artifact"].metadata["local_version"] == "v0"

    fake_wandb.clear()
    event = promote_model("self-training-classifier", "production", wandb_mode="online")
    assert event["action"] == "moved"
    [link] = one(fake_wandb, "model-registry").called("link_model")
    assert link["registered_model_name"] == link["name"] == "self-training-classifier"
    assert link["aliases"] == ["latest", "production", "staging"]


def test_monitor_online_alerts_on_drift(trained_online, fake_wandb, tmp_path):
    import wandb

    from src.inference_monitor import InferenceMonitor

    rng = np.random.default_rng(0)
    noise = tmp_path / "noise"
    noise.mkdir()
    for i in range(40):  # nothing like a grocery photo
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(noise / f"n{i}.png")
    fake_wandb.clear()
    mon = InferenceMonitor(trained_online["models"] / "label_spreading_model.skops", wandb_mode="online", window=40)
    for p in sorted(noise.iterdir()):
        mon.predict(p)
    report = mon.detect_drift()
    mon.finish()
    assert report["is_drift"]
    [alert] = one(fake_wandb, "monitor").called("alert")
    assert alert["title"] == "Data drift detected" and alert["level"] == wandb.AlertLevel.WARN
    assert "label_spreading_model.skops" in alert["text"]


def test_nothing_is_called_online_only_in_offline_mode(trained_online, monkeypatch):
    """The same Tracker calls are no-ops offline (W&B refuses use_artifact there), never errors."""
    from src.tracking import Tracker

    t = Tracker("probe", mode="disabled")
    t.run, t.mode = FakeRun(Path(os.environ["WANDB_DIR"])), "offline"
    t.use_artifact("shelf:latest")
    t.link_model(trained_online["models"], "x", ["production"], artifact_name="x")
    t.alert("title", "text")
    assert t.run.calls == []
    t.mode = "online"
    t.use_artifact("shelf:latest", "dataset")
    assert t.run.called("use_artifact") == [{"artifact": "shelf:latest", "type": "dataset"}]
