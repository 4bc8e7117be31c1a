"""ShenNong-TCM (ChatMed_TCM JSON Lines) -> `instruction` rows.

Accepted layouts (each has a test): query / response records (the ChatMed_TCM release),
and instruction / input / output records (alpaca re-exports of the same data).
"""

from __future__ import annotations

from meddata.convert import Converter

from ._instruction import instruction_row


class ShenNong(Converter):
    source = "shennong"
    # the repository's disclaimer: resources for academic research only, no commercial use
    license = "research-only"
    license_url = "https://github.com/michael-wzhu/ShenNong-TCM-LLM#免责声明"
    default_subset = "tcm"
    #: fields a record of this source has (all of one group)
    signatures = (("query", "response"), ("instruction", "output"))

    def row(self, rec):
        return instruction_row(rec, ("query", "instruction"), ("response", "output"))
