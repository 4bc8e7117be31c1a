"""Start-up cost of the commands a user types most: `meddata --help` and `meddata ls` (on a
store holding the examples' versions), each run N times back to back in fresh processes;
prints the median wall time and the ls / --help ratio.

    flock /tmp/meddata-bench.lock python benchmarks/cli_latency.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    meddata = [sys.executable, "-m", "meddata.cli"]
    with tempfile.TemporaryDirectory() as store:
        for kind in ("sft", "preference"):
            subprocess.run([*meddata, "--store", store, "build", kind, "--quiet"], check=True,
                           stdout=subprocess.DEVNULL)
        commands = {"--help": [*meddata, "--help"], "ls": [*meddata, "--store", store, "ls"],
                    "ls --json": [*meddata, "--store", store, "ls", "--json"]}
        times: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(args.runs):  # interleaved, so load changes hit every command alike
            for name, argv in commands.items():
                times[name].append(wall(argv))
    help_median = statistics.median(times["--help"])
    print(f"CPUs: {os.cpu_count()}; load average: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; {args.runs} runs each")
    for name, t in times.items():
        median = statistics.median(t)
        print(f"meddata {name:<10} median {median:.3f} s  ({median / help_median:.2f}x --help)")


if __name__ == "__main__":
    main()
