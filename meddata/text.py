"""Text helpers shared by converters, dedup and decontamination.

`normalize_key` is for comparison keys only, never for the stored text: NFKC (which also
maps full-width forms to half-width), case-fold, punctuation and symbols (Chinese ones too)
removed, whitespace collapsed. Digits are kept: "5 mg" and "50 mg" differ.
`tokens` is one mixed-script tokenizer: runs of letters/digits are words, and every CJK
character is a token of its own, so Chinese, English and mixed text need no segmenter.
"""

from __future__ import annotations

import unicodedata

import regex

CJK_CLASS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Bopomofo}"  # also valid in polars' regex
_PUNCT = regex.compile(r"[\p{P}\p{S}]+")
ZH_RATIO = 0.3  # share of CJK among letters from which a text counts as Chinese
_WS = regex.compile(r"\s+")
TOKEN_PATTERN = rf"[{CJK_CLASS}]|[^\W_{CJK_CLASS}]+"  # also valid in polars' regex
_TOKEN = regex.compile(TOKEN_PATTERN)
_CJK_CHAR = regex.compile(rf"[{CJK_CLASS}]")
_LATIN_CHAR = regex.compile(r"[A-Za-z]")


def normalize_key(text: str | None) -> str:
    if not text:
        return ""
    text = _PUNCT.sub(" ", unicodedata.normalize("NFKC", text).casefold())
    return _WS.sub(" ", text).strip()


def normalize_key_expr(text):
    """`normalize_key` as a polars expression over a String expression (NFKC, lower case
    with the two case-folds that matter in practice, ß -> ss and final sigma, punctuation
    and symbols to spaces, whitespace collapsed); null becomes ""."""
    return (text.fill_null("").str.normalize("NFKC").str.to_lowercase()
            .str.replace_all("ß", "ss", literal=True).str.replace_all("ς", "σ", literal=True)
            .str.replace_all(r"[\p{P}\p{S}]+", " ").str.replace_all(r"\s+", " ")
            .str.strip_chars())



def tokens(text: str | None) -> list[str]:
    """Mixed-script word tokens of the normalized text."""
    return _TOKEN.findall(normalize_key(text))


def cjk_ratio(text: str) -> float:
    """Share of CJK characters among CJK and Latin letters (0.0 for text with neither)."""
    cjk = len(_CJK_CHAR.findall(text))
    latin = len(_LATIN_CHAR.findall(text))
    return cjk / (cjk + latin) if cjk + latin else 0.0


def cjk_ratio_expr(text):
    """`cjk_ratio` as a polars expression over a String expression (first 4,000 chars)."""
    import polars as pl

    sample = text.str.slice(0, 4000)
    cjk = sample.str.count_matches(f"[{CJK_CLASS}]")
    latin = sample.str.count_matches("[A-Za-z]")
    return pl.when(cjk + latin > 0).then(cjk / (cjk + latin)).otherwise(0.0)


def detect_lang(*texts: str | None) -> str:
    """`zh` when CJK characters make up at least 30 % of the letters, else `en`.

    Chinese medical text often carries Latin drug names and units; 30 % keeps it `zh`.
    """
    joined = " ".join(t for t in texts if t)[:4000]
    return "zh" if cjk_ratio(joined) >= ZH_RATIO else "en"


def clean(text: object) -> str | None:
    """A stripped string, or None for missing, empty or non-text values."""
    if text is None or isinstance(text, (dict, list, bool)):
        return None
    if isinstance(text, float) and text != text:  # NaN from pandas-made files
        return None
    out = str(text).strip()
    return out or None


def shingles(text: str | None, n: int = 3) -> set[str]:
    """Word n-gram shingles over `tokens` (a text shorter than n gives one shingle)."""
    toks = tokens(text)
    if len(toks) <= n:
        return {" ".join(toks)} if toks else set()
    return {" ".join(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_equal(a: str | None, b: str | None, threshold: float = 0.8, n: int = 3) -> bool:
    """True when two texts are equal after normalization or their exact shingle Jaccard
    similarity reaches `threshold`."""
    if normalize_key(a) == normalize_key(b):
        return True
    return jaccard(shingles(a, n), shingles(b, n)) >= threshold
