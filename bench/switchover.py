"""Planned switchover through the REST API: the longest write gap seen through HAProxy 5000 (median).

    python -m bench.switchover --runs 5
"""

from __future__ import annotations

import argparse
import threading
import time

from appliance.demo.cluster import DemoCluster
from appliance.net.http import request
from bench.common import can_write, fresh_cluster, report
from tests.integration.ha_helpers import healthy, read_view, sql, wait_until


class GapMeter(threading.Thread):
    """Writes every ``interval`` s and records the longest time between two successful writes."""

    def __init__(self, dsn: str, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.dsn, self.interval = dsn, interval
        self.longest = 0.0
        self.stop_event = threading.Event()

    def run(self) -> None:
        last_ok = time.monotonic()
        while not self.stop_event.is_set():
            if can_write(self.dsn):
                now = time.monotonic()
                self.longest = max(self.longest, now - last_ok)
                last_ok = now
            time.sleep(self.interval)


def switchover(cluster: DemoCluster, api_url: str, leader: str, candidate: str) -> tuple[int, str]:
    answer = request(f"{api_url}/switchover", cluster.api_client(), method="POST",
                     body={"leader": leader, "candidate": candidate}, timeout=70)
    return answer.status, answer.body.decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    gaps: list[float] = []
    with fresh_cluster() as cluster:
        dsn = cluster.dsn("primary")
        sql(dsn, "CREATE TABLE bench_probe(id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
        for run in range(args.runs):
            wait_until("a healthy cluster", lambda: healthy(cluster), 120)
            leader = read_view(cluster).leader_name
            assert leader is not None
            candidate = next(n for n in cluster.nodes if n != leader)
            api = next(m["api_url"] for m in cluster.status()["members"] if m["name"] == leader)
            meter = GapMeter(dsn)
            meter.start()
            time.sleep(1.5)
            code, text = switchover(cluster, api.removesuffix("/patroni"), leader, candidate)
            time.sleep(3)
            meter.stop_event.set()
            meter.join()
            gaps.append(meter.longest)
            print(f"run {run + 1}: {leader} -> {candidate}: HTTP {code} {text.strip()[:60]!r}; "
                  f"longest write gap {meter.longest:.2f}s", flush=True)
    report("planned_switchover_write_gap", gaps)


if __name__ == "__main__":
    main()
