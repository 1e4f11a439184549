"""The container's PID 1 after the entrypoint: supervisord in this very process, then the exit status.

supervisord exits 0 even when the FATAL listener shut it down (a critical program crash-looped).
Running it in-process keeps it PID 1 (it reaps orphans such as the detached postmaster) and lets
us turn the listener's marker into exit status 1, so that any restart policy brings the container
back, ``on-failure`` included.
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_FATAL = 1


def fatal_exit_code(marker: str) -> int:
    """1 with a message when the listener left its marker, else 0."""
    try:
        with open(marker) as handle:
            what = handle.read().strip()
    except FileNotFoundError:
        return 0
    print(f"pgappliance: {what or 'a critical program went FATAL'}: exiting {EXIT_FATAL} so that the restart "
          "policy restarts the container", file=sys.stderr, flush=True)
    return EXIT_FATAL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--configuration", required=True, help="supervisord.conf")
    parser.add_argument("--marker", required=True, help="the FATAL listener's marker file")
    args = parser.parse_args(argv)
    if os.path.exists(args.marker):
        os.unlink(args.marker)  # from an earlier run of this container
    from supervisor import supervisord

    supervisord.main(["-c", args.configuration])
    return fatal_exit_code(args.marker)


if __name__ == "__main__":
    sys.exit(main())
