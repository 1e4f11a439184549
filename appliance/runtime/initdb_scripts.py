"""One-shot program: create POSTGRES_DB and run /docker-entrypoint-initdb.d once, on the bootstrap primary.

The entrypoint leaves a "pending" marker in the run dir when PGDATA was empty at start. This
program then waits for its node's REST API: a node that ends up a replica was cloned, and runs
nothing; a running primary on timeline 1 ran initdb itself (a clone that was promoted is on a
later timeline), and runs the scripts, in name order, like the official postgres image:
``*.sh`` executed (``bash`` when not executable), ``*.sql``, ``*.sql.gz``, ``*.sql.xz`` through
``psql -v ON_ERROR_STOP=1``. The marker goes away before the first script, so nothing runs twice.

The scripts wait until the replicas stream (the busiest moment of a bootstrap is over), and an SQL
script whose connection was lost (psql's exit status 2: the manager restarted PostgreSQL) runs
again once this node is back as the bootstrap primary.
"""

from __future__ import annotations

import argparse
import gzip
import lzma
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from appliance.core.model import PgState, Role
from appliance.net.http import Client, client_for, request

INITDB_DIR = "/docker-entrypoint-initdb.d"
PENDING_MARKER = "initdb-scripts.pending"
RUNNING_MARKER = "initdb-scripts.running"  # beside the pending one, while the scripts run
DEFAULT_RUN_DIR = "/run/pgappliance"
PSQL_CONNECTION_LOST = 2  # psql: the connection went bad (an error in the script is 3)
SETTLE_TIMEOUT = 300.0
Fetch = Callable[[], "dict[str, Any] | None"]


def say(message: str) -> None:
    print(f"initdb-scripts: {message}", flush=True)


def classify(doc: Mapping[str, Any] | None) -> str | None:
    """``bootstrap`` (run), ``not-bootstrap`` (skip), or None (not decided yet: keep waiting)."""
    if not doc:
        return None
    role, state = doc.get("role"), doc.get("state")
    if role == Role.REPLICA:
        return "not-bootstrap"
    if role == Role.PRIMARY and state == PgState.RUNNING:
        return "bootstrap" if doc.get("timeline") == 1 else "not-bootstrap"
    return None


