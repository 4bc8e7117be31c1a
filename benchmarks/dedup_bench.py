"""Near-duplicate detection on a synthetic medical-QA-like corpus with planted duplicates:
meddata against rensa and datatrove on the same corpus, each in a fresh process.

    python benchmarks/dedup_bench.py [--rows 100000,1000000] [--thresholds 0.65,0.7]
                                     [--skip rensa,datatrove] [--decontam]

The corpus: MCQ-like rows (a question of 15-40 words and four options) in English and
Chinese. A fifth of the base items get 1-3 planted copies, each with random edits of up to
10 % of its tokens (substitution, deletion, insertion), whitespace and punctuation noise,
and its options reordered. Ground truth: every pair inside a planted group.

Contenders (each reads the same corpus; the timing starts after it is generated):
- meddata: its dedup step (meddata.steps.dedup.DedupStep) over the corpus as Parquet batches,
  as `meddata dedup` runs it.
- rensa (pip install rensa): its Rust MinHash over the same 3-token shingles and its LSH
  (RMinHashLSH) with the same bands, every candidate verified by exact Jaccard and answer
  agreement, as meddata does.
- datatrove (pip install datatrove): its four-stage MinHash dedup with its defaults.
All are scored on documents: precision is the share of dropped documents that have a
planted twin, recall the share of the droppable planted copies (all but one per group) that
were dropped. Peak RSS is each contender's own process.

--decontam also times decontamination of the corpus against benchmark-sized test sets
(MedQA 1,273, MedMCQA 4,183 and PubMedQA 500 items, generated the same way).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from itertools import combinations
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _util import measure  # noqa: E402

EN = ("patient presents with fever cough chest pain dyspnea hypertension diabetes renal "
      "failure hepatic cirrhosis anemia deficiency vitamin nerve artery vein muscle bone "
      "fracture infection bacterial viral fungal drug dose mg daily oral intravenous "
      "treatment diagnosis most likely next step management first line contraindicated "
      "indicated chronic acute syndrome disease year old man woman child infant elderly "
      "history examination laboratory shows elevated decreased normal serum level").split()
ZH = list("患者男性女性岁反复发热咳嗽胸痛呼吸困难高血压糖尿病肾衰竭肝硬化贫血维生素缺乏神经动脉"
          "静脉肌肉骨折感染细菌病毒真菌药物剂量口服静脉治疗诊断最可能下一步处理首选禁忌慢性急性"
          "综合征疾病病史检查实验室升高降低正常血清水平")
PUNCT = [",", ".", ";", "?", "!", "，", "。", "、"]


def make_item(rng: random.Random, zh: bool) -> dict:
    vocab = ZH if zh else EN
    q = rng.choices(vocab, k=rng.randint(15, 40))
    opts = [rng.choices(vocab, k=rng.randint(1, 4)) for _ in range(4)]
    return {"zh": zh, "q": q, "opts": opts, "answer": rng.randrange(4)}


def perturb(rng: random.Random, item: dict) -> dict:
    vocab = ZH if item["zh"] else EN
    q = list(item["q"])
    for _ in range(int(len(q) * rng.uniform(0, 0.10))):
        op, pos = rng.random(), rng.randrange(len(q))
        if op < 0.5:
            q[pos] = rng.choice(vocab)
        elif op < 0.75 and len(q) > 5:
            del q[pos]
        else:
            q.insert(pos, rng.choice(vocab))
    order = list(range(4))
    rng.shuffle(order)
    return {**item, "q": q, "opts": [item["opts"][i] for i in order],
            "answer": order.index(item["answer"]), "noise": True}


def render(rng: random.Random, item: dict) -> tuple[str, list[str], str]:
    sep = "" if item["zh"] else " "
    words = []
    for w in item["q"]:
        words.append(w)
        if item.get("noise") and rng.random() < 0.1:
            words.append(rng.choice(PUNCT))
    question = sep.join(words)
    if item.get("noise"):
        question = question.replace(" ", "  ") if rng.random() < 0.5 else " " + question + " "
    opts = [sep.join(o) for o in item["opts"]]
    return question, opts, opts[item["answer"]]


def corpus(rows: int, seed: int = 0, prefix: str = "row", source: str = "bench"):
    """(rows as canonical dicts, the planted groups of ids)."""
    rng = random.Random(seed)
    out, groups = [], []
    while len(out) < rows:
        base = make_item(rng, zh=rng.random() < 0.3)
        members = [base] + ([perturb(rng, base) for _ in range(rng.randint(1, 3))]
                            if rng.random() < 0.2 else [])
        ids = []
        for m in members[: rows - len(out)]:
            q, opts, ans = render(rng, m)
            i = len(out)
            out.append({"id": f"{prefix}{i:08d}", "source": source, "subset": "s",
                        "split": "train", "task": "mcq", "lang": "zh" if m["zh"] else "en",
                        "question": q, "context": None, "rationale": None, "response": None,
                        "meta": "{}",
                        "options": [{"label": "ABCD"[k], "text": t} for k, t in enumerate(opts)],
                        "answer": ans, "answer_label": "ABCD"[m["answer"]],
                        "raw_sha1": f"{seed:08x}{i:032x}"})
            ids.append(out[-1]["id"])
        if len(ids) > 1:
            groups.append(ids)
    return out, groups


def write_corpus(rows: int, folder: Path) -> tuple[Path, Path]:
    """The corpus as Parquet (canonical schema) and its planted groups as JSON."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from meddata.schema import CANONICAL

    data, groups = folder / f"corpus-{rows}.parquet", folder / f"groups-{rows}.json"
    if not data.exists():
        out, planted = corpus(rows)
        with pq.ParquetWriter(data, CANONICAL) as w:
            for s in range(0, len(out), 50_000):
                w.write_table(pa.Table.from_pylist(out[s:s + 50_000], schema=CANONICAL))
        groups.write_text(json.dumps(planted))
    return data, groups


