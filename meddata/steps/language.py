"""language: identify each row's language, set `lang`, keep the listed languages (recipe
`curate:`, `meddata curate`).

The row's prose (question, context, rationale, response, dialogue turns; its options and
answer when it has no prose) is identified by lingua, offline, behind a script gate that
keeps Chinese text with English drug names and units Chinese (meddata.curation.language).
A row is dropped only when its language is not in `keep` and lingua is at least
`min_confidence` sure of it; a row lingua cannot tell (a lab value, a short stem) keeps
its `lang`. Rows in a kept language get the identified `lang`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from meddata.curation.language import COMMON
from meddata.curation.report import Tallied, Tally
from meddata.curation.rows import row_parts
from meddata.steps.base import Books, Step
from meddata.steps.registry import Settings, SettingsError, setting


@dataclass
class LanguageSettings(Settings):
    keep: list[str] = setting(["en", "zh"], "ISO 639-1 codes of the languages to keep "
                                            "(empty: keep every row, only set `lang`)")
    min_confidence: float = setting(0.8, "lingua's confidence from which a row in another "
                                         "language is dropped (below it the row is kept)")
    candidates: list[str] = setting(list(COMMON), "the languages lingua chooses among "
                                                  "(the kept ones are added)")
    cjk_share: float = setting(0.3, "share of CJK units (a character each; a Latin word is "
                                    "one unit) from which a text is identified by its CJK "
                                    "characters alone")
    max_chars: int = setting(2000, "characters of each row that are identified")
    low_accuracy: bool = setting(False, "lingua's low-accuracy mode (faster, worse on "
                                        "short text)")

    def check(self) -> None:
        from meddata.curation.language import lingua_language

        for code in [*self.keep, *self.candidates]:
            try:
                lingua_language(code)
            except ValueError as e:
                raise SettingsError(str(e)) from None
        if not 0 <= self.min_confidence <= 1:
            raise SettingsError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if not 0 < self.cjk_share <= 1:
            raise SettingsError(f"cjk_share must be in (0, 1], got {self.cjk_share}")
        if self.max_chars < 1:
            raise SettingsError(f"max_chars must be at least 1, got {self.max_chars}")


class Language(Tallied, Step):
    """Identify each row's language with lingua (offline; Chinese with English drug names
    stays Chinese), set `lang`, and drop rows surely in a language not kept."""

    name = "language"
    settings_class = LanguageSettings
    needs = ("id", "lang")
    parallel = True
    replayable = True
    worker_state = ("_identifier",)

    def __init__(self, settings: LanguageSettings):
        self.settings = settings
        self.keep = tuple(settings.keep)
        self.candidates = tuple(dict.fromkeys([*settings.candidates, *settings.keep]))
        self.tally = Tally()

    @classmethod
    def from_settings(cls, settings: LanguageSettings, context: Any) -> Language:
        return cls(settings)

    def setup(self) -> None:
        from meddata.curation.language import Identifier

        s = self.settings
        self._identifier = Identifier(self.candidates, s.cjk_share, s.max_chars,
                                      s.low_accuracy)

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch | None:
        from meddata.curation.language import decide

        prose, labels = row_parts(batch)
        docs = ["\n".join(parts) if parts else label for parts, label in zip(prose, labels)]
        verdicts = self._identifier.identify(docs)
        old = batch.column("lang").to_pylist()
        new, drop = list(old), np.zeros(batch.num_rows, bool)
        details = []
        for i, v in enumerate(verdicts):
            decision = decide(v, self.keep, self.settings.min_confidence)
            if decision == "drop":
                drop[i] = True
                details.append({"rule": "other_language", "value": v.lang,
                                "confidence": round(v.confidence, 4),
                                "limit": self.settings.min_confidence})
            elif decision == "keep":
                new[i] = v.lang
                self.tally.count(f"lang:{v.lang}")
                if v.by_script:
                    self.tally.count("by_script")
            else:
                self.tally.count("unsure")
                self.tally.count(f"lang:{old[i]}")
        if drop.any():
            where = np.flatnonzero(drop)
            ids = batch.column("id").to_pylist()
            for i, d in zip(where.tolist(), details):
                self.tally.add_drop("other_language", {"id": ids[i], "rule": "other_language",
                                                       "value": d["value"],
                                                       "confidence": d["confidence"],
                                                       "limit": d["limit"], "text": docs[i]})
            books.drop("other_language", rows=batch.take(pa.array(where)), details=details)
        changed = sum(1 for a, b, d in zip(old, new, drop) if a != b and not d)
        if changed:
            books.edit("lang_set", changed)
            books.rows_changed += changed
        out = batch.set_column(batch.schema.get_field_index("lang"), "lang",
                               pa.array(new, batch.schema.field("lang").type))
        return out.filter(pa.array(~drop)) if drop.any() else out

    def report(self) -> dict[str, Any]:
        counts = self.tally.counts
        languages = {k[5:]: v for k, v in sorted(counts.items()) if k.startswith("lang:")}
        return self.tally.report(self.name, asdict(self.settings), languages=languages,
                                 unsure=counts.get("unsure", 0),
                                 by_script=counts.get("by_script", 0))


STEP = Language
