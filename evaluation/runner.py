"""The evaluation runner: one model on one benchmark version (`evaluate`), many models on
many benchmarks (`compare`). The model is scorer.py's, the scores metrics.py's, the
tables and files output.py's.

Accuracy on multiple-choice and yes/no items, BLEU and ROUGE on open answers,
per item and per benchmark, for base and trained checkpoints, in one comparison table.

    meddata eval --model BASE --model runs/sft --bench canonical/medqa \\
                 [--split test] [--method loglik|generate] [--prompt lm-eval|meddata] \\
                 [--shots K] [--limit N] [--out DIR [--lm-eval-layout]]

Prompts come from the benchmark presets (evaluation/presets.py): lm-evaluation-harness's own
prompts for the benchmarks it has (medqa_4options, medmcqa, pubmedqa, mmlu_<subject>), the
CMB authors' prompt for CMExam and CMB, and meddata's plain style for the rest, or for
everything with `--prompt meddata`.

Methods:
- loglik follows lm-evaluation-harness's multiple_choice protocol to the token: the context
  (description, few-shot examples, question) and each choice (" A", " yes", ...) are
  encoded as lm-eval's HFLM does (trailing whitespace of the context moves to the
  continuation; the continuation's tokens are those of context+continuation after the
  context's own; the tokenizer's default special tokens; the last max_length+1 tokens), and
  the choice with the largest summed log-probability is the prediction. Questions with
  several correct options are scored over every set of their letters, so only the exact
  set counts.
- generate: the preset's prompt (or meddata's instruct prompt) as the user turn of the
  model's chat template, greedy decoding, and the answer extracted as the GRPO reward does
  (English and Chinese patterns, several letters for several answers, only the text after
  </think>); an unparseable answer counts as wrong and is reported.

Open-answer items (open QA, instructions, reasoning, the last turn of a dialogue) are
generated and scored with the libraries that own the metrics: sacrebleu's corpus BLEU-1..4
(its `zh` tokenizer for Chinese rows, `13a` otherwise; on sacrebleu's 0-100 scale), and
rouge-score's ROUGE-1/2/L F1 (x 100) with a tokenizer that makes every CJK character a
token. Rows that belong to a case (CMB-Clin) are scored per question and per case.
Accuracy comes with a 95 % Wilson interval, overall, for single- and multiple-answer
questions apart, and per subject.

The benchmark is read in batches; what is kept per item is a few counts (and, with --out,
its line in the per-item file), so a benchmark of any size evaluates in flat memory.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import answers, forgetting, presets
from .metrics import OpenMetrics, Tally
from .output import sanitize
from .scorer import Scorer, split_model_spec

CLOSED = ("mcq", "yes_no")
OPEN = ("open_qa", "instruction", "reasoning", "dialogue")
FEWSHOT_SPLITS = ("dev", "train", "validation", "val")  # where examples come from, in order


class EvalError(ValueError):
    """A benchmark, split or model an evaluation cannot use (one line)."""


@dataclass
class EvalConfig:
    method: str = "loglik"          # loglik | generate
    prompt: str = "lm-eval"         # lm-eval | meddata
    choices: str = "letters"        # loglik: letters | text
    split: str | None = "test"      # None: every split
    limit: int | None = None
    shots: int = 0
    batch_size: int = 8
    max_new_tokens: int = 256       # generate, and open answers
    max_length: int | None = None   # None: the model's context length, as lm-eval
    rag_k: int = 5                  # with an index: passages per question
    rag_tokens: int = 1024          # ... and the tokens they may take (the question is kept)

# ---- reading a benchmark -----------------------------------------------------------------------
def eval_split(version, split: str | None) -> str | None:
    """The split evaluated: `split` when the version has it, None for every split."""
    if split is None:
        return None
    if split not in version.splits:
        raise EvalError(f"{version.ref} has no {split!r} split (it has: "
                         f"{', '.join(version.splits) or 'none'}); choose one with --split, "
                         "or --split all")
    return split


def reference(row: dict[str, Any]) -> str | None:
    """The gold answer an item is scored against (None: the item cannot be scored)."""
    if row["task"] in CLOSED:
        return row.get("answer_label") or None
    if row["task"] in OPEN:
        return row.get("response") or None
    return None


def scorable_rows(version, split: str | None, limit: int | None, batch_rows: int,
                  skipped: list[int]) -> Iterator[dict[str, Any]]:
    """The rows with a gold answer, in order, at most `limit`; `skipped` counts the rest."""
    seen = 0
    for batch in version.iter_batches(split=split, batch_size=batch_rows):
        for row in batch.to_pylist():
            if reference(row) is None:
                skipped[0] += 1
                continue
            yield row
            seen += 1
            if limit and seen >= limit:
                return


def fewshot_pool(version, split: str | None, config: EvalConfig
                 ) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{preset name: {split: the first shots+1 answered closed rows}}, from the few-shot
    splits (dev, train, validation) and the evaluated split; +1 so that an item is never
    its own example."""
    want = config.shots + 1
    pool: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for name in [s for s in FEWSHOT_SPLITS if s in version.splits] + [split]:
        for batch in version.iter_batches(split=name, batch_size=4_096):
            for row in batch.to_pylist():
                if row["task"] in CLOSED and row.get("answer_label"):
                    rows = pool[presets.for_row(row, config.prompt).name][name or "all"]
                    if len(rows) < want:
                        rows.append(row)
    return pool