def doc_scores(removed: set[str], groups: list[list[str]]) -> tuple[float, float]:
    in_group = {m for g in groups for m in g}
    removable = sum(len(g) - 1 for g in groups)
    removed_in_groups = sum(min(len(g) - 1, len(set(g) & removed)) for g in groups)
    precision = len(removed & in_group) / len(removed) if removed else 1.0
    return precision, removed_in_groups / removable if removable else 1.0


MEDDATA = """
import json, tempfile, time
from pathlib import Path
import pyarrow.parquet as pq
from meddata.steps.dedup import DedupConfig, DedupStep
from meddata.engines.local import chain as run
from meddata.steps import Ledger
removed = []
def sink(rejects):
    removed.extend(json.loads(r["raw"])["id"] for r in rejects)
t0 = time.perf_counter()
step = DedupStep(DedupConfig(threshold={threshold}))
with tempfile.TemporaryDirectory() as tmp:
    out = run(lambda replay: pq.ParquetFile({data!r}).iter_batches(batch_size=8192),
              [step], Ledger(sink), Path(tmp))
    kept = sum(b.num_rows for b in out)
seconds = time.perf_counter() - t0
Path({removed_file!r}).write_text(json.dumps(removed))
result = {{"seconds": seconds, "kept": kept}}
"""

RENSA = """
import json, time
import numpy as np
import pyarrow.parquet as pq
from rensa import RMinHash, RMinHashLSH
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from meddata.minhash import item_frame
import polars as pl
df = pl.from_arrow(pq.read_table({data!r}))
ids = df["id"].to_list()
t0 = time.perf_counter()
items = item_frame(df)
answers = items["answer"].to_list()
shingles = []
for toks in items["tokens"].to_list():
    shingles.append({{" ".join(toks[i:i + 3]) for i in range(max(1, len(toks) - 2))}})
long = [i for i, t in enumerate(items["tokens"].to_list()) if len(t) >= 8]
lsh = RMinHashLSH(threshold={threshold}, num_perm=125, num_bands=25)
hashes = []
for i in long:
    m = RMinHash(num_perm=125, seed=1)
    m.update(list(shingles[i]))
    hashes.append(m)
lsh.insert_many(hashes)
ei, ej = [], []
for k, cands in enumerate(lsh.query_all(hashes)):
    i = long[k]
    for c in cands:
        j = long[c]
        if j <= i or answers[i] != answers[j]:
            continue
        a, b = shingles[i], shingles[j]
        if len(a & b) / len(a | b) >= {threshold}:
            ei.append(i); ej.append(j)
keys = {{}}
for i, k in enumerate(zip(items["key"].to_list(), answers)):  # exact duplicates
    first = keys.setdefault(k, i)
    if first != i:
        ei.append(first); ej.append(i)
n = len(ids)
_, labels = connected_components(coo_matrix((np.ones(len(ei)), (ei, ej)), shape=(n, n)),
                                 directed=False)
seen, removed = set(), []
for i, lab in enumerate(labels):
    if lab in seen:
        removed.append(ids[i])
    seen.add(lab)
seconds = time.perf_counter() - t0
from pathlib import Path
Path({removed_file!r}).write_text(json.dumps(removed))
result = {{"seconds": seconds}}
"""

