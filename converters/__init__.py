"""Converters: one module per source, raw records -> canonical rows.

Look a converter up by source name with `get(name)`; modules load only when asked for.
"""

from __future__ import annotations

import importlib

REGISTRY = {
    "pubmedqa": "meddata.converters.pubmedqa:PubMedQA",
    "medmcqa": "meddata.converters.medmcqa:MedMCQA",
    "medqa": "meddata.converters.medqa:MedQA",
    "hwt_cm": "meddata.converters.hwt_cm:HWTCM",
    "shennong": "meddata.converters.shennong:ShenNong",
    "medical_o1": "meddata.converters.medical_o1:MedicalO1",
    "chinese_medical_dialogue": "meddata.converters.chinese_medical_dialogue:ChineseMedicalDialogue",
    "corpus": "meddata.converters.corpus:Corpus",
    "mmlu": "meddata.converters.mmlu:MMLU",
    "ceval": "meddata.converters.ceval:CEval",
    "cmmlu": "meddata.converters.cmmlu:CMMLU",
    "cmexam": "meddata.converters.cmexam:CMExam",
    "cmb": "meddata.converters.cmb:CMB",
    "huatuo26m": "meddata.converters.huatuo26m:Huatuo26M",
    "sharegpt": "meddata.converters.sharegpt:ShareGPT",
}


def get(name: str):
    """The converter class registered for source `name`."""
    try:
        module, _, cls = REGISTRY[name].partition(":")
    except KeyError:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    return getattr(importlib.import_module(module), cls)
