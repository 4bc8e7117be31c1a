"""Scores from per-item results: accuracy with a 95 % Wilson interval, and BLEU and ROUGE
on open answers kept as sufficient statistics (sacrebleu's counts and totals, ROUGE sums),
so a benchmark's score needs a few numbers per item, never the texts.

sacrebleu's corpus BLEU-1..4 (its `zh` tokenizer for Chinese rows, `13a` otherwise, on
sacrebleu's 0-100 scale) and rouge-score's ROUGE-1/2/L F1 (x 100) with a tokenizer that
makes every CJK character a token.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from meddata.text import tokens

BLEU_ORDERS = (1, 2, 3, 4)
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


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
