"""What the store's checks cost: `verify("size")` (what `meddata show` and `fsck
--sizes-only` run) against `verify("full")` (every load, `meddata fsck`) on one version,
back to back in one run.

    python benchmarks/verify_bench.py [--rows 300000]
"""

from __future__ import annotations

import argparse
import random
import string
import tempfile
import time

import pyarrow as pa


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from meddata.builders.pretrain import SCHEMA
    from meddata.store import Store

    rng = random.Random(0)
    letters = string.ascii_lowercase + " "
    with tempfile.TemporaryDirectory() as d:
        store = Store(d)
        with store.publisher("pretrain", "bench", SCHEMA) as pub:
            for start in range(0, args.rows, 50_000):
                n = min(50_000, args.rows - start)
                pub.write(pa.Table.from_pylist(
                    [{"id": f"d{start + i}", "source": "corpus", "lang": "en",
                      "task": "document", "split": "train",
                      "text": "".join(rng.choices(letters, k=300))} for i in range(n)],
                    SCHEMA))
        v = pub.version
        size = sum(e["bytes"] for e in v.listed_files())
        print(f"version: {v.rows:,} rows, {len(v.listed_files())} files, {size / 1e6:.1f} MB")
        for mode in ("size", "full"):
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                v.verify(mode)
                times.append(time.perf_counter() - t0)
            best = min(times)
            print(f"verify({mode!r}): best of {args.repeat} {best * 1000:,.1f} ms"
                  + (f" ({size / 1e6 / best:,.0f} MB/s)" if mode == "full" else ""))


if __name__ == "__main__":
    main()
