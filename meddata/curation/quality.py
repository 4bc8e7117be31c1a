"""Heuristic document quality rules for the `quality` step, Chinese-aware.

The rules are those of Gopher (Rae et al. 2021, appendix A: the quality and repetition
filters), C4 (Raffel et al. 2020: terminal punctuation, lorem ipsum, boilerplate lines) and
FineWeb (Penedo et al. 2024: share of lines ending in punctuation), as datatrove implements
them, adapted to medical rows:

- Units instead of words: a Latin (or other alphabetic) word is one unit, and so is each
  Chinese or Japanese character, so the same counts work on Chinese, English and mixed text
  without a segmenter (Chinese has no spaces; a Han character is roughly a syllable).
- A row is judged on its prose: question, context, rationale, response, and the turns of a
  dialogue (then in place of question and response, which repeat its first and last turn).
  Options and short answers are labels, not documents, and are not judged.
- Rules that only mean something on a long text (mean word length, n-gram repetition,
  line shares) start at `min_doc_words` units or `min_lines` lines, the size at which
  Gopher's statistics start (its minimum document is 50 words); below that a row is too
  short to tell, and short clinical answers are good data.
- The punctuation rule (FineWeb's share of lines ending in punctuation) weighs lines by
  their characters, and a line that holds a number (a table row, a lab value, a dose)
  counts as ended: a lab table under a long case is data, a menu is not.

`check(parts, labels, thresholds)` returns the first rule that fires as a `Hit` (rule,
value, threshold, n), or None.
The order and the default thresholds are in `RULES` and `Thresholds`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import regex

CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"
_UNIT = regex.compile(rf"[{CJK}]|[^\W_{CJK}]+")
_LATIN_WORD = regex.compile(rf"[^\W\d_{CJK}]+")
_NON_SPACE = regex.compile(r"\S")
_SYMBOL = regex.compile(r"[\p{P}\p{S}]")
_DIGIT = regex.compile(r"\d")
_HAS_DIGIT = regex.compile(r"\d")
_PARAGRAPH = regex.compile(r"\n{2,}")
_BULLET = regex.compile(r"^\s*[•●○▪■◦‣\-\*–—·]\s")
_ELLIPSIS = regex.compile(r"\.\.\.|…+")   # Chinese writes the ellipsis as two: ……
_ELLIPSIS_END = regex.compile(r"(?:\.\.\.|…)\s*$")
# terminal punctuation, Chinese and English (FineWeb's TERMINAL_PUNCTUATION holds these and
# more scripts); a closing quote or bracket after it still ends the sentence
TERMINAL = ".!?。！？…;；:：\"'”’」』)）】"
_TERMINAL = tuple(TERMINAL)
_LOREM = regex.compile(r"lorem ipsum", regex.IGNORECASE)
# C4's policy/javascript lines plus common web footers and Chinese web boilerplate
_BOILERPLATE = regex.compile(
    r"terms of use|privacy policy|cookie policy|uses cookies|use of cookies|use cookies|"
    r"enable javascript|javascript is (?:disabled|required)|all rights reserved|"
    r"click here to|subscribe to our newsletter|sign up for our newsletter|share this article|"
    r"版权所有|免责声明|转载请注明|未经授权.{0,6}转载|点击(?:这里|查看|进入|阅读)|扫一扫|扫码关注|"
    r"关注(?:我们|公众号)|微信公众号|本文来源|上一篇|下一篇|返回顶部|相关阅读|责任编辑",
    regex.IGNORECASE)


@dataclass(frozen=True)
class Thresholds:
    """Each rule's threshold; None turns the rule off. Sources in docs/curate.md."""
    min_words: int | None = 3                 # row shorter than this (units): too_short
    max_words: int | None = 100_000           # Gopher max_doc_words
    min_doc_words: int = 50                   # Gopher min_doc_words: where long-text rules start
    min_mean_word_length: float | None = 3.0  # Gopher (Latin words)
    max_mean_word_length: float | None = 10.0  # Gopher (Latin words)
    max_symbol_ratio: float | None = 0.5      # punctuation+symbols / non-space characters
    max_digit_ratio: float | None = 0.8       # digits / non-space characters
    max_hash_ellipsis_ratio: float | None = 0.1  # Gopher max_symbol_word_ratio
    max_bullet_lines: float | None = 0.9      # Gopher max_bullet_lines_ratio
    max_ellipsis_lines: float | None = 0.3    # Gopher max_ellipsis_lines_ratio
    max_dup_lines: float | None = 0.3         # Gopher dup_line_frac
    max_dup_line_chars: float | None = 0.2    # Gopher dup_line_char_frac
    max_dup_paragraphs: float | None = 0.3    # Gopher dup_para_frac
    max_dup_paragraph_chars: float | None = 0.2  # Gopher dup_para_char_frac
    # Gopher's n-gram sizes; its thresholds (0.20/0.18/0.16 and 0.15..0.10) drop 1-5 % of
    # real medical rows, which repeat their subject ("prostate cancer", 癫痫); these sit
    # above the highest share measured on the bundled real rows (0.38)
    top_ngrams: tuple[tuple[int, float], ...] = ((2, 0.4), (3, 0.4), (4, 0.4))
    dup_ngrams: tuple[tuple[int, float], ...] = ((5, 0.45), (6, 0.45), (7, 0.45), (8, 0.45),
                                                 (9, 0.45), (10, 0.45))
    min_lines: int = 5                        # where line-share rules start
    min_punct_lines: float | None = 0.12      # FineWeb line_punct_thr
    max_boilerplate_lines: float | None = 0.3  # share of C4-style boilerplate lines
    lorem_ipsum: bool = True                  # C4: any "lorem ipsum" drops the row


