"""Evaluation: MCQ and yes/no accuracy, and ROUGE-L / BLEU on open answers, for base and
trained checkpoints, with one comparison table.

    meddata eval --model BASE --model runs/sft-examples --bench canonical/medqa-test \\
                 [--method loglik|generate] [--limit N] [--shots K]

Methods:
- loglik (the lm-evaluation-harness protocol for these tasks): the plain prompt (question,
  options block, "Answer:"), then each choice scored by the sum of its tokens'
  log-probabilities after the prompt; choices are the option letters (" A", " B", ...) or,
  with `choices: text`, the option texts; yes/no items score "yes", "no", "maybe". The
  highest score is the prediction.
- generate: the instruct prompt through the model's chat template, greedy decoding, and
  the answer extracted as the GRPO reward does (English and Chinese patterns, only the text
  after </think>); an unparseable answer counts as wrong and is reported.
Open-answer items (instructions, reasoning, dialogue) are generated and scored with
ROUGE-L F1 and BLEU-4 over meddata's mixed-script tokens, so Chinese is scored per
character. Accuracy comes with a 95 % Wilson interval, overall and per subject where the
source records one.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meddata.text import tokens

from . import answers

ANSWER_CUE = {"en": "Answer:", "zh": "答案："}


@dataclass
class EvalConfig:
    method: str = "loglik"          # loglik | generate
    choices: str = "letters"        # loglik: letters | text
    limit: int | None = None
    shots: int = 0
    batch_size: int = 8
    max_new_tokens: int = 256       # generate, and open answers
    max_length: int = 2048


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


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over mixed-script tokens (CJK characters are tokens)."""
    c, r = tokens(candidate), tokens(reference)
    if not c or not r:
        return 0.0
    prev = [0] * (len(r) + 1)
    for x in c:
        cur = [0]
        for j, y in enumerate(r):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def bleu(candidates: list[str], references: list[str], max_n: int = 4) -> float:
    """Corpus BLEU-4 (uniform weights, brevity penalty, +1 smoothing for n > 1)."""
    matches, totals = [0] * max_n, [0] * max_n
    c_len = r_len = 0
    for cand, ref in zip(candidates, references):
        c, r = tokens(cand), tokens(ref)
        c_len, r_len = c_len + len(c), r_len + len(r)
        for n in range(1, max_n + 1):
            cn = Counter(tuple(c[i:i + n]) for i in range(len(c) - n + 1))
            rn = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            matches[n - 1] += sum(min(v, rn[k]) for k, v in cn.items())
            totals[n - 1] += max(0, len(c) - n + 1)
    if c_len == 0 or matches[0] == 0:
        return 0.0
    logs = [math.log(matches[0] / totals[0])] + [
        math.log((matches[i] + 1) / (totals[i] + 1)) for i in range(1, max_n)]
    bp = 1.0 if c_len > r_len else math.exp(1 - r_len / max(c_len, 1))
    return bp * math.exp(sum(logs) / max_n)


# ---- prompts -------------------------------------------------------------------------------------
def plain_prompt(row: dict[str, Any]) -> str:
    from meddata.builders import render

    return f"{render.prompt_text(row, 'plain')}\n{ANSWER_CUE.get(row['lang'], 'Answer:')}"


def choices_of(row: dict[str, Any], mode: str) -> tuple[list[str], list[str]]:
    """(labels, continuation texts) for a closed-answer row."""
    if row["task"] == "yes_no":
        labels = ["yes", "no", "maybe"]
        return labels, [f" {x}" for x in labels]
    labels = [o["label"] for o in row["options"]]
    if mode == "text":
        return labels, [f" {o['text']}" for o in row["options"]]
    return labels, [f" {x}" for x in labels]


