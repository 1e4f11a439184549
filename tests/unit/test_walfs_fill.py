"""tests/support/walfs.fill: a tmpfs that PostgreSQL fills faster than the filler is full, not an error."""

from __future__ import annotations

import errno
import io
from pathlib import Path
from typing import Any

import pytest

from tests.support import walfs


class _Filling(io.BytesIO):
    """A file on a tmpfs that PostgreSQL fills meanwhile: ENOSPC on the third write and on close."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: Any) -> int:
        self.writes += 1
        if self.writes >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)

    def __exit__(self, *exc: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_fill_stops_at_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 30-minute chaos run died here: pgbench's WAL took the space between the measure and the write."""
    monkeypatch.setattr(walfs.shutil, "disk_usage", lambda path: type("U", (), {"free": 64 << 20})())
    monkeypatch.setattr(walfs, "open", lambda path, mode: _Filling(), raising=False)
    assert walfs.fill(tmp_path, leave_mb=4) == tmp_path / "filler"


def test_fill_raises_other_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: Path, mode: str) -> Any:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(walfs, "open", denied, raising=False)
    with pytest.raises(PermissionError):
        walfs.fill(tmp_path, leave_mb=4)
