"""What mixing costs a build: the same sft build of two MedMCQA-layout sources with and
without a `mix` (by rows and by tokens, the general group repeated up), back to back, each
in a fresh process.

    python benchmarks/mix_bench.py [--rows 200000]

The inputs (`--rows` medical rows and a quarter as many general rows) are generated and
converted into a store first (not timed). Each line: wall seconds, CPU seconds, peak RSS of
the process tree (psutil) and rows out per second; the last column is the wall time
against the build without a mix.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import run_tree  # noqa: E402
from convert_bench import generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="meddata-mix-bench-"))
    try:
        store = work / "store"
        for name, rows, seed in (("med", args.rows, 1), ("gen", args.rows // 4, 2)):
            path = work / f"{name}.jsonl"
            generate(path, rows, seed)
            # ids of their own: the generator numbers every file's rows alike
            path.write_text(path.read_text().replace('-bench"', f'-{name}"'))
            run_tree([sys.executable, "-m", "meddata.cli", "--store", str(store), "convert",
                      "medmcqa", str(path), "--name", name, "--quiet"])
        sources = [{"ref": "canonical/med", "group": "medical"},
                   {"ref": "canonical/gen", "group": "general"}]
        total = int(args.rows * 1.2)
        recipes = {
            "no mix": {"sources": sources},
            "mix by rows": {"sources": sources, "mix": {
                "by": "rows", "total": total, "shares": {"medical": 0.7, "general": 0.3}}},
            "mix by tokens": {"sources": sources, "mix": {
                "by": "tokens", "shares": {"medical": 0.6, "general": 0.4}}},
        }
        base = None
        print(f"{'build':<16}{'wall s':>8}{'cpu s':>8}{'peak MB':>9}{'rows out':>10}"
              f"{'rows/s':>9}{'vs no mix':>10}")
        for label, recipe in recipes.items():
            path = work / f"{label.replace(' ', '-')}.yaml"
            path.write_text(yaml.safe_dump({"name": label.replace(" ", "-"), **recipe}))
            got = run_tree([sys.executable, "-m", "meddata.cli", "--store", str(store),
                            "build", "sft", "--recipe", str(path), "--no-report", "--quiet"])
            version = sorted((store / "sft" / label.replace(" ", "-")).glob("*/manifest.json"))
            rows = json.loads(version[-1].read_text())["rows"]
            base = base or got["seconds"]
            print(f"{label:<16}{got['seconds']:>8.1f}{got['cpu_seconds']:>8.1f}"
                  f"{got['peak_rss_mb']:>9.0f}{rows:>10,}{rows / got['seconds']:>9,.0f}"
                  f"{got['seconds'] / base:>9.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
