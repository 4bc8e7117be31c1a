"""HWT-CM (hwtcm-sft-v1, Traditional Chinese Medicine instructions) -> `instruction` rows.

Accepted layout: alpaca records instruction / input / output, as a JSON array or JSON Lines
(each has a test). `input` becomes the context; other fields are kept in meta.
"""

from __future__ import annotations

from meddata.convert import Converter

from ._instruction import instruction_row


class HWTCM(Converter):
    source = "hwt_cm"
    license = "apache-2.0"  # its dataset card
    license_url = "https://huggingface.co/datasets/Monor/hwtcm-sft-v1"
    default_subset = "sft"
    #: fields a record of this source has (all of one group)
    signatures = (("instruction", "output"),)

    def row(self, rec):
        return instruction_row(rec, ("instruction",), ("output",))
