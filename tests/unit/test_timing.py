"""The loop's sleep is bounded by the lease in effect (a ttl/loop_wait change never loses the lease)."""

from __future__ import annotations

import pytest

from appliance.core.timing import safe_loop_wait
from appliance.dcs.fake import FakeDCS, FakeStore


@pytest.mark.parametrize(("loop_wait", "lease_ttl", "retry", "expected"), [
    (1, 5, 2, 1),      # the shipped defaults
    (10, 30, 10, 10),  # Patroni's defaults
    (10, 5, 10, 1),    # PATCH ttl 30 / loop_wait 10 / retry 10 while the lease still has ttl 5
    (10, 5, 2, 1),     # PATCH ttl 30 / loop_wait 10: the old lease tolerates 1 s
    (1, 30, 2, 1),     # ttl lowered: the new loop_wait is the shorter one anyway
    (5, 30, 2, 5),
])
def test_the_sleep_never_outlasts_the_lease(loop_wait: float, lease_ttl: float, retry: float,
                                            expected: float) -> None:
    assert safe_loop_wait(loop_wait, lease_ttl, retry) == expected
    assert expected + 2 * retry <= lease_ttl or expected == 1


def test_the_lease_in_effect_changes_only_at_the_next_grant() -> None:
    dcs = FakeDCS(FakeStore(), "n1", ttl=5)
    dcs.keepalive()
    dcs.set_ttl(30)
    assert dcs.lease_ttl == 5  # still the old lease: the loop must keep to 5 s
    dcs.keepalive()
    assert dcs.lease_ttl == 30


def test_published_state_goes_stale_on_the_loop_not_on_the_ttl() -> None:
    """A huge ttl made a node answer /primary 200 from a 50-s-old state: the deadline ignores ttl."""
    from appliance.channel.state import staleness
    from appliance.core.state import HaSettings
    from appliance.manager.publish import state_max_age

    short, huge = HaSettings(ttl=5, loop_wait=1, retry_timeout=2), HaSettings(ttl=3600, loop_wait=1, retry_timeout=2)
    assert state_max_age(short) == state_max_age(huge) == 7.0
    doc = {"updated_mono": 100.0, "max_age": state_max_age(huge)}
    assert staleness(doc, 106.0) is None
    reason = staleness(doc, 150.0)
    assert reason is not None and "50.0s old" in reason


def test_a_new_retry_timeout_reaches_the_etcd_client() -> None:
    from appliance.dcs.etcd_transport import EtcdTransport

    transport = EtcdTransport(["127.0.0.1:1", "127.0.0.1:2"], 2.0)
    assert (transport.retry_timeout, transport.request_timeout) == (2.0, 1.0)
    transport.set_retry_timeout(10)
    assert (transport.retry_timeout, transport.request_timeout) == (10.0, 5.0)
    transport.close()
