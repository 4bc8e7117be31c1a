"""Labels joined from a separate file (PubMedQA's test ground truth, CMB-Exam's answer key):
the ids a copy of the converter joined, handed from each worker and merged, so the
report counts joined and unmatched labels across all of them."""

from __future__ import annotations


class JoinedIds:
    """Mixed into a converter before `Converter`; it keeps the ids it joined in `matched`."""

    def take_state(self) -> set[str] | None:
        matched = getattr(self, "matched", None)
        if not matched:
            return None
        self.matched = set()
        return matched

    def merge_state(self, state: set[str]) -> None:
        self.matched |= state
