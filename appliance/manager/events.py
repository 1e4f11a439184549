"""Structured events: every decision and its reason, logged as JSON/text and kept in a bounded ring."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("appliance.events")


@dataclass(frozen=True)
class Event:
    """One structured event: ``kind`` (e.g. "action", "promoted"), a reason and fields."""

    kind: str
    reason: str
    ts: float = field(default_factory=time.time)
    fields: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ts": self.ts, "kind": self.kind, "reason": self.reason, **self.fields}


class EventLog:
    """A bounded, thread-safe ring of recent events; each event is also logged once."""

    def __init__(self, capacity: int = 500) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def emit(self, kind: str, reason: str, level: int = logging.INFO, **fields: Any) -> Event:
        event = Event(kind=kind, reason=reason, fields=fields)
        with self._lock:
            self._events.append(event)
        log.log(level, "%s: %s", kind, reason, extra={"event": event.as_dict()})
        return event

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._events)
        if limit is not None:
            items = items[-limit:]
        return [e.as_dict() for e in items]


class JsonFormatter(logging.Formatter):
    """One JSON object per line, carrying the structured event when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if event:
            doc["event"] = event
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(level: str = "INFO", fmt: str = "text", name: str = "") -> None:
    """Configure the root logger for a daemon: JSON or text on stderr."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        prefix = f"{name} " if name else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
