"""Pure formatting for the operator CLI: member rows from a ClusterView, tables (pretty/tsv/json/yaml), history."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import yaml

from appliance.core.flags import synchronous_mode
from appliance.core.model import ClusterView, Member, PgState, Role
from appliance.core.wal import format_lsn
from appliance.net.address import conn_url_address

FORMATS = ("pretty", "tsv", "json", "yaml")
BASE_COLUMNS = ("Member", "Host", "Role", "State", "TL", "Receive LSN", "Receive Lag", "Replay LSN", "Replay Lag")
EXTENDED_COLUMNS = ("Pending restart", "Pending restart reason", "Scheduled restart", "Tags")
RIGHT = frozenset({"TL", "Receive LSN", "Receive Lag", "Replay LSN", "Replay Lag", "Lag", "LSN"})
MIB = 1024 * 1024


def is_synchronous(view: ClusterView) -> bool:
    return synchronous_mode((view.config or {}).get("synchronous_mode"))[0]


def member_role(view: ClusterView, member: Member) -> str:
    """Leader / Standby Leader / Sync Standby / Quorum Standby / Replica, as patronictl prints them."""
    if member.name == view.leader_name:
        return "Standby Leader" if (view.config or {}).get("standby_cluster") else "Leader"
    sync_on, quorum = synchronous_mode((view.config or {}).get("synchronous_mode"))
    if sync_on and view.sync is not None and member.name in view.sync.sync_standby:
        return "Quorum Standby" if quorum else "Sync Standby"
    return "Replica"


def cluster_lsn(view: ClusterView) -> int:
    """The newest known primary position: the status key's optime or the leader's xlog_location."""
    leader = view.member(view.leader_name)
    known = [x for x in (view.status.optime, leader.xlog_location if leader else None) if x is not None]
    return max(known) if known else 0


def _lag_mb(top: int, lsn: int) -> int | float:
    """Lag in MB as patronictl shows it, but never rounded to 0 when behind: whole MB stay whole,
    anything else keeps three decimals (1 kB), at least 0.001 (``/cluster`` has the exact bytes)."""
    lag = max(0, top - lsn)
    if lag % MIB == 0:
        return lag // MIB
    return max(0.001, round(lag / MIB, 3))


def _scheduled_restart(member: Member) -> str:
    sched = member.extra.get("scheduled_restart")
    if not isinstance(sched, dict) or not sched.get("schedule"):
        return ""
    text = str(sched["schedule"])
    if sched.get("postgres_version"):
        text += f" if version < {sched['postgres_version']}"
    return text


def _restart_reason(member: Member) -> str:
    reason = member.pending_restart_reason or {}
    return ", ".join(f"{k}: {v.get('old_value')}->{v.get('new_value')}" if isinstance(v, dict) else str(k)
                     for k, v in sorted(reason.items()))


def member_rows(view: ClusterView, extended: bool = False) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of ``list``: one row per member, sorted by name, values as patronictl shows them."""
    columns = list(BASE_COLUMNS)
    # A member whose key vanished while the leader keeps its slot (member_slots_ttl) shows as stopped.
    gone = tuple(Member(name=n, state=PgState.STOPPED, role=Role.REPLICA) for n in view.vanished())
    members = sorted((*view.members, *gone), key=lambda m: m.name)
    wanted = {
        "Pending restart": extended or any(m.pending_restart for m in members),
        "Pending restart reason": extended or any(m.pending_restart_reason for m in members),
        "Scheduled restart": extended or any(_scheduled_restart(m) for m in members),
        "Tags": extended or any(m.tags for m in members),
    }
    columns += [c for c in EXTENDED_COLUMNS if wanted[c]]
    addresses = [conn_url_address(m.conn_url) for m in members]
    show_port = any(p not in (None, 5432) for _, p in addresses) or len({h for h, _ in addresses}) < len(addresses)
    top = cluster_lsn(view)
    rows = []
    for member, (host, port) in zip(members, addresses, strict=True):
        leader = member.name == view.leader_name
        cells: dict[str, Any] = {
            "Member": member.name,
            "Host": f"{host}:{port}" if show_port and host and port else (host or ""),
            "Role": member_role(view, member),
            "State": str(member.state if leader else (member.replication_state or member.state)),  # YAML: a plain str
            "TL": member.timeline if member.timeline is not None else "",
            "Pending restart": "*" if member.pending_restart else "",
            "Pending restart reason": _restart_reason(member),
            "Scheduled restart": _scheduled_restart(member),
            "Tags": json.dumps(member.tags.to_json(), sort_keys=True, separators=(", ", ": ")) if member.tags else "",
        }
        for kind, lsn in (("Receive", member.receive_lsn), ("Replay", member.replay_lsn)):
            if leader:
                cells[f"{kind} LSN"] = cells[f"{kind} Lag"] = ""
            elif lsn is None:
                cells[f"{kind} LSN"], cells[f"{kind} Lag"] = "unknown", ""
            else:
                cells[f"{kind} LSN"], cells[f"{kind} Lag"] = format_lsn(lsn), _lag_mb(top, lsn)
        rows.append([cells[c] for c in columns])
    return columns, rows


