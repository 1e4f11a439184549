"""The container entrypoint: render this node's configuration, fix ownership, drop to postgres, run supervisord.

``docker run IMAGE`` (or ``IMAGE run``) starts the appliance; any other command is executed as is
(``docker run --rm -it IMAGE bash``). As root it fixes the volume's ownership, hands the
container's stdout/stderr pipes to the postgres user (a pipe opened as ``/dev/stdout`` is checked
against its owner), then becomes postgres and execs supervisord as PID 1 (see supervise.py).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from appliance.config import bootstrap_dynamic, build_local, load_local
from appliance.config.errors import ConfigError
from appliance.config.schema import LocalConfig
from appliance.config.security import security_problems, security_warnings
from appliance.config.tree import merge
from appliance.postgres.process import running_postmaster
from appliance.postgres.validate import Checks, check_local, postgres_checks
from appliance.proxy.haproxy import ProxySettings, render_haproxy_cfg
from appliance.runtime import container as ct
from appliance.runtime.container_identity import IdentityError, materialise
from appliance.runtime.etcd_join import EtcdPlan, Gateway, JoinRefused, JoinRequest, gateway_for, plan_start
from appliance.runtime.etcd_server import client_urls, own_client_url, peer_url
from appliance.runtime.initdb_scripts import INITDB_DIR, PENDING_MARKER, RUNNING_MARKER
from appliance.runtime.node import node_supervisor_spec
from appliance.runtime.supervisor import LogTarget, Program, render_supervisord_conf

RENDERED_PATH = "/run/pgappliance/appliance.yml"
USER = "postgres"
EXIT_CONFIG = 2
EXIT_REFUSED = 1
# Files of an earlier run of this container: the run dir is not a tmpfs, and a restarted
# container keeps its filesystem.
_STALE = ("supervisor.sock", "supervisord.pid", "supervisord.fatal", "state.json", "haproxy.sock", PENDING_MARKER,
          RUNNING_MARKER)


def say(message: str) -> None:
    print(f"entrypoint: {message}", file=sys.stderr, flush=True)


@dataclass
class Plan:
    """What prepare() decided and wrote: the programs' environment and supervisord's config."""

    config: LocalConfig
    identity: ct.Identity
    rendered: str
    supervisord_conf: str
    env: dict[str, str]
    etcd: EtcdPlan | None
    initialised: bool
    notes: list[str] = field(default_factory=list)

    @property
    def fatal_marker(self) -> str:
        return os.path.join(self.config.appliance.run_dir, "supervisord.fatal")


def _write_rendered(rendered: str, tree: dict[str, object], files: list[str]) -> None:
    os.makedirs(os.path.dirname(rendered), exist_ok=True)
    fd = os.open(rendered, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(ct.as_yaml_header(files))
        yaml.safe_dump(tree, handle, sort_keys=False)


def load_settings(env: Mapping[str, str], rendered: str, hostname: str, owner: tuple[int, int] | None = None,
                  checks: Checks = postgres_checks) -> tuple[LocalConfig, ct.Identity, list[str]]:
    """Render the local YAML (container defaults < image/operator files < the secrets, TLS files and
    passwords of this node) and validate it with the env on top, exactly as the programs will (their
    env holds no secret). Raises ConfigError / EntrypointError / IdentityError."""
    inputs = ct.input_paths(env, rendered)
    full_env = {k: v for k, v in env.items() if k not in ct.NOT_FOR_PROGRAMS}
    base_layers = load_local(inputs, full_env)
    base = build_local(base_layers)
    explicit = base_layers.data
    aliases = [socket.getfqdn()] + ([base.name] if "name" in explicit else [])
    ident = ct.identity(ct.peers_from(env, base), hostname, aliases)
    input_tree, files = ct.merged_inputs(inputs)
    tree = ct.render_tree(ct.derived_defaults(base, ident, explicit, env), input_tree)
    _write_rendered(rendered, tree, files)
    pre = build_local(load_local(rendered, full_env))
    initialised = ct.pgdata_initialised(pre.postgresql.data_dir)
    notes: list[str] = []
    for extra in (ct.secrets_tree(env), ct.database_passwords(pre, env, initialised)):
        merge(tree, {}, extra, {})
    _write_rendered(rendered, tree, files)
    pre = build_local(load_local(rendered, full_env))
    found = materialise(pre, env, single=ident.single, host=ident.host, run_dir=pre.appliance.run_dir,
                        state_dir=os.path.dirname(os.path.normpath(pre.postgresql.data_dir)), owner=owner)
    merge(tree, {}, found.tree, {}, null_deletes=True)
    notes += found.notes
    _write_rendered(rendered, tree, files)
    if owner is not None:
        os.chown(rendered, *owner)
    layers = load_local(rendered, ct.config_env(env))
    config = build_local(layers)
    problems = security_problems(config, layers.provenance)
    # Every parameter as this image's PostgreSQL reads it: a bad value fails now, naming its variable.
    problems += check_local(config, layers.provenance, checks, bootstrap_dcs=bootstrap_dynamic(layers))
    if problems:
        raise ConfigError(problems)
    return config, ident, [*notes, *layers.warnings, *security_warnings(config)]


def etcd_plan(config: LocalConfig, initialised: bool, gateway: Gateway, wait: float) -> EtcdPlan | None:
    if not config.etcd.enabled:
        return None
    own = own_client_url(config)
    others = tuple(url for url in client_urls(config) if url != own)
    request = JoinRequest(
        name=config.etcd.name or config.name,
        peer_url=peer_url(config),
        data_dir=config.etcd.data_dir,
        peer_client_urls=others,
        pgdata_initialised=initialised,
    )
    return plan_start(request, gateway, wait=wait, log=say)


def clean_run_dir(run_dir: str) -> None:
    for name in _STALE:
        path = os.path.join(run_dir, name)
        if os.path.lexists(path):
            os.unlink(path)
    sockets = os.path.join(run_dir, "pgsocket")
    if os.path.isdir(sockets):
        for name in os.listdir(sockets):
            os.unlink(os.path.join(sockets, name))


def remove_stale_pid_file(data_dir: str) -> str | None:
    """A fresh container runs no postmaster: a postmaster.pid left by a killed one would make
    PostgreSQL refuse to start when its pid now belongs to another of our processes."""
    path = os.path.join(data_dir, "postmaster.pid")
    if os.path.exists(path) and running_postmaster(data_dir) is None:
        os.unlink(path)
        return f"removed the stale {path} of a postmaster that no longer runs"
    return None


def init_program(config: LocalConfig, python: str, rendered: str) -> Program:
    marker = os.path.join(config.appliance.run_dir, PENDING_MARKER)
    command = [python, "-m", "appliance.runtime.initdb_scripts", "--config", rendered, "--pending", marker,
               "--dir", INITDB_DIR]
    return Program("initdb_scripts", command, 60, autorestart=False, startsecs=0, startretries=0)


def write_runtime_files(plan: Plan, python: str) -> None:
    config = plan.config
    run_dir = config.appliance.run_dir
    extra: list[Program] = []
    if not plan.initialised:
        Path(run_dir, PENDING_MARKER).touch()
        extra.append(init_program(config, python, plan.rendered))
    haproxy_cfg = os.path.join(run_dir, "haproxy.cfg")
    if config.haproxy.enabled:
        nodes, resolve = ct.proxy_nodes(config, plan.identity)
        ca = config.tls.ca_file if config.restapi.certfile else None
        settings = replace(ProxySettings.from_config(config.haproxy, run_dir, ca), resolve_at_runtime=resolve)
        Path(haproxy_cfg).write_text(render_haproxy_cfg(nodes, settings))
    spec = node_supervisor_spec(
        config, plan.rendered, log=LogTarget.stdio(), user=None, nodaemon=True, haproxy_cfg=haproxy_cfg,
        etcd_state=plan.etcd.state if plan.etcd else "new", etcd_cluster=plan.etcd.cluster if plan.etcd else None,
        python=python, extra_programs=extra, environment={},
    )
    Path(plan.supervisord_conf).write_text(render_supervisord_conf(spec))


def prepare(
    environ: Mapping[str, str],
    *,
    hostname: str,
    rendered: str = RENDERED_PATH,
    gateway: Gateway | None = None,
    python: str = sys.executable,
    home: str = "/var/lib/postgresql",
    owner: tuple[int, int] | None = None,
    etcd_wait: float = 30.0,
    checks: Checks = postgres_checks,
) -> Plan:
    """Everything before the exec: settings, checks, etcd plan, files. Raises EntrypointError,
    ConfigError or JoinRefused with the message for the operator."""
    env = ct.resolve_file_twins(environ)
    config, ident, notes = load_settings(env, rendered, hostname, owner, checks)
    data_dir = config.postgresql.data_dir
    initialised = ct.pgdata_initialised(data_dir)
    if config.postgresql.authentication.superuser.password == ct.DEMO_PASSWORD and env.get(ct.DEMO_ENV):
        notes.append("APPLIANCE_DEMO_INSECURE: the superuser password is 'postgres'. Never use this beyond a demo")
    prepare_dirs(config, owner)
    stale = remove_stale_pid_file(data_dir)
    if stale:
        notes.append(stale)
    clean_run_dir(config.appliance.run_dir)
    plan = Plan(config, ident, rendered, os.path.join(config.appliance.run_dir, "supervisord.conf"),
                ct.program_environment(env, home, USER, rendered), None, initialised, notes)
    join: Gateway = gateway if gateway is not None else gateway_for(config)
    plan.etcd = etcd_plan(config, initialised, join, etcd_wait)
    write_runtime_files(plan, python)
    return plan


def _own(path: str, owner: tuple[int, int] | None, mode: int | None = None, recursive: bool = False) -> None:
    os.makedirs(path, exist_ok=True)
    if owner is not None:
        st = os.stat(path)
        if (st.st_uid, st.st_gid) != owner:
            if recursive:
                for root, dirs, files in os.walk(path):
                    for name in [*dirs, *files]:
                        os.lchown(os.path.join(root, name), *owner)
            os.chown(path, *owner)
    if mode is not None:
        os.chmod(path, mode)


def prepare_dirs(config: LocalConfig, owner: tuple[int, int] | None) -> None:
    """The volume's directories, owned by postgres: a volume created by root (or by another
    image) works; its content is re-owned only when its top directory is not postgres's."""
    data_dir = config.postgresql.data_dir
    _own(os.path.dirname(os.path.normpath(data_dir)), owner)
    _own(data_dir, owner, 0o700, recursive=True)
    if config.etcd.enabled:
        _own(os.path.dirname(os.path.normpath(config.etcd.data_dir)), owner)
        _own(config.etcd.data_dir, owner, 0o700, recursive=True)
    _own(config.appliance.run_dir, owner, 0o755)
    hand_over_watchdog(config, owner)


