"""One container with no peers is a one-node cluster; no password on an empty volume stops it."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.e2e.conftest import record
from tests.e2e.dockerenv import run, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture
def container(image: str) -> Iterator[str]:
    name = f"pgae2e-single-{uuid.uuid4().hex[:8]}"
    yield name
    run(["docker", "rm", "-f", "-v", name], check=False)


def test_missing_password_stops_the_container_with_a_clear_message(image: str) -> None:
    result = run(["docker", "run", "--rm", image], timeout=120, check=False)
    assert result.returncode == 1
    assert "Database is uninitialized and superuser password is not specified" in result.stderr


def test_a_bad_parameter_stops_the_container_naming_its_variable(image: str) -> None:
    """It used to start, and Docker called it healthy, while PostgreSQL refused to start forever."""
    result = run(["docker", "run", "--rm", "-e", "POSTGRES_PASSWORD=x",
                  "-e", "APPLIANCE_POSTGRESQL__PARAMETERS__WORK_MEM=banana", image], timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert "postgresql.parameters.work_mem (env APPLIANCE_POSTGRESQL__PARAMETERS__WORK_MEM)" in result.stderr
    assert 'invalid value for parameter "work_mem"' in result.stderr


def test_docker_run_without_peers_is_a_one_node_cluster(image: str, container: str) -> None:
    # --user 999:999 (the postgres user): the entrypoint then has nothing to fix and nothing to drop.
    start = time.monotonic()
    run(["docker", "run", "-d", "--name", container, "--hostname", "solo", "--user", "999:999",
         "-e", "POSTGRES_PASSWORD=solo-pw", "-e", "POSTGRES_DB=solo", image])

    def healthy() -> bool:
        state = run(["docker", "inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", container]).stdout.split()
        assert state[0] == "running", run(["docker", "logs", "--tail", "40", container], check=False).stderr
        return state[1] == "healthy"

    wait_for("the single container to be healthy", healthy, 180, 1.0)
    record("single_container_run_to_healthy_seconds", round(time.monotonic() - start, 1))
    ip = run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container]).stdout
    # With no CA given, the lone node made its own: clients verify the node against it, by address.
    ca = Path(tempfile.mkdtemp(dir="/var/tmp")) / "ca.crt"
    ca.write_text(run(["docker", "exec", container, "cat", "/run/pgappliance/tls/ca.crt"]).stdout)
    for port in (5432, 5000):
        def primary(port: int = port) -> bool:
            try:
                with psycopg.connect(host=ip.strip(), port=port, user="postgres", password="solo-pw", dbname="solo",
                                     connect_timeout=3, sslmode="verify-full", sslrootcert=str(ca)) as conn:
                    return conn.execute("SELECT NOT pg_is_in_recovery()").fetchone() == (True,)
            except psycopg.OperationalError:
                return False

        wait_for(f"the primary through port {port}", primary, 60)
