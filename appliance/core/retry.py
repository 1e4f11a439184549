"""Exponential back-off between failed jobs, pure: 1 s, 2 s, 4 s ... up to 30 s."""

from __future__ import annotations

from appliance.core.state import Retry

BASE = 1.0
CAP = 30.0
FORGET_AFTER = 600.0  # a failure this old no longer counts


def after_failure(previous: Retry | None, job: str, now: float) -> Retry:
    """The back-off after one more failure of ``job`` (counted across job kinds: a failed start
    followed by a failed rewind is still a node that cannot get PostgreSQL running)."""
    failures = 1
    if previous is not None and now - previous.until < FORGET_AFTER:
        failures = previous.failures + 1
    return Retry(job=job, failures=failures, until=now + min(CAP, BASE * 2 ** (failures - 1)))


def active(retry: Retry | None, now: float) -> bool:
    return retry is not None and now < retry.until