class Hit(NamedTuple):
    """A rule that fired: its name, the row's value, the threshold it passed and, for the
    n-gram rules, n."""
    rule: str
    value: float
    limit: float
    n: int | None = None


RULES = ("too_short", "too_long", "lorem_ipsum", "symbol_ratio", "digit_ratio",
         "hash_ellipsis_ratio", "mean_word_length", "bullet_lines", "ellipsis_lines",
         "dup_paragraphs", "dup_paragraph_chars", "dup_lines", "dup_line_chars",
         "top_ngram", "dup_ngram", "punct_lines", "boilerplate_lines")


def prose(question, context, rationale, response, turns) -> list[str]:
    """The prose parts of one row, the texts the rules judge (see the module docstring)."""
    if turns:
        parts = [context, rationale, *turns]
    else:
        parts = [question, context, rationale, response]
    return [p for p in parts if p]


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(duplicate items, characters in them): items seen before, as Gopher counts them."""
    seen: set[str] = set()
    dup = dup_chars = 0
    for item in items:
        if item in seen:
            dup += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return dup, dup_chars


def _top_ngram_share(units: list[str], n: int, total_chars: int) -> float:
    """Characters covered by the most frequent n-gram (all its occurrences) / all unit
    characters (Gopher's top n-gram rule)."""
    grams = Counter(tuple(units[i:i + n]) for i in range(len(units) - n + 1))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    return sum(len(u) for u in gram) * count / total_chars


def _dup_ngram_share(units: list[str], n: int, total_chars: int) -> float:
    """Characters in n-grams that occur again, counted once each and not overlapping /
    all unit characters (Gopher's duplicate n-gram rule)."""
    seen: set[tuple[str, ...]] = set()
    dup_chars, i, last = 0, 0, len(units) - n
    while i <= last:
        gram = tuple(units[i:i + n])
        if gram in seen:
            dup_chars += sum(len(u) for u in gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return dup_chars / total_chars


def check(parts: list[str], labels: str, t: Thresholds) -> Hit | None:
    """The first rule that fires on a row and its value, or None. `parts`: its prose (see
    `prose`); `labels`: its options and answer, joined, which count towards its length only."""
    text = "\n".join(parts)
    units = _UNIT.findall(text.lower())
    n = len(units)
    if t.min_words is not None:
        short = n + (len(_UNIT.findall(labels)) if labels and n < t.min_words else 0)
        if short < t.min_words:
            return Hit("too_short", float(short), t.min_words)
    if t.max_words is not None and n > t.max_words:
        return Hit("too_long", float(n), t.max_words)
    if t.lorem_ipsum and _LOREM.search(text):
        return Hit("lorem_ipsum", 1.0, 1.0)
    chars = len(_NON_SPACE.findall(text))
    if t.max_symbol_ratio is not None:
        ratio = len(_SYMBOL.findall(text)) / chars
        if ratio > t.max_symbol_ratio:
            return Hit("symbol_ratio", round(ratio, 4), t.max_symbol_ratio)
    if t.max_digit_ratio is not None:
        ratio = len(_DIGIT.findall(text)) / chars
        if ratio > t.max_digit_ratio:
            return Hit("digit_ratio", round(ratio, 4), t.max_digit_ratio)
    if t.max_hash_ellipsis_ratio is not None and n >= t.min_doc_words:
        ratio = (text.count("#") + len(_ELLIPSIS.findall(text))) / n
        if ratio > t.max_hash_ellipsis_ratio:
            return Hit("hash_ellipsis_ratio", round(ratio, 4), t.max_hash_ellipsis_ratio)
    words = _LATIN_WORD.findall(text)
    if len(words) >= t.min_doc_words:
        mean = sum(map(len, words)) / len(words)
        if t.min_mean_word_length is not None and mean < t.min_mean_word_length:
            return Hit("mean_word_length", round(mean, 4), t.min_mean_word_length)
        if t.max_mean_word_length is not None and mean > t.max_mean_word_length:
            return Hit("mean_word_length", round(mean, 4), t.max_mean_word_length)
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if line]
    if len(lines) >= t.min_lines:
        if t.max_bullet_lines is not None:
            ratio = sum(1 for line in lines if _BULLET.match(line)) / len(lines)
            if ratio > t.max_bullet_lines:
                return Hit("bullet_lines", round(ratio, 4), t.max_bullet_lines)
        if t.max_ellipsis_lines is not None:
            ratio = sum(1 for line in lines if _ELLIPSIS_END.search(line)) / len(lines)
            if ratio > t.max_ellipsis_lines:
                return Hit("ellipsis_lines", round(ratio, 4), t.max_ellipsis_lines)
    if len(lines) >= 2:   # Gopher's order: paragraphs, then lines
        paragraphs = [p.strip() for p in _PARAGRAPH.split(text.strip()) if p.strip()]
        if len(paragraphs) >= 2:
            dup, dup_chars = _duplicates(paragraphs)
            if t.max_dup_paragraphs is not None and dup / len(paragraphs) > t.max_dup_paragraphs:
                return Hit("dup_paragraphs", round(dup / len(paragraphs), 4),
                           t.max_dup_paragraphs)
            total = sum(map(len, paragraphs))
            if (t.max_dup_paragraph_chars is not None
                    and dup_chars / total > t.max_dup_paragraph_chars):
                return Hit("dup_paragraph_chars", round(dup_chars / total, 4),
                           t.max_dup_paragraph_chars)
        dup, dup_chars = _duplicates(lines)
        if t.max_dup_lines is not None and dup / len(lines) > t.max_dup_lines:
            return Hit("dup_lines", round(dup / len(lines), 4), t.max_dup_lines)
        total = sum(map(len, lines))
        if t.max_dup_line_chars is not None and dup_chars / total > t.max_dup_line_chars:
            return Hit("dup_line_chars", round(dup_chars / total, 4), t.max_dup_line_chars)
    for part in parts if n >= t.min_doc_words else ():
        # within one text: an explanation that restates its question is not repetition
        part_units = units if len(parts) == 1 else _UNIT.findall(part.lower())
        if len(part_units) < t.min_doc_words:
            continue
        total_chars = sum(map(len, part_units))
        for size, limit in t.top_ngrams:
            share = _top_ngram_share(part_units, size, total_chars)
            if share > limit:
                return Hit("top_ngram", round(share, 4), limit, size)
        for size, limit in t.dup_ngrams:
            share = _dup_ngram_share(part_units, size, total_chars)
            if share > limit:
                return Hit("dup_ngram", round(share, 4), limit, size)
    if len(lines) >= t.min_lines:
        if t.min_punct_lines is not None:
            ended = sum(len(line) for line in lines
                        if line.endswith(_TERMINAL) or _HAS_DIGIT.search(line))
            ratio = ended / sum(map(len, lines))
            if ratio < t.min_punct_lines:
                return Hit("punct_lines", round(ratio, 4), t.min_punct_lines)
        if t.max_boilerplate_lines is not None:
            ratio = sum(1 for line in lines if _BOILERPLATE.search(line)) / len(lines)
            if ratio > t.max_boilerplate_lines:
                return Hit("boilerplate_lines", round(ratio, 4), t.max_boilerplate_lines)
    return None
