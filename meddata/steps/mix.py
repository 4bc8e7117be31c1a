"""Mix: each group of sources sampled down or repeated up to its share of the build, by rows
or by tokens; `weight` above 1 repeats a source.

A recipe source belongs to a group (`group:`, else its own name: the `name` of a
conversion, its converter, or the version's name), and the recipe's `mix:` gives each
group a share:

    mix: {by: tokens, total: 2000000, shares: {medical: 0.7, general: 0.3}}

The step runs after the canonical-stage steps (dedup, decontam, curation), so a repeated
row is never a duplicate of itself to dedup, and before the kind's steps. It is two-phase
(meddata.steps.base):

- `scan` turns every row into its units: a source's `weight` w gives each row floor(w)
  copies, and one more for the rows whose seeded fraction of the id falls under w's
  fractional part; each unit keeps only its group, a seeded 64-bit hash of (id, copy) and
  its length (1 for rows, else tokens: the recipe's tokenizer, or the estimate of words
  and CJK characters when it has none; the manifest says which).
- `plan` (on the driver, over those compact units) sets each group's target, share x
  total (without `total`: the largest total no group has to repeat for), and meets it:
  every unit q = floor(target / available) times, then once more for the units with the
  lowest hashes until the remainder is as close as it gets. A share that cannot be met
  within 1 percentage point (an empty group, or rows too long for the target) stops the
  build in one line, before anything is written, unless `allow_short` (`--allow-short-mix`).
- `map` gives every row its copies: the first keeps the id, the others get `#repeat-<n>`
  appended (ids stay unique), and the split step hashes the id without it, so every copy
  of a row lands in the split of the row. Rows with no copy are dropped as
  `mix_sampled_out`; the ledger books the rows kept as rows out and the extra copies as
  `repeats`.

The report (manifest key `mix`, the card and report.html) gives, per group and per
source, the target share and the realised shares by rows and by tokens.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from meddata.steps.base import Books, Step, StepError
from meddata.steps.keys import fractions, seeded_array
from meddata.steps.registry import Settings, SettingsError, setting
from meddata.steps.select import SPEC

REPEAT = "#repeat-"          # a copy's id: the row's id, then this and the copy's number
_REPEAT_TAIL = r"#repeat-\d+$"
TOLERANCE = 0.01             # realised shares within 1 percentage point of the target


class MixError(StepError, ValueError):
    """A mix whose shares the sources cannot meet within 1 point (without allow_short)."""


def original_ids(ids: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The ids without a copy's `#repeat-<n>` tail (what the split step hashes)."""
    return pc.replace_substring_regex(ids, _REPEAT_TAIL, "")


@dataclass
class MixSettings(Settings):
    by: str = setting("rows", "rows | tokens: what the shares and the total count")
    total: int | None = setting(None, "rows or tokens in all; default: the most the sources "
                                      "give without repeating any group")
    shares: dict[str, float] = setting({}, "each group's share (a source without a group is "
                                           "a group of its own, by its name); they sum to 1")
    allow_short: bool = setting(False, "publish even when a share cannot be met within 1 "
                                       "point (--allow-short-mix)")

    def check(self) -> None:
        if self.by not in ("rows", "tokens"):
            raise SettingsError(f"by: {self.by!r} is not rows or tokens")
        if self.total is not None and self.total < 1:
            raise SettingsError(f"total: must be at least 1, got {self.total}")
        if not self.shares:
            raise SettingsError("shares: give each group's share, for example {medical: 0.7, "
                                "general: 0.3}")
        bad = {k: v for k, v in self.shares.items() if not 0 < v <= 1}
        if bad:
            raise SettingsError(f"shares: each share must be in (0, 1], got {bad}")
        if abs(sum(self.shares.values()) - 1) > 1e-6:
            raise SettingsError(f"shares: they sum to {sum(self.shares.values()):g}, not 1")


def source_label(spec) -> str:
    """A recipe source's name: its `name`, its converter, or its version's name."""
    if spec.ref:
        return spec.ref.split("@")[0].split("/")[-1]
    return spec.name or spec.source


def groups_of(specs) -> list[str]:
    """Each recipe source's group: its `group`, else its own name."""
    return [spec.group or source_label(spec) for spec in specs]


