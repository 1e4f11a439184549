"""Running PostgreSQL's programs as its OS user, and finding the postmaster of a data directory."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.postgres.files import FileOwner

log = logging.getLogger(__name__)

# Variables that would silently redirect or authenticate a libpq client we start.
_SCRUBBED_ENV_PREFIXES = ("PG",)


@dataclass(frozen=True)
class CommandResult:
    """Exit status and merged stdout/stderr of one program run."""

    args: tuple[str, ...]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])


class Runner:
    """Runs programs as `run_as` (switching user only when we are root); never through a shell."""

    def __init__(self, run_as: str | None) -> None:
        self.run_as = run_as
        self.owner = FileOwner.for_user(run_as)
        self._switch = False
        if run_as is not None:
            current = pwd.getpwuid(os.geteuid()).pw_name
            if current != run_as:
                if os.geteuid() != 0:
                    raise ValueError(
                        f"cannot run PostgreSQL as {run_as!r} while running as {current!r}: "
                        "run as root, or set PgConfig.run_as=None to use the current user"
                    )
                self._switch = True

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV_PREFIXES)}
        # English, stable messages (we parse pg_controldata and pg_rewind output).
        env["LC_ALL"] = "C"
        env["LANG"] = "C"
        if self._switch and self.run_as:
            entry = pwd.getpwnam(self.run_as)
            env.update(HOME=entry.pw_dir, USER=self.run_as, LOGNAME=self.run_as)
        if extra:
            env.update(extra)
        return env

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        capture: bool = True,
    ) -> CommandResult:
        """Run and wait. capture=False leaves stdout/stderr inherited (needed when a daemon keeps them).

        The program gets its own process group so that a timeout kills its helpers too
        (pg_basebackup forks a WAL streamer); a postmaster detaches itself and is never killed here.
        """
        kwargs: dict[str, Any] = {}
        if self._switch and self.owner:
            groups = os.getgrouplist(self.run_as or "", self.owner.gid)
            kwargs.update(user=self.owner.uid, group=self.owner.gid, extra_groups=groups)
        with subprocess.Popen(
            list(args),
            env=self.env(env),
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else None,
            umask=0o077,
            start_new_session=True,
            **kwargs,
        ) as proc:
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
                log.error("%s did not finish within %.0f s; killed", args[0], timeout or 0)
                text = out.decode("utf-8", "replace") if out else ""
                return CommandResult(tuple(args), -1, text + f"\n(killed after {timeout} s)")
        return CommandResult(tuple(args), proc.returncode, out.decode("utf-8", "replace") if out else "")


@dataclass(frozen=True)
class PidFile:
    """postmaster.pid: pid, start time (epoch), port, socket dir, listen address, status."""

    pid: int
    data_dir: str
    start_time: int | None
    port: int | None
    status: str  # "starting", "stopping", "ready", "standby" or "" (older/partial file)
    single_user: bool = False  # `postgres --single` (pg_rewind's crash recovery): no connections


def read_pid_file(data_dir: str) -> PidFile | None:
    try:
        with open(os.path.join(data_dir, "postmaster.pid"), encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    if not lines or not lines[0].strip().lstrip("-").isdigit():
        return None

    def field(i: int) -> str:
        return lines[i].strip() if len(lines) > i else ""

    start = field(2)
    port = field(3)
    return PidFile(
        pid=abs(int(lines[0].strip())),  # a single-user backend writes a negative pid
        data_dir=field(1),
        start_time=int(start) if start.isdigit() else None,
        port=int(port) if port.isdigit() else None,
        status=field(7),
        single_user=lines[0].strip().startswith("-"),
    )


def is_postgres_process(pid: int) -> bool:
    """Alive and really a postgres (a stale pid file's pid may now belong to anything)."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0].decode("utf-8", "replace")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc: trust the signal check
    # A zombie has an empty cmdline: it is gone for our purposes.
    return os.path.basename(argv0.split(" ", 1)[0]).rstrip(":") in ("postgres", "postmaster")


def running_postmaster(data_dir: str) -> PidFile | None:
    pid_file = read_pid_file(data_dir)
    if pid_file is None or not is_postgres_process(pid_file.pid):
        return None
    return pid_file


def cluster_pids(data_dir: str) -> list[int]:
    """Every live postgres process of ``data_dir`` (the postmaster and the processes it forked, even
    orphans of a killed postmaster): they all run with the data directory as their cwd."""
    want = os.path.realpath(data_dir)
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.readlink(f"/proc/{pid}/cwd") != want:
                continue
        except OSError:  # gone, or not ours to look at (then not ours to kill either)
            continue
        if is_postgres_process(pid):
            found.append(pid)
    return found


def kill_cluster(data_dir: str, wait: float = 3.0) -> tuple[list[int], list[int]]:
    """SIGKILL every process of ``data_dir`` at once: the fastest way to stop accepting writes, and
    one that works on a hung server. The postmaster is stopped first so that it cannot fork anything
    while its children are killed. Returns (killed, still alive after ``wait`` seconds)."""
    postmaster = running_postmaster(data_dir)
    if postmaster is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(postmaster.pid, signal.SIGSTOP)
    pids = cluster_pids(data_dir)
    if postmaster is not None and postmaster.pid not in pids:
        pids.append(postmaster.pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if _exists(p)]
    return pids, alive


def _exists(pid: int) -> bool:
    """A killed child of a process that never reaps it lingers as a zombie: that counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")
