"""A fake W&B server behind wandb's own public API (``wandb.Api``, ``public.Run``, ``Artifact``).

``wandb.Api`` sends every GraphQL request through ``ServiceApi.execute_graphql`` (to wandb-core, then HTTP);
this fake transport answers them from memory instead: runs and artifact versions that offline runs logged
(as ``wandb sync`` would have uploaded them), ``useArtifact`` and ``linkArtifact`` mutations recorded as
calls. Only what the lineage sync asks is answered; any other request fails the test loudly.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

NOW = "2026-12-07T00:00:00"


def _gid(kind: str, n: int) -> str:
    return base64.b64encode(f"{kind}:{n}".encode()).decode()


@dataclass
class Version:
    id: str
    entity: str
    project: str
    collection: str
    type: str
    digest: str
    index: int
    aliases: set[str] = field(default_factory=set)


class FakeServer:
    """What the server holds, and every mutation it was asked for (``calls``)."""

    def __init__(self, viewer_entity: str = "team"):
        self.viewer_entity = viewer_entity  # the API key's default entity, as `GetDefaultEntity` reports it
        self.runs: set[tuple[str, str, str]] = set()
        self.versions: list[Version] = []
        self.registry: dict[tuple[str, str], dict[str, set[str]]] = {}  # (entity, name) -> version id -> aliases
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._ids = itertools.count(1)

    # -- what `wandb sync` uploaded ---------------------------------------------------------
    def add_run(self, entity: str, project: str, run_id: str) -> None:
        self.runs.add((entity, project, run_id))

    def add_artifact(self, entity: str, project: str, name: str, type_: str, digest: str, aliases) -> Version:
        same = [v for v in self.versions if (v.entity, v.project, v.collection) == (entity, project, name)]
        found = next((v for v in same if v.digest == digest), None)
        if found is None:
            found = Version(_gid("Artifact", next(self._ids)), entity, project, name, type_, digest, len(same))
            self.versions.append(found)
            for v in same:
                v.aliases.discard("latest")
            found.aliases.add("latest")
        for a in aliases:
            for v in same:
                v.aliases.discard(a)
            found.aliases.add(a)
        return found

    def mutations(self, op: str) -> list[dict[str, Any]]:
        return [v for name, v in self.calls if name == op]

    # -- the transport ------------------------------------------------------------------------
    def execute_graphql(self, query: str, variables=None, timeout=None, *, parse=json.loads, **_):
        variables = dict(variables or {})
        op = re.search(r"(?:query|mutation)\s+(\w+)", query)
        name = op.group(1) if op else ""
        handler = getattr(self, f"_op_{name}", None)
        if handler is None:
            raise AssertionError(f"the fake W&B server does not answer {name or query[:80]!r}")
        return parse(json.dumps(handler(variables)))

    def _op_GetDefaultEntity(self, v):
        return {"viewer": {"id": _gid("User", 1), "entity": self.viewer_entity}}

    def _op_Run(self, v):
        key = (v["entity"], v["project"], v["name"])
        if key not in self.runs:
            return {"project": None}
        return {"project": {"run": {"id": _gid("Run", 1), "name": v["name"], "displayName": v["name"],
                                    "projectId": "1", "state": "finished", "config": "{}",
                                    "summaryMetrics": "{}", "systemMetrics": "{}", "tags": [], "group": None,
                                    "jobType": None, "createdAt": NOW, "heartbeatAt": NOW}}}

    def _find(self, entity: str, project: str, ref: str) -> Version | None:
        coll, _, tag = ref.partition(":")
        if project == "model-registry":  # a linked version, as `link` reads it back: vN of the portfolio
            linked = list(self.registry.get((entity, coll), {}))
            index = int(tag[1:]) if tag[:1] == "v" and tag[1:].isdigit() else -1
            return next((v for v in self.versions if 0 <= index < len(linked) and v.id == linked[index]), None)
        for ver in self.versions:
            if (ver.entity, ver.project, ver.collection) == (entity, project, coll) and (
                    tag in ver.aliases or tag == f"v{ver.index}"):
                return ver
        return None

    def _membership(self, ver: Version) -> dict[str, Any]:
        project = {"id": _gid("Project", 1), "internalId": "1", "name": ver.project, "entity": {"name": ver.entity}}
        return {"__typename": "ArtifactCollectionMembership", "id": _gid("Membership", 1), "versionIndex": ver.index,
                "createdAt": NOW,
                "aliases": [{"__typename": "ArtifactAlias", "id": _gid("Alias", i), "alias": a}
                            for i, a in enumerate(sorted(ver.aliases))],
                "artifactCollection": {"__typename": "ArtifactSequence", "name": ver.collection, "project": project},
                "artifact": {"__typename": "Artifact", "id": ver.id,
                             "artifactSequence": {"__typename": "ArtifactSequence", "name": ver.collection,
                                                  "project": project},
                             "versionIndex": ver.index, "artifactType": {"name": ver.type}, "description": None,
                             "metadata": "{}", "ttlDurationSeconds": -2, "ttlIsInherited": True, "tags": [],
                             "historyStep": None, "state": "COMMITTED", "size": 1, "digest": ver.digest,
                             "commitHash": "abc", "fileCount": 2, "createdAt": NOW, "updatedAt": NOW,
                             "aliases": [{"__typename": "ArtifactAlias", "id": _gid("Alias", i), "alias": a,
                                          "artifactCollection": {"__typename": "ArtifactSequence",
                                                                 "name": ver.collection, "project": project}}
                                         for i, a in enumerate(sorted(ver.aliases))]}}

    def _op_ArtifactMembershipByName(self, v):
        ver = self._find(v["entity"], v["project"], v["name"])
        return {"project": {"artifactCollectionMembership": self._membership(ver) if ver else None}}

    def _op_UseArtifact(self, v):
        assert (v["entityName"], v["projectName"], v["runName"]) in self.runs
        self.calls.append(("useArtifact", v))
        ver = next(x for x in self.versions if x.id == v["artifactID"])
        return {"useArtifact": {"artifact": {"id": ver.id, "digest": ver.digest, "description": None,
                                             "state": "COMMITTED", "createdAt": NOW, "metadata": "{}"}}}

    def _op_LinkArtifact(self, v):
        inp = v["input"]
        self.calls.append(("linkArtifact", inp))
        ver = next(x for x in self.versions if x.id == inp["artifactID"])
        coll = self.registry.setdefault((inp["entityName"], inp["artifactPortfolioName"]), {})
        coll.setdefault(ver.id, set())
        for a in inp.get("aliases") or []:
            for aliases in coll.values():
                aliases.discard(a["alias"])
            coll[ver.id].add(a["alias"])
        return {"result": {"versionIndex": list(coll).index(ver.id)}}

    def registered(self, entity: str, name: str) -> dict[str, set[str]]:
        """The Model Registry collection ``name``: {source collection:alias-of-its-local-version: aliases}."""
        by_id = {v.id: v for v in self.versions}
        out = {}
        for vid, aliases in self.registry.get((entity, name), {}).items():
            src = by_id[vid]
            local = sorted(a for a in src.aliases if a.startswith("local-v"))
            out[f"{src.collection}:{local[0] if local else src.index}"] = set(aliases)
        return out


@pytest.fixture
def fake_server(monkeypatch):
    """``wandb.Api()`` talks to a :class:`FakeServer` (the key is a dummy; nothing leaves the process)."""
    from wandb.apis.public import api as public_api
    from wandb.apis.public.service_api import ServiceApi
    from wandb.sdk import wandb_login

    server = FakeServer()
    monkeypatch.setattr(ServiceApi, "execute_graphql", lambda self, *a, **k: server.execute_graphql(*a, **k))
    monkeypatch.setattr(ServiceApi, "feature_enabled", lambda self, feature, **k: False)
    monkeypatch.setattr(wandb_login, "_verify_login", lambda *a, **k: None, raising=False)
    monkeypatch.setattr(public_api.wandb_login, "_verify_login", lambda *a, **k: None, raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://wandb.invalid")
    return server
