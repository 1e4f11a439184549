"""Stability soak: pgbench through HAProxy 5000 for N seconds; count leader changes (want zero).

    python -m bench.soak --seconds 600 --clients 4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time

from bench.common import fresh_cluster
from tests.integration.ha_helpers import read_view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with fresh_cluster() as cluster:
        dsn = cluster.dsn("primary")
        pgbench = "/usr/lib/postgresql/15/bin/pgbench"
        subprocess.run([pgbench, "-i", "-s", "10", dsn], check=True, capture_output=True)
        first = read_view(cluster)
        leaders = [first.leader_name]
        timelines = {first.member(first.leader_name).timeline}  # type: ignore[union-attr]
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(1.0):
                try:
                    view = read_view(cluster)
                except Exception:
                    continue
                if view.leader_name != leaders[-1]:
                    leaders.append(view.leader_name)
                member = view.member(view.leader_name)
                if member is not None and member.timeline is not None:
                    timelines.add(member.timeline)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.monotonic()
        bench = subprocess.run([pgbench, "-c", str(args.clients), "-j", "2", "-T", str(args.seconds), "-n",
                                "-P", "60", dsn], capture_output=True, text=True)
        stop.set()
        watcher.join()
        tail = [line for line in bench.stdout.splitlines() if line.startswith(("tps", "number of failed",
                                                                                "number of transactions"))]
        print(json.dumps({
            "benchmark": "soak_pgbench",
            "seconds": round(time.monotonic() - t0),
            "clients": args.clients,
            "pgbench_exit": bench.returncode,
            "leader_changes": len(leaders) - 1,
            "leaders": leaders,
            "timelines": sorted(t for t in timelines if t is not None),
            "pgbench": tail,
        }))


if __name__ == "__main__":
    main()
