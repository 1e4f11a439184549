"""e2e fixtures: build the image once, run one compose project per session, always clean it up.

Skipped only where no Docker engine answers. The measured figures (image size, time to healthy,
write unavailability per fault) are printed at the end of the run and written to
/var/tmp/pgappliance-e2e-results.json.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.tls import identity
from tests.e2e.dockerenv import NODES, REPO, Project, docker_available, run, wait_for

IMAGE = os.environ.get("PGAPPLIANCE_E2E_IMAGE", "pgappliance:e2e")
RESULTS_FILE = Path("/var/tmp/pgappliance-e2e-results.json")
RESULTS: dict[str, Any] = {}
DBNAME = "appdb"

INIT_SQL = """\
CREATE TABLE ledger (id bigint PRIMARY KEY, note text, at timestamptz DEFAULT now());
CREATE TABLE init_runs (what text, host text, at timestamptz DEFAULT now());
"""
INIT_SH = """\
#!/bin/sh
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \\
    -c "INSERT INTO init_runs (what, host) VALUES ('sh', '$(hostname)')"
"""
INIT_GZ = "INSERT INTO init_runs (what, host) VALUES ('sql.gz', inet_server_addr()::text);\n"

OVERRIDE = """\
# e2e: strict synchronous replication, init scripts, a database of our own.
x-e2e: &e2e
  environment:
    POSTGRES_DB: {db}
    APPLIANCE_BOOTSTRAP__DCS__SYNCHRONOUS_MODE: "true"
    APPLIANCE_BOOTSTRAP__DCS__SYNCHRONOUS_MODE_STRICT: "true"
  volumes:
    - {initdb}:/docker-entrypoint-initdb.d:ro
services:
  node1: *e2e
  node2: *e2e
  node3: *e2e
"""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RESULTS:
        terminalreporter.section("pgappliance e2e figures")
        for key, value in RESULTS.items():
            terminalreporter.write_line(f"{key}: {value}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    # Lets a fixture see whether its test failed (to dump the containers' logs).
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


def record(key: str, value: Any) -> None:
    RESULTS[key] = value
    RESULTS_FILE.write_text(json.dumps(RESULTS, indent=2) + "\n")


@pytest.fixture(scope="session")
def image() -> str:
    if not docker_available():
        pytest.skip("no Docker engine answers `docker info`: the e2e tests need one (they build and run the image)")
    start = time.monotonic()
    log = Path(tempfile.mkstemp(prefix="pgappliance-e2e-build-", suffix=".log", dir="/var/tmp")[1])
    with log.open("w") as out:
        result = subprocess.run([str(REPO / "image" / "build.sh")], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PGAPPLIANCE_IMAGE": IMAGE}, timeout=1500, cwd=str(REPO))
    if result.returncode != 0:
        pytest.fail(f"image build failed (log {log}):\n" + log.read_text()[-4000:])
    log.unlink()
    size = int(run(["docker", "image", "inspect", "-f", "{{.Size}}", IMAGE]).stdout.strip())
    record("image_build_seconds", round(time.monotonic() - start, 1))
    record("image_size_mb", round(size / 1e6, 1))
    return IMAGE


def _workdir(password: str) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="pgappliance-e2e-", dir="/var/tmp"))
    os.chmod(workdir, 0o755)
    # What scripts/up generates: the CA and every password, readable by root only (the entrypoint reads
    # them before it drops privileges); the superuser password is the test's own.
    identity.init_secrets(workdir / "secrets", scope="e2e")
    (workdir / "secrets" / "postgres_password").write_text(password + "\n")
    initdb = workdir / "initdb.d"
    initdb.mkdir()
    (initdb / "10-schema.sql").write_text(INIT_SQL)
    (initdb / "20-mark.sh").write_text(INIT_SH)
    (initdb / "30-data.sql.gz").write_bytes(gzip.compress(INIT_GZ.encode()))
    for path in initdb.iterdir():
        path.chmod(0o644)
    (workdir / "override.yaml").write_text(OVERRIDE.format(db=DBNAME, initdb=initdb))
    return workdir


@pytest.fixture(scope="session")
def project(image: str) -> Iterator[Project]:
    password = secrets.token_urlsafe(16)
    workdir = _workdir(password)
    proj = Project(f"pgae2e{uuid.uuid4().hex[:8]}", workdir, image, password, DBNAME)
    try:
        start = time.monotonic()
        proj.run_compose("up", "-d", "--no-build")
        proj.wait_healthy(timeout=300)
        record("compose_up_to_healthy_seconds", round(time.monotonic() - start, 1))
        for node in NODES:  # what scripts/up waits for too
            run(["docker", "exec", proj.cid(node), "/opt/pgappliance/venv/bin/python", "-m",
                 "appliance.runtime.initdb_scripts", "--wait-finished", "--timeout", "300"], timeout=330)
        record("compose_up_to_init_scripts_done_seconds", round(time.monotonic() - start, 1))
        wait_for("docker to report every container healthy (HEALTHCHECK /liveness)",
                 lambda: all(proj.inspect(n)["State"]["Health"]["Status"] == "healthy" for n in NODES), 120)
        record("compose_up_to_docker_healthy_seconds", round(time.monotonic() - start, 1))
        yield proj
    finally:
        for node in NODES:
            try:
                print(f"--- {node} (last lines)\n{proj.logs(node, 40)}")
            except Exception as exc:  # teardown must go on
                print(f"--- {node}: {exc}")
        subprocess.run([*proj.compose, "-p", proj.name, "-f", str(REPO / "compose.yaml"), "-f",
                        str(workdir / "override.yaml"), "down", "-v", "--remove-orphans", "-t", "20"],
                       env=proj.env, cwd=str(REPO), capture_output=True, timeout=300)
        shutil.rmtree(workdir, ignore_errors=True)
