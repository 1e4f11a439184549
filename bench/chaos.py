"""Chaos run: random faults every 20-60 s on the demo under pgbench load and a ledger writer.

    python -m bench.chaos --minutes 30 --mode async|strict [--seed N]

Faults: kill of a whole node (then start), SIGSTOP of a manager (8-20 s), kill -9 of a postmaster,
SIGSTOP (5-20 s) or kill -9 of an etcd member (the etcd leader among them), kill -9 of a REST API,
a timing change (ttl/loop_wait/retry_timeout) mid-flight, a switchover, and a full pg_wal (each
node's pg_wal is moved onto a small tmpfs of its own at the start; the fault fills it for 15-40 s;
a node re-cloned since has a plain pg_wal again and the fault is skipped there). The primary is the
target of most of them. Reported as JSON: faults injected, acknowledged writes lost (must be 0 in
strict mode), seconds with two writable nodes (must be 0), the longest write gap per fault kind
and the failovers that no fault asked for.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.demo.cluster import DemoCluster
from appliance.net.http import request
from appliance.postgres.process import read_pid_file
from tests.integration.ha_helpers import (
    Ledger,
    WritablePoller,
    healthy,
    lost_writes,
    patch_config,
    program_pid,
    read_view,
    sql,
    wait_until,
    writable_poller,
)
from tests.support.walfs import fill, move_wal_to_tmpfs, wal_mounts, wal_on

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
# Faults after which the leader may change; any other fault that moves the leader is a false failover.
MAY_FAIL_OVER = {"node_kill", "manager_stop", "switchover", "disk_full"}
TIMINGS = ({"ttl": 5, "loop_wait": 1, "retry_timeout": 2}, {"ttl": 8, "loop_wait": 2, "retry_timeout": 3},
           {"ttl": 6, "loop_wait": 1, "retry_timeout": 2})


@dataclass
class Fault:
    kind: str
    target: str
    at: float  # monotonic
    leader_before: str | None
    leader_after: str | None = None
    healed_after: float | None = None
    note: str = ""


@dataclass
class ChaosRun:
    """Injects faults one after another on a running demo and records what each one cost."""

    cluster: DemoCluster
    rng: random.Random
    interval: tuple[float, float] = (20.0, 60.0)
    faults: list[Fault] = field(default_factory=list)
    wal_mounts: dict[str, Path] = field(default_factory=dict)  # node -> the tmpfs its pg_wal is on

    def program_pid(self, node: str, program: str) -> int | None:
        return program_pid(self.cluster, node, program)

    @staticmethod
    def frozen(pid: int | None, seconds: float) -> None:
        """SIGSTOP ``pid`` for ``seconds`` (always continued)."""
        if pid is None:
            return
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    def etcd_leader(self) -> str | None:
        """The node whose etcd member leads (etcdctl endpoint status against each member)."""
        c = self.cluster
        client = c.layout.client_dir
        env = dict(os.environ, ETCDCTL_USER=f"root:{c.secrets.etcd_root_password}")
        for node in c.nodes:
            out = subprocess.run(["etcdctl", f"--endpoints=https://{c.layout.host(node)}:2379", "--command-timeout=2s",
                                  f"--cacert={c.secrets.ca_file}", f"--cert={client / 'node.crt'}",
                                  f"--key={client / 'node.key'}", "endpoint", "status", "-w", "json"],
                                 capture_output=True, text=True, timeout=10, check=False, env=env)
            try:
                status = json.loads(out.stdout)[0]["Status"]
            except (ValueError, LookupError, TypeError):
                continue
            if status.get("leader") == status.get("header", {}).get("member_id"):
                return node
        return None

    def pick_target(self, primary: str) -> str:
        others = [n for n in self.cluster.nodes if n != primary]
        return primary if self.rng.random() < 0.6 else self.rng.choice(others)

    def inject(self, kind: str, primary: str) -> Fault:
        target = self.pick_target(primary)
        fault = Fault(kind, target, time.monotonic(), primary)
        c = self.cluster
        if kind == "node_kill":
            c.kill(target)
            time.sleep(self.rng.uniform(3, 12))
            c.start(target)
        elif kind == "manager_stop":
            seconds = self.rng.uniform(8, 20)
            fault.note = f"{seconds:.0f}s"
            self.frozen(self.program_pid(target, "manager"), seconds)
        elif kind == "postmaster_kill":
            found = read_pid_file(str(c.layout.data_dir(target)))
            if found is not None:
                os.kill(found.pid, signal.SIGKILL)
        elif kind in ("etcd_stop", "etcd_kill"):
            if self.rng.random() < 0.5:
                target = self.etcd_leader() or target
                fault.target, fault.note = target, "etcd leader"
            pid = self.program_pid(target, "etcd")
            if pid is not None and kind == "etcd_kill":
                os.kill(pid, signal.SIGKILL)
            elif pid is not None:
                seconds = self.rng.uniform(5, 20)
                fault.note += f" {seconds:.0f}s"
                self.frozen(pid, seconds)
        elif kind == "api_kill":
            pid = self.program_pid(target, "api")
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        elif kind == "config_change":
            timing = self.rng.choice(TIMINGS)
            fault.target, fault.note = "dcs", json.dumps(timing)
            patch_config(c, dict(timing))
        elif kind == "switchover":
            candidate = self.rng.choice([n for n in c.nodes if n != primary])
            fault.target = candidate
            answer = request(f"https://{c.layout.host(primary)}:8008/switchover", c.api_client(), method="POST",
                             body={"leader": primary, "candidate": candidate}, timeout=60)
            fault.note = f"{answer.status}"
        elif kind == "disk_full":
            self.disk_full(fault)
        return fault

    def disk_full(self, fault: Fault) -> None:
        mount = self.wal_mounts.get(fault.target)
        if mount is None or not wal_on(self.cluster, fault.target, mount):
            fault.note = "skipped: pg_wal not on its tmpfs (re-cloned)"
            return
        seconds = self.rng.uniform(15, 40)
        fault.note = f"{seconds:.0f}s"
        filler = fill(mount, leave_mb=4)
        try:
            time.sleep(seconds)
        finally:
            filler.unlink()

    def heal(self, fault: Fault, timeout: float = 180.0) -> None:
        want = fault.target if fault.kind == "switchover" and fault.note == "200" else None
        # POST /switchover may answer before the candidate runs as primary: healed once it does.
        leader = wait_until("a healthy cluster", lambda: (h := healthy(self.cluster)) and (want in (None, h)) and h,
                            timeout, interval=0.5)
        fault.healed_after = time.monotonic() - fault.at
        fault.leader_after = leader

    def run(self, seconds: float, kinds: tuple[str, ...], stop: Callable[[], bool] = lambda: False) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stop():
            primary = wait_until("a healthy cluster", lambda: healthy(self.cluster), 180, interval=0.5)
            fault = self.inject(self.rng.choice(kinds), primary)
            self.faults.append(fault)
            self.heal(fault)
            print(json.dumps({"fault": fault.kind, "target": fault.target, "note": fault.note,
                              "leader": [fault.leader_before, fault.leader_after],
                              "healed_s": round(fault.healed_after or 0, 1)}), flush=True)
            time.sleep(max(0.0, min(self.rng.uniform(*self.interval), deadline - time.monotonic())))


ALL_FAULTS = ("node_kill", "manager_stop", "postmaster_kill", "etcd_stop", "etcd_kill", "api_kill",
              "config_change", "switchover", "disk_full")


class PgbenchLoad:
    """pgbench through HAProxy 5000 in short rounds (a round ends at the first broken connection)."""

    def __init__(self, dsn: str, clients: int = 2) -> None:
        self.dsn = dsn
        self.clients = clients
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            subprocess.run([PGBENCH, "-n", "-c", str(self.clients), "-T", "10", self.dsn], capture_output=True,
                           timeout=60, check=False)
            self.rounds += 1
            self._stop.wait(0.5)

    def __enter__(self) -> PgbenchLoad:
        subprocess.run([PGBENCH, "-i", "-s", "2", self.dsn], capture_output=True, timeout=300, check=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(70)


def summary(run: ChaosRun, ledger: Ledger, poll: WritablePoller, lost: list[int], mode: str) -> dict[str, Any]:
    gaps: dict[str, float] = {}
    for i, fault in enumerate(run.faults):
        until = run.faults[i + 1].at if i + 1 < len(run.faults) else time.monotonic()
        window = [t for t in ledger.acked_at if fault.at <= t <= until]
        edges = [fault.at, *window]
        gap = max((b - a for a, b in itertools.pairwise(edges)), default=until - fault.at)
        gaps[fault.kind] = round(max(gaps.get(fault.kind, 0.0), gap), 2)
    overlaps = poll.overlaps()
    false_failovers = [f"{f.kind}@{f.target}" for f in run.faults
                       if f.kind not in MAY_FAIL_OVER and f.leader_after != f.leader_before]
    # A leader change after a fault had healed, before the next one: no fault asked for it.
    false_failovers += [f"after {a.kind}@{a.target} had healed" for a, b in itertools.pairwise(run.faults)
                        if b.leader_before != a.leader_after]
    return {
        "benchmark": "chaos",
        "mode": mode,
        "faults": len(run.faults),
        "by_kind": {k: sum(1 for f in run.faults if f.kind == k) for k in sorted({f.kind for f in run.faults})},
        "acknowledged": len(ledger.acked),
        "lost": len(lost),
        "two_writable_seconds": round(len({round(at / poll.interval) for at, _ in overlaps}) * poll.interval, 1),
        "longest_write_gap_s": gaps,
        "false_failovers": false_failovers,
        "slowest_heal_s": round(max((f.healed_after or 0 for f in run.faults), default=0.0), 1),
    }


def chaos(cluster: DemoCluster, seconds: float, mode: str, seed: int, interval: tuple[float, float],
          kinds: tuple[str, ...] = ALL_FAULTS, pgbench: bool = True,
          mounts: dict[str, Path] | None = None) -> dict[str, Any]:
    """Run the chaos schedule on ``cluster`` (a ledger table is created) and return the summary.
    ``mounts``: a mount point per node for its pg_wal tmpfs (the caller unmounts them once the
    cluster is down); without them there is no disk_full fault."""
    if mounts:
        # Room for max_wal_size (1GB) and wal_keep_size (128MB) and a margin: a 320 MB pg_wal, as
        # in test_disk_full, filled by itself on every node within 30 minutes of pgbench and the
        # strict cluster had nowhere to go (the first 30-minute run stopped on that).
        move_wal_to_tmpfs(cluster, mounts, size_mb=1600)
        wait_until("a healthy cluster, pg_wal on tmpfs", lambda: healthy(cluster), 180, interval=0.5)
    else:
        kinds = tuple(k for k in kinds if k != "disk_full")
    # Through HAProxy: right after the pg_wal move the primary may have restarted under it.
    wait_until("the ledger table", lambda: sql(cluster.dsn("primary"),
                                              "CREATE TABLE IF NOT EXISTS ledger(id bigint PRIMARY KEY)") or True, 60)
    strict = mode == "strict"
    patch_config(cluster, {"synchronous_mode": strict, "synchronous_mode_strict": strict})
    if strict:
        wait_until("a synchronous standby", lambda: (v := read_view(cluster)).sync is not None
                   and bool(v.sync.sync_standby), 60)
    run = ChaosRun(cluster, random.Random(seed), interval, wal_mounts=dict(mounts or {}))
    poll = writable_poller(cluster)
    load = PgbenchLoad(cluster.dsn("primary")) if pgbench else None
    with poll, Ledger(cluster.dsn("primary"), start=10_000_000) as ledger:
        if load is not None:
            load.__enter__()
        try:
            run.run(seconds, kinds)
        finally:
            if load is not None:
                load.__exit__()
        time.sleep(2)
    lost = lost_writes(cluster, ledger, since=10_000_000)
    doc = summary(run, ledger, poll, lost, mode)
    doc["seed"] = seed
    doc["pgbench_rounds"] = load.rounds if load is not None else 0
    return doc


def main() -> None:
    from bench.common import fresh_cluster

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--mode", choices=("async", "strict"), default="async")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--min-interval", type=float, default=20)
    parser.add_argument("--max-interval", type=float, default=60)
    args = parser.parse_args()
    # The mounts outlive the cluster: unmounted only once its PostgreSQL servers are down.
    with wal_mounts(["node1", "node2", "node3"]) as mounts, fresh_cluster() as cluster:
        doc = chaos(cluster, args.minutes * 60, args.mode, args.seed, (args.min_interval, args.max_interval),
                    mounts={n: mounts[n] for n in cluster.nodes})
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
