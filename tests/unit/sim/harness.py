"""The HA-loop simulation: real Managers (observe/decide/execute/publish, lease keeper, memory) on one
in-memory DCS, simulated PostgreSQL servers and fencers, one injected clock, faults, and the safety
invariants checked after every step."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from appliance.api.app import state_age
from appliance.channel.failsafe import Received
from appliance.channel.intents import Intent
from appliance.channel.local import LocalChannels
from appliance.channel.state import StateDoc, staleness
from appliance.config import LocalLayers, load_local
from appliance.core.model import ClusterView, Member
from appliance.core.state import PeerStatus
from appliance.core.wal import wal_lag
from appliance.dcs.base import DCSError
from appliance.dcs.fake import FakeDCS, FakeStore
from appliance.fence.order import FencerReport, LeaseOrder
from appliance.fence.policy import PgSight, step
from appliance.manager.events import EventLog
from appliance.manager.executor import FatalError
from appliance.manager.loop import Manager
from appliance.manager.peers import parse_status

from .fakepg import SimJobs, SimPgOps
from .world import Data, Server, World

DT = 0.1  # seconds per step: the fencer's period
SCOPE = "sim"
DEFAULT_DYNAMIC: dict[str, Any] = {"ttl": 5, "loop_wait": 1, "retry_timeout": 2, "maximum_lag_on_failover": 1048576}


@dataclass
class Node:
    """One simulated machine: its manager process (None while down), fencer, and fault flags."""

    name: str
    run_dir: str
    config_path: str
    manager: Manager | None = None
    jobs: SimJobs | None = None
    next_tick: float = 0.0
    frozen_until: float | None = None  # the manager is SIGSTOPped until then
    up: bool = True  # False: the whole machine is off (crash)
    fencer_reported: float = -1.0
    # A lease the DCS revoked early breaks its promise: its holder believes in the deadline of its
    # last renewal until it reads again, while another node may rightly take the free key. That
    # belief (this deadline, not a later one) is not counted; two writable nodes still are, except
    # while the holder cannot be asked (``Simulation._revoked_and_unaskable``).
    revoked_deadline: float | None = None
    unaskable_since_revocation: bool = False  # cut off or frozen at some step since then

    def believes_revoked(self, deadline: float | None) -> bool:
        """``deadline`` is the one of the renewal whose lease the DCS revoked."""
        return deadline is not None and deadline == self.revoked_deadline


@dataclass
class Verdicts:
    violations: list[str] = field(default_factory=list)
    promotions: list[tuple[float, str]] = field(default_factory=list)
    excused: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)  # Simulation._revoked_and_unaskable

    def add(self, now: float, what: str) -> None:
        self.violations.append(f"t={now:.1f}: {what}")


class Simulation:
    """``Simulation(tmp, nodes=3)``; ``run(seconds)``; faults as methods; ``verdicts.violations``."""

    def __init__(self, tmp: Path, nodes: int = 3, dynamic: dict[str, Any] | None = None,
                 tags: dict[str, dict[str, Any]] | None = None) -> None:
        self.now = 0.0
        self.clock: Callable[[], float] = lambda: self.now
        self.store = FakeStore(clock=self.clock)
        self.dynamic = {**DEFAULT_DYNAMIC, **(dynamic or {})}
        names = [f"node{i + 1}" for i in range(nodes)]
        self.world = World({n: Server(n) for n in names})
        self.verdicts = Verdicts()
        self.observer = FakeDCS(self.store, "observer", scope=SCOPE)
        self.nodes: dict[str, Node] = {}
        self._layers: dict[str, LocalLayers] = {}  # each node's file read once (it never changes here)
        self.dcs_cut: set[str] = set()
        # The node-local files (state document, lease order, fencer report) in memory: the same
        # documents the real processes exchange, without the file system (5x faster).
        self.states: dict[str, StateDoc] = {}
        self.orders: dict[str, LeaseOrder] = {}
        self.reports: dict[str, FencerReport] = {}
        self.intents: dict[str, list[Intent]] = {}
        self.failsafe: dict[str, Received] = {}
        self.channels = LocalChannels(write_state=self.states.__setitem__, write_order=self.orders.__setitem__,
                                      read_order=self.orders.get, read_report=self.reports.get,
                                      take_intents=lambda run_dir: self.intents.pop(run_dir, []),
                                      read_failsafe=self.failsafe.get)
        self.writes = True
        self.transitions: set[tuple[str, str | None, str]] = set()
        for i, name in enumerate(names):
            run_dir = tmp / name
            run_dir.mkdir(parents=True, exist_ok=True)
            config = {"scope": SCOPE, "name": name, "appliance": {"run_dir": str(run_dir)},
                      "restapi": {"connect_address": f"{name}:8008"},
                      "bootstrap": {"dcs": dict(self.dynamic)}, "tags": (tags or {}).get(name, {})}
            path = run_dir.parent / f"{name}.yml"
            path.write_text(yaml.safe_dump(config))
            self.nodes[name] = Node(name, str(run_dir), str(path), next_tick=0.05 + 0.3 * i)
            self._boot(self.nodes[name])

    # --- processes -------------------------------------------------------------------------------
    def _boot(self, node: Node) -> None:
        if node.config_path not in self._layers:
            self._layers[node.config_path] = load_local(node.config_path, {})
        layers = self._layers[node.config_path]
        dcs = FakeDCS(self.store, node.name, ttl=int(self.dynamic["ttl"]), scope=SCOPE)
        if node.name in self.dcs_cut:
            dcs.available = False
        jobs = SimJobs(self.clock)
        ops = SimPgOps(self.world, node.name, self._check_promotion)
        manager = Manager(layers, dcs, ops, clock=self.clock, wall=lambda: 1_800_000_000.0 + self.now,  # type: ignore[arg-type]
                          peers=lambda members, quick=(), asker=node.name: self._peers(asker, members),
                          events=EventLog(), jobs=jobs, boot=self.clock,
                          channels=self.channels)
        manager.check_dynamic = lambda config, local, where: []
        manager.config_path = node.config_path
        node.manager, node.jobs = manager, jobs

    def _peers(self, asker: str, members: list[Member]) -> tuple[PeerStatus, ...]:
        """GET /patroni of each member, answered as the real API does from that node's state file."""
        answers = []
        for member in members:
            node = self.nodes.get(member.name)
            server = self.world.servers.get(member.name)
            if node is None or server is None or not node.up or server.frozen \
                    or not self.world.reachable(asker, member.name):
                answers.append(PeerStatus(name=member.name, reachable=False))
                continue
            doc = self.states.get(node.run_dir)
            body = dict((doc or {}).get("patroni_doc") or {"state": "unknown", "role": "uninitialized"})
            if doc is None or staleness(doc, self.now) or node.manager is None:
                body["state"] = "unknown"
            else:
                body["state_age"] = state_age(doc, self.now)
            body["postgres_writable"] = server.running and not server.in_recovery  # the fencer's sight
            answers.append(parse_status(member.name, body))
        return tuple(answers)

    # --- one step --------------------------------------------------------------------------------
    def run(self, seconds: float, on_step: Callable[[Simulation], None] | None = None) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.step()
            if on_step is not None:
                on_step(self)

    def run_until(self, done: Callable[[], bool], seconds: float) -> bool:
        """Step until ``done()`` holds (checked after each step) or ``seconds`` have passed."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.step()
            if done():
                return True
        return False

    def step(self) -> None:
        self.now = round(self.now + DT, 6)
        for node in self.nodes.values():
            self._fencer(node)
        for node in self.nodes.values():
            self._manager(node)
        if self.writes:
            self.world.write(self.now)  # replicates after the write
        else:
            self.world.replicate()
        self._check_step()

    def _fencer(self, node: Node) -> None:
        server = self.world.servers[node.name]
        if not node.up or server.frozen:
            return
        result = step(self.orders.get(node.run_dir), PgSight(running=server.running, writable=server.running
                                                        and not server.in_recovery), self.now)
        if result.fence is not None:
            server.stop()
        if self.now - node.fencer_reported >= 1.0:
            self.reports[node.run_dir] = FencerReport(alive_at=self.now, pid=_PID, watchdog="off")
            node.fencer_reported = self.now

    def _manager(self, node: Node) -> None:
        manager, jobs = node.manager, node.jobs
        if manager is None or jobs is None or not node.up or self.world.servers[node.name].frozen:
            return
        if node.frozen_until is not None:
            if self.now < node.frozen_until:
                return
            node.frozen_until = None
        jobs.advance()
        if self.now + 1e-9 < node.next_tick and not manager._wake.is_set():
            return
        manager._wake.clear()
        try:
            manager.tick()
        except FatalError as exc:
            self.verdicts.add(self.now, f"{node.name}: manager stopped on a fatal error: {exc}")
            node.manager = None
            return
        node.next_tick = self.now + manager.next_wait()
        step = manager.transition
        if step is not None:
            self.transitions.add((step.source.value, step.action.__name__ if step.action else None, step.target.value))
            if not step.listed:
                self.verdicts.add(self.now, f"{node.name}: a transition not in the table: {step.source} --"
                                            f"{step.action.__name__ if step.action else None}-->")

    # --- invariants ------------------------------------------------------------------------------
    def _check_step(self) -> None:
        for node in self.nodes.values():
            if node.revoked_deadline is not None and (node.name in self.world.isolated
                                                      or self.world.servers[node.name].frozen):
                node.unaskable_since_revocation = True
        writable = self.world.writable()
        if len(writable) > 1:
            unaskable = [n for n in writable if self._revoked_and_unaskable(n)]
            if len(writable) - len(unaskable) > 1 or not unaskable:
                self.verdicts.add(self.now, f"two writable primaries: {writable}")
            else:
                self.verdicts.excused.append((self.now, tuple(writable)))
        believers = [n.name for n in self.nodes.values() if n.manager is not None and n.up
                     and n.manager.fencing.holder and n.manager.fencing.deadline is not None
                     and n.manager.fencing.deadline > self.now
                     and not n.believes_revoked(n.manager.fencing.deadline)]
        if len(believers) > 1:
            self.verdicts.add(self.now, f"two nodes believe they hold a valid lease: {believers}")

    def _revoked_and_unaskable(self, name: str) -> bool:
        """The residual risk of a lease the DCS ended early (fencing.md): its holder still runs inside
        the deadline of its last renewal, and the others could not ask it (a partition, docker pause,
        at some moment since the revocation), so one of them may have promoted beside it; both
        accept writes until its manager reads the DCS or its fencer acts at that deadline."""
        node = self.nodes[name]
        deadline = node.manager.fencing.deadline if node.manager is not None else None
        return (node.believes_revoked(deadline) and deadline is not None and deadline > self.now
                and node.unaskable_since_revocation)

    def view(self) -> ClusterView:
        return self.observer.read()

    def _check_promotion(self, name: str) -> None:
        self.verdicts.promotions.append((self.now, name))
        node = self.nodes[name]
        manager = node.manager
        if manager is not None and manager.stopping:
            self.verdicts.add(self.now, f"{name} promoted while stopping")
        try:
            view = self.view()
        except DCSError:
            return
        cfg = manager.ha if manager is not None else None
        server = self.world.servers[name]
        data = server.data
        if cfg is None or data is None:
            return
        if cfg.sync_only and view.sync is not None and view.sync.leader and not view.sync.matches(name):
            self.verdicts.add(self.now, f"{name} promoted outside the sync set {view.sync.sync_standby}")
        named = view.failover is not None and view.failover.member == name
        if cfg.synchronous_quorum and not named:
            self._check_quorum(name, data, view)
        lag = wal_lag(view.status.optime, data.lsn)
        if not named and lag > cfg.maximum_lag_on_failover:
            self.verdicts.add(self.now, f"{name} promoted {lag} bytes behind (maximum_lag_on_failover "
                                        f"{cfg.maximum_lag_on_failover})")
        if cfg.synchronous_mode and cfg.synchronous_mode_strict:
            lost = [w for w in self.world.ledger if w.acked and not data.holds(w.timeline, w.lsn)]
            if lost:
                self.verdicts.add(self.now, f"{name} promoted without {len(lost)} acknowledged write(s) "
                                            f"(first {lost[0]}) in strict synchronous mode")

    def _check_quorum(self, name: str, data: Data, view: ClusterView) -> None:
        """Quorum mode: the node must hold everything that quorum + 1 members of the voting set (the
        sync key's voters and leader, itself included) hold, as their data stands now. The key's
        leader itself takes over again on Patroni's other rule (nobody it saw is ahead of it): a
        node promoted after it may hold WAL it lacks, which that node acknowledged to nobody in
        strict mode before owning the sync key; the ledger check covers that case."""
        sync = view.sync
        if sync is None or not sync.leader or name == sync.leader:
            return
        voting = sorted({sync.leader, *sync.sync_standby})
        covered = [v for v in voting if (d := self.world.servers[v].data) is not None and data.holds(d.timeline, d.lsn)]
        if len(covered) < (sync.quorum or 0) + 1:
            self.verdicts.add(self.now, f"{name} promoted holding the WAL of only {covered} of the voting set "
                                        f"{voting} (quorum {sync.quorum})")

    # --- faults ----------------------------------------------------------------------------------
    def crash(self, name: str) -> None:
        """The machine loses power: manager, fencer and PostgreSQL gone (the DCS lease runs out)."""
        node = self.nodes[name]
        node.up, node.manager, node.jobs, node.frozen_until = False, None, None, None
        self.world.servers[name].stop()
        self.world.servers[name].hung = False

    def boot(self, name: str) -> None:
        node = self.nodes[name]
        if node.up and node.manager is not None:
            return
        node.up = True
        node.next_tick = self.now + DT
        self._boot(node)

    def freeze_manager(self, name: str, seconds: float) -> None:
        """SIGSTOP of the manager only: PostgreSQL and the fencer go on."""
        if self.nodes[name].manager is not None:
            self.nodes[name].frozen_until = self.now + seconds

    def pause_node(self, name: str, paused: bool) -> None:
        """docker pause: every process of the node stops, PostgreSQL included."""
        self.world.servers[name].frozen = paused

    def isolate(self, name: str, cut: bool) -> None:
        """A network partition around the node: no DCS, no peers, no replication, no clients."""
        (self.world.isolated.add if cut else self.world.isolated.discard)(name)
        self.cut_dcs(name, cut)

    def cut_dcs(self, name: str, cut: bool) -> None:
        (self.dcs_cut.add if cut else self.dcs_cut.discard)(name)
        manager = self.nodes[name].manager
        if manager is not None:
            dcs = manager.dcs
            assert isinstance(dcs, FakeDCS)
            dcs.available = not cut

    def revoke_leader_lease(self) -> None:
        """etcd revokes the lease of the leader key while its holder keeps it alive (a stale etcd
        leader, frozen and thawed: etcd#15247): the leader and its member key vanish at once."""
        row = self.store.entry(f"/service/{SCOPE}/leader")
        if row is not None and row.lease:
            self.store.revoke(row.lease)
            node = self.nodes.get(row.value)
            if node is not None and node.manager is not None:
                node.revoked_deadline = node.manager.fencing.deadline
                node.unaskable_since_revocation = False

    def kill_postgres(self, name: str) -> None:
        self.world.servers[name].stop()

    def hang_postgres(self, name: str, hung: bool) -> None:
        server = self.world.servers[name]
        if server.running:
            server.hung = hung

    def stop_manager(self, name: str, whole_node: bool = True) -> None:
        """SIGTERM: the stop flag, the tick in flight, then the clean shutdown (Manager.shutdown).
        ``whole_node``: docker stop, the node is down until boot(), and whatever the manager left
        running (a paused manager leaves PostgreSQL) dies with the container. Otherwise only the
        manager stops (supervisorctl stop manager): the API and the fencer go on."""
        node = self.nodes[name]
        manager = node.manager
        if manager is None or not node.up:
            return
        manager.stopping = True
        with contextlib.suppress(FatalError):
            manager.tick()
        manager.shutdown()
        node.manager = node.jobs = None
        if whole_node:
            node.up = False
            self.world.servers[name].stop()

    def set_config(self, **changes: Any) -> None:
        """PATCH /config: a merge into the dynamic configuration in the DCS."""
        view = self.view()
        config = dict(view.config or {})
        config.update(changes)
        assert self.observer.write_config(config, view.config_revision), "config CAS failed"

    def request(self, name: str, kind: str, params: dict[str, Any] | None = None) -> Intent:
        """POST /restart, /reload or /reinitialize on one node: an intent in its queue."""
        intent = Intent(kind=kind, params=dict(params or {}), created=self.now)
        self.intents.setdefault(self.nodes[name].run_dir, []).append(intent)
        return intent

    def switchover(self, leader: str, candidate: str | None) -> None:
        from appliance.core.model import Failover

        self.observer.write_failover(Failover(leader=leader, member=candidate), None)

    # --- outcomes --------------------------------------------------------------------------------
    def heal(self) -> None:
        for name in self.nodes:
            self.isolate(name, False)
            self.pause_node(name, False)
            self.hang_postgres(name, False)
            self.world.servers[name].fail_start = self.world.servers[name].fail_promote = False
            self.nodes[name].frozen_until = None
            self.boot(name)

    def leader(self) -> str | None:
        try:
            return self.view().leader_name
        except DCSError:
            return None

    def healthy(self) -> str | None:
        """Why the cluster is not one primary holding the key with every other node streaming its data."""
        leader = self.leader()
        writable = self.world.writable()
        if leader is None or writable != [leader]:
            return f"leader key {leader}, writable {writable}"
        primary = self.world.servers[leader].data
        assert primary is not None
        for name, server in self.world.servers.items():
            if name == leader:
                continue
            if not (server.running and server.in_recovery and server.streaming and server.data is not None):
                return f"{name} is not a streaming replica (running={server.running}, streaming={server.streaming})"
            if not server.data.can_follow(primary) or server.data.timeline != primary.timeline:
                return f"{name} is not on {leader}'s timeline {primary.timeline}"
        return None

    def pending_switchover(self) -> str | None:
        """A failover key still waiting for the leader to carry it out (one more promotion to come)."""
        try:
            failover = self.view().failover
        except DCSError:
            return "the DCS is unreachable"
        return f"a switchover is pending: {failover}" if failover is not None else None

    def lost_acknowledged(self) -> list[Any]:
        leader = self.leader()
        data = self.world.servers[leader].data if leader else None
        if data is None:
            return [w for w in self.world.ledger if w.acked]
        return [w for w in self.world.ledger if w.acked and not data.holds(w.timeline, w.lsn)]


_PID = os.getpid()
