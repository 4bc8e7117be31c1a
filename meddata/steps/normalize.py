"""normalize: repair broken text in place (recipe `curate:`, `meddata curate`).

Every text value of a row (question, context, options, answer, rationale, response,
dialogue turns) goes through meddata.curation.normalize: ftfy's mojibake repair, HTML tags
dropped and entities decoded, the Unicode normal form, control and zero-width characters
removed, whitespace collapsed (line breaks kept). Rows are never dropped; the books count
text values changed by fix and rows changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from meddata.curation.report import Tallied, Tally
from meddata.steps.base import Books, Step
from meddata.steps.registry import Settings, SettingsError, setting
from meddata.steps.text import texts


@dataclass
class NormalizeSettings(Settings):
    fix_encoding: bool = setting(True, "repair mojibake and broken Unicode with ftfy")
    form: str = setting("NFC", "Unicode normal form: NFC, NFKC (also folds full-width "
                               "letters and digits) or none")
    html: bool = setting(True, "drop HTML tags (script and style with their content) and "
                               "decode entities, in text that holds real tags or entities")
    controls: bool = setting(True, "remove control, zero-width and soft-hyphen characters")
    whitespace: bool = setting(True, "collapse runs of spaces and tabs, trim lines, keep at "
                                     "most one blank line")

    def check(self) -> None:
        if self.form not in ("NFC", "NFKC", "none"):
            raise SettingsError(f"form: {self.form!r} is not NFC, NFKC or none")


class Normalize(Tallied, Step):
    """Repair text in place: mojibake (ftfy), HTML tags and entities, the Unicode normal
    form, control characters and whitespace; counts the rows changed, drops none."""

    name = "normalize"
    settings_class = NormalizeSettings
    needs = ("id",)
    parallel = True
    replayable = True
    worker_state = ("_fixer",)

    def __init__(self, settings: NormalizeSettings):
        self.settings = settings
        self.tally = Tally()

    @classmethod
    def from_settings(cls, settings: NormalizeSettings, context: Any) -> Normalize:
        return cls(settings)

    def setup(self) -> None:
        from meddata.curation.normalize import Normalizer

        self._fixer = Normalizer(**asdict(self.settings))

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch:
        return edit_batch(batch, books, self.tally, self._fixer.fix)


def edit_batch(batch: pa.RecordBatch, books: Books, tally: Tally, fix) -> pa.RecordBatch:
    """`fix` (text -> (text, fixes)) over every text value of `batch`: the new batch; the
    books count values changed per fix and rows changed, the tally keeps examples."""
    from meddata.steps.text import edit_texts

    found: list[tuple[int, str, str, tuple[str, ...]]] = []  # (value index, before, after, fixes)
    seen = 0

    def fix_all(values: list[str]) -> list[str]:
        nonlocal seen
        out = []
        for i, value in enumerate(values):
            new, fixes = fix(value)
            if fixes:
                found.append((seen + i, value, new, fixes))
            out.append(new)
        seen += len(values)
        return out

    out, changed, _ = edit_texts(batch, fix_all)
    if not found:
        return out
    counts: dict[str, int] = {}
    for _, _, _, fixes in found:
        for name in fixes:
            counts[name] = counts.get(name, 0) + 1
    for name, n in counts.items():
        books.edit(name, n)
    books.rows_changed += int(changed.sum())
    wanted = [f for f in found if any(tally.wants("edited", name) for name in f[3])]
    if wanted:   # where the examples came from: only while the tally still takes some
        where = texts(batch)
        ids = batch.column("id").to_pylist()
        for index, before, after, fixes in wanted:
            example = {"id": ids[int(where.rows[index])], "column": where.columns[index],
                       "fix": list(fixes), "before": before, "after": after}
            for name in fixes:
                tally.add_edit(name, example)
    return out

STEP = Normalize
