"""Synchronous replication: keep the ``sync`` key and synchronous_standby_names consistent.

Order matters for safety (synchronous_mode_strict: no acknowledged commit may be lost):
- a standby leaves the ``sync`` key *before* it leaves synchronous_standby_names;
- a standby joins the ``sync`` key only *after* synchronous_standby_names names it, PostgreSQL
  reports it as sync, and it has flushed past the LSN the primary had when that setting took
  effect (so it holds every commit acknowledged before it became synchronous).
With ``synchronous_mode: quorum`` the order comes from core/quorum.py instead (quorum_actions).
"""

from __future__ import annotations

import re

from appliance.core import quorum as q
from appliance.core.actions import Action, SetSyncStandbyNames, WriteSync
from appliance.core.model import ClusterView
from appliance.core.quorum import STRICT_PLACEHOLDER as STRICT_PLACEHOLDER
from appliance.core.state import HaSettings, LocalState


def format_ssn(names: tuple[str, ...], count: int) -> str:
    """synchronous_standby_names for FIRST-n semantics (Patroni's non-quorum mode)."""
    if not names:
        return ""
    quoted = ",".join(f'"{n}"' for n in names)
    return f"FIRST {min(count, len(names))} ({quoted})"


def named_in_ssn(value: str) -> set[str]:
    """The standby names in a synchronous_standby_names we wrote (format_ssn's quoted list)."""
    return set(re.findall(r'"((?:[^"]|"")*)"', value or ""))


def lagging_standbys(local: LocalState, cfg: HaSettings) -> set[str]:
    """Standbys more than maximum_lag_on_syncnode bytes behind (Patroni's reference: the most
    advanced standby when there are several, else the primary's WAL position); none when it is -1."""
    if cfg.maximum_lag_on_syncnode < 0:
        return set()
    flushed = {c.application_name: c.flush_lsn for c in local.replication if c.flush_lsn is not None}
    reference = max(flushed.values()) if len(flushed) > 1 else local.wal_position
    if reference is None:
        return set()
    return {name for name, lsn in flushed.items() if reference - lsn > cfg.maximum_lag_on_syncnode}


def desired_standbys(view: ClusterView, local: LocalState, cfg: HaSettings) -> tuple[str, ...]:
    """Streaming replicas that are members, not tagged nosync; the first n are wanted: healthy ones
    before those lagging beyond maximum_lag_on_syncnode (swapped out when a healthy one is there),
    then current synchronous standbys first, so that a replica (re)joining never displaces a healthy
    one (which would leave the sync key empty, and no one eligible, for a loop or two)."""
    current = set(view.sync.sync_standby) if (view.sync is not None and view.sync.leader == local.name) else set()
    lagging = lagging_standbys(local, cfg)
    candidates = []
    for conn in local.replication:
        member = view.member(conn.application_name)
        if member is None or member.tags.nosync or conn.state != "streaming":
            continue
        candidates.append(conn.application_name)
    # Then the ones synchronous_standby_names already names: a new primary never switches from the
    # standby it just made synchronous to one that connected a moment later (the sync key would
    # name neither for a loop, and a switchover to either would be refused).
    named = named_in_ssn(local.synchronous_standby_names)
    ranked = sorted(candidates, key=lambda name: (name in lagging, name not in current, name not in named, name))
    return tuple(sorted(ranked[: cfg.synchronous_node_count]))