def check_recipe(recipe) -> None:
    """The recipe's groups against its `mix.shares`: every group has a share and every
    share names a group (a SettingsError naming the key otherwise)."""
    if recipe.mix is None:
        return
    if recipe.from_ref:
        raise SettingsError("recipe.mix: mixing works on the recipe's sources, not on a "
                            "from_ref build")
    groups = sorted(set(groups_of(recipe.sources)))
    unknown = [k for k in recipe.mix.shares if k not in groups]
    if unknown:
        raise SettingsError(f"recipe.mix.shares: {', '.join(map(repr, unknown))} is not a "
                            f"group of the sources; groups: {', '.join(groups)} (set a "
                            "source's `group`, or use its name)")
    missing = [g for g in groups if g not in recipe.mix.shares]
    if missing:
        raise SettingsError(f"recipe.mix.shares: group(s) {', '.join(missing)} have no share; "
                            "give every group one (or leave its sources out)")


def steps_for(recipe, tokenizer: str | None) -> list[Step]:
    """The mix step a recipe asks for (`mix:`, or a `weight` above 1), or none."""
    if recipe.mix is None and all(s.weight <= 1 for s in recipe.sources):
        return []
    return [Mix(recipe.mix, groups_of(recipe.sources),
                [source_label(s) for s in recipe.sources],
                [max(s.weight, 1.0) for s in recipe.sources], recipe.seed, tokenizer)]


