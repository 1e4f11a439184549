"""A long run of the random fault schedules, spread over the machine's cores: each worker is the
ordinary test (tests/unit/test_sim_random.py) with its share of the schedules and a seed of its own.

    python -m tests.unit.sim.campaign --schedules 2000 [--jobs N] [--seed S]

Prints one JSON line: schedules, jobs, seeds, wall seconds, schedules per second, and each failed
worker's seed (rerun it alone with ``pytest tests/unit/test_sim_random.py --hypothesis-seed=SEED``
and the same SIM_EXAMPLES to see the shrunk schedule). Exits 1 when any worker failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    jobs = max(1, min(args.jobs, args.schedules))
    share = -(-args.schedules // jobs)
    started = time.monotonic()
    workers = []
    for i in range(jobs):
        seed = args.seed + i
        env = {**os.environ, "SIM_EXAMPLES": str(share), "SIM_TIMEOUT": "0"}  # no pytest timeout mid-schedule
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "--show-capture=no",
                   f"--hypothesis-seed={seed}", "tests/unit/test_sim_random.py"]
        workers.append((seed, subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True)))
    failed = []
    for seed, proc in workers:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            failed.append(seed)
            sys.stderr.write(f"--- worker with seed {seed} failed:\n{out[-20000:]}\n")
    wall = time.monotonic() - started
    print(json.dumps({"schedules": share * jobs, "jobs": jobs, "seeds": [s for s, _ in workers],
                      "wall_seconds": round(wall, 1), "schedules_per_second": round(share * jobs / wall, 1),
                      "failed_seeds": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