def sync_actions(view: ClusterView, local: LocalState, cfg: HaSettings) -> list[Action]:
    """Actions a primary holding the lock takes this tick for synchronous replication."""
    ours = view.sync is not None and view.sync.leader == local.name
    current = set(view.sync.sync_standby) if (ours and view.sync) else set()
    revision = view.sync.mod_revision if view.sync is not None else None
    if cfg.synchronous_quorum:
        return quorum_actions(view, local, cfg)
    if not cfg.synchronous_mode:
        acts: list[Action] = []
        if local.synchronous_standby_names:
            acts.append(SetSyncStandbyNames("synchronous_mode is off", value=""))
        if view.sync is not None and (view.sync.sync_standby or not ours):
            acts.append(WriteSync("synchronous_mode is off", standbys=(), revision=revision))
        return acts
    if ours and view.sync is not None and view.sync.quorum:
        # Left from quorum mode: its voters were not each synchronous. Start over from no standby.
        return [WriteSync("sync key: leaving quorum mode, no synchronous standby until one confirms",
                          standbys=(), revision=revision)]
    desired = desired_standbys(view, local, cfg)
    keep = current & set(desired)
    if not ours or keep != current:
        dropped = ",".join(sorted(current - keep)) or "none"
        return [WriteSync(f"sync key: leader is us, dropping {dropped}", standbys=tuple(sorted(keep)),
                          revision=revision)]
    target = format_ssn(desired, cfg.synchronous_node_count)
    if not target and cfg.synchronous_mode_strict:
        target = STRICT_PLACEHOLDER
    if local.synchronous_standby_names != target:
        return [SetSyncStandbyNames(f"synchronous standbys wanted: {','.join(desired) or 'none'}",
                                    value=target)]
    confirmed = {
        c.application_name
        for c in local.replication
        if c.sync_state == "sync"
        and c.flush_lsn is not None
        and local.ssn_set_lsn is not None
        and c.flush_lsn >= local.ssn_set_lsn
    }
    add = {d for d in desired if d not in keep and d in confirmed}
    if add:
        return [WriteSync(f"sync key: {','.join(sorted(add))} confirmed synchronous",
                          standbys=tuple(sorted(keep | add)), revision=revision)]
    return []


def quorum_candidates(view: ClusterView, local: LocalState, cfg: HaSettings) -> frozenset[str]:
    """The standbys quorum commit wants (Patroni's ``active``): streaming members not tagged nosync
    and not beyond maximum_lag_on_syncnode; nofailover ones only as needed to reach
    synchronous_node_count (they vote, but cannot be promoted)."""
    lagging = lagging_standbys(local, cfg)
    able: list[str] = []
    unpromotable: list[str] = []
    for conn in sorted(local.replication, key=lambda c: c.application_name):
        member = view.member(conn.application_name)
        if member is None or member.tags.nosync or conn.state != "streaming" or conn.application_name in lagging:
            continue
        (unpromotable if member.tags.nofailover else able).append(conn.application_name)
    room = max(0, cfg.synchronous_node_count - len(able))
    return frozenset(able + unpromotable[:room])


def confirmed_standbys(local: LocalState) -> frozenset[str]:
    """Standbys that flushed past the primary's LSN at the moment the ssn in effect took effect:
    they hold every commit acknowledged before it."""
    if local.ssn_set_lsn is None:
        return frozenset()
    return frozenset(c.application_name for c in local.replication
                     if c.state == "streaming" and c.flush_lsn is not None and c.flush_lsn >= local.ssn_set_lsn)


def quorum_actions(view: ClusterView, local: LocalState, cfg: HaSettings) -> list[Action]:
    """synchronous_mode: quorum. The sync key is taken over with no voters first (always safe:
    core/quorum.py), then one safe step per tick towards ANY n of the wanted standbys."""
    sync = view.sync
    revision = sync.mod_revision if sync is not None else None
    if sync is None or sync.leader != local.name:
        return [WriteSync("quorum: the sync key names us as leader, no voters until standbys confirm",
                          standbys=(), quorum=0, revision=revision)]
    key = q.KeyState(sync.quorum or 0, frozenset(sync.sync_standby))
    ssn = q.parse_ssn(local.synchronous_standby_names)
    step = q.next_step(key, ssn, confirmed_standbys(local), quorum_candidates(view, local, cfg),
                       cfg.synchronous_node_count, cfg.synchronous_mode_strict)
    if step is None:
        return []
    if step.key is not None:
        voters = tuple(sorted(step.key.voters))
        return [WriteSync(f"quorum: {step.why}: quorum {step.key.quorum} of ({','.join(voters) or 'none'})",
                          standbys=voters, quorum=step.key.quorum, revision=revision)]
    assert step.ssn is not None
    value = q.format_ssn_value(step.ssn)
    return [SetSyncStandbyNames(f"quorum: {step.why}: {value or 'none'}", value=value)]
