"""De-identify: replace patients' identifiers in every text column and dialogue turn with
typed placeholders ([NAME], [PHONE], [ID], ...) or consistent pseudonyms; rows are edited,
never dropped.

Chinese and English recognizers with validators (meddata.deid): resident ID numbers (check
digit), mobiles and landlines (area codes), e-mail, URLs, IP addresses, bank cards (Luhn),
SSNs, names, addresses, record numbers and dates of birth in context, ages above `max_age`.
Clinical numbers and words (doses, lab values, blood pressures, temperatures, ICD codes,
durations, younger ages, drug and disease names) never match.

The books count edits by entity type; the report (manifest key `deidentify`, shown in the
data report) holds the counts and a few examples rendered with placeholders. No original
value is written anywhere in the new version; the parent version still holds them (see
docs/deidentify.md).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from meddata.deid import ENTITIES, MODES, PLACEHOLDERS, Detector, Redactor, example
from meddata.steps.base import Books, Step, StepError
from meddata.steps.registry import Settings, SettingsError, setting
from meddata.steps.text import edit_texts

MIN_SALT_BYTES = 16


@dataclass
class DeidentifySettings(Settings):
    mode: str = setting("placeholder", "placeholder: each value becomes its type's "
                                       "placeholder ([NAME], [PHONE], [ID], ...); pseudonym: "
                                       "the same value becomes the same fake value (HMAC of "
                                       "the value under the secret salt in `salt_env`)")
    entities: list[str] = setting(list(ENTITIES), "entity types to replace (default: all): "
                                                  + ", ".join(ENTITIES))
    max_age: int = setting(89, "ages above this are replaced (HIPAA Safe Harbor: 89)")
    salt_env: str = setting("MEDDATA_DEID_SALT", "pseudonym mode: the environment variable "
                                                 "holding the secret salt (never written "
                                                 "anywhere; at least 16 bytes)")
    examples: int = setting(5, "redacted examples kept for the report (placeholders only)")

    def check(self) -> None:
        if self.mode not in MODES:
            raise SettingsError(f"mode: {self.mode!r} is not one of {', '.join(MODES)}")
        unknown = [e for e in self.entities if e not in PLACEHOLDERS]
        if unknown:
            raise SettingsError(f"entities: unknown type(s) {', '.join(map(repr, unknown))}; "
                                f"known: {', '.join(ENTITIES)}")
        if not self.entities:
            raise SettingsError("entities: the list is empty; leave it out for all types")
        if not 0 <= self.max_age <= 130:
            raise SettingsError(f"max_age: {self.max_age} is not between 0 and 130")
        if not 0 <= self.examples <= 100:
            raise SettingsError(f"examples: {self.examples} is not between 0 and 100")


def _salt(settings: DeidentifySettings) -> bytes:
    if settings.mode != "pseudonym":
        return b""
    value = os.environ.get(settings.salt_env, "")
    if len(value.encode()) < MIN_SALT_BYTES:
        state = "is not set" if not value else f"is shorter than {MIN_SALT_BYTES} bytes"
        raise StepError(f"deidentify: pseudonym mode needs a secret salt: ${settings.salt_env} "
                        f"{state}; set it to a long random value (for example the output of "
                        f"`python -c 'import secrets; print(secrets.token_hex(32))'`) and keep "
                        f"it secret, or use mode: placeholder")
    return value.encode()


class Deidentify(Step):
    """Replace patients' identifiers (names, phones, ID numbers, e-mail, URLs, IPs, bank
    cards, addresses, record numbers, dates of birth, ages over 89) in Chinese and English
    text with placeholders or consistent pseudonyms; rows are edited, never dropped.

    Every text column, option and dialogue turn is read; only the identifying value is
    replaced, never its context word. Counts by entity type go to the manifest and the data
    report, with a few examples shown with placeholders; no original value is written."""

    name = "deidentify"
    settings_class = DeidentifySettings
    needs = ("id",)
    adds = ()
    parallel = True
    # deterministic, but slower than reading a spill back; and a replay would count its
    # findings twice in the report: a two-pass step after it reads a spill instead
    replayable = False
    worker_state = ("_redactor",)

    def __init__(self, settings: DeidentifySettings):
        self.settings = settings
        self.found: Counter[str] = Counter()   # findings by entity type (report state)
        self.rows_changed = 0
        self.texts_changed = 0
        self.columns: Counter[str] = Counter()
        self.examples: list[dict[str, Any]] = []

    @classmethod
    def from_settings(cls, settings: DeidentifySettings, context: Any) -> Deidentify:
        _salt(settings)  # fail before any work when the salt is missing
        return cls(settings)

    def setup(self) -> None:
        detector = Detector(tuple(self.settings.entities), max_age=self.settings.max_age)
        self._redactor = Redactor(detector, self.settings.mode, _salt(self.settings))

    def _redact_many(self, texts: list[str]) -> list[str]:
        redactor = self._redactor
        out = []
        for text in texts:
            findings = redactor.detector.find(text)
            if not findings:
                out.append(text)
                continue
            new, counts = redactor.apply(text, findings)
            self._batch_found.update(counts)
            if len(self.examples) < self.settings.examples:
                self.examples.append({"entities": sorted(counts),
                                      "text": example(text, findings)})
            out.append(new)
        return out

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch:
        self._batch_found: Counter[str] = Counter()
        out, changed, per_column = edit_texts(batch, self._redact_many)
        for entity, n in sorted(self._batch_found.items()):
            books.edit(entity, n)
        rows = int(changed.sum())
        books.rows_changed += rows
        self.found.update(self._batch_found)
        self.rows_changed += rows
        self.texts_changed += sum(per_column.values())
        self.columns.update(per_column)
        return out

    def scrub(self, value: Any) -> Any:
        """`value` (text, or dicts and lists holding text) with every identifier replaced
        as in the rows. The runner passes what every other step writes about rows through
        it (their report examples, the rows they drop into the rejects), so a step before
        this one cannot leak an original value into the version either."""
        self.ready()
        if isinstance(value, str):
            findings = self._redactor.detector.find(value)
            return self._redactor.apply(value, findings)[0] if findings else value
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub(v) for v in value]
        return value

    def take_state(self) -> dict[str, Any]:
        state = {"found": dict(self.found), "rows_changed": self.rows_changed,
                 "texts_changed": self.texts_changed, "columns": dict(self.columns),
                 "examples": self.examples}
        self.found, self.columns, self.examples = Counter(), Counter(), []
        self.rows_changed = self.texts_changed = 0
        return state

    def merge_state(self, state: dict[str, Any]) -> None:
        self.found.update(state["found"])
        self.columns.update(state["columns"])
        self.rows_changed += state["rows_changed"]
        self.texts_changed += state["texts_changed"]
        room = self.settings.examples - len(self.examples)
        if room > 0:
            self.examples += state["examples"][:room]

    def report(self) -> dict[str, Any]:
        """{"mode", "entities": {type: replaced}, "total", "rows_changed", "texts_changed",
        "columns": {column: texts changed}, "placeholders": {type: placeholder},
        "examples": [{"entities": [type, ...], "text": snippet with placeholders}]}."""
        return {"mode": self.settings.mode,
                "entities": dict(sorted(self.found.items())),
                "total": sum(self.found.values()),
                "rows_changed": self.rows_changed,
                "texts_changed": self.texts_changed,
                "columns": dict(sorted(self.columns.items())),
                "placeholders": {e: PLACEHOLDERS[e] for e in self.settings.entities},
                "examples": list(self.examples)}


STEP = Deidentify
