"""MedMCQA -> canonical `mcq` rows.

Accepted layouts (each has a test):
- the release fields: id, question, opa..opd, cop, choice_type, exp, subject_name,
  topic_name; `cop` is 0-3 in the Hugging Face release and 1-4 in the original JSON release
  (JSON Lines, even in files named .json);
- re-layouts seen in the wild: `choices` as a list of "A. text" strings with `answer` as an
  index (Saf9933/Medpredict), and `options` {A..D} with `answer_idx` letter and `answer`
  text, `realidx` = MedMCQA id (xk-huang/medagents-benchmark).
Unanswered rows (cop/answer -1, null or missing: the test split) are kept with a null
answer. The index base is decided per file from the data (a 0 means 0-based, a value equal
to the option count means 1-based); when a file cannot decide it the conversion stops and
asks for `--cop-base`: it never guesses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from meddata.convert import (
    ConversionError,
    Converter,
    Reject,
    as_record,
    require,
    split_from_name,
)
from meddata.readers import RawRecord, _open
from meddata.text import clean

from . import _mcq

_INDEX = re.compile(rb'"(?:cop|answer)"\s*:\s*(-?\d+)\s*[,}]')


def scan_indices(path: Path, block_bytes: int = 16 << 20) -> set[int]:
    """Every integer `cop` / `answer` value in a file, found with a byte regex over blocks
    of whole lines (no parsing)."""
    found: set[bytes] = set()
    with _open(path) as f:
        rest = b""
        while block := f.read(block_bytes):
            data = rest + block
            cut = data.rfind(b"\n") + 1
            found.update(_INDEX.findall(data, 0, cut))
            rest = data[cut:]
        found.update(_INDEX.findall(rest))
    return {int(v) for v in found}


def decide_base(values: set[int], n_options: int = 4) -> int | None:
    answered = {v for v in values if v >= 0}
    if not answered:
        return None
    if 0 in answered and n_options in answered:
        raise ValueError(f"both 0 and {n_options} occur as answers")
    if 0 in answered:
        return 0
    if n_options in answered or max(answered) > n_options:
        return 1
    raise ValueError("only values 1..3 occur, which fit both 0- and 1-based answers")


TEXT_FIELDS = ("id", "question", "opa", "opb", "opc", "opd", "choice_type", "exp",
               "subject_name", "topic_name")
OPTION_FIELDS = ("opa", "opb", "opc", "opd")
_NOT_TEXT = re.compile(rb'"(?:' + b"|".join(f.encode() for f in TEXT_FIELDS) +
                       rb')"\s*:\s*[^"\sn]')


def _options(df):
    """The `options` column (A..D from opa..opd, none null) as a polars Series, assembled
    from Arrow buffers: polars' own list-of-struct expressions are several times slower."""
    import numpy as np
    import polars as pl
    import pyarrow as pa

    cols = [df[c].to_arrow() for c in OPTION_FIELDS]
    cols = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in cols]
    cols = [c.cast(pa.large_string()) for c in cols]
    n = len(cols[0])
    order = (np.arange(4, dtype=np.int64)[None, :] * n + np.arange(n, dtype=np.int64)[:, None])

    def int64s(values):  # (pa.array on numpy would import pandas, ~0.3 s)
        return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])

    texts = pa.concat_arrays(cols).take(int64s(order.ravel()))
    labels = pa.LargeStringArray.from_buffers(
        4 * n, pa.py_buffer(np.arange(4 * n + 1, dtype=np.int64)), pa.py_buffer(b"ABCD" * n))
    items = pa.StructArray.from_arrays([labels, texts], names=["label", "text"])
    offsets = int64s(np.arange(0, 4 * n + 1, 4, dtype=np.int64))
    return pl.Series("options", pa.LargeListArray.from_arrays(offsets, items))


