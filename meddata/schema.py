"""Arrow schemas: the canonical rows (DESIGN.md §3) and the output kinds (§4)."""

from __future__ import annotations

import pyarrow as pa

OPTION = pa.struct([("label", pa.string()), ("text", pa.string())])
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

SOURCES = ("pubmedqa", "medmcqa", "medqa", "hwt_cm", "shennong", "medical_o1",
           "chinese_medical_dialogue", "corpus")
TASKS = ("mcq", "yes_no", "open_qa", "instruction", "reasoning", "document")
LANGS = ("en", "zh")

CANONICAL = pa.schema([
    ("id", pa.string()),
    ("source", pa.string()),
    ("subset", pa.string()),
    ("split", pa.string()),
    ("lang", pa.string()),
    ("task", pa.string()),
    ("question", pa.string()),
    ("context", pa.string()),
    ("options", pa.list_(OPTION)),
    ("answer_label", pa.string()),
    ("answer", pa.string()),
    ("rationale", pa.string()),
    ("response", pa.string()),
    ("meta", pa.string()),
    ("raw_sha1", pa.string()),
])

# Quarantined input rows: where they came from, what they were, why they were set aside.
REJECTS = pa.schema([
    ("stage", pa.string()),
    ("source", pa.string()),
    ("file", pa.string()),
    ("position", pa.int64()),
    ("raw", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
])

LINEAGE = [("id", pa.string()), ("source", pa.string()), ("lang", pa.string()),
           ("task", pa.string()), ("split", pa.string())]

KINDS = {
    "canonical": CANONICAL,
    "sft": pa.schema(LINEAGE + [("messages", MESSAGES)]),
    "preference": pa.schema(LINEAGE + [("prompt", MESSAGES), ("chosen", MESSAGES),
                                       ("rejected", MESSAGES), ("rejected_by", pa.string())]),
    "kto": pa.schema(LINEAGE + [("prompt", MESSAGES), ("completion", MESSAGES),
                                ("label", pa.bool_()), ("rejected_by", pa.string())]),
    "pretrain": pa.schema(LINEAGE + [("text", pa.string())]),
    "pretrain_packed": pa.schema(LINEAGE + [("text", pa.string()),
                                            ("input_ids", pa.list_(pa.int32()))]),
    "prompts": pa.schema(LINEAGE + [("prompt", MESSAGES), ("answer", pa.string()),
                                    ("answer_label", pa.string()),
                                    ("options", pa.list_(OPTION))]),
}
