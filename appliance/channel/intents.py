"""Node-local operator intents (restart, reload, reinitialize) from the API to the manager.

The API drops one JSON file per intent into ``<run_dir>/intents/`` (atomic rename); the manager takes
them at the start of a tick and publishes each outcome in its state document under ``intents``,
keyed by the intent id, where the API waits for it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.channel.state import StateDoc

INTENT_DIR = "intents"
KINDS = ("restart", "reload", "reinitialize", "cancel_restart")


@dataclass(frozen=True)
class Intent:
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)


def _dir(run_dir: str) -> Path:
    return Path(run_dir) / INTENT_DIR


def submit(run_dir: str, kind: str, params: dict[str, Any] | None = None) -> Intent:
    """Queue an intent for the manager; returns it (its id keys the outcome)."""
    if kind not in KINDS:
        raise ValueError(f"unknown intent {kind!r}")
    intent = Intent(kind=kind, params=dict(params or {}))
    directory = _dir(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".intent.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump({"id": intent.id, "kind": kind, "params": intent.params, "created": intent.created}, fh)
    os.replace(tmp, directory / f"{intent.created:.6f}-{intent.id}.json")
    return intent


def take_all(run_dir: str) -> list[Intent]:
    """Every queued intent, oldest first; each file is removed as it is taken."""
    directory = _dir(run_dir)
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
            path.unlink()
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("kind") in KINDS:
            found.append(Intent(kind=doc["kind"], params=dict(doc.get("params") or {}), id=str(doc.get("id")),
                                created=float(doc.get("created") or 0)))
    return found


def wait_outcome(reader: Callable[[], StateDoc | None], intent_id: str, timeout: float,
                 final: tuple[str, ...] = ("done", "failed", "refused", "scheduled", "cancelled"),
                 interval: float = 0.1) -> dict[str, Any] | None:
    """Poll the manager's state until the intent reaches a final status (None on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = reader()
        outcome = (doc.get("intents") or {}).get(intent_id) if doc is not None else None
        if outcome is not None and outcome["status"] in final:
            return dict(outcome)
        time.sleep(interval)
    return None
