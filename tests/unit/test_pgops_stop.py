"""primary_stop_timeout: a stop that runs longer is cut short (immediate, then SIGKILL), as in Patroni."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from typing import Any

from appliance.manager.pgops import PgOps
from appliance.postgres.config import PgConfig


@dataclass
class StuckControl:
    """A PostgreSQL that ignores fast and immediate shutdowns; its "postmaster" is a real process."""

    proc: subprocess.Popen[bytes]
    cfg: PgConfig = field(default_factory=lambda: PgConfig(name="n1", data_dir="/nonexistent", run_as=None))
    calls: list[tuple[str, float]] = field(default_factory=list)

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> bool:
        self.calls.append((mode, timeout))
        return False

    def postmaster_pid(self) -> int | None:
        return self.proc.pid if self.proc.poll() is None else None

    def is_running(self) -> bool:
        self.proc.poll()
        return self.proc.returncode is None


def test_a_stop_beyond_primary_stop_timeout_kills_the_postmaster() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    control = StuckControl(proc)
    ops = PgOps(control, {})  # type: ignore[arg-type]
    assert ops.stop("fast", kill_after=3.0)
    assert control.calls == [("fast", 3.0), ("immediate", 5)]
    assert proc.wait(5) == -signal.SIGKILL


def test_without_the_timeout_a_stop_is_left_to_its_own_deadline() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    control: Any = StuckControl(proc)
    try:
        assert not PgOps(control, {}).stop("fast")
        assert control.calls == [("fast", 60.0)] and proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
