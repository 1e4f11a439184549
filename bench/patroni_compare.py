"""Same-machine, same-moment REST API comparison: a real single-node Patroni 4.1 against our primary's API.

    python -m bench.patroni_compare --rounds 5 --requests 1000

Both targets run at once; rounds interleave them (alternating which goes first), so that the noise of a
shared machine hits both alike. Absolute numbers mean little; the ours/patroni ratios are the result.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import yaml

from appliance.demo import procs
from appliance.demo.cluster import DemoCluster, node_environment
from appliance.net.http import request
from bench.common import fresh_cluster
from tests.integration.ha_helpers import healthy, wait_until
from tests.support.etcd import EtcdCluster, free_port

PATRONI_BIN = "/opt/patroni-venv/bin/patroni"
PG_BIN = "/usr/lib/postgresql/15/bin"
PG_USER = "postgres"
PATHS = ("/primary", "/health")
SWITCHOVER_SKIP = "skipped: Patroni's planned switchover needs >= 2 members and this benchmark runs a single node"


class Sample(NamedTuple):
    rps: float
    p50_ms: float
    p99_ms: float
    non_200: int


@dataclass
class PatroniNode:
    workdir: Path
    data_dir: Path
    api_port: int
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def log_path(self) -> Path:
        return self.workdir / "patroni.log"

    def log_tail(self, size: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_bytes()[-size:].decode("utf-8", "replace")
        return ""


# -------------------------------------------------------------------- the Patroni side


def as_root() -> bool:
    return os.geteuid() == 0


def patroni_config(workdir: Path, etcd_hosts: list[str], api_port: int, pg_port: int) -> dict[str, Any]:
    return {
        "scope": "patronibench",
        "namespace": "/service/",
        "name": "p1",
        "restapi": {"listen": f"127.0.0.1:{api_port}", "connect_address": f"127.0.0.1:{api_port}"},
        "etcd3": {"hosts": etcd_hosts},
        "bootstrap": {
            "dcs": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": 1048576},
            "initdb": [{"encoding": "UTF8"}],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{pg_port}",
            "connect_address": f"127.0.0.1:{pg_port}",
            "data_dir": str(workdir / "data"),
            "bin_dir": PG_BIN,
            "pgpass": str(workdir / "pgpass"),
            "authentication": {
                "superuser": {"username": "postgres", "password": secrets.token_hex(12)},
                "replication": {"username": "replicator", "password": secrets.token_hex(12)},
            },
            # A private socket directory: nothing of this run lands in /var/run/postgresql.
            "parameters": {"unix_socket_directories": str(workdir)},
            "pg_hba": [
                "local all all trust",
                "local replication all trust",
                "host replication replicator 127.0.0.1/32 scram-sha-256",
                "host all all 127.0.0.1/32 scram-sha-256",
            ],
        },
        "watchdog": {"mode": "off"},
    }


def patroni_env(workdir: Path) -> dict[str, str]:
    """No APPLIANCE_/PG*/ETCD* variables, and no PATRONI_* ones that would override the YAML."""
    env = {k: v for k, v in node_environment().items() if not k.startswith("PATRONI_")}
    if as_root():
        env.update(HOME=str(workdir), USER=PG_USER, LOGNAME=PG_USER)
    return env


def start_patroni(workdir: Path, config: dict[str, Any], patroni_bin: str) -> PatroniNode:
    conf = workdir / "patroni.yml"
    conf.write_text(yaml.safe_dump(config, sort_keys=False))
    conf.chmod(0o600)  # it holds passwords
    if as_root():
        shutil.chown(conf, PG_USER, PG_USER)
    log = open(workdir / "patroni.log", "ab")  # noqa: SIM115 - closed by stop_patroni
    # Popen(user=) rather than `runuser`: runuser SIGKILLs its child 2 s after forwarding a SIGTERM,
    # which would cut Patroni's clean shutdown of PostgreSQL short. A session of its own keeps
    # Ctrl-C away from it, so that cleanup stops it in order.
    user = PG_USER if as_root() else None
    proc = subprocess.Popen(
        [patroni_bin, str(conf)], cwd=workdir, env=patroni_env(workdir), stdin=subprocess.DEVNULL,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        user=user, group=user, extra_groups=[] if user else None,
    )
    return PatroniNode(workdir, workdir / "data", config_api_port(config), proc, log)


def config_api_port(config: dict[str, Any]) -> int:
    return int(config["restapi"]["listen"].rsplit(":", 1)[1])


def http_status(host: str, port: int, path: str, timeout: float = 2.0) -> int | None:
    try:
        return request(f"http://{host}:{port}{path}", timeout=timeout).status
    except OSError:
        return None


def wait_patroni_primary(node: PatroniNode, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while http_status("127.0.0.1", node.api_port, "/primary") != 200:
        if node.proc.poll() is not None:
            raise RuntimeError(f"patroni exited with code {node.proc.returncode}; its log ends:\n{node.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"patroni's GET /primary not 200 after {timeout:.0f}s; its log ends:\n{node.log_tail()}")
        time.sleep(0.5)


def stop_patroni(node: PatroniNode, timeout: float = 60.0) -> None:
    """SIGTERM and wait; then a fast pg_ctl stop of a PostgreSQL left behind; then kill any straggler."""
    try:
        if node.proc.poll() is None:
            node.proc.terminate()
            try:
                node.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout=10)
        if procs.postmaster_pid(node.data_dir) is not None:
            runas = ["runuser", "-u", PG_USER, "--"] if as_root() else []
            subprocess.run([*runas, f"{PG_BIN}/pg_ctl", "-D", str(node.data_dir), "stop", "-m", "fast", "-w",
                            "-t", "60"], capture_output=True, timeout=90, check=False)
    finally:
        node.log.close()
        leftovers = procs.pids_mentioning(str(node.workdir))
        procs.signal_pids(leftovers, signal.SIGKILL)
        procs.wait_gone(leftovers, 10)


def patroni_version(patroni_bin: str) -> str:
    result = subprocess.run([patroni_bin, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return (result.stdout or result.stderr).strip()


@contextlib.contextmanager
def patroni_single(patroni_bin: str, timeout: float = 120.0) -> Iterator[PatroniNode]:
    """A private one-member etcd and a one-node Patroni cluster on it, both gone on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="patronibench-", dir="/var/tmp"))
    workdir.chmod(0o755)
    if as_root():
        shutil.chown(workdir, PG_USER, PG_USER)
    etcd: EtcdCluster | None = None
    node: PatroniNode | None = None
    try:
        etcd = EtcdCluster(n=1, base_dir=workdir / "etcd")
        config = patroni_config(workdir, etcd.endpoints, free_port(), free_port())
        node = start_patroni(workdir, config, patroni_bin)
        wait_patroni_primary(node, timeout)
        yield node
    finally:
        try:
            if node is not None:
                stop_patroni(node)
        finally:
            if etcd is not None:
                etcd.close()
            shutil.rmtree(workdir, ignore_errors=True)


