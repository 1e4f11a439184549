"""The image end to end: three containers from compose.yaml, real faults, an acknowledged-writes ledger.

One compose project for the session (strict synchronous replication); every scenario starts from a
healthy cluster and leaves one. Each fault measures the write unavailability seen through a
surviving node's HAProxy (the longest stretch without an acknowledged commit after the fault).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from functools import partial

import pytest

from appliance.net.http import request
from tests.e2e.conftest import record
from tests.e2e.dockerenv import NODES, Project, wait_for
from tests.e2e.ledger import Ledger

# Generous: the first test also pays for the image build (about 6 min on a fresh 2-core machine).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
TTL = 5  # the shipped dynamic default
ALL_ACKED: set[int] = set()  # every acknowledged write of the session: the final down/up must keep them all


def others(node: str) -> list[str]:
    return [n for n in NODES if n != node]


def primary(project: Project) -> str:
    return wait_for("one leader", project.leader, 60, detail=lambda: json.dumps(project.cluster()))


def new_leader(project: Project, old: str, timeout: float = 60) -> str:
    """Wait for the survivors to agree on a leader other than ``old``."""

    def probe() -> str | None:
        leader = project.leader(others(old))
        return leader if leader and leader != old else None

    return wait_for(f"a leader other than {old}", probe, timeout, 0.25,
                    lambda: json.dumps(project.cluster(others(old))))


def system_id(project: Project, node: str) -> str:
    doc = wait_for(f"{node}'s REST API", lambda: project.api(node, "/patroni"), 30)
    return str(doc["database_system_identifier"])


def roles(project: Project) -> dict[str, str]:
    doc = wait_for("the cluster view", project.cluster, 30)
    return {m["name"]: m["role"] for m in doc["members"]}


def table_ids(project: Project, node: str, port: int = 5000) -> set[int]:
    return {row[0] for row in project.query(node, "SELECT id FROM ledger", port)}


def check_ledger(project: Project, ledger: Ledger, via: str, earlier: set[int] | None = None) -> None:
    """Every acknowledged id is there, on the primary and (once replayed) on every replica."""
    acked = ledger.acked_ids()
    assert acked, "the ledger acknowledged nothing"
    acked |= earlier or set()
    missing = acked - table_ids(project, via)
    assert not missing, f"{len(missing)} acknowledged writes lost: {sorted(missing)[:20]}"
    for node in NODES:
        wait_for(f"{node} to replay every acknowledged write", partial(replayed, project, node, acked), 60)


def replayed(project: Project, node: str, acked: set[int]) -> bool:
    return not (acked - table_ids(project, node, 5432))


@pytest.fixture(autouse=True)
def logs_on_failure(request: pytest.FixtureRequest, project: Project) -> Iterator[None]:
    since = str(int(time.time()) - 1)
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for node in NODES:
            out = project.docker("logs", "--since", since, project.cid(node), check=False)
            lines = [line for line in (out.stdout + out.stderr).splitlines() if '"level":"info"' not in line]
            print(f"--- {node} since the test started ---\n" + "\n".join(lines[-150:]))


@pytest.fixture
def ledger(project: Project) -> Iterator[Ledger]:
    project.wait_settled(timeout=240)
    start = max(table_ids(project, NODES[0]) | {0}) + 1
    writer = Ledger(lambda node: project.connect(node), list(NODES), start_id=start)
    yield writer
    writer.stop()
    ALL_ACKED.update(writer.acked_ids())


def test_cluster_is_healthy_and_init_scripts_ran_once_on_the_bootstrap_primary(project: Project) -> None:
    assert not project.health_problems()
    runs = project.query(primary(project), "SELECT what, host FROM init_runs ORDER BY what")
    assert [r[0] for r in runs] == ["sh", "sql.gz"], runs
    for node in NODES:
        state = project.inspect(node)["State"]
        assert state["Health"]["Status"] == "healthy"
        owners = "stat -c %u:%g /proc/1; stat -c %U /var/lib/postgresql/data"
        user = project.docker("exec", project.cid(node), "sh", "-c", owners)
        assert user.stdout.split() == ["999:999", "postgres"]
    sync = project.query(primary(project), "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")
    assert sync == [(1,)]


def test_writes_through_5000_and_reads_through_5001_on_every_haproxy(project: Project) -> None:
    base = 1_000_000_000
    for i, node in enumerate(NODES):
        with project.connect(node, 5000) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
            conn.execute("INSERT INTO ledger (id, note) VALUES (%s, %s)", (base + i, f"via {node}"))
    for node in NODES:
        def sees_all(node: str = node) -> bool:
            with project.connect(node, 5001) as conn:
                assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
                rows = conn.execute("SELECT count(*) FROM ledger WHERE id >= %s", (base,)).fetchone()
            return rows == (len(NODES),)

        wait_for(f"{node}:5001 to serve every row from a replica", sees_all, 30)


def test_docker_kill_of_the_primary(project: Project, ledger: Ledger) -> None:
    old = primary(project)
    ledger.retarget(others(old))
    ledger.start()
    ledger.wait_acks_after(time.monotonic(), 20, 30)
    fault = time.monotonic()
    project.docker("kill", project.cid(old))
    new = new_leader(project, old)
    elected = time.monotonic() - fault
    ledger.wait_acks_after(fault + elected, 20, 60)
    gap = ledger.longest_gap(fault)
    project.docker("start", project.cid(old))
    project.wait_healthy(timeout=180)
    ledger.stop()
    assert project.leader() == new
    assert roles(project)[old] in ("replica", "sync_standby")
    check_ledger(project, ledger, new)
    record("kill_primary", {"new_leader_after_s": round(elected, 1), "write_unavailability_s": round(gap, 1)})


def test_network_disconnect_of_the_primary(project: Project, ledger: Ledger) -> None:
    old = primary(project)
    cid = project.cid(old)
    ledger.retarget(others(old))
    ledger.start()
    ledger.wait_acks_after(time.monotonic(), 20, 30)
    fault = time.monotonic()
    project.docker("network", "disconnect", project.network, cid)
    # A write on the cut-off primary itself: it must never become visible.
    insert = "INSERT INTO ledger (id, note) VALUES (-1, 'divergent')"
    divergent = threading.Thread(target=project.psql, args=(old, insert, 25))
    divergent.start()

    def read_only() -> bool:
        out = project.psql(old, "SELECT pg_is_in_recovery()", 5, dbname="postgres")
        return out.returncode != 0 or out.stdout.strip() == "t"

    wait_for(f"{old} to stop accepting writes", read_only, 60, 0.25)
    stopped = time.monotonic() - fault
    new = new_leader(project, old)
    elected = time.monotonic() - fault
    ledger.wait_acks_after(fault + elected, 20, 60)
    gap = ledger.longest_gap(fault)
    project.docker("network", "connect", "--alias", old, project.network, cid)
    divergent.join(60)
    project.wait_healthy(timeout=180)
    ledger.stop()
    assert project.leader() == new
    check_ledger(project, ledger, new)
    for node in NODES:
        assert project.query(node, "SELECT count(*) FROM ledger WHERE id = -1", 5432) == [(0,)], node
    record("network_disconnect_primary", {"old_primary_read_only_after_s": round(stopped, 1),
                                          "new_leader_after_s": round(elected, 1),
                                          "write_unavailability_s": round(gap, 1)})


def test_docker_pause_of_the_primary_longer_than_ttl(project: Project, ledger: Ledger) -> None:
    old = primary(project)
    ledger.retarget(others(old))
    ledger.start()
    ledger.wait_acks_after(time.monotonic(), 20, 30)
    fault = time.monotonic()
    project.docker("pause", project.cid(old))
    try:
        new = new_leader(project, old)
        elected = time.monotonic() - fault
        ledger.wait_acks_after(fault + elected, 20, 60)
        gap = ledger.longest_gap(fault)
        time.sleep(max(0.0, TTL + 7 - (time.monotonic() - fault)))
    finally:
        project.docker("unpause", project.cid(old))
    project.wait_healthy(timeout=180)
    ledger.stop()
    assert project.leader() == new
    check_ledger(project, ledger, new)
    record("pause_primary", {"paused_s": TTL + 7, "new_leader_after_s": round(elected, 1),
                             "write_unavailability_s": round(gap, 1)})


def etcd_members(project: Project, node: str) -> dict[str, str]:
    tls = "/run/pgappliance/tls"
    out = project.docker("exec", "-e", f"ETCDCTL_USER=root:{project.secret('etcd_root_password')}",
                         project.cid(node), "etcdctl", "--endpoints", "https://127.0.0.1:2379",
                         "--cacert", f"{tls}/ca.crt", "--cert", f"{tls}/node.crt", "--key", f"{tls}/node.key",
                         "member", "list", "-w", "json")
    return {m.get("name", ""): format(m["ID"], "x") for m in json.loads(out.stdout)["members"]}


def test_wiped_replica_volume_reclones_and_rejoins_etcd(project: Project, ledger: Ledger) -> None:
    leader = primary(project)
    victim = others(leader)[-1]
    before = etcd_members(project, leader)
    sysid = system_id(project, leader)
    ledger.retarget([leader])
    ledger.start()
    project.run_compose("rm", "-s", "-f", victim)
    project.docker("volume", "rm", project.volume(victim))
    start = time.monotonic()
    project.run_compose("up", "-d", "--no-build", victim)
    project.wait_healthy(timeout=240)
    healed = time.monotonic() - start
    ledger.wait_acks_after(time.monotonic(), 20, 60)
    gap = ledger.longest_gap(start)
    ledger.stop()
    after = etcd_members(project, leader)
    assert set(after) == set(NODES) and after[victim] != before[victim], (before, after)
    assert system_id(project, victim) == sysid
    check_ledger(project, ledger, project.leader() or leader)
    assert [r[0] for r in project.query(leader, "SELECT what FROM init_runs ORDER BY what")] == ["sh", "sql.gz"]
    record("wiped_replica_volume", {"healthy_again_after_s": round(healed, 1),
                                    "write_unavailability_s": round(gap, 1)})


def test_a_fatal_program_makes_the_container_exit_1_and_restart(project: Project) -> None:
    victim = others(primary(project))[0]
    cid = project.cid(victim)
    restarts = project.inspect(victim)["RestartCount"]
    since = str(int(time.time()) - 1)
    project.docker("exec", cid, "sh", "-c", "echo 'not a config' > /run/pgappliance/haproxy.cfg")
    project.docker("exec", "-u", "postgres", cid, "/opt/pgappliance/venv/bin/python", "-m", "supervisor.supervisorctl",
                   "-c", "/run/pgappliance/supervisord.conf", "restart", "haproxy", check=False)
    wait_for(f"{victim} to be restarted by its restart policy",
             lambda: project.inspect(victim)["RestartCount"] > restarts, 90)
    died = project.docker("events", "--since", since, "--until", str(int(time.time()) + 1), "--filter",
                          f"container={cid}", "--filter", "event=die", "--format", "{{.Actor.Attributes.exitCode}}")
    assert died.stdout.split()[:1] == ["1"], died.stdout
    assert "haproxy FATAL" in project.logs(victim, 400)
    project.wait_healthy(timeout=180)


def test_docker_stop_is_clean_and_down_up_keeps_every_row(project: Project, ledger: Ledger) -> None:
    old = primary(project)
    cid = project.cid(old)
    sysid = system_id(project, old)
    ledger.retarget(others(old))
    ledger.start()
    ledger.wait_acks_after(time.monotonic(), 20, 30)
    fault = time.monotonic()
    project.docker("stop", "-t", "60", cid, timeout=90)
    stop_took = time.monotonic() - fault
    logs = project.logs(old, 300)
    assert "database system is shut down" in logs and "released the leader key" in logs, logs[-3000:]
    state = project.inspect(old)["State"]
    assert (state["Running"], state["ExitCode"]) == (False, 0)
    new_leader(project, old)
    ledger.wait_acks_after(time.monotonic(), 20, 60)
    switch_gap = ledger.longest_gap(fault)
    ledger.stop()
    project.docker("start", cid)
    project.wait_healthy(timeout=180)
    record("docker_stop_primary", {"stop_took_s": round(stop_took, 1), "write_unavailability_s": round(switch_gap, 1)})

    down = time.monotonic()
    project.run_compose("down", "-t", "60", timeout=400)
    down_took = time.monotonic() - down
    up = time.monotonic()
    project.run_compose("up", "-d", "--no-build")
    project.wait_healthy(timeout=240)
    record("down_then_up", {"down_s": round(down_took, 1), "up_to_healthy_s": round(time.monotonic() - up, 1)})
    leader = primary(project)
    assert system_id(project, leader) == sysid
    check_ledger(project, ledger, leader, earlier=ALL_ACKED)
    assert [r[0] for r in project.query(leader, "SELECT what FROM init_runs ORDER BY what")] == ["sh", "sql.gz"]


def test_repeated_full_restarts_after_a_switchover_and_a_kill_keep_every_node(project: Project,
                                                                              ledger: Ledger) -> None:
    """A newcomer's sequence, twice: a switchover, docker kill of the new primary, docker start,
    then compose down and up. Every node must come back on one timeline with every acknowledged
    row (a replica that silently diverged during down would miss the later rows)."""
    timings = []
    for _ in range(2):
        project.wait_settled(timeout=240)
        ledger.retarget(list(NODES))
        ledger.start()
        ledger.wait_acks_after(time.monotonic(), 20, 30)
        old = primary(project)
        candidate = project.sync_standby() or others(old)[0]
        answer = request(f"https://{project.ip(old)}:8008/switchover", project.client(), method="POST",
                         body={"leader": old, "candidate": candidate}, timeout=60)
        assert answer.status == 200, answer.body
        switched = new_leader(project, old)
        project.wait_settled(timeout=240)
        ledger.retarget(others(switched))
        project.docker("kill", project.cid(switched))
        new_leader(project, switched)
        project.docker("start", project.cid(switched))
        project.wait_healthy(timeout=180)
        ledger.wait_acks_after(time.monotonic(), 20, 60)
        ledger.stop()
        down = time.monotonic()
        project.run_compose("down", "-t", "60", timeout=400)
        project.run_compose("up", "-d", "--no-build")
        project.wait_healthy(timeout=240)
        timings.append(round(time.monotonic() - down, 1))
        leader = primary(project)
        check_ledger(project, ledger, leader, earlier=ALL_ACKED)
        timelines = {node: (project.api(node, "/patroni") or {}).get("timeline") for node in NODES}
        assert len(set(timelines.values())) == 1, f"not one timeline after down/up: {timelines}"
        ALL_ACKED.update(ledger.acked_ids())
    record("switchover_kill_down_up", {"down_to_healthy_s": timings})


def test_no_secret_anywhere_after_the_whole_run(project: Project) -> None:
    """After every fault above: no generated secret in any container's logs, in `ps -eo args`, in the
    environment of any process (etcd, HAProxy, the postmaster and its children included), or in
    any API answer."""
    secrets = {name: project.secret(name) for name in ("postgres_password", "replication_password",
                                                       "restapi_password", "etcd_password", "etcd_root_password")}
    keys = {"ca.key": (project.secrets / "ca.key").read_text()}
    for node in NODES:
        keys[f"{node} node.key"] = project.docker("exec", project.cid(node), "cat",
                                                  "/run/pgappliance/tls/node.key").stdout
    for name, pem in keys.items():
        secrets[name] = next(line for line in pem.splitlines() if line and not line.startswith("-----"))
    places: dict[str, str] = {}
    environ = "for p in /proc/[0-9]*; do echo \"== $p $(tr '\\0' ' ' < $p/cmdline)\"; tr '\\0' '\\n' < $p/environ; done"
    for node in NODES:
        cid = project.cid(node)
        places[f"{node} docker logs"] = project.logs(node, tail=100000)
        # The environ dump lists every process's command line too: what `ps -eo args` shows.
        places[f"{node} argv and environ"] = project.docker("exec", cid, "sh", "-c", environ, check=False).stdout
        ip = project.ip(node)
        for path in ("/patroni", "/cluster", "/config", "/history", "/events", "/metrics", "/openapi.json"):
            places[f"{node} GET {path}"] = request(f"https://{ip}:8008{path}", project.client()).body.decode()
    assert "postgres" in places["node1 argv and environ"] and "haproxy" in places["node1 argv and environ"]
    leaks = [(what, where) for what, value in secrets.items() for where, text in places.items() if value in text]
    assert leaks == []
