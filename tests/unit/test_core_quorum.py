"""The quorum-commit resolver (core/quorum.py): ssn parsing, the two safety rules as tables, the
steps it takes, and a model of real commits: under random standby churn, replication and
synchronous_node_count changes, no acknowledged commit can be missed by any quorum+1 of the voting
set, and the resolver always reaches the steady state once the standbys catch up."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from appliance.core.quorum import (
    EMPTY,
    NO_VOTERS,
    STRICT_PLACEHOLDER,
    KeyState,
    Ssn,
    commits_covered,
    format_any,
    history_covered,
    key_change_safe,
    next_step,
    parse_ssn,
    target,
)

F = frozenset


def key(q: int, *voters: str) -> KeyState:
    return KeyState(q, F(voters))


def any_(n: int, *names: str) -> Ssn:
    return Ssn("ANY", n, F(names))


@pytest.mark.parametrize(("value", "expected"), [
    ("", EMPTY),
    ('ANY 1 ("a","b")', any_(1, "a", "b")),
    ("any 2 (a, b, c)", any_(2, "a", "b", "c")),
    ('FIRST 1 ("a")', Ssn("FIRST", 1, F({"a"}))),
    ('2 ("a","b")', Ssn("FIRST", 2, F({"a", "b"}))),
    ("a", Ssn("FIRST", 1, F({"a"}))),
    ('ANY 3 ("a","b")', any_(2, "a", "b")),  # PostgreSQL waits for at most all of them
    (STRICT_PLACEHOLDER, Ssn("FIRST", 0, F(), blocking=True)),
    (f'ANY 1 ("{STRICT_PLACEHOLDER}")', Ssn("ANY", 0, F(), blocking=True)),
    ('ANY 1 ("we""ird")', any_(1, 'we"ird')),
])
def test_parse_ssn(value: str, expected: Ssn) -> None:
    got = parse_ssn(value)
    assert (got.kind or "", got.names, got.blocking) == (expected.kind, expected.names, expected.blocking)
    if not got.blocking:
        assert got.num == expected.num


def test_format_any_round_trips() -> None:
    value = format_any(2, {"node3", "node1", 'o"dd'})
    assert value == 'ANY 2 ("node1","node3","o""dd")'
    assert parse_ssn(value) == any_(2, "node1", "node3", 'o"dd')
    assert format_any(1, set()) == ""


@pytest.mark.parametrize(("k", "ssn", "covered"), [
    (key(1, "a", "b"), any_(1, "a", "b"), True),  # Patroni's steady state, k=1
    (key(0, "a", "b"), any_(1, "a", "b"), False),  # one confirmation, yet a alone could promote
    (key(0, "a", "b"), any_(2, "a", "b"), True),
    (key(1, "a", "b", "c"), any_(2, "a", "b", "c"), True),  # docs/replication_modes.rst's example
    (key(1, "a", "b", "c"), any_(1, "a", "b", "c"), False),
    (key(1, "a", "b"), any_(1, "a", "b", "c"), False),  # c alone may acknowledge, and is no voter
    (key(2, "a", "b", "c"), any_(1, "a", "b"), True),  # a voter not yet synchronous: quorum covers it
    (key(0, "a"), EMPTY, False),  # asynchronous commits: only the primary holds them
    (NO_VOTERS, EMPTY, True),
    (key(1, "a", "b"), Ssn(num=1, blocking=True), True),  # nothing is acknowledged
])
def test_rule_i_commits_under_the_ssn(k: KeyState, ssn: Ssn, covered: bool) -> None:
    assert commits_covered(k, ssn) is covered


@pytest.mark.parametrize(("k", "confirmed", "covered"), [
    (key(1, "a", "b"), F(), False),  # a commit before the ssn took effect may be on the primary only
    (key(1, "a", "b"), F({"a"}), True),
    (key(0, "a", "b"), F({"a"}), False),
    (key(0, "a", "b"), F({"a", "b"}), True),
    (NO_VOTERS, F(), True),
])
def test_rule_ii_commits_before_the_ssn(k: KeyState, confirmed: frozenset[str], covered: bool) -> None:
    assert history_covered(k, confirmed) is covered


def test_a_key_without_voters_is_always_safe_and_a_full_quorum_never_valid() -> None:
    for ssn in (EMPTY, any_(1, "a"), any_(2, "a", "b"), Ssn(num=1, blocking=True)):
        assert key_change_safe(NO_VOTERS, ssn, F())
    assert not key_change_safe(key(2, "a", "b"), any_(1, "a", "b"), F({"a", "b"}))


@pytest.mark.parametrize(("active", "k", "strict", "ssn", "voters", "quorum"), [
    ({"a", "b"}, 1, False, any_(1, "a", "b"), {"a", "b"}, 1),
    ({"a", "b"}, 2, False, any_(2, "a", "b"), {"a", "b"}, 0),
    ({"a", "b", "c"}, 2, False, any_(2, "a", "b", "c"), {"a", "b", "c"}, 1),
    ({"a"}, 2, False, any_(1, "a"), {"a"}, 0),
    (set(), 1, False, EMPTY, set(), 0),
    (set(), 1, True, Ssn(num=1, blocking=True), set(), 0),
])
def test_target(active: set[str], k: int, strict: bool, ssn: Ssn, voters: set[str], quorum: int) -> None:
    goal = target(F(active), k, strict)
    assert goal.ssn == ssn
    assert goal.key == KeyState(quorum, F(voters))


def _walk(k0: KeyState, ssn0: Ssn, active: set[str], wanted: int, strict: bool = False,
          confirm: bool = True) -> list[tuple[str, object]]:
    """The steps from a state, every active standby confirming each new ssn at once (or never)."""
    k, ssn, confirmed = k0, ssn0, F(active) if confirm else F()
    out: list[tuple[str, object]] = []
    for _ in range(10):
        step = next_step(k, ssn, confirmed, F(active), wanted, strict)
        if step is None:
            return out
        if step.key is not None:
            k = step.key
            out.append(("key", (k.quorum, "".join(sorted(k.voters)))))
        else:
            assert step.ssn is not None
            ssn = step.ssn
            confirmed = F(active) if confirm else F()
            out.append(("ssn", "blocking" if ssn.blocking else (ssn.num, "".join(sorted(ssn.names)))))
    raise AssertionError(f"no steady state after 10 steps: {out}")


@pytest.mark.parametrize(("start_key", "start_ssn", "active", "wanted", "steps"), [
    # A new leader: the ssn first (nothing confirmed it yet), then the voters.
    (NO_VOTERS, EMPTY, {"a", "b"}, 1, [("ssn", (1, "ab")), ("key", (1, "ab"))]),
    # A standby joins: the voters first (the quorum covers it), then the ssn.
    (key(1, "a", "b"), any_(1, "a", "b"), {"a", "b", "c"}, 1, [("key", (2, "abc")), ("ssn", (1, "abc"))]),
    # A standby leaves: the ssn first, then the voters.
    (key(2, "a", "b", "c"), any_(1, "a", "b", "c"), {"a", "b"}, 1, [("ssn", (1, "ab")), ("key", (1, "ab"))]),
    # The last standby leaves (not strict): the key first, then the ssn.
    (key(0, "a"), any_(1, "a"), set(), 1, [("key", (0, "")), ("ssn", (0, ""))]),
    # synchronous_node_count 1 -> 2: the ssn first; 2 -> 1: the key first.
    (key(2, "a", "b", "c"), any_(1, "a", "b", "c"), {"a", "b", "c"}, 2, [("ssn", (2, "abc")), ("key", (1, "abc"))]),
    (key(1, "a", "b", "c"), any_(2, "a", "b", "c"), {"a", "b", "c"}, 1, [("key", (2, "abc")), ("ssn", (1, "abc"))]),
    # From synchronous_mode on (FIRST, quorum 0): the same names under ANY.
    (key(0, "a"), Ssn("FIRST", 1, F({"a"})), {"a"}, 1, [("ssn", (1, "a"))]),
])
def test_steps(start_key: KeyState, start_ssn: Ssn, active: set[str], wanted: int,
               steps: list[tuple[str, object]]) -> None:
    assert _walk(start_key, start_ssn, active, wanted) == steps


def test_strict_without_standbys_blocks_commits() -> None:
    assert _walk(key(0, "a"), any_(1, "a"), set(), 1, strict=True) == [("key", (0, "")), ("ssn", "blocking")]


def test_no_voter_is_added_before_one_confirmed() -> None:
    assert next_step(NO_VOTERS, any_(1, "a", "b"), F(), F({"a", "b"}), 1, False) is None
    step = next_step(NO_VOTERS, any_(1, "a", "b"), F({"b"}), F({"a", "b"}), 1, False)
    assert step is not None and step.key == key(1, "a", "b")


def test_a_replaced_standby_goes_through_a_safe_detour() -> None:
    steps = _walk(key(1, "a", "b"), any_(1, "a", "b"), {"a", "c"}, 1)
    assert steps[-2:] == [("key", (1, "ac")), ("ssn", (1, "ac"))] or steps[-1] == ("key", (1, "ac"))


# --- a model of real commits -----------------------------------------------------------------------
STANDBYS = ("a", "b", "c", "d")


class QuorumModel(RuleBasedStateMachine):
    """The primary ``p`` commits while standbys come and go and replicate at random; the resolver
    acts on what the primary sees. Every acknowledged commit must stay on at least one member of
    any quorum+1 of the voting set (the voters and ``p``)."""

    def __init__(self) -> None:
        super().__init__()
        self.key = NO_VOTERS
        self.ssn = EMPTY
        self.lsn = 0  # the primary's
        self.set_lsn = 0  # the primary's LSN when the ssn took effect
        self.flushed = {s: 0 for s in STANDBYS}
        self.active: frozenset[str] = F()
        self.wanted = 1
        self.strict = False
        self.acked: list[int] = []

    @rule(strict=st.booleans())
    def set_strict(self, strict: bool) -> None:
        self.strict = strict

    @rule(active=st.sets(st.sampled_from(STANDBYS)))
    def churn(self, active: set[str]) -> None:
        self.active = F(active)

    @rule(wanted=st.integers(1, 3))
    def node_count(self, wanted: int) -> None:
        self.wanted = wanted

    @rule(receivers=st.sets(st.sampled_from(STANDBYS)))
    def commit(self, receivers: set[str]) -> None:
        self.lsn += 1
        got = {s for s in receivers if s in self.active}
        for s in got:
            self.flushed[s] = self.lsn
        ssn = self.ssn
        if ssn.blocking:
            return
        if not ssn.names or len(got & ssn.names) >= ssn.num:
            self.acked.append(self.lsn)

    @rule(who=st.sampled_from(STANDBYS))
    def catch_up(self, who: str) -> None:
        if who in self.active:
            self.flushed[who] = self.lsn

    def _confirmed(self) -> frozenset[str]:
        return F(s for s in self.active if self.flushed[s] >= self.set_lsn)

    def _apply(self) -> bool:
        step = next_step(self.key, self.ssn, self._confirmed(), self.active, self.wanted, self.strict)
        if step is None:
            return False
        if step.key is not None:
            assert key_change_safe(step.key, self.ssn, self._confirmed())
            self.key = step.key
        else:
            assert step.ssn is not None
            self.ssn, self.set_lsn = step.ssn, self.lsn
        return True

    @rule()
    def resolve(self) -> None:
        self._apply()

    @rule()
    def settle(self) -> None:
        """With every active standby caught up after each change, the steady state comes in a few steps."""
        for _ in range(8):
            for s in self.active:
                self.flushed[s] = self.lsn
            if not self._apply():
                goal = target(self.active, self.wanted, self.strict)
                assert self.key == goal.key
                assert self.ssn.blocking == goal.ssn.blocking
                if not goal.ssn.blocking:
                    assert (self.ssn.num if self.ssn.names else 0, self.ssn.names) == (goal.ssn.num, goal.ssn.names)
                return
        raise AssertionError(f"no steady state: key {self.key} ssn {self.ssn} active {sorted(self.active)}")

    @invariant()
    def every_acknowledged_commit_meets_every_quorum(self) -> None:
        voting = set(self.key.voters) | {"p"}
        for lsn in self.acked:
            holders = {"p"} | {s for s in STANDBYS if self.flushed[s] >= lsn}
            for group in itertools.combinations(sorted(voting), min(len(voting), self.key.quorum + 1)):
                assert holders & set(group), (f"commit {lsn} held by {sorted(holders)} is missed by "
                                              f"{group} (key {self.key}, ssn {self.ssn})")


QuorumModel.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
TestQuorumModel = QuorumModel.TestCase
