"""GET /primary latency on the primary's REST API while slow and long clients hold connections.

    python -m bench.slow_clients --rounds 3

Per round, against a fresh demo cluster's primary: 64 slowloris sockets (a header line every 3 s,
from two client addresses), 8 control requests trickling their body over 60 s, and a stream of
authenticated POST /reload keeping the control lane busy; meanwhile 300 GET /primary on fresh
connections (as HAProxy checks) are timed. Reports the median and p99 per round and whether HAProxy
ever marked the primary down (its chkdown counter). A figure, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import csv
import io
import socket
import ssl
import statistics
import threading
import time

from appliance.demo.cluster import DemoCluster
from appliance.net.http import Client, request
from bench.common import fresh_cluster, report
from tests.integration.ha_helpers import healthy, wait_until


def _chkdown(cluster: DemoCluster, server: str) -> int:
    text = request(cluster.status()["proxy"]["stats_url"] + ";csv").body.decode()
    for row in csv.DictReader(io.StringIO(text.lstrip("# "))):
        if row["pxname"] == "primary" and row["svname"] == server:
            return int(row.get("chkdown") or 0)
    return 0


def _attack(host: str, context: ssl.SSLContext, stop: threading.Event, source: str, head: bytes,
            trickle: bytes, every: float) -> None:
    try:
        with socket.create_connection((host, 8008), timeout=90, source_address=(source, 0)) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(head)
            while not stop.wait(every):
                tls.sendall(trickle)
    except OSError:
        pass  # cut off by the server's deadlines, as it should be


def one_round(cluster: DemoCluster, requests: int) -> tuple[list[float], int]:
    primary = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    host = cluster.layout.host(primary)
    context = ssl.create_default_context(cafile=cluster.secrets.ca_file)
    stop = threading.Event()
    attackers = [(f"127.0.0.{80 + i % 2}", b"GET /primary HTTP/1.1\r\n", b"X-Slow: 1\r\n", 3.0) for i in range(64)]
    attackers += [("127.0.0.82", b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n", b" ", 1.0)
                  for _ in range(8)]
    threads = [threading.Thread(target=_attack, args=(host, context, stop, *a), daemon=True) for a in attackers]

    def reloads() -> None:
        client = cluster.api_client()
        while not stop.is_set():
            request(f"https://{host}:8008/reload", client, method="POST", timeout=10)
            time.sleep(0.05)

    threads.append(threading.Thread(target=reloads, daemon=True))
    before = _chkdown(cluster, primary)
    for t in threads:
        t.start()
    time.sleep(2)
    probe = Client(cafile=cluster.secrets.ca_file)
    latencies = []
    try:
        for _ in range(requests):
            started = time.monotonic()
            status = request(f"https://{host}:8008/primary", probe, timeout=5).status
            latencies.append(time.monotonic() - started if status == 200 else float("inf"))
            time.sleep(0.02)
    finally:
        stop.set()
    return latencies, _chkdown(cluster, primary) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    p99s, medians, downs = [], [], 0
    with fresh_cluster() as cluster:
        for run in range(args.rounds):
            latencies, down = one_round(cluster, args.requests)
            p99 = statistics.quantiles(latencies, n=100)[98]
            p99s.append(p99)
            medians.append(statistics.median(latencies))
            downs += down
            print(f"round {run + 1}: median {medians[-1] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
                  f"primary marked down {down} times", flush=True)
            time.sleep(6)  # let the attackers' connections drain
    report("get_primary_p99_under_slow_clients", p99s,
           {"median_of_medians_ms": round(statistics.median(medians) * 1000, 1), "haproxy_marked_primary_down": downs})


if __name__ == "__main__":
    main()
