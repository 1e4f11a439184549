"""Serve a tick's operator requests as core.intents decided them, and keep their outcomes for the API."""

from __future__ import annotations

from collections.abc import Callable

from appliance.channel.state import IntentOutcome
from appliance.core import actions as a
from appliance.core.intents import IntentRound
from appliance.core.state import JobResult
from appliance.manager.events import EventLog
from appliance.manager.executor import Executor
from appliance.manager.jobs import JobRunner

KEPT = 50  # outcomes the API can still report (the oldest go first)


class RequestDesk:
    """The outcome of every request (refused, scheduled, running, done, failed), by intent id; a
    request that started a long job gets its final outcome when that job's result comes in."""

    def __init__(self, executor: Executor, jobs: JobRunner, events: EventLog, wall: Callable[[], float]) -> None:
        self.executor = executor
        self.jobs = jobs
        self.events = events
        self.wall = wall
        self.outcomes: dict[str, IntentOutcome] = {}
        self._by_job: dict[str, str] = {}  # a running job's name -> the intent that started it

    def record(self, intent_id: str, kind: str, status: str, reason: str = "") -> None:
        self.outcomes[intent_id] = {"kind": kind, "status": status, "reason": reason, "at": self.wall()}
        while len(self.outcomes) > KEPT:
            self.outcomes.pop(next(iter(self.outcomes)))
        self.events.emit("intent", f"{kind}: {status}{': ' + reason if reason else ''}", intent=intent_id)

    def job_finished(self, result: JobResult | None) -> None:
        if result is not None and result.job in self._by_job:
            self.record(self._by_job.pop(result.job), result.job, "done" if result.ok else "failed", result.detail)

    def serve(self, plan: IntentRound) -> list[tuple[a.Action, bool]]:
        """Run ``plan.first``, then each request that is to run; record every outcome."""
        results = self.executor.run(list(plan.first)) if plan.first else []
        for decision in plan.decisions:
            if decision.status != "run":
                self.record(decision.id, decision.kind, decision.status, decision.reason)
                continue
            ran = self.executor.run(list(decision.actions))
            results += ran
            ok = all(done for _, done in ran)
            job = self.jobs.running
            if ok and job is not None:
                self._by_job[job] = decision.id
                self.record(decision.id, decision.kind, "running")
            else:
                self.record(decision.id, decision.kind, "done" if ok else "failed")
        return results