class MedMCQA(Converter):
    source = "medmcqa"
    # the repository's LICENSE.md; the Hugging Face card (openlifescienceai/medmcqa) says
    # apache-2.0
    license = "mit"
    license_url = "https://github.com/medmcqa/medmcqa/blob/main/LICENSE.md"
    default_subset = "default"
    #: fields a record of this source has (all of one group)
    signatures = (("question", "opa", "opb"), ("question", "choices"),
                  ("question", "options", "realidx"))
    fast = True
    options = {"cop_base": "0 or 1: the base of `cop` / `answer` indices, when a file cannot "
                           "decide it itself"}

    def prepare(self, files: list[Path]) -> list[Path]:
        self.base: dict[str, int | None] = {}
        forced = self.opts.get("cop_base")
        if forced is not None and int(forced) not in (0, 1):
            raise ConversionError("--cop-base must be 0 or 1")
        for f in files:
            if forced is not None:
                self.base[str(f)] = int(forced)
                continue
            try:
                self.base[str(f)] = decide_base(scan_indices(f))
            except ValueError as e:
                raise ConversionError(
                    f"medmcqa: cannot tell whether answer indices in {f} are 0- or 1-based "
                    f"({e}); rerun with --cop-base 0 (Hugging Face release) or --cop-base 1 "
                    "(original JSON release)") from None
        return files

    def _base(self, rec: RawRecord) -> int:
        forced = self.opts.get("cop_base")
        if rec.file.startswith("hf://"):  # the Hugging Face release is 0-based
            return 0 if forced is None else int(forced)
        base = getattr(self, "base", {}).get(rec.file)
        if base is None:  # prepare() found no answered row, yet this one has an index
            raise Reject("unknown_index_base", "answer index in a file without a decided base")
        return base

    def fast_accepts(self, data: bytes) -> bool:
        """Every text field a JSON string or null (lists, objects, numbers and booleans take
        the record path, which rejects or converts them exactly as `row` does)."""
        return _NOT_TEXT.search(data) is None

    def fast_layout(self, df) -> bool:
        """The release layout with four non-null options: `frame` handles it vectorized."""
        import polars as pl

        cols = set(df.columns)
        if not cols <= set(TEXT_FIELDS) | {"cop"} or not {"question", *OPTION_FIELDS} <= cols:
            return False
        if any(df.schema[c] not in (pl.String, pl.Null) for c in cols - {"cop"}):
            return False
        if "cop" in cols and df.schema["cop"] not in (pl.Int64, pl.Null):
            return False
        return all(df[c].null_count() == 0 for c in OPTION_FIELDS)

    def frame(self, df, file: str):
        """`row` over a chunk of release-layout records, in polars expressions."""
        import polars as pl

        from meddata.text import CJK_CLASS, ZH_RATIO, cjk_ratio_expr

        present = [c for c in TEXT_FIELDS if c in df.columns]
        cleaned = {c: pl.col(c).cast(pl.String).str.strip_chars() for c in present}
        df = df.with_columns(**{c: pl.when(e == "").then(None).otherwise(e)
                                for c, e in cleaned.items()})
        df = df.with_columns(**{c: pl.lit(None, pl.String) for c in TEXT_FIELDS
                                if c not in df.columns})
        q, opts = pl.col("question"), [pl.col(f) for f in OPTION_FIELDS]
        base = getattr(self, "base", {}).get(file)
        cop = pl.col("cop") if "cop" in df.columns else pl.lit(None, pl.Int64)
        answered = cop.is_not_null() & (cop >= 0)
        reason = pl.when(q.is_null()).then(pl.lit("missing_field:question"))
        detail = pl.when(q.is_null()).then(pl.lit("no non-empty question"))
        for letter, opt in zip("ABCD", opts):
            reason = reason.when(opt.is_null()).then(pl.lit("empty_option"))
            detail = detail.when(opt.is_null()).then(pl.lit(f"option {letter} is empty"))
        invalid = cop < _mcq.UNANSWERED
        reason = reason.when(invalid).then(pl.lit("bad_answer_index"))
        detail = detail.when(invalid).then(pl.format(_mcq.BAD_INDEX, cop))
        if base is None:
            reason = reason.when(answered).then(pl.lit("unknown_index_base"))
            detail = detail.when(answered).then(
                pl.lit("answer index in a file without a decided base"))
            index = pl.lit(None, pl.Int64)
        else:
            index = pl.when(answered).then(cop - base)
            bad = answered & ((index < 0) | (index > 3))
            reason = reason.when(bad).then(pl.lit("answer_not_in_options"))
            detail = detail.when(bad).then(pl.format(f"answer index {{}} ({base}-based) with 4 "
                                                     "options", cop))
        answer, label = pl.when(index == 0).then(opts[0]), pl.when(index == 0).then(pl.lit("A"))
        for i, letter in enumerate("BCD", 1):
            answer = answer.when(index == i).then(opts[i])
            label = label.when(index == i).then(pl.lit(letter))

        def member(key: str, value: pl.Expr) -> pl.Expr:
            encoded = pl.struct(value.alias("v")).struct.json_encode()
            return pl.when(value.is_not_null()).then(
                pl.lit(f'"{key}": ') + encoded.str.slice(5, encoded.str.len_chars() - 6))

        meta = pl.concat_str([member("choice_type", pl.col("choice_type")),
                              member("subject", pl.col("subject_name")),
                              member("topic", pl.col("topic_name"))],
                             separator=", ", ignore_nulls=True)
        out = df.select(
            source_id=pl.col("id"),
            subset=pl.lit(self.subset_for(file)),
            split=pl.lit(self.split or split_from_name(file)),
            lang=pl.lit("en"),
            task=pl.lit("mcq"),
            question=q,
            context=pl.lit(None, pl.String),
            answer_label=label,
            answer=answer,
            rationale=pl.col("exp"),
            response=pl.lit(None, pl.String),
            meta=pl.lit("{") + meta + pl.lit("}"),
            _reason=reason,
            _detail=detail,
        ).with_columns(options=_options(df), turns=pl.lit([], dtype=pl.List(pl.Struct(
            {"role": pl.String, "content": pl.String}))))
        # lang as meddata.text.detect_lang: only rows with a CJK character can be zh
        q = out["question"]
        non_ascii = (q.str.len_bytes() != q.str.len_chars()).fill_null(False)  # cheap pre-check
        has_cjk = non_ascii & q.str.contains(f"[{CJK_CLASS}]").fill_null(False) \
            if non_ascii.any() else non_ascii
        if has_cjk.any():
            zh = out.filter(has_cjk).select(cjk_ratio_expr(pl.col("question")) >= ZH_RATIO
                                            ).to_series()
            lang = pl.Series("lang", ["en"] * out.height).scatter(
                has_cjk.arg_true(), pl.Series(["zh" if z else "en" for z in zh]))
            out = out.with_columns(lang=lang)
        return out

    def row(self, rec: RawRecord) -> dict[str, Any]:
        r = as_record(rec)
        question = require(r, "question")
        if r.get("choices") is not None:
            options = _mcq.parse_options(r, "choices")
        else:
            options = _mcq.parse_options(r)
        label = None
        raw_index = r.get("cop", r.get("answer") if r.get("choices") is not None else None)
        if "cop" in r or r.get("choices") is not None:
            index = _mcq.answer_index(raw_index)
            if index is None and raw_index is not None:
                label = _mcq.resolve(options, letter=raw_index)  # a letter or a text answer
            elif index is not None and index != _mcq.UNANSWERED:
                label = _mcq.answer_from_index(index, self._base(rec), options)
        else:
            label = _mcq.resolve(options, letter=r.get("answer_idx"), text=r.get("answer"))
        return _mcq.mcq_row(
            clean(r.get("id")) or clean(r.get("realidx")), question, options, label,
            rationale=clean(r.get("exp")),
            meta={"subject": clean(r.get("subject_name")), "topic": clean(r.get("topic_name")),
                  "choice_type": clean(r.get("choice_type"))})
