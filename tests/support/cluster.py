"""A DemoCluster for tests: fresh /var/tmp dir, free proxy ports, a unique 127.A.B net, always torn down."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from appliance.demo import procs
from appliance.demo.cluster import DemoCluster

KEEP_ENV = "PGAPPLIANCE_KEEP_DEMO"  # set to 1 to keep a test's demo dir (the processes still stop)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _listening_addresses() -> set[str]:
    """Local IPv4 addresses with a listening TCP socket (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "0A":  # TCP_LISTEN
            continue
        hex_ip = fields[1].split(":")[0]
        found.add(socket.inet_ntoa(bytes.fromhex(hex_ip)[::-1]))
    return found


def free_net(size: int = 3, rng: random.Random | None = None) -> str:
    """A 127.A.B prefix (A >= 3, away from the default 127.0.2) with nothing listening on .1-.size."""
    rng = rng or random.Random()
    busy = _listening_addresses()
    for _ in range(200):
        net = f"127.{rng.randint(3, 254)}.{rng.randint(0, 255)}"
        if not any(f"{net}.{i}" in busy for i in range(1, size + 1)):
            return net
    raise RuntimeError("no free 127.A.B network found for a demo cluster")


def new_demo(programs: Sequence[str] | None = None, secure: bool = True) -> DemoCluster:
    """A not-yet-started DemoCluster in a fresh directory the postgres user can reach."""
    directory = tempfile.mkdtemp(prefix="demo-", dir="/var/tmp")
    os.chmod(directory, 0o755)
    ports = (free_port(), free_port(), free_port())
    return DemoCluster(directory, net=free_net(), proxy_ports=ports, programs=programs, secure=secure)


def log_tails(cluster: DemoCluster, lines: int = 25) -> str:
    """The end of every log of the demo (printed at teardown: pytest shows it for a failed test)."""
    chunks = []
    for log_dir in sorted(cluster.dir.glob("*/log")):
        for path in sorted(log_dir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"==> {path} <==\n" + "\n".join(tail))
    return "\n".join(chunks)


def teardown(cluster: DemoCluster) -> None:
    """down + purge; whatever survives a failed down is killed by its command line."""
    print(log_tails(cluster))
    keep = os.environ.get(KEEP_ENV) == "1"
    try:
        cluster.down(purge=not keep, timeout=60)
    finally:
        leftovers = procs.pids_mentioning(str(cluster.dir))
        procs.signal_pids(leftovers, signal.SIGKILL)
        procs.wait_gone(leftovers, 10)
        if not keep:
            shutil.rmtree(cluster.dir, ignore_errors=True)


@contextmanager
def _termination_runs_finally() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit while a demo runs, so that a harness (or `timeout`)
    stopping pytest still tears the cluster down instead of orphaning three PostgreSQL and etcd."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig, handler in previous.items():
        if handler == signal.SIG_DFL:
            signal.signal(sig, _exit)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler == signal.SIG_DFL:
                signal.signal(sig, handler)


@contextmanager
def demo_cluster(
    programs: Sequence[str] | None = None, up: bool = True, timeout: float = 240.0
) -> Iterator[DemoCluster]:
    """A started DemoCluster (``up=False``: not started), always torn down (down + purge)."""
    with _termination_runs_finally():
        cluster = new_demo(programs)
        try:
            if up:
                cluster.up(wait=True, timeout=timeout)
            yield cluster
        finally:
            teardown(cluster)


def demo_cluster_fixture(
    programs: Sequence[str] | None = None, scope: str = "function", up: bool = True, timeout: float = 240.0
) -> Callable[[], Iterator[DemoCluster]]:
    """A pytest fixture factory: ``etcd_demo = demo_cluster_fixture(("etcd",), scope="module")``."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def _fixture() -> Iterator[DemoCluster]:
        with demo_cluster(programs, up=up, timeout=timeout) as cluster:
            yield cluster

    return _fixture
