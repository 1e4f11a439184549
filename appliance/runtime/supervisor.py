"""Render a node's supervisord.conf: etcd, manager, haproxy, api and the FATAL event listener."""

from __future__ import annotations

import os
import pwd
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import appliance

# Start order (lower first); supervisord stops in the reverse order. The manager stops first: a
# node that is shutting down must not take part in a leader race while its API and HAProxy go away,
# and it releases the leader key while etcd still runs. The fencer starts before the manager and
# stops after it, so that no postmaster the manager started is ever left without one.
PRIORITIES: dict[str, int] = {"etcd": 10, "fencer": 15, "haproxy": 30, "api": 40, "manager": 50}
CRITICAL_PROGRAMS: tuple[str, ...] = ("etcd", "fencer", "manager", "api", "haproxy")
FATAL_LISTENER = "fatal_listener"
FATAL_MARKER = "supervisord.fatal"


@dataclass(frozen=True)
class LogTarget:
    """Where supervisord and its programs write their output.

    ``directory=None`` means the supervisord's own stdout/stderr (container convention: rotation
    off, ``*_maxbytes=0``); a directory gets one file per program (the demo has no terminal).
    """

    directory: str | None = None
    file_maxbytes: str = "50MB"
    file_backups: int = 2

    @classmethod
    def stdio(cls) -> LogTarget:
        return cls()

    @classmethod
    def files(cls, directory: str | Path) -> LogTarget:
        return cls(directory=str(directory))


@dataclass(frozen=True)
class Program:
    """One ``[program:x]`` section."""

    name: str
    command: Sequence[str]
    priority: int
    environment: Mapping[str, str] = field(default_factory=dict)
    directory: str | None = None
    autorestart: bool = True
    startsecs: int = 1
    startretries: int = 3
    stopsignal: str = "TERM"
    stopwaitsecs: int = 10
    stopasgroup: bool = False
    killasgroup: bool = False
    # ``host:port`` of a listening TCP socket that supervisord itself holds and passes to every
    # start of the program as file descriptor 0 (an ``[fcgi-program]``): a crashed program's
    # successor finds the connections queued, none refused meanwhile.
    socket: str | None = None


@dataclass(frozen=True)
class SupervisorSpec:
    """Everything the supervisord.conf of one node (or of the demo's proxy) depends on."""

    run_dir: str
    programs: Sequence[Program]
    log: LogTarget = LogTarget()
    user: str | None = None  # set when started as root: supervisord drops to it, and so do programs
    nodaemon: bool = True
    critical: Sequence[str] = CRITICAL_PROGRAMS
    python: str = sys.executable
    environment: Mapping[str, str] = field(default_factory=dict)

    @property
    def socket_path(self) -> str:
        return os.path.join(self.run_dir, "supervisor.sock")

    @property
    def pidfile(self) -> str:
        return os.path.join(self.run_dir, "supervisord.pid")

    @property
    def fatal_marker(self) -> str:
        return os.path.join(self.run_dir, FATAL_MARKER)


def default_user() -> str | None:
    """``postgres`` when we run as root (PostgreSQL refuses root), else nobody to switch to."""
    return "postgres" if os.geteuid() == 0 else None


def package_root() -> str:
    """The directory holding the ``appliance`` package, so programs import this very copy."""
    return str(Path(appliance.__file__).resolve().parent.parent)


def appliance_command(python: str, *args: str) -> list[str]:
    """``<venv python> -m appliance <args>``: works whether or not the package is installed."""
    return [python, "-m", "appliance", *args]


def _escape(value: str) -> str:
    # supervisord expands %(name)s in most values: a literal percent sign must be doubled.
    return value.replace("%", "%%")


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _environment(env: Mapping[str, str]) -> str:
    for key, value in env.items():
        if '"' in value or "\n" in value:
            raise ValueError(f"environment value of {key} must not contain quotes or newlines")
    return ",".join(f'{key}="{_escape(value)}"' for key, value in env.items())


