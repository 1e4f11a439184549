"""DemoCluster: three appliance nodes and one HAProxy on loopback, each under its own supervisord."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from appliance.config.schema import LocalConfig
from appliance.core.model import PgState, Role
from appliance.dcs.etcd import EtcdDCS
from appliance.dcs.factory import etcd_from_config
from appliance.demo import procs
from appliance.demo.layout import (
    PG_PORT,
    PROXY,
    DemoLayout,
    Secrets,
    check_net,
    check_reachable,
    check_socket_paths,
    chown,
    load_layout,
    load_or_create_secrets,
    save_layout,
    write_client_files,
    write_node_files,
    write_proxy_files,
)
from appliance.demo.status import cluster_status, dsn, health_problems
from appliance.net.http import Client, client_for
from appliance.runtime.node import ALL_PROGRAMS, load_local_config
from appliance.runtime.supervisor import FATAL_MARKER, default_user, package_root

DEFAULT_PROGRAMS: tuple[str, ...] = ("etcd", "manager", "api")
STOP_TIMEOUT = 60.0  # the manager's stopwaitsecs (45) plus etcd's, with room to spare


# Variables that would silently reconfigure every demo node alike (config layers, libpq, etcd flags).
_SCRUBBED_PREFIXES = ("APPLIANCE_", "POSTGRES_", "PG", "ETCD_", "ETCDCTL_")


def node_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment minus what would leak into the nodes' configuration."""
    source = os.environ if env is None else env
    return {k: v for k, v in source.items() if not k.startswith(_SCRUBBED_PREFIXES)}


class DemoError(RuntimeError):
    """A demo operation failed; the message says what to look at or do."""


def _resolve_layout(
    directory: Path,
    net: str | None,
    proxy_ports: tuple[int, int, int] | None,
    proxy_address: str | None,
    programs: Sequence[str] | None,
    secure: bool = True,
) -> tuple[DemoLayout, bool]:
    stored = load_layout(directory)
    if stored is None:
        layout = DemoLayout(
            dir=directory,
            net=check_net(net or "127.0.2"),
            proxy_address=proxy_address or "127.0.0.1",
            proxy_ports=tuple(proxy_ports or (5000, 5001, 7000)),  # type: ignore[arg-type]
            programs=_check_programs(programs),
            token=f"demo-{secrets.token_hex(4)}",
            secure=secure,
        )
        return layout, False
    wanted: dict[str, object] = {
        "--net": net,
        "proxy address": proxy_address,
        "proxy ports": tuple(proxy_ports) if proxy_ports is not None else None,
        "programs": _check_programs(programs),
    }
    held = {
        "--net": stored.net,
        "proxy address": stored.proxy_address,
        "proxy ports": stored.proxy_ports,
        "programs": stored.programs,
    }
    for what, value in wanted.items():
        if value is not None and value != held[what]:
            raise DemoError(
                f"{directory} holds a demo made with {what} {held[what]}, not {value}: "
                "pass the same value, or another --dir"
            )
    return stored, True


def _check_programs(programs: Sequence[str] | None) -> tuple[str, ...] | None:
    if programs is None:
        return None
    unknown = [p for p in programs if p not in ALL_PROGRAMS]
    if unknown:
        raise DemoError(f"unknown programs {unknown}: choose among {', '.join(ALL_PROGRAMS)}")
    return tuple(programs)