def shots_for(row: dict[str, Any], preset: presets.Preset, pool, config: EvalConfig,
              split: str | None) -> list[dict[str, Any]]:
    """The few-shot examples of an item: the first `shots` rows of its preset's few-shot
    split (MMLU: dev), else of the first of dev, train, validation the version has, else of
    the evaluated split, never the item itself."""
    if not config.shots:
        return []
    by_split = pool.get(preset.name, {})
    order = ([preset.fewshot_split] if preset.fewshot_split else []) + list(FEWSHOT_SPLITS) \
        + [split or "all"]
    for name in order:
        rows = [r for r in by_split.get(name, []) if r["id"] != row["id"]]
        if rows:
            return rows[:config.shots]
    return []


# ---- scoring items ------------------------------------------------------------------------------
def _base(row: dict[str, Any], preset: presets.Preset) -> dict[str, Any]:
    meta = json.loads(row.get("meta") or "{}")
    return {"id": row["id"], "preset": preset.name, "subject": meta.get("subject"),
            "domain": forgetting.row_domain(row), "gold": reference(row)}


def score_closed(scorer: Scorer, rows: list[dict[str, Any]], config: EvalConfig, pool,
                 split: str | None, passages: list[tuple[str, list[str]]]
                 ) -> list[dict[str, Any]]:
    items, requests = [], []
    for row, (block, retrieved) in zip(rows, passages):
        preset = presets.for_row(row, config.prompt)
        shots = shots_for(row, preset, pool, config, split)
        item = _base(row, preset) | {"multiple": presets.multiple(row)}
        if block:
            item["retrieved"] = retrieved
        if config.method == "loglik":
            labels, conts = preset.choices(row, texts=config.choices == "text")
            context = preset.context(row, shots, texts=config.choices == "text",
                                     passages=block)
            item.update(prompt=context, choices=labels, continuations=conts)
            requests += [(context, c) for c in conts]
        else:
            prompt = preset.context(row, shots, passages=block) if config.prompt == "lm-eval" \
                else block + _instruct(row)
            item["prompt"] = prompt
        items.append(item)
    if config.method == "loglik":
        scores = iter(scorer.loglik(requests))
        for item in items:
            got = [next(scores) for _ in item["choices"]]
            item["logliks"] = [s for s, _ in got]
            item["greedy"] = [g for _, g in got]
            best = max(range(len(got)), key=lambda j: got[j][0])
            item["pred"] = item["choices"][best]
    else:
        outputs = scorer.generate([[{"role": "user", "content": i["prompt"]}] for i in items],
                                  config.max_new_tokens)
        for item, row, text in zip(items, rows, outputs):
            item["output"] = text
            item["extracted"] = answers.extract_decision(text) if row["task"] == "yes_no" \
                else answers.extract_letters(text, "".join(o["label"] for o in row["options"]))
            item["pred"] = item["extracted"]
    for item in items:
        item["correct"] = item["pred"] == item["gold"]
    return items


def _instruct(row: dict[str, Any]) -> str:
    from meddata.builders import render

    return render.prompt_text(row)


def score_open(scorer: Scorer, rows: list[dict[str, Any]], config: EvalConfig,
               metrics: OpenMetrics, passages: list[tuple[str, list[str]]]
               ) -> list[dict[str, Any]]:
    from meddata.builders import render

    conversations = []
    for row, (block, _) in zip(rows, passages):
        turns = render.dialogue(row, with_answer=False) or render.messages(_instruct(row))
        if block:
            turns[-1] = {**turns[-1], "content": block + turns[-1]["content"]}
        conversations.append(turns)
    outputs = scorer.generate(conversations, config.max_new_tokens)
    items = []
    for row, conversation, text, (block, retrieved) in zip(rows, conversations, outputs,
                                                          passages):
        meta = json.loads(row.get("meta") or "{}")
        output = answers.after_think(text).strip()
        item = _base(row, presets.PRESETS["meddata"]) | {
            "prompt": conversation[-1]["content"], "output": output}
        if meta.get("case_id") is not None:
            item["case"] = str(meta["case_id"])
        if block:
            item["retrieved"] = retrieved
        item.update(metrics.item(output, row["response"], row.get("lang")))
        items.append(item)
    return items


