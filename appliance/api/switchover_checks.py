"""Switchover/failover checks (Patroni's order and wording) and the wait for the outcome.

Beyond Patroni: a 412 lists every candidate with the reason it was rejected.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from appliance.config.schema import DynamicConfig
from appliance.core.candidates import candidate_problem
from appliance.core.flags import synchronous_mode
from appliance.core.model import ClusterView, Member, PgState
from appliance.core.tags import Tags
from appliance.core.wal import wal_lag
from appliance.dcs.base import DCSError

Probe = Callable[[Member], dict[str, Any]]
DEFAULT_MAX_LAG = DynamicConfig.model_fields["maximum_lag_on_failover"].default
DEFAULT_LOOP_WAIT = DynamicConfig.model_fields["loop_wait"].default
POLL_INTERVAL = 0.25


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: HTTP status, Patroni's message, and (412) each candidate's reason."""

    status: int
    message: str
    candidates: dict[str, str] = field(default_factory=dict)
    detail: str | None = None

    def body(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"message": self.message, "candidates": dict(self.candidates)}
        if self.detail:
            doc["detail"] = self.detail
        return doc


def parse_schedule(value: str, action: str, now: datetime) -> tuple[str | None, Refusal | None]:
    """An ISO-8601 timestamp with a timezone in the future → its isoformat, else Patroni's refusal."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None, Refusal(422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, "
                                  "e.g. ISO 8601")
    if when.tzinfo is None:
        return None, Refusal(400, f"Timezone information is mandatory for the scheduled {action}")
    if when < now:
        return None, Refusal(422, f"Cannot schedule {action} in the past")
    return when.isoformat(), None


def human_bytes(n: int) -> str:
    """1048576 → "1 MB", 5347737 → "5.1 MB", 900 → "900 bytes" (binary units, Patroni's spelling)."""
    value = float(n)
    for unit in ("bytes", "kB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            if unit == "bytes":
                return f"{n} bytes"
            return f"{value:.1f}".rstrip("0").rstrip(".") + f" {unit}"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _leader_lsn(view: ClusterView) -> int | None:
    leader = view.member(view.leader_name)
    if leader is not None and isinstance(leader.xlog_location, int):
        return max(leader.xlog_location, view.status.optime or 0)
    return view.status.optime


class CandidateCheck:
    """Judge candidates from the DCS view, then (optionally) from each one's own /patroni answer."""

    def __init__(self, view: ClusterView, probe: Probe | None) -> None:
        config = view.config or {}
        self.view = view
        self.probe = probe
        self.max_lag = _int(config.get("maximum_lag_on_failover"), DEFAULT_MAX_LAG)
        self.sync_mode, self.quorum = synchronous_mode(config.get("synchronous_mode"))
        self.leader_lsn = _leader_lsn(view)

    def _lag_problem(self, position: Any) -> str | None:
        if not isinstance(position, int) or self.leader_lsn is None:
            return None
        # After a segment switch the rest of the leader's segment is padding no replica receives, so an
        # idle cluster would look up to 16 MB behind (spilo#1152): wal_lag counts that as 0.
        lag = wal_lag(self.leader_lsn, position)
        if lag > self.max_lag:
            return f"lag {human_bytes(lag)} exceeds maximum_lag_on_failover ({human_bytes(self.max_lag)})"
        return None

    def from_dcs(self, m: Member) -> str | None:
        problem = candidate_problem(self.view, m, sync_only=self.sync_mode and not self.quorum)
        if problem:
            return problem
        # With a probe, lag is judged from the candidate's live answer: a members/<name> key may be a
        # loop older than the leader's (a WAL segment switch alone moves the leader's LSN by up to 16 MB).
        return self._lag_problem(m.xlog_location) if self.probe is None else None

    def from_probe(self, m: Member) -> str | None:
        if self.probe is None:
            return None
        if not m.api_url:
            return "publishes no api_url: cannot check it"
        try:
            doc = self.probe(m)
        except Exception as exc:  # any transport error means the same: we could not ask it
            return f"not reachable: {exc}"
        if doc.get("state") != PgState.RUNNING:
            return f"its /patroni says state {doc.get('state')!r}, not running"
        if doc.get("watchdog_failed"):
            return "not watchdog capable"
        if Tags.from_json(doc.get("tags")).nofailover:
            return "tagged nofailover"
        xlog = doc.get("xlog") or {}
        positions = [v for v in (xlog.get("received_location"), xlog.get("replayed_location"), xlog.get("location"),
                                 m.xlog_location) if isinstance(v, int)]
        return self._lag_problem(max(positions)) if positions else None

    def judge(self, members: list[Member]) -> dict[str, str | None]:
        """Each member's rejection reason (None: a good candidate); probes run in parallel."""
        verdict: dict[str, str | None] = {m.name: self.from_dcs(m) for m in members}
        to_probe = [m for m in members if verdict[m.name] is None]
        if self.probe is not None and to_probe:
            with ThreadPoolExecutor(max_workers=min(8, len(to_probe))) as pool:
                for m, why in zip(to_probe, pool.map(self.from_probe, to_probe), strict=True):
                    verdict[m.name] = why
        return verdict


def feasibility(view: ClusterView, leader: str | None, candidate: str | None, action: str,
                probe: Probe | None) -> Refusal | None:
    """Patroni's is_failover_possible, answering 412 with every candidate's reason."""
    if leader and view.leader_name != leader:
        current = view.leader_name or "nobody"
        return Refusal(412, "leader name does not match", detail=f"{leader} is not the leader; the leader is {current}")
    check = CandidateCheck(view, probe)
    sync_only = check.sync_mode and not check.quorum
    if candidate:
        # A switchover candidate must be in the sync key also in quorum mode (the leader cancels one
        # that is not, core/failover_key.py): Patroni accepts it and lets the leader cancel it.
        quorum_key = check.quorum and view.sync is not None and bool(view.sync.leader)
        in_sync = view.sync is not None and view.sync.matches(candidate)
        if action == "switchover" and (sync_only or quorum_key) and not in_sync:
            listed = ",".join(view.sync.sync_standby) if view.sync else "none"
            return Refusal(412, "candidate name does not match with sync_standby",
                           {candidate: f"not a synchronous standby (sync key: {listed or 'none'})"})
        member = view.member(candidate)
        if member is None:
            return Refusal(412, "candidate does not exists", {candidate: "no members/<name> key in the DCS"})
        members = [member]
    elif sync_only:
        members = [m for m in view.members if view.sync is not None and view.sync.matches(m.name)
                   and m.name != view.leader_name]
        if not members:
            return Refusal(412, f"{action} is not possible: can not find sync_standby")
    else:
        members = [m for m in view.members if m.name != view.leader_name and m.api_url]
        if not members:
            return Refusal(412, f"{action} is not possible: cluster does not have members except leader")
    verdict = check.judge(members)
    if any(why is None for why in verdict.values()):
        return None
    rejected = {name: why for name, why in verdict.items() if why is not None}
    return Refusal(412, f"{action} is not possible: no good candidates have been found", rejected)


def past_tense(action: str) -> tuple[str, str]:
    """("switched", "Switched") / ("failed", "Failed"): Patroni's action[:-4] + "ed"."""
    stem = action[:-4] + "ed"
    return stem, stem.title()


def poll_result(read: Callable[[], ClusterView], old_leader: str | None, candidate: str | None, action: str,
                timeout: float, clock: Callable[[], float], sleep: Callable[[float], None]) -> tuple[int, str]:
    """Wait for the new leader: 200 when it changed, 503 when the key was cleared first or on timeout."""
    lower, title = past_tense(action)
    deadline = clock() + timeout
    while clock() < deadline:
        sleep(POLL_INTERVAL)
        try:
            view = read()
        except DCSError:
            continue
        new = view.leader_name
        if new is not None and new != old_leader:
            if not candidate or candidate == new:
                return 200, f'Successfully {lower} over to "{new}"'
            return 200, f'{title} over to "{new}" instead of "{candidate}"'
        if view.failover is None or view.failover.empty:
            return 503, f"{action.title()} failed"
    return 503, f"{action.title()} status unknown"


def poll_timeout(view: ClusterView) -> float:
    loop_wait = _int((view.config or {}).get("loop_wait"), DEFAULT_LOOP_WAIT)
    return 2.0 * max(10, loop_wait)