def _log_lines(log: LogTarget, name: str, *, listener: bool = False) -> list[str]:
    # A listener's stdout is the event protocol: nothing worth keeping (not even supervisord's AUTO file).
    if log.directory is None:
        out = ["stdout_logfile=NONE"] if listener else ["stdout_logfile=/dev/stdout", "stdout_logfile_maxbytes=0"]
        return [*out, "stderr_logfile=/dev/stderr", "stderr_logfile_maxbytes=0"]
    path = _escape(os.path.join(log.directory, f"{name}.log"))
    sizes = [f"stderr_logfile_maxbytes={log.file_maxbytes}", f"stderr_logfile_backups={log.file_backups}"]
    if listener:
        return ["stdout_logfile=NONE", f"stderr_logfile={path}", *sizes]
    return [
        f"stdout_logfile={path}",
        f"stdout_logfile_maxbytes={log.file_maxbytes}",
        f"stdout_logfile_backups={log.file_backups}",
        "redirect_stderr=true",
    ]


def _header(spec: SupervisorSpec) -> list[str]:
    if spec.log.directory is None:
        # silent: in the foreground supervisord would also echo its log to stdout, i.e. print it twice.
        logfile = ["logfile=/dev/stdout", "logfile_maxbytes=0", "silent=true"]
    else:
        logfile = [
            f"logfile={_escape(os.path.join(spec.log.directory, 'supervisord.log'))}",
            f"logfile_maxbytes={spec.log.file_maxbytes}",
            f"logfile_backups={spec.log.file_backups}",
            f"childlogdir={_escape(spec.log.directory)}",
        ]
    lines = ["[supervisord]", f"nodaemon={_bool(spec.nodaemon)}", *logfile, "loglevel=info"]
    lines.append(f"pidfile={_escape(spec.pidfile)}")
    env = dict(spec.environment)
    if spec.user is not None:
        lines.append(f"user={spec.user}")
        # supervisord's own user= switch does not reset HOME/USER; libpq and etcd look at them.
        entry = pwd.getpwnam(spec.user)
        env = {"HOME": entry.pw_dir, "USER": spec.user, "LOGNAME": spec.user, **env}
    if env:
        lines.append(f"environment={_environment(env)}")
    socket = _escape(spec.socket_path)
    return [
        *lines,
        "",
        "[unix_http_server]",
        f"file={socket}",
        "chmod=0700",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        *(["[rpcinterface:appliance_sockets]",
           "supervisor.rpcinterface_factory = appliance.runtime.socket_keeper:make_keeper", ""]
          if any(p.socket is not None for p in spec.programs) else []),
        "[supervisorctl]",
        f"serverurl=unix://{socket}",
    ]


def _program(program: Program, log: LogTarget) -> list[str]:
    head = [f"[program:{program.name}]"]
    if program.socket is not None:
        head = [f"[fcgi-program:{program.name}]", f"socket=tcp://{program.socket}", "socket_backlog=128",
                f"process_name={program.name}", "numprocs=1"]
    lines = [
        *head,
        f"command={_escape(shlex.join(program.command))}",
        f"priority={program.priority}",
        "autostart=true",
        f"autorestart={_bool(program.autorestart)}",
        f"startsecs={program.startsecs}",
        f"startretries={program.startretries}",
        f"stopsignal={program.stopsignal}",
        f"stopwaitsecs={program.stopwaitsecs}",
        f"stopasgroup={_bool(program.stopasgroup)}",
        f"killasgroup={_bool(program.killasgroup)}",
    ]
    if program.directory is not None:
        lines.append(f"directory={_escape(program.directory)}")
    if program.environment:
        lines.append(f"environment={_environment(program.environment)}")
    return [*lines, *_log_lines(log, program.name)]


def _listener(spec: SupervisorSpec, watched: Sequence[str]) -> list[str]:
    command = [
        spec.python,
        "-m",
        "appliance.runtime.fatal_listener",
        "--marker",
        spec.fatal_marker,
        "--programs",
        ",".join(watched),
    ]
    return [
        f"[eventlistener:{FATAL_LISTENER}]",
        f"command={_escape(shlex.join(command))}",
        "events=PROCESS_STATE_FATAL",
        "priority=1",
        "autorestart=true",
        *_log_lines(spec.log, FATAL_LISTENER, listener=True),
    ]


def render_supervisord_conf(spec: SupervisorSpec) -> str:
    """The supervisord.conf text for ``spec`` (programs in priority order)."""
    names = [p.name for p in spec.programs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate program names in {names}")
    sections = [_header(spec)]
    for program in sorted(spec.programs, key=lambda p: p.priority):
        sections.append(_program(program, spec.log))
    watched = [name for name in names if name in spec.critical]
    if watched:
        sections.append(_listener(spec, watched))
    return "\n\n".join("\n".join(section) for section in sections) + "\n"
