"""Helpers for the HA integration tests: SQL through HAProxy, a write ledger, DCS reads, waiting."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

from appliance.core.model import ClusterView
from appliance.dcs.etcd import EtcdDCS
from appliance.demo.cluster import DemoCluster
from tests.support.cluster import demo_cluster

T = TypeVar("T")


def sql(dsn: str, query: str, params: tuple[Any, ...] | None = None, timeout: int = 3) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, connect_timeout=timeout, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


@contextmanager
def ledger_cluster() -> Iterator[DemoCluster]:
    """A three-node demo with the ``ledger`` table the fault tests' writers fill (torn down after)."""
    with demo_cluster(timeout=240) as c:
        sql(c.dsn("primary"), "CREATE TABLE ledger(id bigint PRIMARY KEY)")
        yield c


def try_write(dsn: str, value: int) -> bool:
    try:
        sql(dsn, "INSERT INTO ledger(id) VALUES (%s)", (value,), timeout=1)
    except psycopg.Error:
        return False
    return True


def wait_until(what: str, fn: Callable[[], T | None], timeout: float, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:  # a node being down is expected while waiting
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


def observer(cluster: DemoCluster) -> EtcdDCS:
    """A DCS client that only reads (no lease, no member key), as the demo's operator (TLS, auth)."""
    return cluster.etcd("test-observer")


def read_view(cluster: DemoCluster) -> ClusterView:
    dcs = observer(cluster)
    try:
        return dcs.read()
    finally:
        dcs.close()


def patch_config(cluster: DemoCluster, changes: dict[str, Any]) -> None:
    dcs = observer(cluster)
    try:
        view = dcs.read()
        assert view.config is not None, "no config key to patch"
        merged = {**view.config, **changes}
        assert dcs.write_config(merged, view.config_revision), "config CAS failed"
    finally:
        dcs.close()


def roles(cluster: DemoCluster) -> dict[str, tuple[str | None, str | None]]:
    return {m["name"]: (m.get("role"), m.get("state")) for m in cluster.status()["members"]}


def healthy(cluster: DemoCluster) -> str | None:
    """The primary's name when one primary and every other node a running replica; else None."""
    members = cluster.status()["members"]
    primaries = [m["name"] for m in members if m.get("role") == "primary" and m.get("state") == "running"]
    replicas = [m for m in members if m.get("role") == "replica" and m.get("state") == "running"]
    if len(primaries) == 1 and len(replicas) == len(members) - 1:
        return primaries[0]
    return None


class Ledger:
    """A writer through HAProxy 5000 that records every acknowledged commit."""

    def __init__(self, dsn: str, interval: float = 0.02, start: int = 1) -> None:
        self.dsn = dsn
        self.interval = interval
        self.acked: list[int] = []
        self.acked_at: list[float] = []  # monotonic time of each acknowledgement
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._next = start

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            value = self._next
            self._next += 1
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, connect_timeout=1, autocommit=True)
                conn.execute("SET statement_timeout = '3s'")
                conn.execute("INSERT INTO ledger(id) VALUES (%s)", (value,))
                self.acked.append(value)  # the server acknowledged the commit
                self.acked_at.append(time.monotonic())
            except psycopg.Error:
                self.failed += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.1)
            time.sleep(self.interval)
        if conn is not None:
            conn.close()

    def __enter__(self) -> Ledger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def acked_since(self, count: int) -> int:
        return len(self.acked) - count

    def longest_gap(self, since: float = 0.0) -> float:
        """The longest time without an acknowledged write after ``since`` (monotonic)."""
        times = [t for t in self.acked_at if t >= since]
        return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))


def api_get(cluster: DemoCluster, node: str, path: str) -> Any:
    """GET a node's REST API over HTTPS (the demo CA verifies its certificate)."""
    from appliance.net.http import request

    return request(f"https://{cluster.layout.host(node)}:8008{path}", cluster.api_client(), timeout=3).json()


def published_lease_expiry(cluster: DemoCluster, node: str) -> float:
    """The monotonic time until which ``node``'s manager holds a renewed leader lease (0: none)."""
    import json

    try:
        doc = json.loads((cluster.layout.run_dir(node) / "state.json").read_text())
    except (OSError, ValueError):
        return 0.0
    lease = doc.get("lease") or {}
    expires = lease.get("expires_mono")
    return float(expires) if lease.get("holder") and isinstance(expires, (int, float)) else 0.0


