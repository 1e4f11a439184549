"""WAL positions: the LSN text form (16/B374D848) both ways, and lag with the segment-padding rule."""

from __future__ import annotations

from typing import Any

WAL_SEGMENT = 16 * 1024 * 1024  # initdb's default --wal-segsize


def parse_lsn(text: str | None) -> int | None:
    """'16/B374D848' -> 0x16B374D848; None or '' -> None; raises ValueError on anything else."""
    if not text:
        return None
    hi, sep, lo = text.strip().partition("/")
    if not sep:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_or_none(value: Any) -> int | None:
    """An int as is, the text form 0/3000060 parsed; None for anything else (a foreign document)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and "/" in value:
        try:
            return parse_lsn(value)
        except ValueError:
            return None
    return None


def format_lsn(lsn: int) -> str:
    """PostgreSQL's text form of an LSN: 0/3000060."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def wal_lag(optime: int | None, position: int) -> int:
    """Bytes ``position`` is behind ``optime``. An idle primary that just switched segments (every
    pg_basebackup ends with a switch) reports the next segment's start while its replicas sit on the
    switch record at the end of the previous one: that gap is padding, not missing WAL."""
    if optime is None or optime <= position:
        return 0
    if optime % WAL_SEGMENT == 0 and optime - WAL_SEGMENT <= position:
        return 0
    return optime - position
