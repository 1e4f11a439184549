"""What the control endpoints share: the state reader, the DCS (reads and a few writes), clocks, intents."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from appliance.channel import intents
from appliance.channel.state import StateDoc, staleness
from appliance.config.errors import Problem
from appliance.core.model import ClusterView, Failover, Member
from appliance.dcs.base import DCSError

StateReader = Callable[[], StateDoc | None]
# Checks a dynamic config document against this node's PostgreSQL: (document, source) -> problems.
ConfigCheck = Callable[[dict[str, Any], str], list[Problem]]
# GET <member api_url> with a short timeout: the /patroni document, or an exception.
Probe = Callable[[Member], dict[str, Any]]


class ApiDCS(Protocol):
    """The part of the DCS the API uses: it never holds a lease nor writes a member or leader key."""

    def read(self) -> ClusterView: ...

    def write_failover(self, failover: Failover, expected_revision: int | None) -> bool: ...

    def clear_failover(self, expected_revision: int | None) -> bool: ...

    def write_config(self, config: dict[str, Any], expected_revision: int | None) -> bool: ...


class Unavailable(Exception):
    """A dependency (DCS, manager) cannot serve the request: answered 503 with this message."""


@dataclass
class ApiContext:
    reader: StateReader
    clock: Callable[[], float] = time.monotonic
    run_dir: str | None = None
    dcs: ApiDCS | None = None
    sleep: Callable[[float], None] = time.sleep
    wall: Callable[[], float] = time.time
    probe: Probe | None = None
    # How long a restart may take before the API answers "still starting".
    restart_wait: float = 120.0
    # How long the manager may take to pick up an intent (it reads them at the start of each tick).
    pickup_wait: float = 15.0
    check_config: ConfigCheck | None = None
    _dcs_lock: threading.Lock = field(default_factory=threading.Lock)

    # --- DCS -------------------------------------------------------------------------------------
    def _need_dcs(self) -> ApiDCS:
        if self.dcs is None:
            raise Unavailable("this API has no DCS connection (etcd3.hosts); cannot change cluster state")
        return self.dcs

    def view(self) -> ClusterView:
        dcs = self._need_dcs()
        try:
            with self._dcs_lock:
                return dcs.read()
        except DCSError as exc:
            raise Unavailable(f"DCS unreachable: {exc}") from None

    def read_raw(self) -> ClusterView:
        """A DCS read that raises DCSError (for loops that tolerate a failed read)."""
        dcs = self._need_dcs()
        with self._dcs_lock:
            return dcs.read()

    def dcs_call(self, fn: Callable[[ApiDCS], bool]) -> bool:
        dcs = self._need_dcs()
        try:
            with self._dcs_lock:
                return fn(dcs)
        except DCSError as exc:
            raise Unavailable(f"DCS unreachable: {exc}") from None

    # --- the manager -----------------------------------------------------------------------------
    def fresh_state(self) -> StateDoc:
        """The manager's state, or Unavailable when the manager is not there to act on an intent."""
        doc = self.reader()
        if doc is None:
            raise Unavailable("no state from the manager yet: is the manager running?")
        why = staleness(doc, self.clock())
        if why:
            raise Unavailable(why)
        return doc

    def submit(self, kind: str, params: dict[str, Any] | None = None) -> intents.Intent:
        if self.run_dir is None:
            raise Unavailable("this API has no run_dir: cannot pass requests to the manager")
        return intents.submit(self.run_dir, kind, params)

    def wait(self, intent: intents.Intent, timeout: float, final: tuple[str, ...]) -> dict[str, Any] | None:
        """The intent's outcome once it reaches ``final``; None on timeout (the intent is withdrawn
        first when the manager has not taken it yet, so that a late pickup cannot surprise anyone)."""
        outcome = intents.wait_outcome(self.reader, intent.id, timeout, final=final, interval=0.1)
        if outcome is None and self.withdraw(intent):
            return {"status": "withdrawn", "reason": f"the manager did not pick the request up within {timeout:.0f}s"}
        return outcome

    def withdraw(self, intent: intents.Intent) -> bool:
        """Remove a queued intent the manager has not taken; True if it was still queued."""
        if self.run_dir is None:
            return False
        for path in (Path(self.run_dir) / intents.INTENT_DIR).glob(f"*-{intent.id}.json"):
            try:
                path.unlink()
                return True
            except FileNotFoundError:
                return False
        return False
