"""Evaluation: accuracy on multiple-choice and yes/no items, BLEU and ROUGE on open answers,
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

import hashlib
import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meddata.text import tokens

from . import answers, presets

CLOSED = ("mcq", "yes_no")
OPEN = ("open_qa", "instruction", "reasoning", "dialogue")
FEWSHOT_SPLITS = ("dev", "train", "validation", "val")  # where examples come from, in order
BLEU_ORDERS = (1, 2, 3, 4)
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
SEQ_LEN_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")  # as lm-eval's HFLM


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


# ---- statistics ------------------------------------------------------------------------------
def wilson(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval for a proportion."""
    if n == 0:
        return (0.0, 0.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy(correct: int, n: int) -> dict[str, Any]:
    return {"accuracy": correct / n if n else 0.0, "n": n, "correct": correct,
            "ci95": list(wilson(correct, n))}


class CJKTokenizer:
    """rouge-score's tokenizer interface over meddata's mixed-script tokens: words for
    Latin scripts, one token per CJK character, lower case, no punctuation."""

    def tokenize(self, text: str) -> list[str]:
        return tokens(text)


class OpenMetrics:
    """BLEU and ROUGE of one generated answer against its reference, and their corpus
    totals. BLEU is kept as sacrebleu's sufficient statistics (matches and totals per
    n-gram order, hypothesis and reference lengths), so the corpus score is exactly
    sacrebleu's `corpus_score` over every item, without keeping the texts."""

    def __init__(self):
        from rouge_score.rouge_scorer import RougeScorer
        from sacrebleu.metrics import BLEU

        self._bleu = {"zh": BLEU(tokenize="zh", effective_order=True),
                      "other": BLEU(tokenize="13a", effective_order=True)}
        self._rouge = RougeScorer(list(ROUGE_TYPES), tokenizer=CJKTokenizer())

    def item(self, output: str, reference: str, lang: str | None) -> dict[str, Any]:
        b = self._bleu["zh" if lang == "zh" else "other"].sentence_score(output, [reference])
        r = self._rouge.score(reference, output)
        return {"bleu_stats": [*b.counts, *b.totals, b.sys_len, b.ref_len],
                **{t: 100 * r[t].fmeasure for t in ROUGE_TYPES}}


def corpus_bleu(stats: list[float]) -> dict[str, float]:
    """BLEU-1..4 from summed sufficient statistics (sacrebleu's exponential smoothing, as
    its corpus_score)."""
    from sacrebleu.metrics import BLEU

    counts, totals = [int(x) for x in stats[:4]], [int(x) for x in stats[4:8]]
    sys_len, ref_len = int(stats[8]), int(stats[9])
    return {f"bleu{n}": BLEU.compute_bleu(counts[:n], totals[:n], sys_len, ref_len,
                                          smooth_method="exp", max_ngram_order=n).score
            for n in BLEU_ORDERS}


@dataclass
class OpenTally:
    n: int = 0
    bleu_stats: list[float] = field(default_factory=lambda: [0.0] * 10)
    rouge: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ROUGE_TYPES, 0.0))

    def add(self, item: dict[str, Any]) -> None:
        self.n += 1
        self.bleu_stats = [a + b for a, b in zip(self.bleu_stats, item["bleu_stats"])]
        for t in ROUGE_TYPES:
            self.rouge[t] += item[t]

    def scores(self) -> dict[str, Any]:
        return {"bleu": corpus_bleu(self.bleu_stats),
                "rouge": {t: v / self.n for t, v in self.rouge.items()} if self.n else {}}


class Tally:
    """What a benchmark's score needs from each item: counts, and for open answers
    sacrebleu's statistics and ROUGE sums (per case as well, where items form cases)."""

    def __init__(self):
        self.closed = [0, 0]                                    # correct, n
        self.unparseable = 0
        self.by_answers: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.by_subject: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.open = OpenTally()
        self.cases: dict[str, OpenTally] = defaultdict(OpenTally)
        self.presets: set[str] = set()

    def add(self, item: dict[str, Any]) -> None:
        self.presets.add(item["preset"])
        if "correct" in item:
            ok = int(item["correct"])
            for cell in (self.closed, self.by_answers["multiple" if item["multiple"]
                                                      else "single"],
                         self.by_subject[item.get("subject") or "-"]):
                cell[0] += ok
                cell[1] += 1
            self.unparseable += item.get("extracted", "") is None
        else:
            self.open.add(item)
            if item.get("case"):
                self.cases[item["case"]].add(item)

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"presets": sorted(self.presets), "items": self.closed[1]}
        correct, n = self.closed
        if n:
            out.update(accuracy=correct / n, ci95=list(wilson(correct, n)), correct=correct,
                       unparseable=self.unparseable,
                       **{k: accuracy(*v) for k, v in sorted(self.by_answers.items())},
                       per_subject={s: accuracy(*v) for s, v in sorted(self.by_subject.items())})
        if self.open.n:
            out.update(open_items=self.open.n, **self.open.scores())
        if self.cases:
            per_case = [c.scores() for c in self.cases.values()]
            out["per_case"] = {
                "cases": len(per_case),
                "bleu": {f"bleu{n}": sum(c["bleu"][f"bleu{n}"] for c in per_case)
                         / len(per_case) for n in BLEU_ORDERS},
                "rouge": {t: sum(c["rouge"][t] for c in per_case) / len(per_case)
                          for t in ROUGE_TYPES}}
        return out


