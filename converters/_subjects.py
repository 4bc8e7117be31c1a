"""Subject groups of the subject-per-file benchmarks (MMLU, C-Eval, CMMLU): `--subset`
picks subjects by file name, one subject or groups, comma-separated.

Groups: `medical` (the benchmark's medical subjects), `general` (every other subject),
and the benchmark's own categories, spelled alike for all three: `stem`, `humanities`,
`social_sciences`, `other`. The categories are the ones the
benchmarks' authors publish and lm-evaluation-harness groups by (MMLU: lm-eval's
mmlu_stem / humanities / social_sciences / other tags; C-Eval: subject_mapping.json;
CMMLU: src/categories.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meddata.convert import ConversionError, Converter
from meddata.readers import RawRecord, Span, base_suffix, read_csv, read_file

CATEGORIES = ("stem", "humanities", "social_sciences", "other")


def wanted(source: str, spec: str | None, categories: dict[str, str],
           medical: tuple[str, ...]) -> set[str] | None:
    """The subjects `spec` names (None: every subject). `categories` maps each subject to
    its category; an unknown name is an error that lists what would work."""
    if not spec:
        return None
    out: set[str] = set()
    for part in (p.strip() for p in spec.split(",")):
        if part == "medical":
            out |= set(medical)
        elif part == "general":
            out |= set(categories) - set(medical)
        elif part in CATEGORIES and part in categories.values():
            out |= {s for s, c in categories.items() if c == part}
        elif part in categories:
            out.add(part)
        else:
            groups = ["medical", "general", *(c for c in CATEGORIES
                                              if c in categories.values())]
            raise ConversionError(
                f"{source}: --subset {part!r} is neither a subject nor a group; groups: "
                f"{', '.join(groups)}; subjects: {', '.join(sorted(categories))}")
    return out


def domain(subject: str | None, medical: tuple[str, ...]) -> str:
    """`medical` for a medical subject, else `general`."""
    return "medical" if subject in medical else "general"


class SubjectFiles(Converter):
    """A benchmark released as one CSV (or Parquet) file per subject and split (C-Eval,
    CMMLU): `--subset` keeps the files of the subjects it names, `subject_split` reads a
    file's subject and split from its name."""

    categories: dict[str, str] = {}  # subject -> category
    medical: tuple[str, ...] = ()     # the medical subjects

    @staticmethod
    def subject_split(file: str) -> tuple[str | None, str | None]:
        raise NotImplementedError

    def file_subject(self, path: Path) -> str | None:
        """The subject a file holds by its name (None: unknown, or one per record)."""
        return self.subject_split(str(path))[0]

    def prepare(self, files: list[Path]) -> list[Path]:
        chosen = wanted(self.source, self.subset, self.categories, self.medical)
        self.left_out: list[str] = []
        kept = []
        for f in files:
            subject = self.file_subject(f)
            if chosen is not None and subject is not None and subject not in chosen:
                self.left_out.append(str(f))
            else:
                kept.append(f)
        return kept

    def report(self) -> dict[str, Any]:
        left = getattr(self, "left_out", [])
        return {"files_of_other_subjects": len(left)} if left else {}

    def read(self, path: Path, span: Span | None = None):
        return read_csv(path, span=span) if base_suffix(path) == ".csv" \
            else read_file(path, span)

    def split_for(self, rec: RawRecord) -> str:
        return self.split or self.subject_split(rec.file)[1] or super().split_for(rec)
