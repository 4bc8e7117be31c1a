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
