"""chinese: convert Chinese text between Traditional and Simplified with OpenCC (recipe
`curate:`, `meddata curate`).

Every text value that holds Han characters and no Japanese kana is converted phrase by
phrase (meddata.curation.chinese); English, numbers and Japanese are left alone. Rows are
never dropped; the books count text values converted and rows changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from meddata.curation.chinese import CONFIGS, TARGETS, config_for
from meddata.curation.report import Tallied, Tally
from meddata.steps.base import Books, Step
from meddata.steps.normalize import edit_batch
from meddata.steps.registry import Settings, SettingsError, setting


@dataclass
class ChineseSettings(Settings):
    to: str = setting("simplified", "simplified (OpenCC t2s) or traditional (s2t)")
    config: str | None = setting(None, "an OpenCC configuration instead of `to`: "
                                       + ", ".join(CONFIGS) + " (tw2sp also turns Taiwan "
                                       "terms into Mainland ones: 軟體 -> 软件)")

    def check(self) -> None:
        if self.to not in TARGETS:
            raise SettingsError(f"to: {self.to!r} is not one of {', '.join(TARGETS)}")
        try:
            config_for(self.to, self.config)
        except ValueError as e:
            raise SettingsError(str(e)) from None


class Chinese(Tallied, Step):
    """Convert Chinese text between Traditional and Simplified (OpenCC, phrase by phrase),
    only in text with Han characters; counts the rows changed, drops none."""

    name = "chinese"
    settings_class = ChineseSettings
    needs = ("id",)
    parallel = True
    replayable = True
    worker_state = ("_converter",)

    def __init__(self, settings: ChineseSettings):
        self.settings = settings
        self.opencc = config_for(settings.to, settings.config)
        self.tally = Tally()

    @classmethod
    def from_settings(cls, settings: ChineseSettings, context: Any) -> Chinese:
        return cls(settings)

    def setup(self) -> None:
        from meddata.curation.chinese import Converter

        self._converter = Converter(self.opencc)

    def _fix(self, text: str) -> tuple[str, tuple[str, ...]]:
        new = self._converter.convert(text)
        return new, ((self.opencc,) if new != text else ())

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch:
        return edit_batch(batch, books, self.tally, self._fix)

    def report(self) -> dict[str, Any]:
        return self.tally.report(self.name, {**asdict(self.settings), "opencc": self.opencc})


STEP = Chinese