class Mix(Step):
    """Sample each group down or repeat it up to its share (by rows or tokens), and repeat
    sources with `weight` above 1; every copy stays in its row's split."""

    name = "mix"
    settings_class = MixSettings
    needs = ("id", SPEC)
    passes = 2
    parallel = True
    worker_state = ("_measure",)

    def __init__(self, settings: MixSettings | None, groups: list[str], labels: list[str],
                 weights: list[float], seed: int, tokenizer: str | None = None):
        self.settings, self.seed, self.tokenizer = settings, seed, tokenizer
        self.group_names = sorted(set(groups))
        self.group_of = np.array([self.group_names.index(g) for g in groups], np.int32)
        self.labels, self.weights = labels, weights
        self.by = settings.by if settings is not None else "rows"
        self.passes_for: np.ndarray = np.ones(len(self.group_names), np.int64)  # q per group
        self.cutoff: np.ndarray = np.zeros(len(self.group_names), np.uint64)
        self.extra: np.ndarray = np.zeros(len(self.group_names), bool)  # any unit above q
        self.plan_report: dict[str, Any] = {}
        self.counts: Counter = Counter()  # (what, group or source) -> rows / tokens

    # ---- per row -------------------------------------------------------------------------
    def setup(self) -> None:
        from meddata.length import Measure

        self._measure = Measure(self.tokenizer)

    def counter(self) -> str:
        return "tokenizer" if self.tokenizer else "estimate (words + CJK characters)"

    def _tokens(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        import polars as pl

        from meddata.steps.text import row_texts

        return self._measure.texts(pl.Series(row_texts(batch), dtype=pl.String))

    def _base_copies(self, spec: np.ndarray, ids: list[str]) -> np.ndarray:
        """floor(weight) copies per row, one more where the id's seeded fraction falls
        under the weight's fractional part."""
        w = np.asarray(self.weights)[spec]
        base = np.floor(w).astype(np.int64)
        frac = w - base
        if (frac > 0).any():
            base += (fractions(self.seed, "mix-weight", ids) < frac).astype(np.int64)
        return base

    def _units(self, spec: np.ndarray, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row index of each unit, the unit's seeded hash)."""
        base = self._base_copies(spec, ids)
        rows = np.repeat(np.arange(len(ids)), base)
        starts = np.cumsum(base) - base
        copy = np.arange(len(rows)) - np.repeat(starts, base)
        keys = [f"{ids[r]}\x1f{c}" for r, c in zip(rows.tolist(), copy.tolist())]
        return rows, seeded_array(self.seed, "mix", keys)

    # ---- scan and plan ---------------------------------------------------------------------
    def scan(self, batch: pa.Table) -> pa.Table:
        spec = batch.column(SPEC).to_numpy()
        ids = batch.column("id").to_pylist()
        rows, hashes = self._units(spec, ids)
        length = self._tokens(batch) if self.by == "tokens" else np.ones(len(ids), np.int64)
        return pa.table({"group": self.group_of[spec][rows], "hash": hashes,
                         "length": np.asarray(length, np.int64)[rows]})

    def plan(self, compact: Iterator[pa.Table], spill_dir) -> None:
        parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for part in compact:
            group = part.column("group").to_numpy()
            hashes, length = part.column("hash").to_numpy(), part.column("length").to_numpy()
            for g in np.unique(group):
                mine = group == g
                parts.setdefault(int(g), []).append((hashes[mine], length[mine]))
        n = len(self.group_names)
        units = {g: (np.concatenate([h for h, _ in p]), np.concatenate([x for _, x in p]))
                 for g, p in parts.items()}
        available = np.array([int(units[g][1].sum()) if g in units else 0 for g in range(n)],
                             np.float64)
        if self.settings is None:  # weights only: every unit once
            self.passes_for = np.ones(n, np.int64)
            self.extra = np.zeros(n, bool)
            self.plan_report = {"available": dict(zip(self.group_names, available.tolist()))}
            return
        shares = np.array([self.settings.shares[g] for g in self.group_names])
        if self.settings.total is not None:
            total = float(self.settings.total)
        else:  # the most the sources give without repeating any group
            total = float(min((available[g] / shares[g] for g in range(n)), default=0.0))
        targets = shares * total
        realised = np.zeros(n)
        for g in range(n):
            if available[g] == 0:
                continue
            q = int(math.floor(targets[g] / available[g] + 1e-12))
            rest = targets[g] - q * available[g]
            hashes, length = units[g]
            order = np.argsort(hashes, kind="stable")
            cum = np.concatenate([[0], np.cumsum(length[order])])
            m = int(np.argmin(np.abs(cum - rest)))  # the count of units closest to the rest
            self.passes_for[g] = q
            self.extra[g] = m > 0
            self.cutoff[g] = hashes[order[m - 1]] if m > 0 else 0
            realised[g] = q * available[g] + cum[m]
        got = realised / realised.sum() if realised.sum() else realised
        off = np.abs(got - shares)
        self.plan_report = {"total_target": total, "total_planned": float(realised.sum()),
                            "available": dict(zip(self.group_names, available.tolist()))}
        if (off > TOLERANCE).any() or (available == 0).any():
            # the group that misses its own target most (an empty one first)
            miss = np.abs(realised - targets) / np.maximum(targets, 1e-9)
            g = int(np.argmax(miss + (available == 0)))
            self.plan_report["short"] = self.group_names[g]
            unit = "rows" if self.by == "rows" else "tokens"
            if not self.settings.allow_short:
                raise MixError(
                    f"mix: group {self.group_names[g]} has {available[g]:,.0f} {unit} after "
                    f"the earlier steps and cannot reach its share {shares[g]:.2f} of "
                    f"{total:,.0f} {unit} within 1 point (it would get {got[g]:.3f}); add "
                    "rows to it, change the shares or the total, or pass --allow-short-mix "
                    "to publish anyway; nothing published")

    # ---- map ------------------------------------------------------------------------------
    def copies(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """Each row's number of copies (0: sampled out)."""
        spec = batch.column(SPEC).to_numpy()
        ids = batch.column("id").to_pylist()
        group = self.group_of[spec]
        rows, hashes = self._units(spec, ids)
        unit_group = group[rows]
        per_unit = self.passes_for[unit_group] + (
            self.extra[unit_group] & (hashes <= self.cutoff[unit_group])).astype(np.int64)
        return np.bincount(rows, weights=per_unit, minlength=len(ids)).astype(np.int64)

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch | None:
        books.count_out = False  # rows out are the rows kept; their extra copies are repeats
        copies = self.copies(batch)
        spec = batch.column(SPEC).to_numpy()
        tokens = self._tokens(batch)
        kept = copies > 0
        books.drop("mix_sampled_out", int((~kept).sum()))
        books.rows_out += int(kept.sum())
        for key, names in (("group", np.asarray(self.group_names)[self.group_of[spec]]),
                           ("source", np.asarray(self.labels)[spec])):
            for name in np.unique(names):
                mine = names == name
                self.counts[(key, str(name), "rows_in")] += int(mine.sum())
                self.counts[(key, str(name), "rows_kept")] += int((mine & kept).sum())
                self.counts[(key, str(name), "rows")] += int(copies[mine].sum())
                self.counts[(key, str(name), "tokens")] += int((copies * tokens)[mine].sum())
        if not kept.any():
            return None
        take = np.repeat(np.arange(batch.num_rows), copies)
        out = batch.take(pa.array(take)).drop_columns([SPEC])
        starts = np.cumsum(copies) - copies
        nth = np.arange(len(take)) - np.repeat(starts, copies)  # 0 for the row itself
        if (nth > 0).any():
            ids = out.column("id").to_pylist()
            ids = [i if n == 0 else f"{i}{REPEAT}{n + 1}" for i, n in zip(ids, nth.tolist())]
            out = out.set_column(out.schema.get_field_index("id"), "id",
                                 pa.array(ids, pa.string()))
        return out

    def take_state(self) -> Counter:
        state, self.counts = self.counts, Counter()
        return state

    def merge_state(self, state: Counter) -> None:
        self.counts.update(state)

    def close(self, books: Books) -> None:
        rows = sum(v for (k, _, what), v in self.counts.items()
                   if k == "group" and what == "rows")
        kept = sum(v for (k, _, what), v in self.counts.items()
                   if k == "group" and what == "rows_kept")
        books.info["repeats"] = rows - kept
        books.info["rows_emitted"] = rows

    def report(self) -> dict[str, Any]:
        def table(key: str) -> dict[str, dict[str, Any]]:
            names = sorted({n for (k, n, _) in self.counts if k == key})
            rows = sum(self.counts[(key, n, "rows")] for n in names) or 1
            tokens = sum(self.counts[(key, n, "tokens")] for n in names) or 1
            out = {}
            for n in names:
                c = {w: self.counts[(key, n, w)] for w in ("rows_in", "rows_kept", "rows",
                                                         "tokens")}
                out[n] = {**c, "repeats": c["rows"] - c["rows_kept"],
                          "share_rows": round(c["rows"] / rows, 4),
                          "share_tokens": round(c["tokens"] / tokens, 4)}
            return out

        groups = table("group")
        if self.settings is not None:
            for g, row in groups.items():
                row["target"] = self.settings.shares[g]
        sources = table("source")
        for i, label in enumerate(self.labels):
            if label in sources:
                sources[label]["group"] = self.group_names[self.group_of[i]]
                sources[label]["weight"] = self.weights[i]
        return {"by": self.by if self.settings is not None else None,
                "counter": self.counter(),
                "total": self.settings.total if self.settings is not None else None,
                **self.plan_report, "groups": groups, "sources": sources}


def card_lines(manifest: dict[str, Any]) -> list[str]:
    """The dataset card's mix table: target and realised shares per group and source."""
    mix = manifest.get("mix")
    if not mix or not mix.get("groups"):
        return []
    by = mix.get("by")
    lines = ["", "## Mix", ""]
    if by:
        lines.append(f"Shares by {by} (tokens counted by the {mix['counter']}); target total "
                     f"{mix['total'] if mix.get('total') else 'as the sources give'}.")
        lines.append("")
    lines += ["| group / source | target | rows | share of rows | tokens | share of tokens "
              "| repeats |", "|---|---|---|---|---|---|---|"]
    for key in ("groups", "sources"):
        for name, r in mix[key].items():
            label = name if key == "groups" else f"  {name} ({r.get('group')})"
            target = f"{r['target']:.3f}" if r.get("target") is not None else "-"
            lines.append(f"| {label} | {target} | {r['rows']} | {r['share_rows']:.3f} | "
                         f"{r['tokens']} | {r['share_tokens']:.3f} | {r['repeats']} |")
    if mix.get("short"):
        lines += ["", f"Published with --allow-short-mix: group {mix['short']} misses its "
                      "share by more than 1 point."]
    return lines
