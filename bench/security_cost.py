"""What the protections cost: the same cluster with every channel secured, and with every one turned
off on purpose, measured alternately in the same run.

    python -m bench.security_cost --rounds 3

Per round and per mode, on a fresh demo cluster: GET /primary on fresh connections (as HAProxy
checks: a TLS handshake each time when secure), the write gap through HAProxy 5000 after a
planned switchover, and after kill -9 of the primary node. Medians and secure/insecure ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from appliance.demo.cluster import DemoCluster
from appliance.net.http import request
from bench.common import fresh_cluster, write_gap
from bench.switchover import GapMeter
from tests.integration.ha_helpers import healthy, read_view, sql, wait_until


def health_rate(cluster: DemoCluster, seconds: float = 5.0) -> tuple[float, float]:
    """(requests/s, p99 s) of sequential GET /primary on the primary, a new connection each."""
    primary = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    base = f"{cluster.layout.scheme}://{cluster.layout.host(primary)}:8008/primary"
    client = cluster.api_client()
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        request(base, client, timeout=5)
        latencies.append(time.monotonic() - started)
    return len(latencies) / seconds, statistics.quantiles(latencies, n=100)[98]


def switchover_gap(cluster: DemoCluster) -> float:
    leader = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    candidate = next(n for n in cluster.nodes if n != leader)
    meter = GapMeter(cluster.dsn("primary"))
    meter.start()
    time.sleep(1.5)
    url = f"{cluster.layout.scheme}://{cluster.layout.host(leader)}:8008/switchover"
    request(url, cluster.api_client(), method="POST", body={"leader": leader, "candidate": candidate}, timeout=70)
    time.sleep(3)
    meter.stop_event.set()
    meter.join()
    return meter.longest


def failover_gap(cluster: DemoCluster) -> float:
    wait_until("a healthy cluster", lambda: healthy(cluster), 180)
    time.sleep(3)
    primary = read_view(cluster).leader_name
    assert primary is not None
    cluster.kill(primary)
    gap = write_gap(cluster.dsn("primary"))
    cluster.start(primary)
    return gap


def one(secure: bool) -> dict[str, float]:
    with fresh_cluster(secure=secure) as cluster:
        sql(cluster.dsn("primary"), "CREATE TABLE bench_probe(id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
        rate, p99 = health_rate(cluster)
        return {"rps": rate, "p99": p99, "switchover": switchover_gap(cluster), "failover": failover_gap(cluster)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for run in range(args.rounds):
        for secure in (True, False) if run % 2 == 0 else (False, True):
            result = one(secure)
            runs[secure].append(result)
            print(f"round {run + 1} {'secure' if secure else 'insecure'}: " +
                  ", ".join(f"{k} {v:.3f}" for k, v in result.items()), flush=True)
    summary: dict[str, object] = {"benchmark": "security_cost", "rounds": args.rounds}
    for key in ("rps", "p99", "switchover", "failover"):
        on = statistics.median(r[key] for r in runs[True])
        off = statistics.median(r[key] for r in runs[False])
        summary[key] = {"secure": round(on, 4), "insecure": round(off, 4), "ratio": round(on / off, 2)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
