"""The simulated PostgreSQL servers of the HA-loop simulation: data directories with timelines and
WAL positions, streaming between servers, client writes with synchronous acknowledgement."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

from appliance.core.sync import STRICT_PLACEHOLDER, named_in_ssn

_sysids = itertools.count(7_000_000_000_000_000_001)


@dataclass(frozen=True)
class Data:
    """A data directory: its system, the timeline and WAL position it reached, the switches behind it."""

    sysid: str
    timeline: int
    lsn: int
    history: tuple[tuple[int, int], ...] = ()  # (earlier timeline, LSN where it ended)
    was_primary: bool = False

    def holds(self, timeline: int, lsn: int) -> bool:
        """A write at (timeline, lsn) is part of this data."""
        if timeline == self.timeline:
            return lsn <= self.lsn
        return any(tl == timeline and lsn <= end for tl, end in self.history)

    def can_follow(self, upstream: Data) -> bool:
        """Streaming from ``upstream`` continues our WAL: same system, and our position lies on its lineage."""
        if self.sysid != upstream.sysid:
            return False
        if self.timeline == upstream.timeline:
            return True  # equal, behind, or ahead (then we wait for it)
        if self.timeline > upstream.timeline:
            return False
        return any(tl == self.timeline and self.lsn <= end for tl, end in upstream.history)


def new_data() -> Data:
    return Data(sysid=str(next(_sysids)), timeline=1, lsn=1_000)


@dataclass
class Server:
    """One node's PostgreSQL: its data directory and, while running, its role and upstream."""

    name: str
    data: Data | None = None
    incomplete: bool = False  # an interrupted clone left an unusable directory
    running: bool = False
    in_recovery: bool = True
    upstream: str | None = None  # primary_conninfo (a replica)
    streaming: bool = False  # the WAL receiver is connected (recomputed every step)
    hung: bool = False  # the postmaster runs but answers nothing
    frozen: bool = False  # the whole node is paused (docker pause): nothing answers, nothing is written
    fail_start: bool = False  # PostgreSQL cannot start (e.g. a full disk)
    # A full pg_wal with a server that replays: it starts read-only, but dies writing the end of
    # recovery (a promotion, or a start as primary).
    fail_promote: bool = False
    ssn: str = ""  # synchronous_standby_names in its configuration
    slots: frozenset[str] = frozenset()

    @property
    def writable(self) -> bool:
        """Accepts and commits writes right now (what the two-primaries poller looks for)."""
        return self.running and not self.in_recovery and not self.hung and not self.frozen

    @property
    def answers(self) -> bool:
        return self.running and not self.hung and not self.frozen

    def stop(self) -> None:
        if self.running and self.data is not None:
            self.data = dataclasses.replace(self.data, was_primary=not self.in_recovery)
        self.running = self.streaming = self.hung = False
        self.in_recovery = True


@dataclass(frozen=True)
class Write:
    """One client write: where it went and whether the client got a commit acknowledgement."""

    node: str
    timeline: int
    lsn: int
    acked: bool
    at: float


@dataclass
class World:
    """Every server, who can reach whom, and the ledger of client writes."""

    servers: dict[str, Server]
    isolated: set[str] = field(default_factory=set)  # cut off from every other node and the clients
    ledger: list[Write] = field(default_factory=list)

    def reachable(self, a: str, b: str) -> bool:
        return a == b or (a not in self.isolated and b not in self.isolated)

    def replicate(self) -> None:
        """Every running replica streams from its upstream when it can; an upstream is settled before
        the servers that stream from it, so a cascade settles in one pass."""
        settled: set[str] = set()
        for server in self.servers.values():
            self._settle(server, settled)

    def _settle(self, server: Server, settled: set[str]) -> None:
        if server.name in settled:
            return
        settled.add(server.name)  # before the upstream: a loop of upstreams ends here
        server.streaming = False
        upstream = self.servers.get(server.upstream) if server.upstream is not None else None
        if upstream is not None:
            self._settle(upstream, settled)
        self._stream(server, upstream)

    def _stream(self, server: Server, source: Server | None) -> None:
        if source is None or not server.answers or not server.in_recovery or server.data is None:
            return
        if not source.answers or source.data is None or not self.reachable(server.name, source.name):
            return
        ours, theirs = server.data, source.data
        if not ours.can_follow(theirs):
            return
        server.streaming = True
        if theirs.timeline > ours.timeline or theirs.lsn > ours.lsn:
            server.data = dataclasses.replace(theirs, was_primary=False) if theirs.was_primary else theirs

    def write(self, now: float) -> None:
        """One write to every server that takes writes from the clients, then replication (always:
        the streaming state is settled here too) and acknowledgement."""
        written: list[tuple[Server, Data]] = []
        for server in self.servers.values():
            if server.writable and server.name not in self.isolated and server.data is not None:
                d = server.data
                server.data = Data(d.sysid, d.timeline, d.lsn + 100, d.history, d.was_primary)
                written.append((server, server.data))
        self.replicate()
        for server, data in written:
            self.ledger.append(Write(server.name, data.timeline, data.lsn, self._acked(server, data), now))

    def _acked(self, primary: Server, data: Data) -> bool:
        """A commit returns once enough synchronous standbys named in synchronous_standby_names hold it."""
        ssn = primary.ssn
        if not ssn:
            return True
        if ssn == STRICT_PLACEHOLDER:
            return False
        wanted = 1
        if ssn.startswith("FIRST ") or ssn.startswith("ANY "):
            wanted = int(ssn.split()[1])
        names = named_in_ssn(ssn)
        holding = sum(1 for name in names
                      if (s := self.servers.get(name)) is not None and s.streaming and s.upstream == primary.name
                      and s.data is not None and s.data.holds(data.timeline, data.lsn))
        return holding >= wanted

    def writable(self) -> list[str]:
        return sorted(name for name, s in self.servers.items() if s.writable)
