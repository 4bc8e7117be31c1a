"""Arrow schemas of the core: canonical rows, rejects, and the building blocks of the output
kinds (each kind's schema lives in its module in builders/)."""

from __future__ import annotations

import pyarrow as pa

OPTION = pa.struct([("label", pa.string()), ("text", pa.string())])
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)
OPTIONS = pa.list_(OPTION)

TASKS = ("mcq", "yes_no", "open_qa", "instruction", "reasoning", "dialogue", "document")
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
    ("options", OPTIONS),
    ("answer_label", pa.string()),
    ("answer", pa.string()),
    ("rationale", pa.string()),
    ("response", pa.string()),
    ("meta", pa.string()),
    ("raw_sha1", pa.string()),
    ("turns", MESSAGES),
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
