"""The manager daemon: load config, connect to etcd, run the HA loop until SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from appliance.config.errors import ConfigError
from appliance.dcs.factory import etcd_from_config
from appliance.manager.events import setup_logging
from appliance.manager.executor import FatalError
from appliance.manager.loop import Manager
from appliance.manager.peers import fetch_peers
from appliance.manager.pgops import PgOps
from appliance.manager.settings import check_security, load_node_config, pg_config
from appliance.net.http import client_for
from appliance.postgres.control import PostgresControl

log = logging.getLogger("appliance.manager")

EXIT_CONFIG = 2
EXIT_FATAL = 3


def build(config_path: str | None) -> Manager:
    from appliance.config import bootstrap_dynamic, resolve
    from appliance.postgres.validate import check_local

    layers, local = load_node_config(config_path)
    insecure = check_security(layers, local)
    problems = check_local(local, layers.provenance, bootstrap_dcs=bootstrap_dynamic(layers))
    if problems:
        raise ConfigError(problems)
    effective = resolve(layers, None)
    setup_logging(local.appliance.log_level, local.appliance.log_format, name=f"[{local.name}]")
    for warning in insecure:
        log.warning("%s", warning)
    os.makedirs(local.appliance.run_dir, exist_ok=True)
    dyn = effective.dynamic
    dcs = etcd_from_config(local, name=local.name, ttl=dyn.ttl, retry_timeout=dyn.retry_timeout)
    control = PostgresControl(pg_config(effective))
    control.write_passfile()  # clones and rewinds connect before any config file is written
    ops = PgOps(control, effective.postgresql_parameters)
    client = client_for(local)
    manager = Manager(layers, dcs, ops,
                      peers=lambda members, quick=(): fetch_peers(members, client=client, quick=quick))
    manager.config_path = config_path
    return manager


def run(config_path: str | None) -> int:
    """Run the HA loop; returns the process exit code."""
    try:
        manager = build(config_path)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: shutting down", signal.Signals(signum).name)
        manager.stopping = True  # at once: an action of the running tick must not take over now
        stop.set()
        manager.wake()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def on_hup(_signum: int, _frame: object) -> None:
        from appliance.channel.intents import submit

        submit(manager.effective.local.appliance.run_dir, "reload")
        manager.wake()

    signal.signal(signal.SIGHUP, on_hup)
    manager.events.emit("started", f"manager for {manager.name} started")
    code = 0
    try:
        while not stop.is_set():
            try:
                manager.tick()
            except FatalError as exc:
                manager.events.emit("fatal", str(exc), level=logging.CRITICAL)
                code = EXIT_FATAL
                break
            except Exception:  # the loop boundary: log and keep going, never die on one bad tick
                log.exception("HA loop iteration failed")
            if not stop.is_set():
                manager.wait_next()
    finally:
        if code == 0:
            manager.shutdown()
        manager.dcs.close()
    return code
