"""Time from `demo up` on an empty directory to one primary and two streaming replicas (median).

    python -m bench.bootstrap --runs 3
"""

from __future__ import annotations

import argparse
import time

from bench.common import fresh_cluster, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    samples = []
    for run in range(args.runs):
        with fresh_cluster(up=False) as cluster:
            t0 = time.monotonic()
            cluster.up(wait=True, timeout=240)
            samples.append(time.monotonic() - t0)
            print(f"run {run + 1}: healthy after {samples[-1]:.2f}s", flush=True)
    report("bootstrap_three_nodes", samples)


if __name__ == "__main__":
    main()