# ---- the model -------------------------------------------------------------------------------------
def split_model_spec(spec: str) -> tuple[str, str]:
    """`BASE::ADAPTER` or `BASE:ADAPTER` (when ADAPTER is a folder) -> (base, adapter)."""
    if "::" in spec:
        base, _, adapter = spec.partition("::")
        return base, adapter
    base, sep, adapter = spec.rpartition(":")
    if sep and base and Path(adapter).is_dir():
        return base, adapter
    return spec, ""


class Scorer:
    def __init__(self, model_spec: str, batch_size: int = 8, max_length: int | None = None):
        import torch

        from meddata.train.common import load_model, load_tokenizer, locate
        from meddata.train.settings import Common

        base_name, adapter = split_model_spec(model_spec)
        base = locate(base_name, Common())
        if adapter:
            base.adapter = adapter
        self.spec = model_spec
        self.base = base
        self.tokenizer = load_tokenizer(base)
        self.model = load_model(base, Common())
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length or self._context_length()
        manifest = Path(base_name) / "training_manifest.json"
        self.trained_on = [d["ref"] for d in json.loads(manifest.read_text())["data"]] \
            if manifest.exists() else []

    def _context_length(self) -> int:
        """The model's context length, found where lm-eval's HFLM looks for it."""
        for attr in SEQ_LEN_ATTRS:
            if getattr(self.model.config, attr, None):
                return int(getattr(self.model.config, attr))
        limit = getattr(self.tokenizer, "model_max_length", None)
        return limit if limit and limit < 10**9 else 2048

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's HFLM._encode_pair for a causal model: trailing whitespace moves from
        the context to the continuation, and the continuation's tokens are the tokens of
        the whole text after the context's own."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        ctx = self.tokenizer.encode(context)
        return ctx, whole[len(ctx):]

    def loglik(self, pairs: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """(sum of log p(continuation tokens | context), whether every continuation token
        is the model's greedy choice) for each (context, continuation).

        The model input is the last max_length+1 tokens of context+continuation less the
        last one, as lm-eval feeds it. Pairs with the same input (single-token choices of
        one question) share one forward pass; inputs are left-padded with explicit
        positions, and only the logits the continuations need are computed."""
        import torch

        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = defaultdict(list)
        for i, (context, continuation) in enumerate(pairs):
            ctx, cont = self.encode_pair(context, continuation)
            if len(cont) > self.max_length:
                raise ValueError(f"a choice of {len(cont)} tokens is longer than the "
                                 f"model's {self.max_length}")
            groups[tuple((ctx + cont)[-(self.max_length + 1):-1])].append((i, cont))
        inputs = sorted(groups, key=len)
        out: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for start in range(0, len(inputs), self.batch_size):
            batch = inputs[start:start + self.batch_size]
            width = max(len(x) for x in batch)
            keep = max(len(t) for x in batch for _, t in groups[x])
            ids = torch.tensor([[pad] * (width - len(x)) + list(x) for x in batch],
                               device=self.device)
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch],
                                device=self.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                    logits_to_keep=keep).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            for b, x in enumerate(batch):
                for i, cont in groups[x]:
                    rows = logp[b, keep - len(cont):]   # the logits that predict cont
                    target = torch.tensor(cont, device=rows.device)
                    out[i] = (float(rows.gather(-1, target[:, None]).sum()),
                              bool((rows.argmax(-1) == target).all()))
        return out

    def generate(self, prompts: list[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
        import torch

        tok = self.tokenizer
        tok.padding_side = "left"
        texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 if getattr(tok, "chat_template", None) else p[-1]["content"] for p in prompts]
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = tok(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(self.device)
            with torch.no_grad():
                gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=tok.pad_token_id)
            out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return out


# ---- reading a benchmark -----------------------------------------------------------------------
def eval_split(version, split: str | None) -> str | None:
    """The split evaluated: `split` when the version has it, None for every split."""
    if split is None:
        return None
    if split not in version.splits:
        from meddata.train.settings import TrainError

        raise TrainError(f"{version.ref} has no {split!r} split (it has: "
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
            "gold": reference(row)}


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
    tally, skipped = Tally(), [0]
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
                    if sink:
                        sink.write(json.dumps(item, ensure_ascii=False) + "\n")
                b.update(len(chunk))
    finally:
        if sink:
            sink.close()
    result = {"bench": version.ref, "split": split or "all", "method": config.method,
              "prompt": config.prompt, "shots": config.shots,
              "skipped_without_answer": skipped[0], **tally.result()}
    if index is not None:
        result["rag"] = {"index": index.version.ref, "k": config.rag_k,
                         "tokens": config.rag_tokens,
                         "decontaminated": version.ref in index.benchmarks}
    return result


def sanitize(name: str) -> str:
    """A model or benchmark name as a file name (lm-eval's sanitize_model_name)."""
    return re.sub(r"[\"<>:/|\\?*\[\]@]+", "__", name)


def compare(models: list[str], benches: list, config: EvalConfig, progress: bool = True,
            out: Path | None = None, indexes: list = ()) -> dict[str, Any]:
    """Every model on every benchmark: rows per model, a column per benchmark, and a row
    more per model and retrieval index (meddata.retrieval.Index). With `out`, each item's
    record is written to out/items/<model>/<benchmark>.jsonl."""
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
            table.append({"model": label, "trained_on": scorer.trained_on, "results": results,
                          "max_length": scorer.max_length,
                          "rag": index.version.ref if index is not None else None})
        del scorer
    return {"method": config.method, "prompt": config.prompt, "shots": config.shots,
            "split": config.split or "all", "limit": config.limit,
            "benchmarks": [b.ref for b in benches], "models": table}


def markdown(report: dict[str, Any]) -> str:
    benches = report["benchmarks"]
    head = "| model | trained on | " + " | ".join(benches) + " |"
    lines = [head, "|" + "---|" * (len(benches) + 2)]
    for m in report["models"]:
        cells = []
        for b in benches:
            r = m["results"][b]
            parts = []
            if "accuracy" in r:
                parts.append(f"{100 * r['accuracy']:.1f} [{100 * r['ci95'][0]:.1f}, "
                             f"{100 * r['ci95'][1]:.1f}] (n={r['items']})")
                if "multiple" in r:
                    parts.append(f"single {100 * r['single']['accuracy']:.1f} "
                                 f"(n={r['single']['n']}), multiple "
                                 f"{100 * r['multiple']['accuracy']:.1f} "
                                 f"(n={r['multiple']['n']})")
            if "open_items" in r:
                parts.append(f"BLEU-1 {r['bleu']['bleu1']:.1f}, BLEU-4 {r['bleu']['bleu4']:.1f}, "
                             f"ROUGE-1 {r['rouge']['rouge1']:.1f}, ROUGE-L "
                             f"{r['rouge']['rougeL']:.1f} (n={r['open_items']})")
            if "per_case" in r:
                parts.append(f"per case ROUGE-L {r['per_case']['rouge']['rougeL']:.1f} "
                             f"(cases={r['per_case']['cases']})")
            cells.append("; ".join(parts) or "-")
        lines.append(f"| {m['model']} | {', '.join(m['trained_on']) or '-'} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- lm-evaluation-harness's output layout --------------------------------------------------------
def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def lm_eval_sample(doc_id: int, item: dict[str, Any]) -> dict[str, Any]:
    """One item as a line of lm-eval's samples_<task>_<date>.jsonl."""
    doc = {"id": item["id"], "subject": item.get("subject")}
    if "choices" in item:  # loglik: one request per choice
        target = item["choices"].index(item["gold"]) if item["gold"] in item["choices"] else -1
        arguments = {f"gen_args_{j}": {"arg_0": item["prompt"], "arg_1": cont}
                     for j, cont in enumerate(item["continuations"])}
        resps = [[[ll, g]] for ll, g in zip(item["logliks"], item["greedy"])]
        filtered = [[ll, g] for ll, g in zip(item["logliks"], item["greedy"])]
        metrics = {"acc": float(item["correct"])}
    else:
        target = item["gold"]
        arguments = {"gen_args_0": {"arg_0": item["prompt"], "arg_1": {"do_sample": False}}}
        resps, filtered = [[item["output"]]], [item.get("extracted", item["output"])]
        metrics = {"exact_match": float(item["correct"])} if "correct" in item else {
            t: item[t] for t in ROUGE_TYPES}
    return {"doc_id": doc_id, "doc": doc, "target": str(target), "arguments": arguments,
            "resps": resps, "filtered_resps": filtered, "filter": "none",
            "metrics": list(metrics), "doc_hash": _sha256(json.dumps(doc, indent=2,
                                                                     ensure_ascii=False)),
            "prompt_hash": _sha256(item["prompt"]), "target_hash": _sha256(str(target)),
            **metrics}


def write_lm_eval_layout(report: dict[str, Any], out: Path) -> list[Path]:
    """out/<model>/results_<date>.json and samples_<task>_<date>.jsonl, as lm-eval's
    --output_path writes them, from the per-item files under out/items; a task is a
    preset (mmlu_anatomy, medqa_4options, ...), or <preset>__<benchmark> when two
    benchmarks share one."""
    date = time.strftime("%Y-%m-%dT%H-%M-%S")
    written = []
    for m in report["models"]:
        folder = out / sanitize(m["model"])
        folder.mkdir(parents=True, exist_ok=True)
        benches_of = defaultdict(int)
        for r in m["results"].values():
            for p in r["presets"]:
                benches_of[p] += 1
        sums: dict[str, dict[str, list[float]]] = {}   # task -> metric -> [n, sum, squares]
        meta: dict[str, dict[str, Any]] = {}
        doc_ids: dict[str, int] = defaultdict(int)
        for ref, r in m["results"].items():
            bench = sanitize(ref.split("@")[0].split("/", 1)[1])
            files: dict[str, Any] = {}
            try:
                with (out / r["items_file"]).open(encoding="utf-8") as items:
                    for line in items:
                        item = json.loads(line)
                        task = item["preset"] if benches_of[item["preset"]] == 1 \
                            else f"{item['preset']}__{bench}"
                        if task not in files:
                            path = folder / f"samples_{task}_{date}.jsonl"
                            files[task] = path.open("w", encoding="utf-8")
                            written.append(path)
                            sums[task] = {}
                            meta[task] = {"bench": ref, "preset": item["preset"],
                                          "open": "correct" not in item}
                        sample = lm_eval_sample(doc_ids[task], item)
                        doc_ids[task] += 1
                        files[task].write(json.dumps(sample, ensure_ascii=False) + "\n")
                        for metric in sample["metrics"]:
                            n, total, squares = sums[task].get(metric, (0, 0.0, 0.0))
                            value = float(sample[metric])
                            sums[task][metric] = [n + 1, total + value, squares + value * value]
            finally:
                for f in files.values():
                    f.close()
        results, configs, n_samples = {}, {}, {}
        for task, metrics in sums.items():
            preset = presets.PRESETS.get(meta[task]["preset"], presets.PRESETS["meddata"])
            results[task] = {"alias": task}
            for metric, (n, total, squares) in metrics.items():
                mean = total / n
                var = (squares - n * mean * mean) / (n - 1) if n > 1 else 0.0
                results[task][f"{metric},none"] = mean
                results[task][f"{metric}_stderr,none"] = math.sqrt(max(var, 0.0) / n)
            n = int(next(iter(metrics.values()))[0])
            configs[task] = {
                "task": task, "num_fewshot": report["shots"],
                "output_type": "multiple_choice" if report["method"] == "loglik"
                and not meta[task]["open"] else "generate_until",
                "target_delimiter": preset.delimiter, "fewshot_delimiter": "\n\n",
                "metadata": {"meddata_bench": meta[task]["bench"], "follows": preset.follows,
                             "version": 1.0}}
            n_samples[task] = {"original": n, "effective": n}
        path = folder / f"results_{date}.json"
        path.write_text(json.dumps({
            "results": results, "group_subtasks": {t: [] for t in results},
            "configs": configs, "versions": dict.fromkeys(results, 1.0),
            "n-shot": dict.fromkeys(results, report["shots"]),
            "higher_is_better": {t: {k.split(",")[0]: True for k in v
                                     if k.endswith(",none") and "_stderr" not in k}
                                 for t, v in results.items()},
            "n-samples": n_samples,
            "config": {"model": "hf", "model_args": f"pretrained={m['model']}",
                       "limit": report["limit"]},
            "model_name": m["model"], "model_name_sanitized": sanitize(m["model"]),
            "date": time.time(),
            "meddata": {"prompt": report["prompt"], "split": report["split"],
                        "method": report["method"]},
        }, indent=2, ensure_ascii=False), encoding="utf-8")
        written.append(path)
    return written
