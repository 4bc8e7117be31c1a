"""The Ray engine against the local one, and against itself on more workers: the pretrain
build (--pack, on the streaming benchmark's generated corpus) and near dedup (on the dedup
benchmark's generated corpus), run back to back on the local engine, then on a Ray cluster
of this machine with 1, 2 and every available worker CPU (`ray start --head --num-cpus N`,
joined with --ray-address, as on a real cluster; `--cpus 1,2,4,8,16` on a bigger machine).

For each run it prints the wall time, the speedup over one worker, the CPU seconds of the
command's own process (the driver), of the Ray task workers and of Ray's own processes
(raylet, GCS, ...), the driver's share of all of them, the command's peak RSS and the peak
RSS of the largest worker, and it checks that every run published the same version id.

    python benchmarks/ray_bench.py                 # 100,000 documents and rows
    python benchmarks/ray_bench.py --scale 5       # 500,000
    python benchmarks/ray_bench.py --only pretrain --cpus 1,2,4,8,16
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import run_tree  # noqa: E402
from build_bench import convert, generate_corpus, tokenizer_folder  # noqa: E402
from dedup_bench import write_corpus  # noqa: E402


class WorkerPeaks:
    """The peak RSS of each Ray worker process (`ray::...`) and the CPU time of every Ray
    process (task workers, and Ray's own: raylet, GCS, agents), polled while a run goes."""

    def __init__(self, poll: float = 0.5):
        self.poll, self.peaks = poll, {}
        self.cpu: dict[int, float] = {}      # task workers: CPU seconds as last polled
        self.own: dict[int, float] = {}      # Ray's own processes
        self.start: dict[int, float] = {}    # every process's CPU seconds when first seen
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        import psutil

        first = True
        while not self.done.is_set():
            for p in psutil.process_iter(["pid", "name", "cmdline"]):
                try:
                    name = p.info["name"] or ""
                    cmd = " ".join(p.info["cmdline"] or [])
                    worker = name.startswith("ray::") or cmd.startswith("ray::")
                    own = not worker and ("raylet" in name or "gcs_server" in name or
                                          "/ray/" in cmd or "ray/_private" in cmd)
                    if not (worker or own):
                        continue
                    times = p.cpu_times()
                    used = times.user + times.system
                    self.start.setdefault(p.pid, used if first else 0.0)
                    if worker:
                        self.peaks[p.pid] = max(self.peaks.get(p.pid, 0), p.memory_info().rss)
                    (self.own if own else self.cpu)[p.pid] = used
                except psutil.Error:
                    pass
            first = False
            self.done.wait(self.poll)

    def __enter__(self) -> WorkerPeaks:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def largest_mb(self) -> float:
        return max(self.peaks.values(), default=0) / 2**20

    def cpu_seconds(self) -> float:
        """CPU seconds the task workers used during the run (as last polled)."""
        return sum(v - self.start.get(pid, 0.0) for pid, v in self.cpu.items())

    def own_seconds(self) -> float:
        """CPU seconds Ray's own processes used during the run."""
        return sum(v - self.start.get(pid, 0.0) for pid, v in self.own.items())


RAY = str(Path(sys.executable).parent / "ray")  # the ray command of this environment


def ray_cluster(cpus: int):
    """A Ray head on this machine with `cpus` CPUs (what `ray start --head` does on a
    cluster's first node)."""
    subprocess.run([RAY, "stop", "--force"], capture_output=True)
    subprocess.run([RAY, "start", "--head", f"--num-cpus={cpus}", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True)


def meddata(store: Path, engine: str, *args: str) -> dict:
    extra = ["--engine", engine] + (["--ray-address", "auto"] if engine == "ray" else [])
    return run_tree([sys.executable, "-m", "meddata.cli", "--store", str(store), *args,
                     *extra, "--quiet"], HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def compare(label: str, store: Path, kind: str, args: list[str], unit: str, amount,
            cpus_list: list[int]) -> list[str]:
    """Local, then Ray with each worker count in `cpus_list`: table lines."""
    from meddata.store import Store

    rows, ids = [], {}
    one_worker = None
    for engine, cpus in (("local", None), *(("ray", c) for c in cpus_list)):
        name = f"bench-{engine}{cpus or ''}"
        shutil.rmtree(store / ".cache" / "tokens", ignore_errors=True)  # cold, every run
        if cpus:
            ray_cluster(cpus)
        try:
            with WorkerPeaks() as workers:
                r = meddata(store, engine, *args, "--name", name)
        finally:
            if cpus:
                subprocess.run([RAY, "stop", "--force"], capture_output=True)
        v = Store(store).resolve(f"{kind}/{name}")
        ids[name] = v.id
        n = amount(v)
        if cpus == 1:
            one_worker = r["seconds"]
        speedup = f"{one_worker / r['seconds']:.2f}x" if cpus and one_worker else ""
        who = "local engine" if engine == "local" else f"Ray, {cpus} worker CPU{'s' * (cpus > 1)}"
        if engine == "ray":
            tasks, own = workers.cpu_seconds(), workers.own_seconds()
            share = f"{100 * r['cpu_seconds'] / (r['cpu_seconds'] + tasks + own):.1f} %"
            cpu = f"{tasks:.1f} | {own:.1f} | {share}"
            worker_rss = f"{workers.largest_mb():,.0f}"
        else:
            cpu, worker_rss = " | | ", ""
        rows.append(f"| {label}, {who} | {r['seconds']:.1f} | {speedup} | "
                    f"{r['cpu_seconds']:.1f} | {cpu} | {r['peak_rss_mb']:,.0f} | "
                    f"{worker_rss} | {n / r['seconds']:,.0f} {unit}/s |")
        print(rows[-1], flush=True)
    same = len(set(ids.values())) == 1
    rows.append(f"| {label}: the same version id on every run | {'yes' if same else 'NO'}: "
                f"{', '.join(sorted(set(ids.values())))} | | | | | | | | |")
    print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--only", default="pretrain,dedup")
    ap.add_argument("--work", default="/tmp/meddata-ray-bench")
    ap.add_argument("--cpus", default=None,
                    help="worker CPU counts of the Ray runs (default: 1, 2 and all)")
    args = ap.parse_args()
    import os

    cpus_list = [int(c) for c in args.cpus.split(",")] if args.cpus else \
        sorted({1, 2, os.cpu_count() or 1})
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    lines = ["| run | wall s | speedup over 1 worker | driver CPU s | task workers CPU s | "
             "Ray's own CPU s | driver share of CPU | driver peak RSS MB | largest worker "
             "peak RSS MB | throughput |", "|---|---|---|---|---|---|---|---|---|---|"]
    if "pretrain" in args.only:
        docs = int(100_000 * args.scale)
        tok, which = tokenizer_folder(work)
        print(f"tokenizer: {which}", flush=True)
        data, store = work / f"corpus-{docs}.jsonl", work / f"store-pretrain-{docs}"
        if not data.exists():
            generate_corpus(data, docs)
        if not (store / "canonical" / "corpus").exists():
            convert(store, "corpus", data, "corpus")
        lines += compare(f"build pretrain --pack, {docs:,} documents", store, "pretrain",
                         ["build", "pretrain", "canonical/corpus", "--pack", "--tokenizer", tok,
                          "--max-tokens", "2048", "--no-report"], "tokens",
                         lambda v: next(s for s in v.manifest["stages"]
                                        if s["stage"] == "pack")["tokens"], cpus_list)
    if "dedup" in args.only:
        rows = int(100_000 * args.scale)
        store = work / f"store-dedup-{rows}"
        if not (store / "canonical" / "corpus").exists():
            import pyarrow.parquet as pq

            from meddata.schema import CANONICAL
            from meddata.store import Store

            data, _ = write_corpus(rows, work)
            Store(store).publish("canonical", "corpus", CANONICAL,
                                 pq.ParquetFile(data).iter_batches(batch_size=8192))
        lines += compare(f"near dedup, {rows:,} rows", store, "canonical",
                         ["dedup", "canonical/corpus"], "rows",
                         lambda v: v.manifest["stages"][0]["rows_in"], cpus_list)
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