def few_shot_prefix(rows: list[dict[str, Any]], index: int, shots: int) -> str:
    """The first `shots` other rows of the benchmark with their answers."""
    examples = [r for j, r in enumerate(rows) if j != index and r.get("answer_label")][:shots]
    return "".join(f"{plain_prompt(r)} {r['answer_label']}\n\n" for r in examples)


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
    def __init__(self, model_spec: str, batch_size: int = 8, max_length: int = 2048):
        import torch

        from .common import load_model, load_tokenizer, locate
        from .settings import Common

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
        self.batch_size, self.max_length = batch_size, max_length
        manifest = Path(base_name) / "training_manifest.json"
        self.trained_on = [d["ref"] for d in json.loads(manifest.read_text())["data"]] \
            if manifest.exists() else []

    def loglik(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Sum of log p(continuation tokens | context) for each (context, continuation).

        The model runs once per distinct input: the input of a pair is its context plus all
        but the last continuation token, so single-token continuations (option letters)
        of one question share a single forward pass of the question. Inputs are sorted by
        length, left-padded, and only the logits the continuations need are computed
        (`logits_to_keep`).
        """
        import torch

        tok = self.tokenizer
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = defaultdict(list)
        for i, (ctx, cont) in enumerate(pairs):
            c = tok(ctx, add_special_tokens=False)["input_ids"]
            t = tok(cont, add_special_tokens=False)["input_ids"]
            keep = max(1, self.max_length - len(t))
            groups[tuple(c[-keep:] + t[:-1])].append((i, t))
        inputs = sorted(groups, key=len)
        out = [0.0] * len(pairs)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        for start in range(0, len(inputs), self.batch_size):
            batch = inputs[start:start + self.batch_size]
            width = max(len(x) for x in batch)
            k = max(len(t) for x in batch for _, t in groups[x])
            ids = torch.tensor([[pad] * (width - len(x)) + list(x) for x in batch],
                               device=self.device)
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch],
                                device=self.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                    logits_to_keep=k).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            for b, x in enumerate(batch):
                for i, t in groups[x]:
                    first = k - len(t)  # the kept logits that predict t[0], t[1], ...
                    out[i] = float(sum(logp[b, first + j, tid] for j, tid in enumerate(t)))
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


# ---- one benchmark ---------------------------------------------------------------------------------
def evaluate(scorer: Scorer, version, config: EvalConfig, progress: bool = True
             ) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from meddata.builders import render

    rows = [r for r in version.to_table().to_pylist()]
    closed = [r for r in rows if r["task"] in ("mcq", "yes_no") and r.get("answer_label")]
    open_rows = [r for r in rows if r["task"] in ("open_qa", "instruction", "reasoning")
                 and r.get("response")]
    skipped = len(rows) - len(closed) - len(open_rows)
    if config.limit:
        closed, open_rows = closed[:config.limit], open_rows[:config.limit]
    correct_by_subject: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    correct, unparseable = 0, 0
    bar = tqdm(total=len(closed) + len(open_rows), desc=f"eval {version.name}",
               disable=not progress, unit=" items")
    for start in range(0, len(closed), config.batch_size):
        chunk = closed[start:start + config.batch_size]
        if config.method == "loglik":
            pairs, spans = [], []
            for k, row in enumerate(chunk):
                labels, conts = choices_of(row, config.choices)
                prefix = few_shot_prefix(closed, start + k, config.shots) if config.shots else ""
                spans.append((len(pairs), labels))
                pairs += [(prefix + plain_prompt(row), c) for c in conts]
            scores = scorer.loglik(pairs)
            preds = [labels[max(range(len(labels)), key=lambda j: scores[s + j])]
                     for s, labels in spans]
        else:
            texts = scorer.generate([render.messages(render.prompt_text(r)) for r in chunk],
                                    config.max_new_tokens)
            preds = []
            for row, text in zip(chunk, texts):
                pred = answers.extract_decision(text) if row["task"] == "yes_no" else \
                    answers.extract_letter(text, "".join(o["label"] for o in row["options"]))
                unparseable += pred is None
                preds.append(pred)
        for row, pred in zip(chunk, preds):
            ok = int(pred == row["answer_label"])
            correct += ok
            subject = json.loads(row.get("meta") or "{}").get("subject") or "-"
            correct_by_subject[subject][0] += ok
            correct_by_subject[subject][1] += 1
        bar.update(len(chunk))
    result: dict[str, Any] = {"bench": version.ref, "method": config.method,
                              "shots": config.shots, "items": len(closed),
                              "skipped_without_answer": skipped}
    if closed:
        lo, hi = wilson(correct, len(closed))
        result.update(accuracy=correct / len(closed), ci95=[lo, hi], correct=correct,
                      unparseable=unparseable,
                      per_subject={s: {"accuracy": c / n, "n": n, "ci95": list(wilson(c, n))}
                                   for s, (c, n) in sorted(correct_by_subject.items())})
    if open_rows:
        outputs = []
        for start in range(0, len(open_rows), config.batch_size):
            chunk = open_rows[start:start + config.batch_size]
            texts = scorer.generate([render.messages(render.prompt_text(r)) for r in chunk],
                                    config.max_new_tokens)
            outputs += [answers.after_think(t).strip() for t in texts]
            bar.update(len(chunk))
        refs = [r["response"] for r in open_rows]
        result.update(open_items=len(open_rows),
                      rouge_l=sum(rouge_l(c, r) for c, r in zip(outputs, refs)) / len(refs),
                      bleu=bleu(outputs, refs))
    bar.close()
    return result


def compare(models: list[str], benches: list, config: EvalConfig, progress: bool = True
            ) -> dict[str, Any]:
    """Every model on every benchmark: rows per model, a column per benchmark."""
    table = []
    for spec in models:
        scorer = Scorer(spec, config.batch_size, config.max_length)
        results = {b.ref: evaluate(scorer, b, config, progress) for b in benches}
        table.append({"model": spec, "trained_on": scorer.trained_on, "results": results})
        del scorer
    return {"method": config.method, "shots": config.shots, "limit": config.limit,
            "benchmarks": [b.ref for b in benches], "models": table}


def markdown(report: dict[str, Any]) -> str:
    benches = report["benchmarks"]
    head = "| model | trained on | " + " | ".join(benches) + " |"
    lines = [head, "|" + "---|" * (len(benches) + 2)]
    for m in report["models"]:
        cells = []
        for b in benches:
            r = m["results"][b]
            if "accuracy" in r:
                cell = f"{100 * r['accuracy']:.1f} [{100 * r['ci95'][0]:.1f}, " \
                       f"{100 * r['ci95'][1]:.1f}] (n={r['items']})"
            else:
                cell = "-"
            if "rouge_l" in r:
                cell += f"; ROUGE-L {r['rouge_l']:.3f}, BLEU {r['bleu']:.3f}"
            cells.append(cell)
        lines.append(f"| {m['model']} | {', '.join(m['trained_on']) or '-'} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