DATATROVE = """
import glob, gzip, json, tempfile, time
import pyarrow.parquet as pq
from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets,
    MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.writers.jsonl import JsonlWriter
from datatrove.utils.hashing import HashConfig
import polars as pl
from meddata.minhash import item_frame
df = pl.from_arrow(pq.read_table({data!r}))
texts = item_frame(df)["key"].to_list()
docs = [Document(text=t, id=i) for t, i in zip(texts, df["id"].to_list())]
config = MinhashConfig(hash_config=HashConfig(hash_fc="sha1", precision=64))
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    for pipeline, tasks in (
        ([docs, MinhashDedupSignature(output_folder=f"{{tmp}}/sig", config=config)], 1),
        ([MinhashDedupBuckets(input_folder=f"{{tmp}}/sig", output_folder=f"{{tmp}}/buckets",
                              config=config)], config.num_buckets),
        ([MinhashDedupCluster(input_folder=f"{{tmp}}/buckets", output_folder=f"{{tmp}}/remove",
                              config=config)], 1),
        ([docs, MinhashDedupFilter(input_folder=f"{{tmp}}/remove",
                                   exclusion_writer=JsonlWriter(f"{{tmp}}/removed"))], 1),
    ):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=2,
                              logging_dir=f"{{tmp}}/logs/{{len(pipeline)}}{{tasks}}",
                              skip_completed=False).run()
    seconds = time.perf_counter() - t0
    removed = []
    for path in glob.glob(f"{{tmp}}/removed/*"):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as f:
            removed += [json.loads(line)["id"] for line in f]
from pathlib import Path
Path({removed_file!r}).write_text(json.dumps(removed))
result = {{"seconds": seconds}}
"""

DECONTAM = """
import tempfile, time
from pathlib import Path
import pyarrow as pa
import pyarrow.parquet as pq
from meddata.steps.decontam import DecontamConfig, DecontamStep
from meddata.engines.local import chain as run
from meddata.steps import Ledger
class Bench:
    ref = "bench"
    def iter_batches(self, verify="full"):
        yield from pq.ParquetFile({bench!r}).iter_batches(batch_size=8192)
t0 = time.perf_counter()
step = DecontamStep([Bench()], DecontamConfig())
with tempfile.TemporaryDirectory() as tmp:
    kept = sum(b.num_rows for b in run(
        lambda replay: pq.ParquetFile({data!r}).iter_batches(batch_size=8192), [step],
        Ledger(), Path(tmp)))
result = {{"seconds": time.perf_counter() - t0, "kept": kept,
           "contaminated": step.report()["summary"]["contaminated"]}}
"""


def bench_sets(folder: Path, data: Path) -> Path:
    """Benchmark-sized test sets: 5,956 items like the corpus's, 500 of them copies of
    corpus rows (so decontamination has something to find)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from meddata.schema import CANONICAL

    path = folder / "bench-sets.parquet"
    if not path.exists():
        rows, _ = corpus(5_956 - 500, seed=7, prefix="test", source="medqa")
        copies = pq.read_table(data).slice(0, 500).to_pylist()
        for i, r in enumerate(copies):
            r["id"] = f"copy{i:05d}"
        pq.write_table(pa.Table.from_pylist(rows + copies, schema=CANONICAL), path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="100000")
    ap.add_argument("--thresholds", default="0.65")
    ap.add_argument("--skip", default="", help="Contenders to skip: rensa, datatrove.")
    ap.add_argument("--decontam", action="store_true")
    ap.add_argument("--work", default="/tmp/meddata-dedup-bench")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    lines = ["| rows | tool | threshold | seconds | docs/s | doc precision | doc recall "
             "| peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    for rows in [int(x) for x in args.rows.split(",")]:
        data, groups_file = write_corpus(rows, work)
        groups = json.loads(groups_file.read_text())
        pairs = sum(len(list(combinations(g, 2))) for g in groups)
        print(f"corpus: {rows:,} rows, {pairs:,} planted duplicate pairs", flush=True)
        for th in [float(x) for x in args.thresholds.split(",")]:
            for tool, code in (("meddata", MEDDATA), ("rensa", RENSA),
                               ("datatrove", DATATROVE)):
                if tool in skip or (tool == "datatrove" and th != float(
                        args.thresholds.split(",")[0])):
                    continue  # datatrove has its own threshold: run it once
                removed_file = work / f"removed-{tool}-{rows}.json"
                try:
                    r = measure(code.format(data=str(data), threshold=th,
                                            removed_file=str(removed_file)))
                except RuntimeError as e:
                    print(f"{tool}: failed: {str(e).strip().splitlines()[-1]}")
                    continue
                p, rec = doc_scores(set(json.loads(removed_file.read_text())), groups)
                label = th if tool != "datatrove" else "its default"
                lines.append(f"| {rows:,} | {tool} | {label} | {r['seconds']:.1f} | "
                             f"{rows / r['seconds']:,.0f} | {p:.4f} | {rec:.4f} | "
                             f"{r['peak_rss_mb']:,.0f} |")
                print(lines[-1], flush=True)
        if args.decontam:
            bench = bench_sets(work, data)
            r = measure(DECONTAM.format(data=str(data), bench=str(bench)))
            print(f"decontam of {rows:,} rows against 5,956 benchmark items: "
                  f"{r['seconds']:.1f} s ({rows / r['seconds']:,.0f} rows/s), "
                  f"{r['contaminated']:,} contaminated, peak RSS {r['peak_rss_mb']:,.0f} MB",
                  flush=True)
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
