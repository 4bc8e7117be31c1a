"""Traditional <-> Simplified Chinese for the `chinese` step, with OpenCC.

OpenCC converts phrase by phrase with its own dictionaries (a character-by-character table
gets 乾燥/乾隆, 頭髮/發展 wrong), and its configurations also carry regional vocabulary:
`tw2sp` turns Taiwan terms into Mainland ones (軟體 -> 软件), `s2twp` the other way.

`to: simplified` uses `t2s`, `to: traditional` uses `s2t`; `config` names any OpenCC
configuration instead. Only Chinese text is converted: a text value with no Han character is
left alone, and so is one with Japanese kana (its kanji are not Traditional Chinese).
"""

from __future__ import annotations

import regex

CONFIGS = ("t2s", "s2t", "tw2s", "tw2sp", "hk2s", "hk2sp", "s2tw", "s2twp", "s2hk", "s2hkp",
           "t2tw", "t2hk", "tw2t", "hk2t")
TARGETS = {"simplified": "t2s", "traditional": "s2t"}

_HAN = regex.compile(r"\p{Han}")
_KANA = regex.compile(r"[\p{Hiragana}\p{Katakana}]")


def is_chinese(text: str) -> bool:
    """Has a Han character and no kana."""
    return bool(_HAN.search(text)) and not _KANA.search(text)


def config_for(to: str, config: str | None) -> str:
    if config:
        if config not in CONFIGS:
            raise ValueError(f"config: {config!r} is not an OpenCC configuration; "
                             f"use one of {', '.join(CONFIGS)}")
        return config
    if to not in TARGETS:
        raise ValueError(f"to: {to!r} is not one of {', '.join(TARGETS)}")
    return TARGETS[to]


class Converter:
    """One OpenCC converter (built once per worker)."""

    def __init__(self, config: str):
        import opencc

        self.config = config
        self._cc = opencc.OpenCC(config)

    def convert(self, text: str) -> str:
        return self._cc.convert(text) if is_chinese(text) else text
