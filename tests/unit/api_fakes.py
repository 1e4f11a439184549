"""Fakes for the control API tests: a cluster in a FakeStore, a fake manager answering intents, a clock."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from appliance.api.app import create_app
from appliance.channel.intents import INTENT_DIR, Intent, take_all
from appliance.config.schema import LocalConfig
from appliance.core.model import Member
from appliance.core.tags import Tags
from appliance.dcs.fake import FakeDCS, FakeStore

NOW = 1000.0
WALL = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SCOPE = "demo"
LSN = 50_000_000
MB = 1024 * 1024
CONFIG: dict[str, Any] = {
    "ttl": 5, "loop_wait": 1, "retry_timeout": 2, "maximum_lag_on_failover": MB,
    "postgresql": {"use_pg_rewind": True, "use_slots": True,
                   "parameters": {"max_connections": 100, "work_mem": "4MB"}},
}


def member(name: str, role: str = "replica", state: str = "running", xlog: int = LSN,
           tags: dict[str, Any] | None = None) -> Member:
    host = f"10.0.0.{name[-1]}"
    return Member(name=name, conn_url=f"postgres://{host}:5432/postgres", api_url=f"http://{host}:8008/patroni",
                  state=state, role=role, xlog_location=xlog, timeline=1, tags=Tags(dict(tags or {})),
                  replication_state="streaming" if role == "replica" else None)


class Cluster:
    """A realistic cluster view in a FakeStore, written by one FakeDCS per node (as the managers do)."""

    def __init__(self) -> None:
        self.store = FakeStore(clock=lambda: 0.0)  # a frozen clock: leases never expire
        self.nodes: dict[str, FakeDCS] = {}

    def node(self, name: str) -> FakeDCS:
        if name not in self.nodes:
            self.nodes[name] = FakeDCS(self.store, name, ttl=30, scope=SCOPE)
        return self.nodes[name]

    def publish(self, m: Member) -> None:
        self.node(m.name).touch_member(m)

    def lead(self, name: str) -> None:
        assert self.node(name).acquire_leader()

    def release(self, name: str) -> None:
        self.node(name).release_leader()

    def api_dcs(self) -> FakeDCS:
        return FakeDCS(self.store, "api", ttl=30, scope=SCOPE)

    def raw(self) -> dict[str, str]:
        return self.store.raw()


def standard_cluster(config: dict[str, Any] | None = CONFIG, lead: str | None = "node1") -> Cluster:
    c = Cluster()
    c.publish(member("node1", role="primary", xlog=LSN))
    c.publish(member("node2"))
    c.publish(member("node3"))
    if lead:
        c.lead(lead)
    if config is not None:
        assert c.node("node1").write_config(copy.deepcopy(config), None)
    return c


def state(role: str = "primary", **over: Any) -> dict[str, Any]:
    """A fresh manager state document (see appliance/manager/publish.py state_doc)."""
    doc: dict[str, Any] = {
        "pid": os.getpid(), "name": "node1", "scope": SCOPE, "updated_mono": NOW - 0.5,
        "loop_started_mono": NOW - 0.5, "max_age": 6.0, "ttl": 5, "maximum_lag_on_failover": MB,
        "paused": False, "dcs_ok": True, "lease": {"holder": role == "primary", "expires_mono": NOW + 5},
        "postgres": {"running": True, "role": role}, "cluster_optime": LSN, "tags": {},
        "cluster": {"leader": "node1", "sync_standby": [], "config": CONFIG},
        "patroni_doc": {"state": "running", "role": role, "server_version": 150002,
                        "postmaster_start_time": "2026-01-01 00:00:00+00:00"},
        "events": [], "intents": {}, "scheduled_restart": None,
    }
    doc.update(over)
    return doc


@dataclass
class FakeManager:
    """Answers intents the way Manager._handle_intents does, from a table kind -> (status, reason)."""

    run_dir: str
    doc: dict[str, Any] = field(default_factory=state)
    answers: dict[str, tuple[str, str]] = field(default_factory=dict)
    taken: list[Intent] = field(default_factory=list)
    hung: bool = False  # fresh state but never takes an intent

    def state(self) -> dict[str, Any]:
        if not self.hung:
            for intent in take_all(self.run_dir):
                self.taken.append(intent)
                self._answer(intent)
        return copy.deepcopy(self.doc)

    def _answer(self, intent: Intent) -> None:
        outcomes = self.doc.setdefault("intents", {})
        if intent.kind == "restart" and intent.params.get("schedule"):
            self.doc["scheduled_restart"] = {"schedule": intent.params["schedule"], "id": intent.id}
            outcomes[intent.id] = {"kind": "restart", "status": "scheduled", "reason": intent.params["schedule"]}
            return
        if intent.kind == "cancel_restart":
            self.doc["scheduled_restart"] = None
        status, reason = self.answers.get(intent.kind, ("done", ""))
        outcomes[intent.id] = {"kind": intent.kind, "status": status, "reason": reason}

    def queued(self) -> list[Path]:
        return sorted((Path(self.run_dir) / INTENT_DIR).glob("*.json"))


class Clock:
    """Monotonic time that only moves when the code under test sleeps; each sleep runs ``on_sleep``."""

    def __init__(self, start: float = NOW) -> None:
        self.now = start
        self.on_sleep: Callable[[], None] = lambda: None
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        self.on_sleep()


def make_app(tmp_path: Path, cluster: Cluster | None = None, manager: FakeManager | None = None,
             local: LocalConfig | None = None, clock: Clock | None = None, **kwargs: Any) -> tuple[Flask, FakeManager]:
    run_dir = str(tmp_path / "run")
    mgr = manager or FakeManager(run_dir)
    clk = clock or Clock()
    app = create_app(run_dir, reader=mgr.state, clock=clk, sleep=clk.sleep, wall=lambda: WALL,
                     dcs=cluster.api_dcs() if cluster else None, local=local, **kwargs)
    return app, mgr


def client_for(app: Flask) -> FlaskClient:
    return app.test_client()


def said(resp: Any) -> str:
    """What an answer says: Patroni's text for a success, the ``error`` of the JSON body of an error
    (every 4xx/5xx of the API is ``{"error": ..., "field": ...}``)."""
    if resp.status_code >= 400:
        assert resp.is_json, f"{resp.status_code} is not JSON: {resp.get_data(as_text=True)!r}"
        doc = resp.get_json()
        assert "error" in doc and "field" in doc, doc
        return str(doc["error"])
    return str(resp.get_data(as_text=True))
