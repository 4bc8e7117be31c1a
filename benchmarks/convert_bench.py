"""Conversion speed and memory on a generated MedMCQA-layout JSON Lines file.

    python benchmarks/convert_bench.py [--rows 200000] [--scale 5]

The conversion is what `meddata convert medmcqa FILE` does, including the scan that
decides whether `cop` is 0- or 1-based. Prints rows/s, the ratio of conversion time to
polars.read_ndjson on the same file, and the peak RSS of the conversion process; then
repeats at `scale` times the rows and prints both peak RSS figures. Each measurement runs in a fresh process. Targets (issue 3): ratio <= 3,
peak RSS within 20 % from 1x to 5x. It also times, on their own, three steps every
conversion must do (parse the JSON, sha1 each raw line for lineage, write the canonical rows
as zstd Parquet with content-defined chunking), to show the floor on this machine.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import measure  # noqa: E402

SUBJECTS = ["Anatomy", "Physiology", "Biochemistry", "Pharmacology", "Pathology", "Medicine",
            "Surgery", "Pediatrics", "Microbiology", "Dental"]
WORDS = ("patient presents with fever cough pain dose mg nerve artery vitamin deficiency "
         "syndrome treatment diagnosis chronic acute renal hepatic cardiac drug of choice "
         "most common site feature except true false following").split()


def generate(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(rows):
            q = " ".join(rng.choices(WORDS, k=rng.randint(8, 25))) + "?"
            rec = {"question": q, "exp": " ".join(rng.choices(WORDS, k=rng.randint(0, 60))) or None,
                   "cop": rng.randint(1, 4), "opa": " ".join(rng.choices(WORDS, k=3)),
                   "opb": " ".join(rng.choices(WORDS, k=3)), "opc": " ".join(rng.choices(WORDS, k=4)),
                   "opd": " ".join(rng.choices(WORDS, k=2)), "subject_name": rng.choice(SUBJECTS),
                   "topic_name": None, "id": f"{i:08x}-bench", "choice_type": "single"}
            f.write(json.dumps(rec) + "\n")


def run(rows: int, work: Path) -> dict:
    data = work / f"medmcqa-{rows}.jsonl"
    generate(data, rows)
    polars = measure(f"""
        import polars as pl
        df = pl.read_ndjson({str(data)!r})
        result = {{"rows": df.height}}
    """)
    conv = measure(f"""
        from meddata import convert
        from meddata.converters import get
        from meddata.store import Store
        res = convert.publish(get("medmcqa")(), [{str(data)!r}],
                          Store({str(work / ("store-" + str(rows)))!r}), progress=False)
        result = {{"rows": res.rows_out}}
    """)
    floor = measure(f"""
        import time
        import duckdb, polars as pl, pyarrow as pa, pyarrow.parquet as pq
        from meddata.store import Store, dictionary_columns, ROW_GROUP_ROWS
        version = Store({str(work / ("store-" + str(rows)))!r}).resolve("canonical/medmcqa")
        table = pa.concat_tables(pq.read_table(p) for p in version.shard_paths())
        t = time.perf_counter()
        pl.read_ndjson({str(data)!r})
        parse = time.perf_counter() - t
        t = time.perf_counter()
        lines = pl.read_csv({str(data)!r}, has_header=False, separator="\\x1f", quote_char=None,
                            schema={{"raw": pl.String}}).to_arrow()
        duckdb.sql("SELECT sha1(raw) FROM lines").to_arrow_table()
        sha1 = time.perf_counter() - t
        t = time.perf_counter()
        with pq.ParquetWriter({str(work / "floor.parquet")!r}, table.schema, compression="zstd",
                              use_dictionary=dictionary_columns(table.schema),
                              use_content_defined_chunking=True) as w:
            w.write_table(table, row_group_size=ROW_GROUP_ROWS)
        write = time.perf_counter() - t
        result = {{"parse": parse, "sha1": sha1, "write": write}}
    """)
    return {"rows": rows, "bytes": data.stat().st_size, "convert_s": conv["seconds"],
            "polars_s": polars["seconds"], "rss_mb": conv["peak_rss_mb"],
            "polars_rss_mb": polars["peak_rss_mb"], "rows_out": conv["rows"], "floor": floor}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--scale", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(args.rows, Path(tmp)), run(args.rows * args.scale, Path(tmp))]
    for r in results:
        print(f"{r['rows']:>9,} rows ({r['bytes'] / 1e6:.0f} MB): convert {r['convert_s']:.2f} s "
              f"= {r['rows'] / r['convert_s']:,.0f} rows/s; polars.read_ndjson "
              f"{r['polars_s']:.2f} s; ratio {r['convert_s'] / r['polars_s']:.2f}; "
              f"peak RSS {r['rss_mb']:.0f} MB (polars {r['polars_rss_mb']:.0f} MB)")
        f = r["floor"]
        print(f"    required steps alone, one after another: parse {f['parse']:.2f} s + sha1 "
              f"per line {f['sha1']:.2f} s + zstd/CDC Parquet write {f['write']:.2f} s = "
              f"{f['parse'] + f['sha1'] + f['write']:.2f} s (imports excluded)")
    a, b = results
    print(f"peak RSS {a['rss_mb']:.0f} MB at {a['rows']:,} rows vs {b['rss_mb']:.0f} MB at "
          f"{b['rows']:,} rows: {100 * (b['rss_mb'] / a['rss_mb'] - 1):+.1f} %")


if __name__ == "__main__":
    main()
