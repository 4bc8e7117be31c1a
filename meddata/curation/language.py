"""Language identification for the `language` step, with lingua (offline, no model download).

lingua (lingua-language-detector) ships its n-gram models inside the wheel and runs in Rust,
so it works offline and fast; fastText's lid.176 (datatrove, Data-Juicer) needs a download.

Chinese medical text often carries English: drug names, units, lab codes ("口服阿莫西林
(Amoxicillin) 0.5g tid，CRP 12 mg/L"). A character n-gram model weighs the Latin letters of
such a text as English and can call it English; so the script decides first. Each Han or
kana character counts as one unit and each Latin (or other alphabetic) word as one unit (a
Chinese word is one to two characters, an English word one word); when CJK units make up at
least `cjk_share` (default 0.3) of the units, lingua identifies the CJK characters alone
(Chinese or Japanese; Korean by Hangul), else the whole text. An English abstract that
names one herb (黄芪) stays English; Chinese text with English drug names stays Chinese.

The candidate languages are the kept ones plus a fixed list of common ones (a text is then
called French rather than "English, unsure"). lingua only weighs the languages that use a
text's script, so the list holds six Latin-script languages (each one costs time on every
English row) and the common languages of other scripts (nearly free); a corpus that may
hold Dutch, Vietnamese or Indonesian adds them to `candidates`, or those rows stay unsure
(kept).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import regex

# lingua compares only the languages of a text's script, so the time goes to the Latin ones:
# six of them (twice as fast as eleven); other scripts cost little and are told for sure
COMMON = ("en", "fr", "de", "es", "it", "pt", "zh", "ja", "ko", "ru", "ar", "fa", "hi", "th")

_CJK = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]")
_CJK_RUN = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]+")
_WORD = regex.compile(r"[^\W\d_\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]+")


def lingua_language(code: str):
    """lingua's Language for an ISO 639-1 code, or ValueError naming the code."""
    from lingua import IsoCode639_1, Language

    try:
        return Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper()))
    except (AttributeError, ValueError):
        raise ValueError(f"{code!r} is not an ISO 639-1 code lingua knows "
                         "(two letters, for example en, zh, fr)") from None


def cjk_units(text: str) -> tuple[int, int]:
    """(CJK characters, other words): the two counts the script gate compares."""
    return len(_CJK.findall(text)), len(_WORD.findall(text))


@dataclass(frozen=True)
class Verdict:
    lang: str | None      # ISO 639-1 code, None when no language could be told
    confidence: float     # lingua's confidence for `lang` (0.0 when None)
    by_script: bool       # decided on the CJK characters alone


class Identifier:
    """Identifies the language of texts; built once per worker."""

    def __init__(self, candidates: tuple[str, ...] = COMMON, cjk_share: float = 0.3,
                 max_chars: int = 2000, low_accuracy: bool = False):
        self._detector = _detector(tuple(sorted(set(candidates))), low_accuracy)
        self.cjk_share, self.max_chars = cjk_share, max_chars

    def identify(self, texts: list[str]) -> list[Verdict]:
        """One verdict per text (lingua's parallel call over the batch)."""
        inputs, by_script = [], []
        for text in texts:
            text = text[: self.max_chars]
            cjk, words = cjk_units(text)
            script = cjk > 0 and cjk / (cjk + words) >= self.cjk_share
            by_script.append(script)
            inputs.append(" ".join(_CJK_RUN.findall(text)) if script else text)
        values = self._detector.compute_language_confidence_values_in_parallel(inputs)
        out = []
        for vals, script in zip(values, by_script):
            if not vals or vals[0].value <= 0.0:
                out.append(Verdict(None, 0.0, script))
            else:
                best = vals[0]
                out.append(Verdict(best.language.iso_code_639_1.name.lower(),
                                   float(best.value), script))
        return out


@functools.lru_cache(maxsize=4)
def _detector(candidates: tuple[str, ...], low_accuracy: bool):
    """One lingua detector per process and set of languages: its models take seconds to
    load and hundreds of MB, and it is immutable, so every step in a worker shares it."""
    from lingua import LanguageDetectorBuilder

    languages = [lingua_language(c) for c in candidates]
    if len(languages) < 2:
        raise ValueError("candidates: lingua needs at least two languages")
    builder = LanguageDetectorBuilder.from_languages(*languages)
    builder = builder.with_preloaded_language_models()
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    return builder.build()


def decide(verdict: Verdict, keep: tuple[str, ...], min_confidence: float) -> str:
    """`keep` (a kept language), `drop` (another language, confident enough) or `unsure`
    (another language below `min_confidence`, or none told: kept, its `lang` left as it was).
    An empty `keep` keeps every row."""
    if verdict.lang is None:
        return "unsure"
    if not keep or verdict.lang in keep:
        return "keep"
    return "drop" if verdict.confidence >= min_confidence else "unsure"
