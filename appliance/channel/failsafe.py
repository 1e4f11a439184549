"""The failsafe record a node's API leaves for its manager: the primary whose POST /failsafe it
accepted last, and when (so that the manager does not race for the leader key while that primary runs)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from appliance.channel.files import read_json, write_json

RECORD = "failsafe.json"


@dataclass(frozen=True)
class Received:
    """The last POST /failsafe this node accepted: who, and when (CLOCK_MONOTONIC, machine-wide)."""

    name: str
    at: float


def record(run_dir: str, name: str, now: float | None = None) -> None:
    """The API's side: note the primary that POSTed /failsafe (atomically, for the manager)."""
    write_json(Path(run_dir) / RECORD, {"name": name, "at": time.monotonic() if now is None else now})


def last_received(run_dir: str) -> Received | None:
    doc = read_json(Path(run_dir) / RECORD)
    if not isinstance(doc, dict):
        return None
    name, at = doc.get("name"), doc.get("at")
    if not isinstance(name, str) or not isinstance(at, (int, float)):
        return None
    return Received(name, float(at))