# -------------------------------------------------------------------- measuring


def measure(host: str, port: int, path: str, count: int) -> Sample:
    """``count`` sequential GETs, each on a fresh connection (as bench/api.py measure())."""
    latencies = []
    non_200 = 0
    t0 = time.perf_counter()
    for _ in range(count):
        start = time.perf_counter()
        conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        latencies.append(time.perf_counter() - start)
        non_200 += resp.status != 200
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return Sample(count / elapsed, latencies[len(latencies) // 2] * 1000,
                  latencies[int(len(latencies) * 0.99)] * 1000, non_200)


def our_primary_api(cluster: DemoCluster) -> tuple[str, int]:
    primary = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    api = next(m["api_url"] for m in cluster.status()["members"] if m["name"] == primary)
    host, port = api.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


def run_rounds(targets: dict[str, tuple[str, int]], rounds: int, count: int,
               warmup: int) -> dict[str, dict[str, list[Sample]]]:
    samples: dict[str, dict[str, list[Sample]]] = {t: {p: [] for p in PATHS} for t in targets}
    for host, port in targets.values():
        for path in PATHS:
            measure(host, port, path, warmup)
    names = list(targets)
    for number in range(rounds):
        order = names if number % 2 == 0 else names[::-1]  # neither target always runs first
        for name in order:
            host, port = targets[name]
            for path in PATHS:
                sample = measure(host, port, path, count)
                samples[name][path].append(sample)
                print(f"round {number + 1}/{rounds} {name:11} {path:8} {sample.rps:7.0f} rps  "
                      f"p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:6.2f} ms  non-200 {sample.non_200}",
                      file=sys.stderr, flush=True)
    return samples


def summarize(runs: list[Sample]) -> dict[str, Any]:
    return {
        "rps_median": round(statistics.median(s.rps for s in runs)),
        "p50_ms_median": round(statistics.median(s.p50_ms for s in runs), 2),
        "p99_ms_median": round(statistics.median(s.p99_ms for s in runs), 2),
        "non_200": sum(s.non_200 for s in runs),
        "rounds": [[round(s.rps), round(s.p50_ms, 2), round(s.p99_ms, 2)] for s in runs],
    }


def ratios(ours: list[Sample], theirs: list[Sample]) -> dict[str, float]:
    """Ratios of the medians, and the median of the per-round ratios (robust to load drifting between rounds)."""
    med = statistics.median
    return {
        "rps_ours_over_patroni": round(med(s.rps for s in ours) / med(s.rps for s in theirs), 2),
        "p50_ours_over_patroni": round(med(s.p50_ms for s in ours) / med(s.p50_ms for s in theirs), 2),
        "p99_ours_over_patroni": round(med(s.p99_ms for s in ours) / med(s.p99_ms for s in theirs), 2),
        "rps_ratio_per_round_median": round(med(o.rps / t.rps for o, t in zip(ours, theirs, strict=True)), 2),
        "p99_ratio_per_round_median": round(med(o.p99_ms / t.p99_ms for o, t in zip(ours, theirs, strict=True)), 2),
    }


def readable(doc: dict[str, Any]) -> str:
    parts = []
    for path in PATHS:
        ours, theirs, ratio = doc["pgappliance"][path], doc["patroni"][path], doc["ratios"][path]
        parts.append(f"{path}: ours {ours['rps_median']} rps p99 {ours['p99_ms_median']} ms vs patroni "
                     f"{theirs['rps_median']} rps p99 {theirs['p99_ms_median']} ms "
                     f"(rps x{ratio['rps_ours_over_patroni']}, p99 x{ratio['p99_ours_over_patroni']})")
    head = f"{doc['patroni_version']} vs pgappliance, {doc['rounds']} rounds x {doc['requests']} GETs: "
    return head + "; ".join(parts)


# -------------------------------------------------------------------- signals and main


@contextlib.contextmanager
def orderly_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP raise SystemExit (so finally blocks clean up) and are restored on exit."""
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.getsignal(sig) for sig in handled}

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def shielded_cleanup() -> Iterator[None]:
    """On exit, ignore further Ctrl-C/SIGTERM so that an impatient second one cannot cut teardown short."""
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1000, help="sequential GETs per target, path and round")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured GETs per target and path first")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds to let our freshly started cluster quiet down before measuring")
    parser.add_argument("--switchover", action="store_true", help="not measured: needs a multi-node Patroni")
    parser.add_argument("--patroni-bin", default=PATRONI_BIN)
    args = parser.parse_args()
    if not Path(args.patroni_bin).exists():
        sys.exit(f"{args.patroni_bin} not found: install Patroni 4.1 (python3 -m venv /opt/patroni-venv && "
                 "/opt/patroni-venv/bin/pip install 'patroni[etcd3,psycopg3]' psycopg2-binary) or pass --patroni-bin")
    if args.switchover:
        print(f"--switchover {SWITCHOVER_SKIP}", file=sys.stderr)
    load_before = os.getloadavg()
    # Both plain HTTP: Patroni here serves no TLS, so ours runs with its protections off on purpose.
    with orderly_signals(), patroni_single(args.patroni_bin) as patroni, fresh_cluster(secure=False) as cluster, \
            shielded_cleanup():
        targets = {"patroni": ("127.0.0.1", patroni.api_port), "pgappliance": our_primary_api(cluster)}
        time.sleep(args.settle)  # replicas that just caught up still checkpoint and write; let it pass
        samples = run_rounds(targets, args.rounds, args.requests, args.warmup)
        load_after = os.getloadavg()
    doc: dict[str, Any] = {
        "benchmark": "patroni_compare",
        "patroni_version": patroni_version(args.patroni_bin),
        "rounds": args.rounds,
        "requests": args.requests,
        "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        **{name: {path: summarize(runs) for path, runs in by_path.items()} for name, by_path in samples.items()},
    }
    doc["ratios"] = {p: ratios(samples["pgappliance"][p], samples["patroni"][p]) for p in PATHS}
    if args.switchover:
        doc["switchover"] = SWITCHOVER_SKIP
    print(json.dumps(doc))
    print(readable(doc))


if __name__ == "__main__":
    main()