class DemoCluster:
    """A local three-node cluster in ``dir``; see docs/demo.md.

    ``net``, ``proxy_ports`` and ``proxy_address`` default to the values the directory was created
    with (127.0.2, (5000, 5001, 7000), 127.0.0.1 for a new one); ``programs`` selects the node
    programs (default etcd, manager, api) for tests of a partial stack; ``secure=False`` turns every
    protection off on purpose (only to measure what they cost: bench/security_cost.py).
    """

    def __init__(
        self,
        dir: str | Path,
        net: str | None = None,
        proxy_ports: tuple[int, int, int] | None = None,
        *,
        proxy_address: str | None = None,
        programs: Sequence[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        secure: bool = True,
    ) -> None:
        directory = Path(dir).absolute()
        self.layout, self.exists = _resolve_layout(directory, net, proxy_ports, proxy_address, programs, secure)
        self.user = default_user()
        self._clock = clock
        self._sleep = sleep

    # -- layout -------------------------------------------------------------------------------

    @property
    def dir(self) -> Path:
        return self.layout.dir

    @property
    def nodes(self) -> list[str]:
        return self.layout.nodes

    @property
    def programs(self) -> tuple[str, ...]:
        return self.layout.programs if self.layout.programs is not None else DEFAULT_PROGRAMS

    def _secrets(self) -> Secrets:
        if not self.layout.secrets_path.exists():
            raise DemoError(f"no demo in {self.dir}: run `appliance demo up --dir {self.dir}` first")
        return load_or_create_secrets(self.layout.secrets_path)

    def _node_paths(self, node: str) -> tuple[Path, Path, Path]:
        """(supervisord.conf, run dir, working dir) of a node or of the proxy."""
        if node == PROXY:
            base = self.dir / PROXY
            return base / "supervisord.conf", base / "run", base
        return self.layout.supervisord_conf(node), self.layout.run_dir(node), self.layout.node_dir(node)

    @property
    def secrets(self) -> Secrets:
        """Passwords and the CA of this demo (files under <dir>/secrets/)."""
        return self._secrets()

    @property
    def client_config(self) -> Path:
        """An operator config (etcd TLS + credentials, REST API CA + credentials) for ``appliance -c``
        and ``patronictl -c``."""
        return self.layout.client_config_path

    def operator(self) -> LocalConfig:
        """The client config as settings (etcd TLS and credentials, REST API CA and credentials)."""
        return load_local_config(self.client_config)

    def api_client(self) -> Client:
        """An HTTP client that trusts the demo CA and authenticates to the REST APIs."""
        return client_for(self.operator())

    def etcd(self, name: str = "demo-observer", retry_timeout: float = 3.0) -> EtcdDCS:
        """A DCS client as the operator (reads; it takes no lease unless asked to)."""
        return etcd_from_config(self.operator(), name=name, ttl=5, retry_timeout=retry_timeout)

    def supervisord_pid(self, node: str) -> int | None:
        _, run_dir, _ = self._node_paths(node)
        return procs.live_pid_from(run_dir / "supervisord.pid", "supervisor")

    # -- lifecycle ----------------------------------------------------------------------------

    def up(self, wait: bool = True, timeout: float = 180.0) -> dict[str, Any]:
        """Write what is missing, start every supervisord not running, and wait for health."""
        check_reachable(self.dir, self.user)
        check_socket_paths(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        chown(self.dir, self.user)
        if not self.exists:
            save_layout(self.layout)
            self.exists = True
        creds = load_or_create_secrets(self.layout.secrets_path)
        for node in self.nodes:
            write_node_files(self.layout, node, creds, self.user)
        write_proxy_files(self.layout, creds, self.user)
        write_client_files(self.layout, creds)
        for node in [*self.nodes, PROXY]:
            if self.supervisord_pid(node) is None:
                self._start(node)
        return self.wait_healthy(timeout) if wait else self.status()

    def start(self, node: str) -> int:
        """Start a node's supervisord again (after ``kill`` or ``stop``); returns its pid."""
        name = node if node == PROXY else self.layout.check_node(node)
        pid = self.supervisord_pid(name)
        return pid if pid is not None else self._start(name)

    def _start(self, node: str) -> int:
        conf, run_dir, cwd = self._node_paths(node)
        if not conf.exists():
            raise DemoError(f"{conf} is missing: run `appliance demo up --dir {self.dir}` first")
        for stale in (run_dir / "supervisord.pid", run_dir / FATAL_MARKER):
            stale.unlink(missing_ok=True)
        command = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]
        # supervisord itself loads this copy's socket keeper (appliance.runtime.socket_keeper).
        env = {**node_environment(), "PYTHONPATH": package_root()}
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise DemoError(f"supervisord for {node} failed to start: {(result.stderr or result.stdout).strip()}")
        deadline = self._clock() + 15.0
        while self._clock() < deadline:
            pid = self.supervisord_pid(node)
            if pid is not None:
                return pid
            self._sleep(0.1)
        raise DemoError(f"supervisord for {node} did not write {run_dir}/supervisord.pid; see {cwd}/log/")

    def kill(self, node: str) -> list[int]:
        """Simulate a crash: SIGKILL the node's supervisord, its descendants and its postmaster."""
        name = self.layout.check_node(node)
        killed: list[int] = []
        for _ in range(2):  # a second sweep catches a postmaster pg_ctl was just starting
            supervisord = self.supervisord_pid(name)
            tree = [] if supervisord is None else [supervisord, *procs.descendants(supervisord)]
            postmaster = procs.postmaster_pid(self.layout.data_dir(name))
            if postmaster is not None:
                tree += [postmaster, *procs.descendants(postmaster)]
            # supervisord first, so that nothing gets restarted.
            procs.signal_pids(tree, signal.SIGKILL)
            killed += [p for p in tree if p not in killed]
            procs.wait_gone(tree, 5.0, self._clock, self._sleep)
            self._sleep(0.2)
        return killed

    def stop(self, node: str, timeout: float = STOP_TIMEOUT) -> None:
        """Clean stop: SIGTERM supervisord (it stops the manager, which stops PostgreSQL)."""
        self._stop_all([node if node == PROXY else self.layout.check_node(node)], timeout)

    def down(self, purge: bool = False, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every node and the proxy; keep the data unless ``purge``."""
        if self.dir.exists():
            self._stop_all([*self.nodes, PROXY], timeout)
        if purge and self.dir.exists():
            shutil.rmtree(self.dir)

    def _stop_all(self, names: Sequence[str], timeout: float) -> None:
        supervisords = {n: self.supervisord_pid(n) for n in names}
        tree = [p for pid in supervisords.values() if pid is not None for p in procs.descendants(pid)]
        procs.signal_pids([p for p in supervisords.values() if p is not None], signal.SIGTERM)
        left = procs.wait_gone([p for p in supervisords.values() if p is not None], timeout, self._clock, self._sleep)
        procs.signal_pids(left, signal.SIGKILL)
        procs.signal_pids([p for p in tree if procs.pid_alive(p)], signal.SIGKILL)
        postmasters = [procs.postmaster_pid(self.layout.data_dir(n)) for n in names if n != PROXY]
        running = [p for p in postmasters if p is not None]
        procs.signal_pids(running, signal.SIGINT)  # fast shutdown: nobody is left to do it cleanly
        procs.signal_pids(procs.wait_gone(running, 15.0, self._clock, self._sleep), signal.SIGKILL)
        procs.wait_gone([*left, *tree, *running], 5.0, self._clock, self._sleep)

    # -- observation --------------------------------------------------------------------------

    def _supervisord_state(self, node: str) -> dict[str, Any]:
        _, run_dir, _ = self._node_paths(node)
        marker = run_dir / FATAL_MARKER
        fatal = marker.read_text().strip() if marker.exists() else None
        running = self.supervisord_pid(node) is not None
        return {"supervisord": "running" if running else "stopped", "fatal": fatal}

    def status(self) -> dict[str, Any]:
        """The ``demo status --json`` document (members, scope, etcd endpoints, proxy DSNs)."""
        creds = self._secrets()
        states = {n: self._supervisord_state(n) for n in self.nodes}
        status = cluster_status(self.layout, creds, states, self.supervisord_pid(PROXY) is not None)
        status["proxy"]["fatal"] = self._supervisord_state(PROXY)["fatal"]
        status["programs"] = list(self.programs)
        status["logs"] = {n: str(self.layout.log_dir(n)) for n in self.nodes} | {PROXY: str(self.dir / PROXY / "log")}
        return status

    def problems(self, status: dict[str, Any] | None = None) -> list[str]:
        return health_problems(status or self.status(), self.programs)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, interval: float = 0.5
    ) -> dict[str, Any]:
        """Poll ``status()`` until ``predicate`` holds; TimeoutError carries the last problems."""
        deadline = self._clock() + timeout
        while True:
            status = self.status()
            if predicate(status):
                return status
            if self._clock() >= deadline:
                problems = "; ".join(self.problems(status)) or "the predicate never held"
                raise TimeoutError(f"demo in {self.dir}: not there after {timeout:.0f}s: {problems}")
            self._sleep(interval)

    def wait_healthy(self, timeout: float = 180.0) -> dict[str, Any]:
        """Wait until healthy; a node shut down by a FATAL program fails at once (it will not heal)."""

        def healthy(status: dict[str, Any]) -> bool:
            fatal = [f"{m['name']}: {m['fatal']}" for m in status["members"] if m.get("fatal")]
            if status["proxy"].get("fatal"):
                fatal.append(f"proxy: {status['proxy']['fatal']}")
            if fatal:
                raise DemoError(
                    f"a critical program went FATAL and its supervisord shut down ({'; '.join(fatal)}). "
                    f"Read {self.dir}/<node>/log/, fix the cause, then run `appliance demo up --dir {self.dir}`"
                )
            return not self.problems(status)

        try:
            return self.wait_for(healthy, timeout)
        except TimeoutError as exc:
            raise DemoError(f"{exc}. Logs: {self.dir}/node*/log/ and {self.dir}/proxy/log/") from None

    def primary(self) -> str | None:
        status = self.status()
        found = [m["name"] for m in status["members"] if m["role"] == Role.PRIMARY and m["state"] == PgState.RUNNING]
        return found[0] if len(found) == 1 else None

    def dsn(self, kind: str = "primary") -> str:
        """libpq URI through the demo HAProxy: ``primary`` (5000) or ``replicas`` (5001)."""
        ports = {"primary": self.layout.proxy_ports[0], "replicas": self.layout.proxy_ports[1]}
        if kind not in ports:
            raise ValueError(f"kind must be 'primary' or 'replicas', got {kind!r}")
        return dsn(self._secrets(), self.layout.proxy_address, ports[kind], secure=self.layout.secure)

    def node_dsn(self, node: str) -> str:
        """libpq URI straight to one node's PostgreSQL."""
        name = self.layout.check_node(node)
        return dsn(self._secrets(), self.layout.host(name), PG_PORT, secure=self.layout.secure)

    def supervisorctl(self, node: str, *args: str) -> subprocess.CompletedProcess[str]:
        conf, _, _ = self._node_paths(node if node == PROXY else self.layout.check_node(node))
        command = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
