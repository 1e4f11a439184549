"""PostgreSQL's own list of its parameters (GUCs), read from `postgres --describe-config`.

The running PostgreSQL binary is the authority on which parameter names exist and when a change
takes effect; nothing here hard-codes that knowledge except the internal (read-only) parameters,
which --describe-config leaves out.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, cast, get_args

from appliance.postgres.process import Runner

GucContext = Literal["internal", "postmaster", "sighup", "superuser-backend", "backend", "superuser", "user"]
GucType = Literal["BOOLEAN", "INTEGER", "REAL", "STRING", "ENUM"]

_CONTEXTS = frozenset(get_args(GucContext))
_TYPES = frozenset(get_args(GucType))

# --describe-config skips every GUC flagged NOT_IN_SAMPLE or DISALLOW_IN_FILE, which includes all
# internal ones; they are listed here (PostgreSQL 13-17) so that a refusal can say "read-only"
# rather than "unknown". Each one that PostgreSQL 15 knows answers "cannot be changed" to -c
# (tests/integration/test_guc_postgres.py proves it).
INTERNAL_PARAMETERS = frozenset(
    {
        "block_size",
        "data_checksums",
        "data_directory_mode",
        "debug_assertions",
        "huge_pages_status",
        "in_hot_standby",
        "integer_datetimes",
        "is_superuser",
        "lc_collate",
        "lc_ctype",
        "max_function_args",
        "max_identifier_length",
        "max_index_keys",
        "segment_size",
        "server_encoding",
        "server_version",
        "server_version_num",
        "shared_memory_size",
        "shared_memory_size_in_huge_pages",
        "ssl_library",
        "wal_block_size",
        "wal_segment_size",
    }
)


class GucCatalogError(RuntimeError):
    """The parameter catalog could not be read: fatal for validation (fix bin_dir or the binary)."""


@dataclass(frozen=True)
class GucInfo:
    """One parameter as PostgreSQL describes it; name keeps PostgreSQL's spelling (TimeZone)."""

    name: str
    context: GucContext
    vartype: GucType
    min: int | float | None = None
    max: int | float | None = None


@dataclass(frozen=True, eq=False)
class GucCatalog:
    """Lower-case name -> GucInfo. Names are case-insensitive, as in PostgreSQL."""

    entries: Mapping[str, GucInfo] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_infos(cls, infos: Iterable[GucInfo]) -> GucCatalog:
        return cls(MappingProxyType({info.name.lower(): info for info in infos}))

    def get(self, name: str) -> GucInfo | None:
        return self.entries.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)


def _bound(text: str, vartype: GucType) -> int | float | None:
    if not text or vartype not in ("INTEGER", "REAL"):
        return None
    return int(text) if vartype == "INTEGER" else float(text)


def parse_describe_line(line: str, lineno: int = 0) -> GucInfo:
    """One tab-separated line: name, context, group, vartype, reset, min, max, short, long."""
    fields = line.split("\t")
    if len(fields) < 7:
        raise ValueError(f"describe-config line {lineno}: expected >= 7 tab-separated fields, got {len(fields)}")
    name, context, _group, vartype, _reset, low, high = fields[:7]
    if not name or context not in _CONTEXTS or vartype not in _TYPES:
        raise ValueError(f"describe-config line {lineno}: unexpected name/context/type {fields[:4]!r}")
    kind = cast(GucType, vartype)
    try:
        return GucInfo(name, cast(GucContext, context), kind, _bound(low, kind), _bound(high, kind))
    except ValueError:
        raise ValueError(f"describe-config line {lineno}: bad min/max {low!r}/{high!r} for {name}") from None


def parse_describe_config(text: str) -> GucCatalog:
    """Pure parser of `postgres --describe-config` output; lines without a tab are noise (stderr)."""
    infos = [parse_describe_line(line, n) for n, line in enumerate(text.split("\n"), 1) if "\t" in line]
    if not infos:
        raise ValueError("describe-config output lists no parameters")
    return GucCatalog.from_infos(infos)


_cache: dict[str, GucCatalog] = {}
_cache_lock = threading.Lock()


def load_catalog(bin_dir: str, runner: Runner, *, timeout: float = 30.0) -> GucCatalog:
    """Run `<bin_dir>/postgres --describe-config` (as PostgreSQL's user); cached per bin_dir.

    The binary of a bin_dir does not change under a running appliance (a package upgrade restarts
    it), so one read per process is enough. Failures are not cached.
    """
    key = os.path.realpath(bin_dir)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    binary = os.path.join(key, "postgres")
    try:
        result = runner.run([binary, "--describe-config"], timeout=timeout)
    except OSError as e:
        raise GucCatalogError(f"cannot run {binary} --describe-config: {e}; check postgresql.bin_dir") from e
    if not result.ok:
        raise GucCatalogError(f"{binary} --describe-config failed ({result.returncode}): {result.tail(5)}")
    try:
        catalog = parse_describe_config(result.output)
    except ValueError as e:
        raise GucCatalogError(f"{binary} --describe-config: {e}") from e
    with _cache_lock:
        _cache[key] = catalog
    return catalog


def clear_catalog_cache() -> None:
    with _cache_lock:
        _cache.clear()