def cluster_title(scope: str, view: ClusterView) -> str:
    initialize = {None: "uninitialized", "": "initializing"}.get(view.initialize, view.initialize)
    return f" Cluster: {scope} ({initialize}) "


def service_info(view: ClusterView) -> list[str]:
    """The lines under the table: maintenance mode and a scheduled switchover."""
    lines = []
    if (view.config or {}).get("pause"):
        lines.append("Maintenance mode: on")
    failover = view.failover
    if failover is not None and failover.scheduled_at:
        info = f"Switchover scheduled at: {failover.scheduled_at}"
        for label, value in (("from", failover.leader), ("to", failover.member)):
            if value:
                info += f"\n{label:>24}: {value}"
        lines.append(info)
    return lines


def pretty_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    """An ASCII table framed with +---+; ``title`` is written into the top border, patronictl style."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(col), *(len(r[i]) for r in cells)]) for i, col in enumerate(columns)]
    if title and len(title) + 2 > sum(widths) + 3 * len(widths) - 1:
        widths[-1] += len(title) + 2 - (sum(widths) + 3 * len(widths) - 1)
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(values: Sequence[str]) -> str:
        parts = [f" {v:>{w}} " if col in RIGHT else f" {v:<{w}} " for v, w, col in zip(values, widths, columns,
                                                                                           strict=True)]
        return "|" + "|".join(parts) + "|"

    top = "+" + title + border[len(title) + 1:] if title else border
    out = [top, line(columns), border, *(line(r) for r in cells), border]
    return "\n".join(out)


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str, title: str = "",
           pretty_columns: Sequence[str] | None = None) -> str:
    """Rows in one of FORMATS. JSON/YAML give a list of objects without empty cells (as patronictl does)."""
    if fmt in ("json", "yaml"):
        items = [{c: v for c, v in zip(columns, row, strict=True) if str(v) != ""} for row in rows]
        if fmt == "json":
            return json.dumps(items)
        return yaml.safe_dump(items, default_flow_style=False, sort_keys=False).rstrip("\n")
    if fmt == "tsv":
        return "\n".join("\t".join(str(v) for v in line) for line in [list(columns), *rows])
    if fmt != "pretty":
        raise ValueError(f"unknown format {fmt!r}: choose among {', '.join(FORMATS)}")
    return pretty_table(pretty_columns or columns, rows, title)


def render_members(scope: str, view: ClusterView, fmt: str = "pretty", extended: bool = False,
                   topology: bool = False) -> str:
    """``list`` (and ``topology``): the table, plus maintenance/switchover lines in pretty format."""
    columns, rows = member_rows(view, extended)
    if topology:
        rows = topology_rows(view, rows)
    if fmt in ("json", "yaml", "tsv"):
        columns = ["Cluster", *columns]
        rows = [[scope, *row] for row in rows]
        return render(columns, rows, fmt)
    shown = [{"Receive Lag": "Lag", "Replay Lag": "Lag"}.get(c, c) for c in columns]
    text = render(columns, rows, "pretty", cluster_title(scope, view), pretty_columns=shown)
    info = service_info(view)
    return text + ("\n " + "\n ".join(info) if info else "")


def topology_rows(view: ClusterView, rows: list[list[Any]]) -> list[list[Any]]:
    """Rows reordered as the cascade tree (replicatefrom), names indented by level."""
    by_name = {row[0]: row for row in rows}
    ordered = []
    for level, name in topology_order(view):
        row = list(by_name[name])
        row[0] = ("  " * (level - 1) + "+ " + name) if level > 0 else name
        ordered.append(row)
    return ordered


def topology_order(view: ClusterView) -> Iterator[tuple[int, str]]:
    """(level, name) depth-first from the leader; a replica hangs under its replicatefrom if that is a replica."""
    leader = view.leader_name
    names = {m.name for m in view.members}
    replicas = names - {leader}
    children: dict[str | None, list[str]] = {}
    for m in sorted(view.members, key=lambda x: x.name):
        if m.name == leader:
            continue
        parent = m.tags.replicatefrom
        parent = parent if parent in replicas and parent != m.name else leader
        children.setdefault(parent, []).append(m.name)
    seen: set[str] = set()

    def walk(name: str | None, level: int) -> Iterator[tuple[int, str]]:
        for child in children.get(name, []):
            if child not in seen:
                seen.add(child)
                yield level, child
                yield from walk(child, level + 1)

    if leader is not None and leader in names:
        seen.add(leader)
        yield 0, leader
    yield from walk(leader, 1)
    for name in sorted(names - seen):  # cycles of replicatefrom: still listed
        yield 1, name


def history_rows(view: ClusterView) -> tuple[list[str], list[list[Any]]]:
    columns = ["TL", "LSN", "Reason", "Timestamp", "New Leader"]
    rows = [[h.timeline, h.lsn, h.reason, h.timestamp or "", h.new_leader or ""] for h in view.history]
    return columns, rows


def dump_config(config: dict[str, Any] | None) -> str:
    """The dynamic config as block YAML with sorted keys (what show-config prints and edit-config edits)."""
    return yaml.safe_dump(config or {}, default_flow_style=False, sort_keys=True, allow_unicode=True)
