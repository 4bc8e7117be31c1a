"""Near-duplicate detection on a synthetic medical-QA-like corpus with planted duplicates.

    python benchmarks/dedup_bench.py [--rows 100000] [--thresholds 0.6,0.7,0.8]

The corpus: MCQ-like rows (a question of 15-40 words and four options) in English and
Chinese. A fifth of the base items get 1-3 planted copies, each with random edits of up to
10 % of its tokens (substitution, deletion, insertion), whitespace and punctuation noise,
and its options reordered. Ground truth: every pair inside a planted group.

For each threshold it runs meddata's dedup (meddata.dedup.dedup) and prints docs/s and
the precision and recall of the duplicate pairs it found (pairs inside its clusters).
Where datatrove is installed, it runs datatrove's four-stage MinHash dedup on the same
texts in the same run and prints its throughput, the ratio, and its precision and recall
(datatrove only says which documents to drop, so it is scored on documents: precision is
the share of dropped documents that have a planted twin, recall the share of the droppable
planted copies (all but one per group) that it dropped).
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from itertools import combinations

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


def corpus(rows: int, seed: int = 0):
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
            out.append({"id": f"row{i:07d}", "source": "bench", "subset": "s", "split": "train",
                        "task": "mcq", "lang": "zh" if m["zh"] else "en", "question": q,
                        "context": None, "rationale": None, "response": None, "meta": "{}",
                        "options": [{"label": "ABCD"[k], "text": t} for k, t in enumerate(opts)],
                        "answer": ans, "answer_label": "ABCD"[m["answer"]],
                        "raw_sha1": f"{i:040x}"})
            ids.append(out[-1]["id"])
        if len(ids) > 1:
            groups.append(ids)
    truth = {tuple(sorted(p)) for g in groups for p in combinations(g, 2)}
    return out, truth


def pairs_from_clusters(dropped: list[dict]) -> set[tuple[str, str]]:
    clusters: dict[str, set[str]] = {}
    for d in dropped:
        clusters.setdefault(d["cluster"], {d["cluster"]}).add(d["id"])
    return {tuple(sorted(p)) for members in clusters.values()
            for p in combinations(sorted(members), 2)}


def scores(found: set, truth: set) -> tuple[float, float]:
    tp = len(found & truth)
    return (tp / len(found) if found else 1.0), (tp / len(truth) if truth else 1.0)


def run_datatrove(rows: list[dict], truth: set, workers: int) -> dict | None:
    try:
        from datatrove.data import Document
        from datatrove.executor import LocalPipelineExecutor
        from datatrove.pipeline.dedup.minhash import (
            MinhashConfig,
            MinhashDedupBuckets,
            MinhashDedupCluster,
            MinhashDedupFilter,
            MinhashDedupSignature,
        )
        from datatrove.pipeline.writers.jsonl import JsonlWriter
    except ImportError:
        return None
    from meddata.dedup import item_text

    docs = [Document(text=item_text(r), id=r["id"]) for r in rows]
    from datatrove.utils.hashing import HashConfig

    config = MinhashConfig(hash_config=HashConfig(hash_fc="sha1", precision=64))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for pipeline, tasks in (
            ([docs, MinhashDedupSignature(output_folder=f"{tmp}/sig", config=config)], 1),
            ([MinhashDedupBuckets(input_folder=f"{tmp}/sig", output_folder=f"{tmp}/buckets",
                                  config=config)], config.num_buckets),
            ([MinhashDedupCluster(input_folder=f"{tmp}/buckets", output_folder=f"{tmp}/remove",
                                  config=config)], 1),
            ([docs, MinhashDedupFilter(input_folder=f"{tmp}/remove",
                                       exclusion_writer=JsonlWriter(f"{tmp}/removed"))], 1),
        ):
            LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers,
                                  logging_dir=f"{tmp}/logs/{len(pipeline)}{tasks}",
                                  skip_completed=False).run()
        seconds = time.perf_counter() - t0
        import glob
        import gzip
        import json

        removed = set()
        for path in glob.glob(f"{tmp}/removed/*"):
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as f:
                removed.update(json.loads(line)["id"] for line in f)
    in_group = {m for pair in truth for m in pair}
    groups = _groups(truth)
    removable = sum(len(g) - 1 for g in groups)
    removed_in_groups = sum(min(len(g) - 1, len(g & removed)) for g in groups)
    precision = len(removed & in_group) / len(removed) if removed else 1.0
    return {"seconds": seconds, "removed": len(removed), "precision": precision,
            "recall": removed_in_groups / removable if removable else 1.0}


def _groups(truth: set) -> list[set]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x
    for a, b in truth:
        parent[find(a)] = find(b)
    out: dict[str, set] = {}
    for x in list(parent):
        out.setdefault(find(x), set()).add(x)
    return list(out.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--thresholds", default="0.7")
    ap.add_argument("--bands", type=int, default=None)
    ap.add_argument("--band-rows", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-datatrove", action="store_true")
    args = ap.parse_args()

    from meddata.dedup import DedupConfig, dedup

    rows, truth = corpus(args.rows)
    print(f"corpus: {len(rows):,} rows, {len(truth):,} planted duplicate pairs")
    best = None
    for th in [float(x) for x in args.thresholds.split(",")]:
        cfg = DedupConfig(threshold=th)
        if args.bands:
            cfg.bands, cfg.rows = args.bands, args.band_rows or cfg.rows
        t0 = time.perf_counter()
        kept, dropped, summary = dedup(rows, cfg)
        seconds = time.perf_counter() - t0
        p, r = scores(pairs_from_clusters(dropped), truth)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"meddata threshold {th:.2f} bands {cfg.bands}x{cfg.rows}: {seconds:.1f} s, "
              f"{len(rows) / seconds:,.0f} docs/s, precision {p:.4f}, recall {r:.4f}, "
              f"dropped {len(dropped):,}, peak RSS so far {rss:,.0f} MB")
        best = seconds if best is None else min(best, seconds)
    if args.skip_datatrove:
        return
    dt = run_datatrove(rows, truth, args.workers)
    if dt is None:
        print("datatrove is not installed (pip install datatrove) - comparison skipped")
        return
    print(f"datatrove MinHash (5-gram words, 14x8, {args.workers} workers): "
          f"{dt['seconds']:.1f} s, {len(rows) / dt['seconds']:,.0f} docs/s, removed "
          f"{dt['removed']:,}; document precision {dt['precision']:.4f}, document recall "
          f"{dt['recall']:.4f}")
    print(f"throughput ratio meddata/datatrove: {dt['seconds'] / best:.2f}")


if __name__ == "__main__":
    main()
