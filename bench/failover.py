"""Write unavailability through HAProxy 5000 after kill -9 of the primary node (median of N runs).

    python -m bench.failover --runs 5
"""

from __future__ import annotations

import argparse
import time

import psycopg

from bench.common import fresh_cluster, report, write_gap
from tests.integration.ha_helpers import Ledger, healthy, patch_config, read_view, wait_until


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--strict-sync", action="store_true", help="synchronous_mode_strict + a commit ledger")
    args = parser.parse_args()
    gaps: list[float] = []
    lost_total = 0
    with fresh_cluster() as cluster:
        dsn = cluster.dsn("primary")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_probe(id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
            conn.execute("CREATE TABLE ledger(id bigint PRIMARY KEY)")
        if args.strict_sync:
            patch_config(cluster, {"synchronous_mode": True, "synchronous_mode_strict": True})
        for run in range(args.runs):
            wait_until("a healthy cluster", lambda: healthy(cluster), 180)
            if args.strict_sync:
                wait_until("a sync standby", lambda: bool((v := read_view(cluster)).sync and v.sync.sync_standby), 60)
            primary = read_view(cluster).leader_name
            assert primary is not None
            with Ledger(dsn, start=1 + run * 1_000_000) as ledger:
                time.sleep(2)
                cluster.kill(primary)
                gap = write_gap(dsn)
                time.sleep(1)
            present = {r[0] for r in psycopg.connect(dsn, autocommit=True).execute("SELECT id FROM ledger")}
            lost = [i for i in ledger.acked if i not in present]
            lost_total += len(lost)
            gaps.append(gap)
            print(f"run {run + 1}: killed {primary}, writes resumed after {gap:.2f}s, "
                  f"{len(ledger.acked)} acked, {len(lost)} lost", flush=True)
            cluster.start(primary)
    report("failover_kill_primary_node", gaps, {"strict_sync": args.strict_sync, "acked_commits_lost": lost_total})


if __name__ == "__main__":
    main()