# ---- one benchmark, many models -------------------------------------------------------------------
def retrieved_passages(index, rows: list[dict[str, Any]], config: EvalConfig,
                       scorer: Scorer) -> list[tuple[str, list[str]]]:
    """Each row's passage block and the chunk ids in it (empty without an index): the
    top-k chunks for its question and options, within rag_tokens of the model's tokens."""
    if index is None:
        return [("", [])] * len(rows)
    from meddata.retrieval import passages_block, query_text

    def count(text: str) -> int:
        return len(scorer.tokenizer.encode(text, add_special_tokens=False))

    hits = index.query([query_text(r) for r in rows], config.rag_k)
    return [passages_block(h, r.get("lang"), config.rag_tokens, count)
            for r, h in zip(rows, hits)]


def evaluate(scorer: Scorer, version, config: EvalConfig, progress: bool = True,
             items_path: Path | None = None, index=None) -> dict[str, Any]:
    """Score one model on one benchmark version, with passages from `index` (a
    meddata.retrieval.Index) when given; each item's record goes to `items_path` (JSON
    lines) when given."""
    from meddata.progress import bar

    split = eval_split(version, config.split)
    pool = fewshot_pool(version, split, config) if config.shots else {}
    metrics = OpenMetrics()
    tally, skipped, domains = Tally(), [0], Counter()
    sink = items_path.open("w", encoding="utf-8") if items_path else None
    rows = scorable_rows(version, split, config.limit, max(256, config.batch_size), skipped)
    try:
        rows_in_split = sum(s["rows"] for s in version.manifest["shards"]
                            if split is None or s["split"] == split)
        total = min(config.limit or rows_in_split, rows_in_split)
        with bar(f"eval {version.ref}", total, " items", progress) as b:
            while chunk := [r for _, r in zip(range(config.batch_size), rows)]:
                closed = [r for r in chunk if r["task"] in CLOSED]
                open_rows = [r for r in chunk if r["task"] in OPEN]
                records = []
                if closed:
                    records += score_closed(scorer, closed, config, pool, split,
                                            retrieved_passages(index, closed, config, scorer))
                if open_rows:
                    records += score_open(scorer, open_rows, config, metrics,
                                          retrieved_passages(index, open_rows, config, scorer))
                for item in records:
                    tally.add(item)
                    domains[item["domain"]] += 1
                    if sink:
                        sink.write(json.dumps(item, ensure_ascii=False) + "\n")
                b.update(len(chunk))
    finally:
        if sink:
            sink.close()
    result = {"bench": version.ref, "split": split or "all", "method": config.method,
              "prompt": config.prompt, "shots": config.shots,
              "domain": forgetting.bench_domain(domains),
              "skipped_without_answer": skipped[0], **tally.result()}
    if index is not None:
        result["rag"] = {"index": index.version.ref, "k": config.rag_k,
                         "tokens": config.rag_tokens,
                         "decontaminated": version.ref in index.benchmarks}
    return result

def check(models: list[str], benches: list, config: EvalConfig) -> None:
    """What costs nothing, before any model is loaded: each benchmark is a canonical version
    with the split asked for, and each model is an alias, a local folder or a hub id that
    may be loaded (meddata.models), its adapter folder present."""
    from meddata.train.common import locate
    from meddata.train.settings import Common

    for b in benches:
        if b.kind != "canonical":
            raise EvalError(f"{b.ref}: benchmarks are canonical versions (this is {b.kind})")
        eval_split(b, config.split)
    for spec in models:
        base, adapter = split_model_spec(spec)
        if "::" in spec and not Path(adapter).is_dir():
            raise EvalError(f"{spec}: the adapter folder {adapter!r} does not exist")
        locate(base, Common())


def compare(models: list[str], benches: list, config: EvalConfig, progress: bool = True,
            out: Path | None = None, indexes: list = ()) -> dict[str, Any]:
    """Every model on every benchmark: rows per model, a column per benchmark, and a row
    more per model and retrieval index (meddata.retrieval.Index). With `out`, each item's
    record is written to out/items/<model>/<benchmark>.jsonl. Everything is checked
    (`check`) before the first model loads."""
    check(models, benches, config)
    table = []
    for spec in models:
        scorer = Scorer(spec, config.batch_size, config.max_length)
        for index in [None, *indexes]:
            label = spec if index is None else \
                f"{spec} + rag {index.version.ref} (k={config.rag_k})"
            results = {}
            for b in benches:
                path = None
                if out:
                    path = out / "items" / sanitize(label) / \
                        f"{sanitize(b.kind + '/' + b.name)}.jsonl"
                    path.parent.mkdir(parents=True, exist_ok=True)
                results[b.ref] = evaluate(scorer, b, config, progress, path, index)
                if path:
                    results[b.ref]["items_file"] = str(path.relative_to(out))
            table.append({"model": label, "trained_on": scorer.trained_on,
                          "lineage": scorer.lineage, "results": results,
                          "max_length": scorer.max_length,
                          "rag": index.version.ref if index is not None else None})
        del scorer
    return {"method": config.method, "prompt": config.prompt, "shots": config.shots,
            "split": config.split or "all", "limit": config.limit,
            "benchmarks": [b.ref for b in benches], "models": table}
