"""Helpers for the benchmark scripts: run a Python snippet in a fresh process and read its
wall time and peak RSS (so one measurement cannot inflate the next)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


def measure(code: str, **env_vars: str) -> dict:
    """Run `code` in a new interpreter; it must print one JSON object as its last line.
    Adds `peak_rss_mb` (the child's ru_maxrss)."""
    wrapper = textwrap.dedent("""
        import json, resource, time
        __t0 = time.perf_counter()
        {code}
        __out = dict(result)
        __out.setdefault("seconds", time.perf_counter() - __t0)
        __out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(__out))
    """).format(code=textwrap.dedent(code).strip())
    proc = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True,
                          env={**os.environ, **env_vars})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_tree(argv: list[str], poll: float = 0.1, **env_vars: str) -> dict:
    """Run a command; wall time, CPU time (user + sys of the process and every child it
    waited for) and the peak of the summed RSS of its whole process tree (psutil, polled)."""
    import resource
    import threading
    import time

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env_vars})
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                total = 0
                for p in tree:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], total)
            except psutil.Error:
                return
            done.wait(poll)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    done.set()
    watcher.join()
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{(err or out)[-3000:]}")
    return {"seconds": seconds,
            "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "peak_rss_mb": peak[0] / 2**20, "stdout": out}
