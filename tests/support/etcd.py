"""A real n-member etcd 3.5 cluster on 127.0.0.1 with free ports, for integration tests."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import IO

import grpc
from pyetcd import etcdrpc

from appliance.dcs.etcd_transport import EtcdTls
from appliance.tls import identity
from appliance.tls.identity import NodeTls

ETCD_BIN = os.environ.get("ETCD_BIN", "/usr/bin/etcd")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EtcdCluster:
    """``EtcdCluster(3, tmp_path)``: starts every member, waits until the cluster answers.

    stop(i) sends SIGTERM, kill(i) SIGKILL, start(i) restarts a member from its data dir,
    pause(i)/resume(i) freeze and thaw it (SIGSTOP/SIGCONT); close() cleans up everything.
    """

    def __init__(self, n: int = 3, base_dir: str | Path = ".", start_timeout: float = 30.0, tls: bool = False) -> None:
        self.n = n
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.tls: NodeTls | None = None
        if tls:  # one CA, one certificate for every member (SAN 127.0.0.1), client certificates required
            ca = self.base_dir / "ca"
            identity.init_ca(ca)
            self.tls, _ = identity.issue_node(str(ca / "ca.crt"), str(ca / "ca.key"), self.base_dir / "tls",
                                              dns_names=["localhost"], ip_addresses=["127.0.0.1"])
        self.token = f"test-{uuid.uuid4().hex[:12]}"
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self._logs: list[IO[bytes] | None] = [None] * n
        for attempt in range(3):
            self.client_ports = [free_port() for _ in range(n)]
            self.peer_ports = [free_port() for _ in range(n)]
            try:
                for i in range(n):
                    self.start(i, wait=False)
                self.wait_healthy(timeout=start_timeout)
                return
            except Exception:
                self._terminate_all()
                if attempt == 2 or not self._port_clash():
                    raise
                self.token = f"test-{uuid.uuid4().hex[:12]}"
                for i in range(n):
                    _remove_tree(self.data_dir(i))

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.client_ports]

    def name(self, i: int) -> str:
        return f"m{i}"

    def data_dir(self, i: int) -> Path:
        return self.base_dir / f"{self.name(i)}.etcd"

    def log_path(self, i: int) -> Path:
        return self.base_dir / f"{self.name(i)}.log"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def client_tls(self) -> EtcdTls | None:
        """What a client needs: the CA and a certificate it signed (the members' own serves)."""
        if self.tls is None:
            return None
        return EtcdTls.from_files(self.tls.ca_file, self.tls.cert_file, self.tls.key_file)

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        t = self.tls
        return [f"--cert-file={t.cert_file}", f"--key-file={t.key_file}", f"--trusted-ca-file={t.ca_file}",
                "--client-cert-auth=true", f"--peer-cert-file={t.cert_file}", f"--peer-key-file={t.key_file}",
                f"--peer-trusted-ca-file={t.ca_file}", "--peer-client-cert-auth=true"]

    def _args(self, i: int) -> list[str]:
        client = f"{self.scheme}://127.0.0.1:{self.client_ports[i]}"
        peer = f"{self.scheme}://127.0.0.1:{self.peer_ports[i]}"
        cluster = ",".join(f"{self.name(j)}={self.scheme}://127.0.0.1:{self.peer_ports[j]}" for j in range(self.n))
        return [
            ETCD_BIN,
            *self._tls_args(),
            f"--name={self.name(i)}",
            f"--data-dir={self.data_dir(i)}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={cluster}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token={self.token}",
            "--heartbeat-interval=100",
            "--election-timeout=1000",
            "--logger=zap",
            "--log-outputs=stderr",
        ]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        if platform.machine().lower() in ("aarch64", "arm64"):
            env["ETCD_UNSUPPORTED_ARCH"] = "arm64"
        return env

    # ------------------------------------------------------------ process control

    def start(self, i: int, wait: bool = True, timeout: float = 20.0) -> None:
        """Start (or restart, from its data dir) member ``i``."""
        if self.running(i):
            raise RuntimeError(f"etcd member {i} is already running")
        log = open(self.log_path(i), "ab")  # noqa: SIM115 - closed in _reap
        self._logs[i] = log
        self.procs[i] = subprocess.Popen(
            self._args(i), stdout=log, stderr=subprocess.STDOUT, env=self._env(), stdin=subprocess.DEVNULL
        )
        if wait:
            self.wait_healthy([i], timeout=timeout)

    def stop(self, i: int, timeout: float = 10.0) -> None:
        self._signal_and_reap(i, signal.SIGTERM, timeout)

    def kill(self, i: int) -> None:
        self._signal_and_reap(i, signal.SIGKILL, 10.0)

    def pause(self, i: int) -> None:
        self._send(i, signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self._send(i, signal.SIGCONT)

    def running(self, i: int) -> bool:
        proc = self.procs[i]
        return proc is not None and proc.poll() is None

    def close(self) -> None:
        self._terminate_all()

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, i: int, sig: signal.Signals) -> None:
        proc = self.procs[i]
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"etcd member {i} is not running")
        proc.send_signal(sig)

    def _signal_and_reap(self, i: int, sig: signal.Signals, timeout: float) -> None:
        proc = self.procs[i]
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused member cannot act on SIGTERM
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._reap(i)

    def _reap(self, i: int) -> None:
        self.procs[i] = None
        log = self._logs[i]
        self._logs[i] = None
        if log is not None:
            log.close()

    def _terminate_all(self) -> None:
        for i in range(self.n):
            with contextlib.suppress(Exception):  # keep cleaning up the others
                self._signal_and_reap(i, signal.SIGKILL, 10.0)

    def _port_clash(self) -> bool:
        return any("address already in use" in self.log_tail(i) for i in range(self.n))

    def log_tail(self, i: int, size: int = 4000) -> str:
        try:
            data = self.log_path(i).read_bytes()
        except OSError:
            return ""
        return data[-size:].decode("utf-8", "replace")

    # ------------------------------------------------------------ health

    def healthy(self, i: int, timeout: float = 1.0) -> bool:
        """Member ``i`` answers a linearizable read (so it is part of a quorum with a leader)."""
        if not self.running(i):
            return False
        tls = self.client_tls()
        channel_of = (lambda t: grpc.secure_channel(t, tls.credentials())) if tls else grpc.insecure_channel
        with channel_of(self.endpoints[i]) as channel:
            try:
                etcdrpc.KVStub(channel).Range(etcdrpc.RangeRequest(key=b"health"), timeout=timeout)
            except grpc.RpcError:
                return False
        return True

    def wait_healthy(self, members: list[int] | None = None, timeout: float = 20.0) -> None:
        members = list(range(self.n)) if members is None else members
        deadline = time.monotonic() + timeout
        pending = list(members)
        while pending:
            for i in list(pending):
                if not self.running(i):
                    raise RuntimeError(f"etcd member {i} exited:\n{self.log_tail(i)}")
                if self.healthy(i):
                    pending.remove(i)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"etcd members {pending} not healthy after {timeout}s:\n{self.log_tail(pending[0])}")
            if pending:
                time.sleep(0.1)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
