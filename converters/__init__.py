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
}


def get(name: str):
    """The converter class registered for source `name`."""
    try:
        module, _, cls = REGISTRY[name].partition(":")
    except KeyError:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    return getattr(importlib.import_module(module), cls)