def hand_over_watchdog(config: LocalConfig, owner: tuple[int, int] | None) -> None:
    """The fencer runs as postgres: a watchdog device given to the container (or softdog on the VM)
    must be postgres's to open. Only a character device is touched, never a file the config names."""
    device = config.watchdog.device
    if config.watchdog.mode == "off" or owner is None:
        return
    try:
        st = os.stat(device)
    except OSError:
        return  # no device: the fencer reports the watchdog unavailable (fatal only when required)
    if not stat.S_ISCHR(st.st_mode):
        say(f"watchdog.device {device} is not a character device: left alone")
        return
    try:
        os.chown(device, *owner)
        os.chmod(device, 0o600)
    except OSError as exc:
        say(f"cannot hand {device} to {USER}: {exc}")


def route_postgres_log(data_dir: str, owner: tuple[int, int] | None) -> None:
    """PostgreSQL's log (``pg_ctl -l <parent of PGDATA>/postgresql.log``) goes to the container's
    stderr: the file becomes a link to PID 1's stderr, which lives as long as the container."""
    path = os.path.join(os.path.dirname(os.path.normpath(data_dir)), "postgresql.log")
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(f"/proc/{os.getpid()}/fd/2", path)
    if owner is not None:
        os.lchown(path, *owner)


def hand_over_stdio(owner: tuple[int, int]) -> bool:
    """Give the stdout/stderr pipes to postgres, or programs cannot open /dev/stdout after the drop."""
    try:
        for fd in (1, 2):
            os.fchown(fd, *owner)
    except OSError as exc:
        say(f"cannot hand stdout/stderr to {USER} ({exc}): logs may be lost")
        return False
    return True


