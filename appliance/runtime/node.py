"""One appliance node's supervised programs (etcd, manager, haproxy, api) from its LocalConfig."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from appliance.config.schema import LocalConfig
from appliance.net.address import host_and_port
from appliance.proxy.haproxy import haproxy_command
from appliance.runtime.etcd_server import ClusterState, etcd_command
from appliance.runtime.supervisor import (
    PRIORITIES,
    LogTarget,
    Program,
    SupervisorSpec,
    appliance_command,
    package_root,
)

ALL_PROGRAMS: tuple[str, ...] = ("etcd", "fencer", "haproxy", "api", "manager")  # priority order
# One-shot helper beside the embedded etcd member: turns etcd auth on (runtime/etcd_auth.py).
ETCD_AUTH = "etcd_auth"
# A Python program needs about a second just to import; a crash at start-up must count as a failed
# start (BACKOFF, then FATAL), not as a run, or supervisord would hide a crash loop forever.
PYTHON_STARTSECS = 5


def load_local_config(path: str | Path) -> LocalConfig:
    """Read and validate a node's YAML file; the error names the file and the field."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read node config {path}: {exc}") from exc
    try:
        return LocalConfig.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"invalid node config {path}: {exc}") from exc


def wants_etcd_auth(config: LocalConfig) -> bool:
    return config.etcd.enabled and config.security.etcd_auth and bool(config.etcd.root_password)


def default_programs(config: LocalConfig) -> tuple[str, ...]:
    wanted = {"fencer", "manager", "api"}
    if config.etcd.enabled:
        wanted.add("etcd")
    if config.haproxy.enabled:
        wanted.add("haproxy")
    return tuple(name for name in ALL_PROGRAMS if name in wanted)


def _program(
    name: str,
    config: LocalConfig,
    config_path: str,
    python: str,
    etcd_state: ClusterState,
    haproxy_cfg: str,
    etcd_cluster: str | None = None,
) -> Program:
    if name == "etcd":
        etcd = etcd_command(config, etcd_state, cluster=etcd_cluster)
        return Program("etcd", etcd.argv, PRIORITIES["etcd"], environment=etcd.env, startsecs=3, stopwaitsecs=15)
    if name == "fencer":
        # Small and always on: it kills PostgreSQL when the manager's lease order runs out.
        command = [python, "-m", "appliance.fence.daemon", "--data-dir", config.postgresql.data_dir,
                   "--run-dir", config.appliance.run_dir, "--log-format", config.appliance.log_format,
                   "--name", config.name]
        return Program("fencer", command, PRIORITIES["fencer"], startsecs=2, stopwaitsecs=5)
    if name == "manager":
        # The manager owns the postmaster: no group signals, and time for a fast shutdown checkpoint.
        return Program(
            "manager",
            appliance_command(python, "manager", "--config", config_path),
            PRIORITIES["manager"],
            startsecs=PYTHON_STARTSECS,
            stopsignal="TERM",
            stopwaitsecs=45,
            stopasgroup=False,
            killasgroup=False,
        )
    if name == "api":
        # supervisord holds the API's listening socket (an IPv4 or host name address; IPv6 listens
        # are bound by the API itself): when the API dies, health checks wait in the backlog for its
        # successor instead of being refused, and HAProxy does not mark the primary down.
        held = held_socket(config.restapi.listen)
        command = appliance_command(python, "api", "--config", config_path)
        return Program(
            "api",
            [*command, "--listen-fd", "0"] if held else command,
            PRIORITIES["api"],
            startsecs=PYTHON_STARTSECS,
            stopwaitsecs=35,
            stopasgroup=True,
            killasgroup=True,
            socket=held,
        )
    if name == "haproxy":
        cfg = haproxy_cfg or os.path.join(config.appliance.run_dir, "haproxy.cfg")
        return Program("haproxy", haproxy_command(cfg), PRIORITIES["haproxy"], startsecs=2, stopwaitsecs=10)
    if name == ETCD_AUTH:
        command = [python, "-m", "appliance.runtime.etcd_auth", "--config", config_path]
        return Program(ETCD_AUTH, command, PRIORITIES["etcd"] + 1, autorestart=False, startsecs=0, startretries=0)
    raise ValueError(f"unknown program {name!r}: choose among {', '.join(ALL_PROGRAMS)}")


def held_socket(listen: str) -> str | None:
    """``host:port`` for supervisord's socket= (None for an IPv6 address, which it cannot parse)."""
    host, port = host_and_port(listen)
    if not host or ":" in host or port is None or not port.isdigit():
        return None
    return f"{host}:{port}"


def node_programs(
    config: LocalConfig,
    config_path: str | Path,
    *,
    programs: Sequence[str] | None = None,
    haproxy_cfg: str | None = None,
    etcd_state: ClusterState = "new",
    python: str = sys.executable,
    etcd_cluster: str | None = None,
) -> list[Program]:
    """The programs of one node; ``programs`` selects a subset (e.g. ``("etcd",)`` in tests).

    ``etcd_state``/``etcd_cluster``: how a member with an empty data dir starts (see etcd_command).
    """
    names = default_programs(config) if programs is None else tuple(programs)
    if "manager" in names and "fencer" not in names:
        names = ("fencer", *names)  # a manager never runs without its fencer
    if "etcd" in names and wants_etcd_auth(config):
        names = (*names, ETCD_AUTH)
    path = str(Path(config_path).resolve())
    return [_program(name, config, path, python, etcd_state, haproxy_cfg or "", etcd_cluster) for name in names]


def node_supervisor_spec(
    config: LocalConfig,
    config_path: str | Path,
    *,
    log: LogTarget | None = None,
    user: str | None = None,
    nodaemon: bool = True,
    programs: Sequence[str] | None = None,
    haproxy_cfg: str | None = None,
    etcd_state: ClusterState = "new",
    python: str = sys.executable,
    etcd_cluster: str | None = None,
    extra_programs: Sequence[Program] = (),
    environment: dict[str, str] | None = None,
) -> SupervisorSpec:
    """The supervisord spec of one node: run dir from ``appliance.run_dir``, logs to ``log``.

    ``extra_programs`` are appended (the image's one-shot init scripts); ``environment`` replaces
    the default supervisord-wide environment (``PYTHONPATH`` of this package).
    """
    programs_ = node_programs(
        config,
        config_path,
        programs=programs,
        haproxy_cfg=haproxy_cfg,
        etcd_state=etcd_state,
        python=python,
        etcd_cluster=etcd_cluster,
    )
    return SupervisorSpec(
        run_dir=config.appliance.run_dir,
        programs=[*programs_, *extra_programs],
        log=log or LogTarget.stdio(),
        user=user,
        nodaemon=nodaemon,
        python=python,
        environment={"PYTHONPATH": package_root()} if environment is None else environment,
    )
