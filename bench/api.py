"""Sequential throughput and latency of GET /primary and /health on one node (median of N runs).

    python -m bench.api --requests 2000 --runs 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import statistics
import time

from bench.common import fresh_cluster
from tests.integration.ha_helpers import healthy, wait_until


def measure(host: str, port: int, path: str, count: int,
            context: ssl.SSLContext | None = None) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) over ``count`` sequential requests on fresh connections (a TLS
    handshake each, with ``context``)."""
    latencies = []
    t0 = time.perf_counter()
    for _ in range(count):
        start = time.perf_counter()
        conn: http.client.HTTPConnection = (
            http.client.HTTPSConnection(host, port, timeout=5, context=context) if context
            else http.client.HTTPConnection(host, port, timeout=5))
        conn.request("GET", path)
        conn.getresponse().read()
        conn.close()
        latencies.append(time.perf_counter() - start)
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return count / elapsed, latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.99)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with fresh_cluster() as cluster:
        primary = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
        api = next(m["api_url"] for m in cluster.status()["members"] if m["name"] == primary)
        hostport = api.split("//", 1)[1].split("/", 1)[0]
        host, port = hostport.rsplit(":", 1)
        context = ssl.create_default_context(cafile=cluster.secrets.ca_file) if api.startswith("https") else None
        out = {}
        for path in ("/primary", "/health"):
            runs = [measure(host, int(port), path, args.requests, context) for _ in range(args.runs)]
            out[path] = {
                "rps_median": round(statistics.median(r[0] for r in runs)),
                "p50_ms_median": round(statistics.median(r[1] for r in runs), 2),
                "p99_ms_median": round(statistics.median(r[2] for r in runs), 2),
            }
        print(json.dumps({"benchmark": "api_sequential", "requests": args.requests, "runs": args.runs, **out}))


if __name__ == "__main__":
    main()
