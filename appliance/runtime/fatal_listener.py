"""supervisord event listener: a critical program gone FATAL shuts supervisord down, leaving a marker.

supervisord itself exits 0 after such a shutdown, so the marker file is what lets a wrapper (the
container entrypoint, the demo's status) tell a crash loop from a clean stop.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import TextIO


def parse_payload(payload: str) -> dict[str, str]:
    """``key:value key:value`` as supervisord writes event headers and payload first lines."""
    fields: dict[str, str] = {}
    for token in payload.split("\n", 1)[0].split():
        key, sep, value = token.partition(":")
        if sep:
            fields[key] = value
    return fields


def write_marker(path: str, program: str, event: str, clock: Callable[[], float] = time.time) -> None:
    with open(path, "w") as handle:
        handle.write(f"{program} {event} at {clock():.0f}\n")


def listen(
    watched: Iterable[str],
    marker: str,
    stdin: TextIO,
    stdout: TextIO,
    shutdown: Callable[[], None],
) -> str | None:
    """Serve events until stdin closes; returns the first watched program seen FATAL, if any.

    The listener keeps acknowledging events after asking for the shutdown: supervisord goes on
    sending them while it stops the other programs.
    """
    names = set(watched)
    fatal: str | None = None
    while True:
        stdout.write("READY\n")
        stdout.flush()
        header_line = stdin.readline()
        if not header_line:
            return fatal
        header = parse_payload(header_line)
        payload = stdin.read(int(header.get("len", "0")))
        stdout.write("RESULT 2\nOK")
        stdout.flush()
        fields = parse_payload(payload)
        name = fields.get("processname", "")
        if fatal is None and header.get("eventname") == "PROCESS_STATE_FATAL" and name in names:
            fatal = name
            write_marker(marker, name, "FATAL")
            print(f"fatal_listener: {name} is FATAL; shutting supervisord down", file=sys.stderr, flush=True)
            shutdown()


def _signal_supervisord() -> None:
    # We are supervisord's child: SIGTERM to the parent is its documented clean shutdown.
    os.kill(os.getppid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--marker", required=True, help="file written when a watched program is FATAL")
    parser.add_argument("--programs", required=True, help="comma-separated program names to watch")
    args = parser.parse_args(argv)
    watched = [name for name in args.programs.split(",") if name]
    listen(watched, args.marker, sys.stdin, sys.stdout, _signal_supervisord)
    return 0


if __name__ == "__main__":
    sys.exit(main())
