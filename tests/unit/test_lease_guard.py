"""The lease guard fences a primary whose lease is about to expire, once, and only while leading."""

from __future__ import annotations

from appliance.manager.guard import LeaseGuard


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(leading: bool = True, ok_at: float | None = 100.0) -> tuple[LeaseGuard, Clock, list[float]]:
    clock = Clock()
    fenced: list[float] = []
    state = {"ok_at": ok_at, "leading": leading}
    guard = LeaseGuard(lambda: state["ok_at"], lambda: bool(state["leading"]), lambda: 5.0,
                       lambda: fenced.append(clock()), margin=1.5, clock=clock)
    return guard, clock, fenced


def test_no_fence_while_the_lease_is_fresh() -> None:
    guard, clock, fenced = make()
    clock.t = 103.4
    assert not guard.check() and fenced == []


def test_fences_before_the_lease_expires() -> None:
    guard, clock, fenced = make()
    clock.t = 103.5  # ok_at + ttl - margin
    assert guard.check()
    assert fenced == [103.5] and fenced[0] < 100.0 + 5.0


def test_fences_once() -> None:
    guard, clock, fenced = make()
    clock.t = 104.0
    guard.check()
    clock.t = 104.2
    assert not guard.check() and len(fenced) == 1


def test_never_fences_a_node_that_does_not_lead() -> None:
    guard, clock, fenced = make(leading=False)
    clock.t = 200.0
    assert not guard.check() and fenced == []


def test_unknown_lease_renewal_fences_a_leader() -> None:
    guard, _clock, fenced = make(ok_at=None)
    assert guard.check() and fenced