def wait_for_verdict(fetch: Fetch, timeout: float, clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> str | None:
    deadline = clock() + timeout
    while True:
        verdict = classify(fetch())
        if verdict is not None or clock() >= deadline:
            return verdict
        sleep(1.0)


def api_fetcher(url: str, client: Client | None = None) -> Fetch:
    def fetch() -> dict[str, Any] | None:
        try:
            doc = request(url, client, timeout=3, authenticate=False).json()  # a 503 still carries it
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    return fetch


@dataclass(frozen=True)
class PsqlTarget:
    psql: str
    env: dict[str, str]
    # Blocks until this node is the bootstrap primary again; False: it is not (any more).
    ready: Callable[[], bool] = lambda: True
    attempts: int = 5

    def command(self, dbname: str, *extra: str) -> list[str]:
        return [self.psql, "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "--no-password", "--dbname", dbname, *extra]

    def run(self, dbname: str, data: bytes, *extra: str) -> int:
        """psql with ``data`` on stdin; again after a lost connection, once the node is ready."""
        returncode = PSQL_CONNECTION_LOST
        for _ in range(self.attempts):
            returncode = subprocess.run(self.command(dbname, *extra), input=data, env=self.env).returncode
            if returncode != PSQL_CONNECTION_LOST:
                return returncode
            say("the connection to PostgreSQL was lost: running the same input again once this node is back")
            if not self.ready():
                break
        return returncode


def create_database(target: PsqlTarget, dbname: str) -> bool:
    """POSTGRES_DB, if it does not exist yet (docker-library's docker_setup_db)."""
    if dbname == "postgres":
        return True
    sql = ("SELECT format('CREATE DATABASE %I', :'db') "
           "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\\gexec\n")
    if target.run("postgres", sql.encode(), "--set", f"db={dbname}") != 0:
        say(f"could not create the database {dbname}")
        return False
    say(f"database {dbname} is there")
    return True


def _sql_input(path: Path) -> bytes | None:
    name = path.name
    if name.endswith(".sql"):
        return path.read_bytes()
    if name.endswith(".sql.gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".sql.xz"):
        return lzma.decompress(path.read_bytes())
    return None


def run_script(target: PsqlTarget, path: Path, dbname: str) -> bool:
    """One entry of the directory; False when it failed. Unknown kinds are skipped, as upstream."""
    if path.name.endswith(".sh"):
        command = [str(path)] if os.access(path, os.X_OK) else ["bash", str(path)]
        say(f"running {path}")
        return subprocess.run(command, env=target.env).returncode == 0
    try:
        data = _sql_input(path)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        say(f"cannot read {path}: {exc}")
        return False
    if data is None:
        say(f"ignoring {path}")
        return True
    say(f"running {path}")
    return target.run(dbname, data) == 0


def run_all(target: PsqlTarget, directory: Path, dbname: str) -> int:
    if not create_database(target, dbname):
        return 1
    if not directory.is_dir():
        return 0
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        if not run_script(target, path, dbname):
            say(f"{path} failed: the remaining scripts were not run. The cluster is up with what ran so far; "
                "finish the initialisation by hand (scripts never run again on this data)")
            return 1
    say("PostgreSQL init process complete")
    return 0


def _api_base(listen: str, https: bool = False) -> str:
    host, _, port = listen.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0", "*", "::", "[::]") else host.strip("[]")
    return f"{'https' if https else 'http'}://{host}:{port}"


def _target(config_path: str | None) -> tuple[PsqlTarget, str, str, int, Client]:
    """psql as the superuser over the local socket, the database, the REST API, the member count."""
    from appliance.config.schema import split_listen
    from appliance.manager.settings import load_node_config

    _layers, local = load_node_config(config_path)
    pg = local.postgresql
    su = pg.authentication.superuser
    dbname = os.environ.get("POSTGRES_DB") or su.username
    # The scripts get the docker-library variables (POSTGRES_PASSWORD for the .sh ones that use it),
    # psql needs no password: the local socket is trusted.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({
        "PGHOST": os.path.join(local.appliance.run_dir, "pgsocket"),
        "PGPORT": str(split_listen(pg.listen)[1]),
        "PGUSER": su.username,
        "PGDATABASE": dbname,
        "POSTGRES_USER": su.username,
        "POSTGRES_DB": dbname,
    })
    if su.password:
        env["POSTGRES_PASSWORD"] = su.password
    api = _api_base(local.restapi.listen, bool(local.restapi.certfile))
    ready = partial(_is_bootstrap_primary, api_fetcher(f"{api}/patroni", client_for(local)))
    return (PsqlTarget(os.path.join(pg.bin_dir, "psql"), env, ready), dbname, api, 1 + len(local.appliance.peers),
            client_for(local))


def _is_bootstrap_primary(fetch: Fetch) -> bool:
    return wait_for_verdict(fetch, 600.0) == "bootstrap"


def wait_settled(fetch: Fetch, members: int, timeout: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> bool:
    """Until /cluster shows every member, the replicas streaming (bounded: then run anyway)."""
    from appliance.runtime.cluster_health import member_problems

    deadline = clock() + timeout
    while member_problems(fetch(), members):
        if clock() >= deadline:
            return False
        sleep(1.0)
    return True


def wait_finished(run_dir: Path, timeout: float, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> bool:
    """Until this node has no init scripts pending or running (what ``scripts/up`` waits for)."""
    deadline = clock() + timeout
    while (run_dir / PENDING_MARKER).exists() or (run_dir / RUNNING_MARKER).exists():
        if clock() >= deadline:
            return False
        sleep(0.5)
    return True


def _run_dir_of(config_path: str | None) -> Path:
    # Read the rendered file alone: `docker exec` carries the container's env, APPLIANCE_PEERS included.
    try:
        doc = yaml.safe_load(Path(config_path or "").read_text()) or {}
        return Path(str(doc.get("appliance", {}).get("run_dir") or DEFAULT_RUN_DIR))
    except (OSError, yaml.YAMLError, AttributeError):
        return Path(DEFAULT_RUN_DIR)


def run_once(args: argparse.Namespace) -> int:
    pending = Path(args.pending)
    if not pending.exists():
        return 0
    target, dbname, api, members, client = _target(args.config)
    say(f"waiting for this node to bootstrap the cluster or to join it ({api}/patroni)")
    verdict = wait_for_verdict(api_fetcher(f"{api}/patroni", client), args.timeout)
    if verdict != "bootstrap":
        pending.unlink(missing_ok=True)
        say("this node did not bootstrap the cluster: nothing to run" if verdict else
            f"no verdict after {args.timeout:.0f} s: not running the scripts")
        return 0 if verdict else 1
    running = pending.with_name(RUNNING_MARKER)
    running.touch()
    pending.unlink(missing_ok=True)
    try:
        if members > 1:
            say(f"this node bootstrapped the cluster: waiting for the {members - 1} replicas to stream first")
            if not wait_settled(api_fetcher(f"{api}/cluster", client), members, SETTLE_TIMEOUT):
                say(f"the replicas are not all streaming after {SETTLE_TIMEOUT:.0f} s: running the scripts anyway")
        return run_all(target, Path(args.dir), dbname)
    except OSError as exc:
        say(f"failed: {exc}")
        return 1
    finally:
        running.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=os.environ.get("APPLIANCE_CONFIG"))
    parser.add_argument("--dir", default=INITDB_DIR)
    parser.add_argument("--pending", help="the marker the entrypoint left (the supervised one-shot run)")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--wait-finished", action="store_true",
                        help="only wait until this node's scripts are neither pending nor running")
    args = parser.parse_args(argv)
    if args.wait_finished:
        if wait_finished(_run_dir_of(args.config), args.timeout):
            return 0
        say(f"still pending or running after {args.timeout:.0f} s")
        return 1
    if not args.pending:
        parser.error("--pending is required unless --wait-finished")
    return run_once(args)


if __name__ == "__main__":
    sys.exit(main())
