"""Validating a large sft version: wall time and peak RSS of `validate` on N rows.

    python benchmarks/validate_bench.py [--rows 1000000] [--sample N]

Publishes a synthetic sft version of N rows (English and Chinese conversations) into a
temporary store, then runs meddata.validation.run.validate on it in a fresh process and
prints the wall time, the peak RSS of that process, and the result.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import measure  # noqa: E402


def publish(store_dir: str, rows: int) -> str:
    import pyarrow as pa

    from meddata.schema import KINDS
    from meddata.store import Store

    schema = KINDS["sft"]

    def batches(size: int = 100_000):
        for start in range(0, rows, size):
            n = min(size, rows - start)
            ids = [f"bench/{i:08d}" for i in range(start, start + n)]
            zh = [i % 3 == 0 for i in range(start, start + n)]
            msgs = [[{"role": "user", "content": ("患者发热咳嗽三天，最可能的诊断是什么？" if z else
                                                   f"Question {i}: which drug treats condition "
                                                   f"{i % 97} in adults?")},
                     {"role": "assistant", "content": ("答案是C。社区获得性肺炎。" if z else
                                                        "The answer is C. Drug C, because it "
                                                        "targets the cause.")}]
                    for i, z in zip(range(start, start + n), zh)]
            yield pa.table({"id": ids, "source": ["bench"] * n,
                            "lang": ["zh" if z else "en" for z in zh], "task": ["mcq"] * n,
                            "split": ["train"] * n, "messages": msgs}, schema=schema)

    return Store(store_dir).publish("sft", "bench", schema, batches()).ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--sample", type=int, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ref = publish(tmp, args.rows)
        print(f"published {ref} ({args.rows:,} rows) in {time.perf_counter() - t0:.1f} s")
        res = measure(f"""
            from meddata.store import Store
            from meddata.validation.run import validate
            r = validate(Store({tmp!r}).resolve({ref!r}), sample={args.sample!r})
            result = {{"success": r["success"], "mode": r["mode"], "checked": r["rows_checked"],
                      "checks": len(r["checks"])}}
        """)
    print(f"validate: {res['seconds']:.1f} s wall (including imports), peak RSS "
          f"{res['peak_rss_mb']:.0f} MB, mode {res['mode']}, {res['checked']:,} rows checked, "
          f"{res['checks']} checks, success {res['success']}")


if __name__ == "__main__":
    main()