def drop_and_exec(plan: Plan, python: str, user: pwd.struct_passwd | None) -> None:
    argv = [python, "-m", "appliance.runtime.supervise", "-c", plan.supervisord_conf, "--marker", plan.fatal_marker]
    if user is not None:
        os.initgroups(user.pw_name, user.pw_gid)
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    os.chdir(plan.env.get("HOME", "/"))
    os.execve(python, argv, plan.env)


def run(environ: Mapping[str, str]) -> int:
    is_root = os.geteuid() == 0
    user = pwd.getpwnam(USER) if is_root else None
    owner = (user.pw_uid, user.pw_gid) if user else None
    try:
        plan = prepare(environ, hostname=socket.gethostname(), owner=owner,
                       home=user.pw_dir if user else os.environ.get("HOME", "/"))
    except ConfigError as exc:
        say(f"configuration error: {exc}")
        return EXIT_CONFIG
    except (ct.EntrypointError, JoinRefused, IdentityError) as exc:
        say(str(exc))
        return EXIT_REFUSED
    for note in plan.notes:
        say(note)
    say(ct.describe(plan.config, plan.identity))
    if plan.etcd:
        say(f"etcd starts with state {plan.etcd.state}: {plan.etcd.reason}")
    say("data directory " + ("exists: skipping initialisation" if plan.initialised else
                             "is empty: the cluster bootstraps or this node clones a replica"))
    if owner is None or hand_over_stdio(owner):
        route_postgres_log(plan.config.postgresql.data_dir, owner)
    drop_and_exec(plan, sys.executable, user)
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] != "run":
        path = shutil.which(args[0])
        if path is None:
            say(f"{args[0]}: command not found (with no argument, or 'run', the container starts the appliance)")
            return 127
        os.execv(path, args)
    return run(os.environ)


if __name__ == "__main__":
    sys.exit(main())