class WritablePoller:
    """Asks every node ``pg_is_in_recovery()`` every ``interval`` seconds, each on its own thread.

    ``overlaps()`` lists the moments when two nodes answered read-write within one round: the
    invariant "never two writable nodes at once" holds when it is empty. A node that does not
    answer (stopped, fenced, frozen) counts as not writable: it cannot acknowledge a write either.
    """

    def __init__(self, dsns: dict[str, str], interval: float = 0.2) -> None:
        self.dsns = dsns
        self.interval = interval
        self.samples: dict[str, list[tuple[float, bool]]] = {n: [] for n in dsns}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in dsns]

    def _run(self, node: str) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            writable = False
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsns[node], connect_timeout=1, autocommit=True)
                    conn.execute("SET statement_timeout = '1s'")
                row = conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()
                writable = bool(row and row[0])
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
            self.samples[node].append((started, writable))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        if conn is not None:
            conn.close()

    def __enter__(self) -> WritablePoller:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    def writable_at(self, node: str, when: float, window: float | None = None) -> bool:
        """Whether ``node`` answered read-write in its sample closest before ``when`` (within one
        ``window``, default two intervals: an older answer says nothing about ``when``)."""
        window = 2 * self.interval if window is None else window
        best: tuple[float, bool] | None = None
        for at, writable in self.samples[node]:
            if at > when:
                break
            best = (at, writable)
        return best is not None and when - best[0] <= window and best[1]

    def overlaps(self) -> list[tuple[float, list[str]]]:
        """(time, nodes) for every sample at which two or more nodes were read-write."""
        found = []
        for node, rows in self.samples.items():
            for at, writable in rows:
                if not writable:
                    continue
                others = [n for n in self.samples if n != node and self.writable_at(n, at)]
                if others:
                    found.append((at, sorted([node, *others])))
        return sorted(found)

    def writable_seconds(self, node: str, since: float = 0.0) -> float:
        """Roughly how long ``node`` answered read-write after ``since``."""
        rows = [r for r in self.samples[node] if r[0] >= since]
        return sum(b[0] - a[0] for a, b in itertools.pairwise(rows) if a[1])

    def rounds(self) -> int:
        return min((len(rows) for rows in self.samples.values()), default=0)


def fence_counts(cluster: DemoCluster) -> dict[str, int]:
    """How often each node's fencer killed PostgreSQL (0 for a node without a report yet)."""
    from appliance.fence.order import read_report

    counts = {}
    for node in cluster.nodes:
        report = read_report(str(cluster.layout.run_dir(node)))
        counts[node] = report.fences if report is not None else 0
    return counts



class EventCollector:
    """Gathers the structured events each node's manager publishes (state.json keeps the last 50)
    by reading them every 0.2 s: the union, oldest first, per node."""

    def __init__(self, cluster: DemoCluster) -> None:
        self.cluster = cluster
        self.events: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {n: {} for n in cluster.nodes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import json

        while not self._stop.is_set():
            for node in self.cluster.nodes:
                try:
                    doc = json.loads((self.cluster.layout.run_dir(node) / "state.json").read_text())
                except (OSError, ValueError):
                    continue
                for event in doc.get("events") or []:
                    self.events[node][(event.get("ts"), event.get("kind"), event.get("reason"))] = event
            self._stop.wait(0.2)

    def __enter__(self) -> EventCollector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def of(self, node: str, kind: str | None = None, action: str | None = None) -> list[dict[str, Any]]:
        found = sorted(self.events[node].values(), key=lambda e: e.get("ts") or 0)
        return [e for e in found if (kind is None or e.get("kind") == kind)
                and (action is None or e.get("action") == action)]


def writable_poller(cluster: DemoCluster) -> WritablePoller:
    """The two-primaries poller over every node of ``cluster``."""
    return WritablePoller({n: cluster.node_dsn(n) for n in cluster.nodes})


def lost_writes(cluster: DemoCluster, ledger: Ledger, since: int = 0) -> list[int]:
    """Acknowledged ledger ids (>= ``since``) missing on the primary. The read retries for a while:
    right after a fault HAProxy may still be cutting the sessions of the server it marked down."""
    (rows,) = wait_until("the ledger read back through the primary",  # a 1-tuple: truthy even when empty
                         lambda: (sql(cluster.dsn("primary"), "SELECT id FROM ledger WHERE id >= %s", (since,),
                                      timeout=30),), 60)
    present = {r[0] for r in rows}
    return [i for i in ledger.acked if i >= since and i not in present]


def program_pid(cluster: DemoCluster, node: str, program: str) -> int | None:
    """The pid supervisord gives for ``program`` on ``node`` (None when it is not running)."""
    out = cluster.supervisorctl(node, "pid", program).stdout.strip()
    return int(out) if out.isdigit() and out != "0" else None


def haproxy_chkdown(cluster: DemoCluster) -> dict[str, int]:
    """How often HAProxy marked each server of the write backend down (its chkdown counter)."""
    import csv
    import io

    from appliance.net.http import request

    text = request(cluster.status()["proxy"]["stats_url"] + ";csv").body.decode()
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return {r["svname"]: int(r.get("chkdown") or 0) for r in rows if r["pxname"] == "primary"
            and r["svname"] not in ("FRONTEND", "BACKEND")}


def replication_report(cluster: DemoCluster) -> str:
    """Each node's replication as PostgreSQL and its manager see it, with its last events (for the
    message of a failed wait: a replica that runs but does not replay)."""
    import json

    lines = []
    for node in cluster.nodes:
        try:
            rows = sql(cluster.node_dsn(node), "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text, "
                       "pg_last_wal_replay_lsn()::text, (SELECT timeline_id FROM pg_control_checkpoint()), "
                       "(SELECT status || ' from ' || coalesce(sender_host, '?') || ' on timeline ' || received_tli "
                       "FROM pg_stat_wal_receiver)")
            lines.append(f"{node}: recovery, received, replayed, checkpoint timeline, receiver = {rows[0]}")
        except Exception as exc:
            lines.append(f"{node}: no answer from PostgreSQL ({exc})")
        try:
            doc = json.loads((cluster.layout.run_dir(node) / "state.json").read_text())
        except (OSError, ValueError) as exc:
            lines.append(f"  no manager state ({exc})")
            continue
        lines.append(f"  manager: postgres={doc.get('postgres')} job={doc.get('job')} ha_state={doc.get('ha_state')}")
        for event in (doc.get("events") or [])[-12:]:
            lines.append(f"  {event.get('ts')} {event.get('kind')}: {event.get('reason')}")
    return "\n".join(lines)
