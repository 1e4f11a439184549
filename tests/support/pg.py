"""Test helpers for real PostgreSQL 15 instances: free ports, postgres-owned temp dirs, cleanup."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from appliance.postgres import PgConfig, PostgresControl, UserCredentials

PG_BIN = "/usr/lib/postgresql/15/bin"
SUPERUSER = UserCredentials("postgres", "super-secret")
REPLICATION = UserCredentials("replicator", "repl-secret")
REWIND = UserCredentials("rewinder", "rewind-secret")

T = TypeVar("T")


def pg_available() -> bool:
    return os.access(os.path.join(PG_BIN, "postgres"), os.X_OK)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_tempdir(prefix: str = "pgappl-") -> str:
    """A temp dir PostgreSQL's user can use: under /var/tmp (postgres cannot reach /tmp/pytest-of-root)."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/var/tmp")
    os.chmod(path, 0o755)
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.1) -> T:
    """Poll until predicate() is truthy; return its value or raise AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = predicate()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value: {last!r})")


class PgNodes:
    """Creates PostgresControl instances in one temp dir, each on its own free port; cleanup()
    stops every postmaster (immediate) and removes the dir."""

    def __init__(self) -> None:
        self.base = postgres_tempdir()
        self.nodes: list[PostgresControl] = []

    def new(self, name: str, **overrides: Any) -> PostgresControl:
        node_dir = os.path.join(self.base, name)
        os.makedirs(node_dir, exist_ok=True)
        os.chmod(node_dir, 0o755)
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(node_dir, entry.pw_uid, entry.pw_gid)
        port = free_port()
        settings: dict[str, Any] = {
            "name": name,
            "data_dir": os.path.join(node_dir, "data"),
            "bin_dir": PG_BIN,
            "listen_host": "127.0.0.1",
            "listen_port": port,
            "connect_host": "127.0.0.1",
            "connect_port": port,
            "superuser": SUPERUSER,
            "replication": REPLICATION,
            "rewind_user": REWIND,
            "socket_dir": node_dir,
            "parameters": {"shared_buffers": "16MB", "max_connections": "30", "fsync": "off"},
        }
        settings.update(overrides)
        ctl = PostgresControl(PgConfig(**settings))
        self.nodes.append(ctl)
        return ctl

    def cleanup(self) -> None:
        for ctl in self.nodes:
            with contextlib.suppress(Exception):
                ctl.stop("immediate", timeout=20)
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, ctl: PostgresControl, lines: int = 30) -> str:
        try:
            with open(ctl.cfg.log_file or "", encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def pg_nodes() -> Iterator[PgNodes]:
    nodes = PgNodes()
    try:
        yield nodes
    finally:
        nodes.cleanup()
