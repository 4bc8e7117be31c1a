"""quality: drop rows that heuristic document rules call junk (recipe `curate:`,
`meddata curate`).

The rules are Gopher's, C4's and FineWeb's, counted in units (a Latin word or a CJK
character) so that Chinese, English and mixed text are judged alike, and read on a row's
prose (meddata.curation.quality says exactly how, and docs/curate.md where each default
comes from). The first rule that fires drops the row; the rejects record the rule, the
row's value and the threshold.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from meddata.curation.quality import Thresholds
from meddata.curation.report import Tallied, Tally
from meddata.curation.rows import row_parts
from meddata.steps.base import Books, Step
from meddata.steps.registry import Settings, SettingsError, setting

_D = Thresholds()


def _ngrams(pairs) -> dict[str, float]:
    return {str(n): limit for n, limit in pairs}


@dataclass
class QualitySettings(Settings):
    min_words: int | None = setting(_D.min_words, "fewer units (words, CJK characters) in "
                                    "the whole row, options and answer included: too_short")
    max_words: int | None = setting(_D.max_words, "more units in the prose: too_long "
                                    "(Gopher max_doc_words)")
    min_doc_words: int = setting(_D.min_doc_words, "units from which the long-text rules "
                                 "(word length, hashes, n-grams) apply (Gopher min_doc_words)")
    min_mean_word_length: float | None = setting(_D.min_mean_word_length, "mean Latin word "
                                                 "length below it: mean_word_length (Gopher)")
    max_mean_word_length: float | None = setting(_D.max_mean_word_length, "mean Latin word "
                                                 "length above it: mean_word_length (Gopher)")
    max_symbol_ratio: float | None = setting(_D.max_symbol_ratio, "punctuation and symbols "
                                             "per non-space character: symbol_ratio")
    max_digit_ratio: float | None = setting(_D.max_digit_ratio, "digits per non-space "
                                            "character: digit_ratio")
    max_hash_ellipsis_ratio: float | None = setting(_D.max_hash_ellipsis_ratio, "'#' and "
                                                    "ellipses per unit (Gopher)")
    max_bullet_lines: float | None = setting(_D.max_bullet_lines, "share of lines that are "
                                             "bullets (Gopher)")
    max_ellipsis_lines: float | None = setting(_D.max_ellipsis_lines, "share of lines ending "
                                               "in an ellipsis (Gopher)")
    max_dup_paragraphs: float | None = setting(_D.max_dup_paragraphs, "share of paragraphs "
                                               "seen before in the row (Gopher)")
    max_dup_paragraph_chars: float | None = setting(_D.max_dup_paragraph_chars, "share of "
                                                    "characters in repeated paragraphs (Gopher)")
    max_dup_lines: float | None = setting(_D.max_dup_lines, "share of lines seen before in "
                                          "the row (Gopher)")
    max_dup_line_chars: float | None = setting(_D.max_dup_line_chars, "share of characters "
                                               "in repeated lines (Gopher)")
    # n as text, so that the settings survive the manifest's JSON (YAML's 2: 0.4 is fine)
    top_ngrams: dict[str, float] = setting(_ngrams(_D.top_ngrams), "n -> the most share of "
                                           "characters the commonest n-gram may cover, "
                                           "within one text (Gopher's n; relaxed limits)")
    dup_ngrams: dict[str, float] = setting(_ngrams(_D.dup_ngrams), "n -> the most share of "
                                           "characters in repeated n-grams, within one text "
                                           "(Gopher's n; relaxed limits)")
    min_lines: int = setting(_D.min_lines, "lines from which the line-share rules apply")
    min_punct_lines: float | None = setting(_D.min_punct_lines, "least share of characters "
                                            "in lines ending in punctuation or holding a "
                                            "number (FineWeb line_punct_thr)")
    max_boilerplate_lines: float | None = setting(_D.max_boilerplate_lines, "share of "
                                                  "boilerplate lines (C4's policy and "
                                                  "javascript lines, web footers, Chinese)")
    lorem_ipsum: bool = setting(_D.lorem_ipsum, "drop any row with 'lorem ipsum' (C4)")

    def check(self) -> None:
        shares = ("ratio", "_lines", "_paragraphs", "_chars")  # settings that are a share
        for name, value in asdict(self).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise SettingsError(f"{name} must not be negative, got {value}")
            if isinstance(value, float) and name != "min_lines" and name.endswith(shares) \
                    and value > 1:
                raise SettingsError(f"{name} is a share of the text, in [0, 1] (null turns "
                                    f"the rule off), got {value}")
        for name in ("top_ngrams", "dup_ngrams"):
            for n, limit in getattr(self, name).items():
                if not n.isdigit() or int(n) < 1 or not 0 < limit <= 1:
                    raise SettingsError(f"{name}: {n}: {limit} needs n >= 1 and a share in "
                                        "(0, 1]")

    def thresholds(self) -> Thresholds:
        values = asdict(self)
        values["top_ngrams"] = tuple(sorted((int(n), v) for n, v in self.top_ngrams.items()))
        values["dup_ngrams"] = tuple(sorted((int(n), v) for n, v in self.dup_ngrams.items()))
        return Thresholds(**values)


class Quality(Tallied, Step):
    """Drop junk rows by Gopher, C4 and FineWeb heuristics (length, repeated lines and
    n-grams, symbol and digit ratios, punctuation, boilerplate), Chinese-aware; each drop
    records its rule, value and threshold."""

    name = "quality"
    settings_class = QualitySettings
    needs = ("id",)
    parallel = True
    replayable = True

    def __init__(self, settings: QualitySettings):
        self.settings = settings
        self.thresholds = settings.thresholds()
        self.tally = Tally()

    @classmethod
    def from_settings(cls, settings: QualitySettings, context: Any) -> Quality:
        return cls(settings)

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch | None:
        from meddata.curation.quality import check

        prose, labels = row_parts(batch)
        by_rule: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        for i, (parts, label) in enumerate(zip(prose, labels)):
            hit = check(parts, label, self.thresholds)
            if hit is not None:
                detail = {"rule": hit.rule, "value": hit.value, "limit": hit.limit}
                if hit.n is not None:
                    detail["n"] = hit.n
                by_rule[hit.rule].append((i, detail))
        if not by_rule:
            return batch
        drop = np.zeros(batch.num_rows, bool)
        ids = batch.column("id").to_pylist()
        for rule, hits in by_rule.items():
            where = [i for i, _ in hits]
            drop[where] = True
            for i, detail in hits:
                self.tally.add_drop(rule, {"id": ids[i], **detail,
                                           "text": "\n".join(prose[i]) or labels[i]})
            books.drop(rule, rows=batch.take(pa.array(where)), details=[d for _, d in hits])
        return batch.filter(pa.array(~drop))


STEP = Quality
