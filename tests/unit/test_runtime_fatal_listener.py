"""The FATAL event listener's protocol handling, fed from strings."""

from __future__ import annotations

import io
from pathlib import Path

from appliance.runtime.fatal_listener import listen, parse_payload


def _event(eventname: str, processname: str) -> str:
    payload = f"processname:{processname} groupname:{processname} from_state:BACKOFF"
    header = (
        f"ver:3.0 server:supervisor serial:1 pool:fatal_listener poolserial:1 eventname:{eventname} len:{len(payload)}"
    )
    return f"{header}\n{payload}"


def test_parse_payload() -> None:
    assert parse_payload("a:1 b:two c\nrest:ignored") == {"a": "1", "b": "two"}


def test_a_watched_fatal_program_shuts_down_once_and_leaves_a_marker(tmp_path: Path) -> None:
    marker = tmp_path / "fatal"
    calls: list[int] = []
    stdin = io.StringIO(
        _event("PROCESS_STATE_FATAL", "other")
        + _event("PROCESS_STATE_FATAL", "etcd")
        + _event("PROCESS_STATE_FATAL", "api")
    )
    stdout = io.StringIO()
    fatal = listen(["etcd", "api"], str(marker), stdin, stdout, lambda: calls.append(1))
    assert fatal == "etcd"
    assert calls == [1]
    assert marker.read_text().startswith("etcd FATAL")
    # Every event is acknowledged, and the listener asks for the next one each time.
    assert stdout.getvalue() == "READY\nRESULT 2\nOK" * 3 + "READY\n"


def test_unwatched_programs_and_other_events_are_ignored(tmp_path: Path) -> None:
    marker = tmp_path / "fatal"
    stdin = io.StringIO(_event("PROCESS_STATE_FATAL", "sidecar") + _event("PROCESS_STATE_EXITED", "etcd"))
    assert listen(["etcd"], str(marker), stdin, io.StringIO(), lambda: None) is None
    assert not marker.exists()
