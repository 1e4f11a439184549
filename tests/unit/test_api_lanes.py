"""Which thread pool serves a request: waiting control requests have their own bounded pool, so they can
never starve the health checks (tests/integration/test_httpd.py shows it under load)."""

from __future__ import annotations

import pytest

from appliance.api.httpd import DEFAULT_LIMITS
from appliance.api.server import api_lane


@pytest.mark.parametrize(("method", "path", "lane"), [
    ("POST", "/switchover", "control"), ("POST", "/failover", "control"), ("POST", "/restart", "control"),
    ("DELETE", "/restart", "control"), ("POST", "/reinitialize", "control"), ("PATCH", "/config", "control"),
    ("PUT", "/config", "control"), ("POST", "/reload", "control"),
    ("GET", "/primary", "health"), ("HEAD", "/replica", "health"), ("OPTIONS", "/read-only", "health"),
    ("GET", "/liveness", "health"), ("GET", "/patroni", "health"), ("GET", "/metrics", "health"),
    ("GET", "/config", "read"), ("GET", "/switchover", "read"),
])
def test_each_request_goes_to_its_lane(method: str, path: str, lane: str) -> None:
    assert api_lane(method, path) == lane


def test_the_lanes_are_separate_and_bounded() -> None:
    assert set(DEFAULT_LIMITS.pools) == {"health", "read", "control"}
    assert all(threads >= 1 for threads in DEFAULT_LIMITS.pools.values())
    assert DEFAULT_LIMITS.queue_bound >= 0
