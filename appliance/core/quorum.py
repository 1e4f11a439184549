"""Quorum commit (``synchronous_mode: quorum``, Patroni 4): keep synchronous_standby_names
(``ANY n (names)``) and the ``sync`` key (``leader``, voters in ``sync_standby``, ``quorum``) safe.

The promise. A commit returns once the primary and ``n`` of the ssn ``names`` hold it. A node may
take over once it saw ``quorum + 1`` members of the voting set (the voters plus the key's leader,
itself included) and none of them is ahead of it (core/election.py). So every acknowledged commit
must be held by at least one member of *any* ``quorum + 1`` of the voting set. Two rules keep that,
and every change of one of the two places (the ssn, the key) is made only when its rule holds:

- (i) commits acknowledged under the ssn now in effect: an acknowledging set (the primary and ``n``
  of ``names``) may avoid at most ``quorum`` voters, i.e.
  ``quorum >= |voters| - max(0, n - |names - voters|)`` (with ``n`` 0 for an empty ssn; the strict
  placeholder acknowledges nothing). This is Patroni's ``quorum + numsync >= |voters | sync|``.
- (ii) commits acknowledged before the ssn took effect are held by the primary and by every standby
  that flushed past the LSN the primary had then (``confirmed``): a new key needs
  ``quorum >= |voters - confirmed|``. (Patroni's numsync_confirmed adjustment of the quorum.)

An ssn change keeps the key, so the commits before it stay covered by the key as it was; a key
change needs both rules. A key naming no voter (``quorum`` 0) is always safe: only a node that saw
the leader not ahead of it may take over. A new leader therefore first takes the key over with no
voters, then grows it one safe step per tick (Patroni carries the old voters over instead; ours
leaves no failover target until a standby confirms, as ``synchronous_mode: on`` does here).

Pure: no I/O, no clock. next_step() returns one change per tick; the loop observes again before
the next (the ssn in effect, who confirmed it), so an interrupted sequence resumes from what is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STRICT_PLACEHOLDER = "__patroni_strict_sync_replica_placeholder__"

_METHOD_RE = re.compile(r"^\s*(ANY|FIRST)?\s*(\d+)\s*\((.*)\)\s*$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Ssn:
    """synchronous_standby_names as PostgreSQL reads it: ``num`` of ``names`` must confirm a commit
    (``num`` 0, no names: asynchronous). ``blocking``: only names that match no standby (the strict
    placeholder): no commit is acknowledged."""

    kind: str = ""  # "ANY", "FIRST" or "" (empty)
    num: int = 0
    names: frozenset[str] = frozenset()
    blocking: bool = False


EMPTY = Ssn()


def _split_names(text: str) -> list[str]:
    names = []
    for part in re.findall(r'"(?:[^"]|"")*"|[^,]+', text):
        part = part.strip()
        if part.startswith('"') and part.endswith('"') and len(part) >= 2:
            part = part[1:-1].replace('""', '"')
        if part:
            names.append(part)
    return names


def parse_ssn(value: str | None) -> Ssn:
    """Read a synchronous_standby_names value (ours, Patroni's, or a bare list: FIRST 1)."""
    text = (value or "").strip()
    if not text:
        return EMPTY
    match = _METHOD_RE.match(text)
    if match:
        kind = (match.group(1) or "FIRST").upper()
        num, listed = int(match.group(2)), _split_names(match.group(3))
    else:
        kind, num, listed = "FIRST", 1, _split_names(text)
    real = frozenset(n for n in listed if n != STRICT_PLACEHOLDER and n != "*")
    if "*" in listed:  # any standby confirms: we cannot tell which hold a commit; treat as none
        return Ssn(kind, num, frozenset(), blocking=False)
    if not real and num > 0:
        return Ssn(kind, num, frozenset(), blocking=True)
    return Ssn(kind, min(num, len(real)), real)


def format_any(num: int, names: frozenset[str] | set[str]) -> str:
    """``ANY n ("a","b")`` (names sorted and quoted), or "" for no names."""
    if not names:
        return ""
    quoted = ",".join('"' + n.replace('"', '""') + '"' for n in sorted(names))
    return f"ANY {num} ({quoted})"


def format_ssn_value(ssn: Ssn) -> str:
    if ssn.blocking:
        return STRICT_PLACEHOLDER
    return format_any(ssn.num, ssn.names)


@dataclass(frozen=True)
class KeyState:
    """The quorum part of the ``sync`` key (its leader is the primary's name when this is used)."""

    quorum: int = 0
    voters: frozenset[str] = frozenset()


NO_VOTERS = KeyState()


def key_valid(key: KeyState) -> bool:
    """A key a leader race can be won against: quorum below the number of voters (0 with none)."""
    return key.quorum >= 0 and (key.quorum < len(key.voters) or (key.quorum == 0 and not key.voters))


def commits_covered(key: KeyState, ssn: Ssn) -> bool:
    """Rule (i): every commit the ssn acknowledges is held by one of any quorum+1 of the voting set."""
    if ssn.blocking:
        return True
    num = ssn.num if ssn.names else 0
    outside = len(ssn.names - key.voters)
    return key.quorum >= len(key.voters) - max(0, num - outside)


def history_covered(key: KeyState, confirmed: frozenset[str]) -> bool:
    """Rule (ii): commits from before the ssn took effect, held by the confirmed standbys."""
    return key.quorum >= len(key.voters - confirmed)


def key_change_safe(new: KeyState, ssn: Ssn, confirmed: frozenset[str]) -> bool:
    return key_valid(new) and commits_covered(new, ssn) and history_covered(new, confirmed)


def ssn_change_safe(key: KeyState, new: Ssn) -> bool:
    return commits_covered(key, new)


@dataclass(frozen=True)
class Target:
    ssn: Ssn
    key: KeyState


def target(active: frozenset[str], wanted: int, strict: bool) -> Target:
    """The steady state for these standbys: ``ANY min(k, |A|) (A)``, voters A, quorum |A| - n."""
    if not active:
        return Target(Ssn(num=1, blocking=True) if strict else EMPTY, NO_VOTERS)
    num = min(max(1, wanted), len(active))
    return Target(Ssn("ANY", num, active), KeyState(len(active) - num, active))


@dataclass(frozen=True)
class Step:
    """One change: the new key (``key``) or the new ssn (``ssn``); ``why`` for the log."""

    why: str
    key: KeyState | None = None
    ssn: Ssn | None = None


def _min_quorum(voters: frozenset[str], ssn: Ssn, confirmed: frozenset[str]) -> int:
    num = ssn.num if ssn.names and not ssn.blocking else 0
    needed = 0 if ssn.blocking else len(voters) - max(0, num - len(ssn.names - voters))
    return max(0, needed, len(voters - confirmed))


def _min_num(key: KeyState, names: frozenset[str], wanted: int) -> int:
    """The smallest n >= wanted for which ANY n (names) keeps rule (i) under ``key``."""
    need = len(key.voters) - key.quorum + len(names - key.voters) if len(key.voters) > key.quorum else 0
    return max(min(max(1, wanted), len(names)), need)


def same_ssn(a: Ssn, b: Ssn) -> bool:
    if a.blocking or b.blocking:
        return a.blocking == b.blocking
    if not a.names and not b.names:
        return True
    return (a.kind, a.num, a.names) == (b.kind, b.num, b.names)


def next_step(key: KeyState, ssn: Ssn, confirmed: frozenset[str], active: frozenset[str], wanted: int,
              strict: bool) -> Step | None:
    """The next safe change towards the steady state, or None (there, or waiting for standbys to
    confirm). Candidates in order of preference; the first that changes something and keeps the
    rules wins. The last, a key with no voters, is always safe, so a way back is never blocked."""
    goal = target(active, wanted, strict)
    if goal.key == key and same_ssn(goal.ssn, ssn):
        return None
    keep = key.voters & goal.key.voters
    candidates: list[Step] = [
        Step("voters and quorum for the wanted standbys", key=goal.key),
        Step("synchronous_standby_names for the wanted standbys", ssn=goal.ssn),
        Step("voters for the wanted standbys, quorum raised until they confirm",
             key=KeyState(_min_quorum(goal.key.voters, ssn, confirmed), goal.key.voters)),
        Step("voters that left dropped first", key=KeyState(_min_quorum(keep, ssn, confirmed), keep)),
    ]
    stay = ssn.names & active
    if stay and stay != ssn.names and not ssn.blocking:
        candidates.append(Step("standbys that left dropped from synchronous_standby_names first",
                               ssn=Ssn("ANY", _min_num(key, stay, wanted), stay)))
    if goal.ssn.names:
        num = _min_num(key, goal.ssn.names, wanted)
        if num <= len(goal.ssn.names):
            candidates.append(Step("synchronous_standby_names for the wanted standbys, more confirmations "
                                   "until the key follows", ssn=Ssn("ANY", num, goal.ssn.names)))
    candidates.append(Step("no voters until the standbys confirm", key=NO_VOTERS))
    for step in candidates:
        if step.key is not None and step.key != key and key_change_safe(step.key, ssn, confirmed):
            return step
        if step.ssn is not None and not same_ssn(step.ssn, ssn) and _ssn_valid(step.ssn) \
                and ssn_change_safe(key, step.ssn):
            return step
    return None


def _ssn_valid(ssn: Ssn) -> bool:
    return ssn.blocking or (not ssn.names and ssn.num == 0) or 1 <= ssn.num <= len(ssn.names)
