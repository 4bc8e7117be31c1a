"""One self-contained HTML page per version (and per pair of versions): what the version
holds, how the build got there, what it dropped and why, and what its rows look like.

    meddata report REF [--against REF] [--out FILE]

`build` writes the same page into the version's folder (`report.html`, named in the
manifest, linked from the dataset card) unless `--no-report`.

Every count and histogram covers all rows, read in batches (the state kept is a histogram
per source and split, and a few example rows); examples are the first rows of each source.
Plots are matplotlib figures inlined as SVG, so the page needs no script and no network:
matplotlib is the plotting library most Python users already have, and its SVG output
renders in any browser offline (Vega-Lite or Plotly would need their JavaScript inlined,
several hundred kB more per page).

Sections: summary (kind, id, tags, parents, recipe, rows per split, source, language and
task, validation), plots (token lengths per source and split against `max_tokens`, the
source and language mix, the conservation ledger per stage, drops by reason per stage;
chosen against rejected length and the rejected strategies for preference data, the label
balance for KTO, sequence fill for packed pretraining rows), dedup clusters (survivor and
dropped members side by side), decontamination matches (the benchmark item next to the
dropped row), rejects (counts by reason and file, the first examples of each reason), samples
(rows per source as the trainer sees them) and, with `against`, the rows added, removed and
changed, the shift of each source and language, and both length histograms overlaid.
"""

from __future__ import annotations

import heapq
import html
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from meddata.store import Store, Version

# token-length bins: fine where chat rows are, coarse in the tail
EDGES = np.array([0, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072,
                  4096, 6144, 8192, 12288, 16384, 32768, 65536])
FILL_EDGES = np.linspace(0.0, 1.0, 21)
EXAMPLES_PER_SOURCE = 2
EXAMPLES_PER_REASON = 3
CLUSTERS = 8
MEMBERS = 4
DECONTAM_MATCHES = 8
TEXT_CHARS = 1_200
DEDUP_REASONS = ("exact_duplicate", "near_duplicate", "duplicate_of_earlier")
READ_ROWS = 16_384  # rows per batch when the report reads a version


# ---- one pass over the rows ----------------------------------------------------------------------
@dataclass
class Facts:
    """What the page shows about one version, gathered in one streaming pass."""

    version: Version
    counter: str = "estimate (words + CJK characters)"
    max_tokens: int | None = None
    lengths: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    chosen: np.ndarray = field(default_factory=lambda: np.zeros(len(EDGES), np.int64))
    rejected: np.ndarray = field(default_factory=lambda: np.zeros(len(EDGES), np.int64))
    labels: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    fill: np.ndarray | None = None
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    rows_seen: int = 0


def _bin(values: np.ndarray) -> np.ndarray:
    """Counts per EDGES bin (the last bin takes everything above the last edge)."""
    idx = np.clip(np.searchsorted(EDGES, values, side="right") - 1, 0, len(EDGES) - 1)
    return np.bincount(idx, minlength=len(EDGES))


def _measure(version: Version, tokenizer: str | None = None):
    """`tokenizer` (a local folder) when given, else the tokenizer the version was built
    with when it is still on this machine, else the estimate."""
    from meddata.length import Measure

    if tokenizer:
        return Measure(tokenizer)
    recipe = version.manifest.get("recipe") or {}
    path = recipe.get("tokenizer")
    if path and Path(path).exists():
        try:
            return Measure(path)
        except (OSError, ValueError):
            pass
    return Measure(None)


def _lengths(version: Version, batch: pa.RecordBatch, measure) -> np.ndarray:
    import polars as pl

    from meddata.builders import registry
    from meddata.length import estimate

    if "input_ids" in batch.schema.names:  # packed pretraining rows: exact tokens
        import pyarrow.compute as pc

        return pc.list_value_length(batch.column("input_ids")).to_numpy(
            zero_copy_only=False).astype(np.int64)
    if version.kind == "canonical":
        frame = pl.from_arrow(batch.select([c for c in ("question", "context", "response",
                                                        "rationale")
                                            if c in batch.schema.names]))
        text = frame.select(pl.concat_str(pl.all(), separator="\n", ignore_nulls=True))
        return estimate(text.to_series())
    return np.asarray(registry.get(version.kind).length(batch, measure), dtype=np.int64)


def collect(version: Version, progress: bool = False, verify: str = "size",
            tokenizer: str | None = None) -> Facts:
    import polars as pl

    from meddata.length import Measure
    from meddata.progress import bar

    facts = Facts(version)
    measure = _measure(version, tokenizer) if version.kind != "canonical" else Measure(None)
    facts.counter = measure.describe()["counter"]
    facts.max_tokens = (version.manifest.get("recipe") or {}).get("max_tokens")
    packed = "input_ids" in version.schema.names
    if packed:
        facts.counter = "tokenizer (packed input_ids)"
        facts.fill = np.zeros(len(FILL_EDGES) - 1, np.int64)
    with bar(f"report {version.kind}/{version.name}", version.rows, enabled=progress) as b:
        for batch in version.iter_batches(batch_size=READ_ROWS, verify=verify):
            lengths = _lengths(version, batch, measure)
            frame = pl.DataFrame({"source": batch.column("source"),
                                  "split": batch.column("split"), "n": lengths})
            for (source, split), group in frame.group_by(["source", "split"]):
                key = (source or "-", split or "-")
                counts = _bin(group["n"].to_numpy())
                facts.lengths[key] = facts.lengths.get(key, 0) + counts
            if version.kind == "preference":
                for column, hist in (("chosen", facts.chosen), ("rejected", facts.rejected)):
                    hist += _bin(measure.conversations(pl.from_arrow(batch.column(column))))
            if version.kind == "kto":
                for source, label in zip(batch.column("source").to_pylist(),
                                         batch.column("label").to_pylist()):
                    facts.labels[source][label] += 1
            if packed and facts.max_tokens:
                share = np.minimum(lengths / facts.max_tokens, 1.0)
                facts.fill += np.histogram(share, FILL_EDGES)[0]
            _keep_samples(facts, batch)
            facts.rows_seen += batch.num_rows
            b.update(batch.num_rows)
    return facts


def _keep_samples(facts: Facts, batch: pa.RecordBatch) -> None:
    sources = batch.column("source").to_pylist()
    wanted = [i for i, s in enumerate(sources)
              if len(facts.samples[s]) < EXAMPLES_PER_SOURCE]
    for i in wanted:
        if len(facts.samples[sources[i]]) < EXAMPLES_PER_SOURCE:
            facts.samples[sources[i]].append(batch.slice(i, 1).to_pylist()[0])


# ---- the rejects ---------------------------------------------------------------------------------
def _reject_batches(version: Version, columns: list[str]):
    path = version.path / "rejects.parquet"
    if path.exists():
        yield from pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS, columns=columns)


def rejects_summary(version: Version) -> dict[str, Any]:
    """Counts by stage, reason and file, and the first examples of each reason."""
    counts: Counter = Counter()
    examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for batch in _reject_batches(version, ["stage", "reason", "file", "position", "raw",
                                           "detail"]):
        for row in batch.to_pylist():
            counts[(row["stage"] or "-", row["reason"] or "-", row["file"] or "-")] += 1
            if len(examples[row["reason"]]) < EXAMPLES_PER_REASON:
                examples[row["reason"]].append(row)
    return {"counts": counts, "examples": examples}


def dedup_clusters(version: Version, verify: str = "size") -> list[dict[str, Any]]:
    """The largest clusters: the survivor's id and the dropped members (two passes over
    the rejects: the top cluster sizes, then their members)."""
    sizes: dict[str, int] = {}
    top: list[tuple[int, str]] = []
    for batch in _reject_batches(version, ["reason", "detail"]):
        for reason, detail in zip(batch.column("reason").to_pylist(),
                                  batch.column("detail").to_pylist()):
            if reason not in DEDUP_REASONS or not detail:
                continue
            d = json.loads(detail)
            kept = d.get("kept")
            if kept is None or kept in sizes:
                continue
            sizes[kept] = int(d.get("cluster_size") or 2)
            heapq.heappush(top, (sizes[kept], kept))
            if len(top) > CLUSTERS:
                gone = heapq.heappop(top)[1]
                del sizes[gone]
    clusters = {kept: {"kept": kept, "size": size, "members": [], "reason": None}
                for size, kept in top}
    for batch in _reject_batches(version, ["reason", "detail", "raw"]):
        for reason, detail, raw in zip(batch.column("reason").to_pylist(),
                                       batch.column("detail").to_pylist(),
                                       batch.column("raw").to_pylist()):
            if reason not in DEDUP_REASONS or not detail:
                continue
            d = json.loads(detail)
            c = clusters.get(d.get("kept"))
            if c is not None and len(c["members"]) < MEMBERS:
                c["reason"] = reason
                c["members"].append({"similarity": d.get("similarity"), "raw": raw,
                                     "against": d.get("against")})
    found = _rows_by_id(version, list(clusters), verify)
    for c in clusters.values():
        c["survivor"] = found.get(c["kept"])
    return sorted(clusters.values(), key=lambda c: -c["size"])


def decontam_matches(version: Version, store: Store | None) -> list[dict[str, Any]]:
    """The first matches: the dropped row next to the benchmark item it matched."""
    matches = []
    for batch in _reject_batches(version, ["reason", "detail", "raw"]):
        for reason, detail, raw in zip(batch.column("reason").to_pylist(),
                                       batch.column("detail").to_pylist(),
                                       batch.column("raw").to_pylist()):
            if reason == "contaminated" and detail and len(matches) < DECONTAM_MATCHES:
                matches.append({**json.loads(detail), "raw": raw})
        if len(matches) >= DECONTAM_MATCHES:
            break
    wanted = {m["matched"] for m in matches}
    items: dict[str, dict[str, Any]] = {}
    if store is not None and wanted:
        for parent in version.manifest.get("parents", []):
            if isinstance(parent, dict) and parent.get("role") == "benchmark":
                try:
                    items.update(_rows_by_id(store.resolve(parent["ref"]), list(wanted)))
                except Exception:  # a benchmark no longer in this store: show ids only
                    continue
    for m in matches:
        m["item"] = items.get(m["matched"])
    return matches


def _rows_by_id(version: Version, ids: list[str], verify: str = "size"
                ) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    import polars as pl

    frame = version.scan(verify=verify).filter(pl.col("id").is_in(ids)).collect()
    return {r["id"]: r for r in frame.to_dicts()}


# ---- plots ------------------------------------------------------------------------------------------
def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


# CJK fonts named after DejaVu Sans (matplotlib's default, which has no CJK glyphs), in the
# page's font stack and in the plots' text: each glyph comes from the first font that has it
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
             "PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "WenQuanYi Micro Hei")


def _plot_fonts() -> list[str]:
    """DejaVu Sans, then the CJK fonts matplotlib finds here (so it measures CJK text
    with a real font and does not warn about missing glyphs)."""
    from matplotlib import font_manager

    have = {f.name for f in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *(f for f in CJK_FONTS if f in have)]


def _figure(width: float = 7.0, height: float = 3.2, rows: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9,
                         "font.family": _plot_fonts(),
                         "axes.spines.top": False, "axes.spines.right": False})
    plt.rcParams["svg.hashsalt"] = f"meddata-{_figure.count}"  # unique ids per inline SVG
    _figure.count += 1
    if rows > 1:
        return plt.subplots(rows, 1, figsize=(width, height), sharex=True, squeeze=False)
    return plt.subplots(figsize=(width, height))


_figure.count = 0


def _counts_axis(axis) -> None:
    """Whole-number ticks on an axis of counts (no 0.5 rows)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True, nbins=4))


def length_plot(hists: dict[str, np.ndarray], max_tokens: int | None, counter: str,
                title: str) -> str:
    """Histograms on the EDGES bins, drawn at their true positions on a log-scaled length
    axis (the 0-15 bin from 1), so a wide bin looks wide. One or two series: filled steps
    with transparency on one plot; more: small multiples, one plot per series, sharing the
    length axis, each with its own count scale."""
    used = max((int(np.flatnonzero(h).max()) for h in hists.values() if h.any()), default=0)
    edges = EDGES[:used + 2].astype(float)
    edges[0] = 1.0
    series = sorted(hists.items())
    multiples = len(series) > 2
    if multiples:
        fig, axes = _figure(7.0, 0.55 + 0.62 * len(series), rows=len(series))
        axes = [a[0] for a in axes]
    else:
        fig, ax = _figure()
        axes = [ax] * len(series) or [ax]
    colors = ["#4878a8", "#d1802f", "#4c9a60", "#c25b56", "#8a6bb0", "#8c6d4f", "#c873b0",
              "#7f7f7f", "#a8a838", "#3fa6b5"]
    for i, ((name, h), ax) in enumerate(zip(series, axes)):
        values = np.append(h[:used + 1], h[used] if used < len(h) else 0).astype(float)
        color = colors[i % len(colors)]
        ax.fill_between(edges, values, step="post", alpha=0.25, color=color, linewidth=0)
        ax.step(edges, values, where="post", color=color, label=name, linewidth=1.2)
        _counts_axis(ax.yaxis)
        if multiples:
            ax.text(0.995, 0.92, f"{name} ({int(h.sum()):,})", transform=ax.transAxes,
                    ha="right", va="top", fontsize=7)
    for ax in dict.fromkeys(axes):
        ax.set_xscale("log", base=2)
        if max_tokens:
            ax.axvline(max_tokens, color="crimson", linestyle="--",
                       label=f"max_tokens {max_tokens}")
    last = axes[-1]
    last.set_xticks(edges, [f"{int(e) if e > 1 else 0}" for e in edges], rotation=45,
                    fontsize=7)
    last.minorticks_off()
    last.set_xlim(edges[0], edges[-1])
    last.set_xlabel(f"length ({counter}); bins as marked")
    if multiples:
        fig.supylabel("rows per bin", fontsize=8)
        axes[0].set_title(title)
        if max_tokens:
            axes[0].legend(fontsize=7, loc="upper left")
    else:
        axes[0].set_ylabel("rows per bin")
        axes[0].set_title(title)
        axes[0].legend(fontsize=7, ncols=2)
    return _svg(fig)


def bar_plot(values: dict[str, int | float], title: str, xlabel: str = "rows") -> str:
    items = sorted(values.items(), key=lambda kv: -kv[1])[:25]
    fig, ax = _figure(7.0, max(1.6, 0.28 * len(items) + 0.8))
    ax.barh([str(k) for k, _ in items][::-1], [v for _, v in items][::-1], color="#4878a8")
    for y, (_, v) in enumerate(items[::-1]):
        ax.text(v, y, f" {v:,}", va="center", fontsize=7)
    if all(float(v).is_integer() for _, v in items):
        _counts_axis(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _svg(fig)


def ledger_plot(stages: list[dict[str, Any]]) -> str:
    fig, ax = _figure(7.0, max(1.8, 0.45 * len(stages) + 0.8))
    names = [s["stage"] for s in stages][::-1]
    ax.barh(np.arange(len(names)) + 0.2, [s["rows_in"] for s in stages][::-1], height=0.4,
            label="rows in", color="#9bb7d4")
    ax.barh(np.arange(len(names)) - 0.2, [s["rows_out"] for s in stages][::-1], height=0.4,
            label="rows out", color="#4878a8")
    ax.set_yticks(np.arange(len(names)), names)
    _counts_axis(ax.xaxis)
    ax.set_xlabel("rows")
    ax.set_title("Rows in and out of each stage")
    ax.legend(fontsize=7)
    return _svg(fig)


def drops_plot(stages: list[dict[str, Any]]) -> str:
    reasons = sorted({r for s in stages for r in s["dropped"]})
    fig, ax = _figure(7.0, max(1.8, 0.45 * len(stages) + 0.8))
    left = np.zeros(len(stages))
    names = [s["stage"] for s in stages]
    for reason in reasons:
        widths = np.array([s["dropped"].get(reason, 0) for s in stages], float)
        ax.barh(names, widths, left=left, label=reason)
        left += widths
    ax.invert_yaxis()
    _counts_axis(ax.xaxis)
    ax.set_xlabel("rows dropped")
    ax.set_title("Drops by reason and stage")
    ax.legend(fontsize=7, ncols=2)
    return _svg(fig)


def fill_plot(fill: np.ndarray) -> str:
    fig, ax = _figure()
    ax.bar(FILL_EDGES[:-1], fill, width=FILL_EDGES[1] - FILL_EDGES[0], align="edge",
           color="#4878a8")
    ax.set_xlabel("share of max_tokens filled")
    _counts_axis(ax.yaxis)
    ax.set_ylabel("packed rows")
    ax.set_title("Sequence fill of packed rows")
    return _svg(fig)


def label_plot(labels: dict[str, Counter]) -> str:
    fig, ax = _figure(7.0, max(1.8, 0.3 * len(labels) + 0.8))
    names = sorted(labels)
    good = np.array([labels[s][True] for s in names])
    bad = np.array([labels[s][False] for s in names])
    ax.barh(names, good, label="desirable (True)", color="#4c9a60")
    ax.barh(names, bad, left=good, label="undesirable (False)", color="#c25b56")
    _counts_axis(ax.xaxis)
    ax.set_xlabel("rows")
    ax.set_title("KTO label balance per source")
    ax.legend(fontsize=7)
    return _svg(fig)


# ---- HTML ------------------------------------------------------------------------------------------
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","Noto Sans SC","Source Han Sans SC","PingFang SC","Hiragino Sans GB","Microsoft YaHei","WenQuanYi Micro Hei",sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
svg text{font-family:"DejaVu Sans","Noto Sans CJK SC","Noto Sans SC","Source Han Sans SC","PingFang SC","Hiragino Sans GB","Microsoft YaHei","WenQuanYi Micro Hei",sans-serif !important}
header{background:#1d3557;color:#fff;padding:18px 28px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;opacity:.85}main{padding:8px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #dde2ea;border-radius:8px;margin:16px 0;padding:12px 18px}
h2{font-size:16px;margin:6px 0 10px}table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
td,th{border:1px solid #dde2ea;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:12px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:10px}.row{white-space:pre-wrap;
font:12px/1.4 ui-monospace,Menlo,monospace;background:#f3f5f8;border-radius:6px;padding:8px;
margin:4px 0;max-height:320px;overflow:auto}.role{font-weight:600;color:#1d3557}
.cols{display:flex;flex-wrap:wrap;gap:0 28px}.ok{color:#2d7a3e}.bad{color:#b3261e}svg{max-width:100%;height:auto}nav a{margin-right:12px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _clip(text: Any) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + f" … ({len(text):,} chars)"


def _table(head: list[str] | None, rows: list[list[Any]], numeric: set[int] = frozenset()
           ) -> str:
    out = ["<table>"]
    if head:
        out += ["<tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(
            f"<td class='n'>{v:,}</td>" if i in numeric and isinstance(v, int)
            else f"<td>{_e(v)}</td>" for i, v in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _conversation(messages: Any) -> str:
    if not messages:
        return "<div class='row'>(empty)</div>"
    if isinstance(messages, str):
        return f"<div class='row'>{_e(_clip(messages))}</div>"
    return "<div class='row'>" + "\n".join(
        f"<span class='role'>{_e(m.get('role'))}</span>: {_e(_clip(m.get('content')))}"
        for m in messages) + "</div>"


def render_row(kind: str, row: dict[str, Any]) -> str:
    """A row as the trainer sees it (conversations turn by turn)."""
    if kind == "sft":
        return _conversation(row.get("messages"))
    if kind == "preference":
        return (_conversation(row.get("prompt")) + "<div class='pair'><div><b class='ok'>chosen"
                f"</b>{_conversation(row.get('chosen'))}</div><div><b class='bad'>rejected "
                f"({_e(row.get('rejected_by'))})</b>{_conversation(row.get('rejected'))}"
                "</div></div>")
    if kind == "kto":
        label = "<b class='ok'>desirable</b>" if row.get("label") else \
            "<b class='bad'>undesirable</b>"
        return _conversation(row.get("prompt")) + label + _conversation(row.get("completion"))
    if kind == "prompts":
        return _conversation(row.get("prompt")) + \
            f"<div class='row'>answer: {_e(row.get('answer'))}</div>"
    if kind == "pretrain" and "text" not in row and row.get("input_ids") is not None:
        ids = row["input_ids"]  # a packed sequence: its ids (the version keeps no text)
        return f"<div class='row'>{len(ids)} token ids: {_e(_clip(ids[:64]))} …</div>"
    if kind == "pretrain":
        return f"<div class='row'>{_e(_clip(row.get('text')))}</div>"
    return canonical_row(row)


def canonical_row(row: dict[str, Any]) -> str:
    parts = [f"[{row.get('task')}] {row.get('question') or ''}"]
    if row.get("context"):
        parts.append(f"context: {row['context']}")
    for o in row.get("options") or []:
        parts.append(f"{o['label']}. {o['text']}")
    if row.get("answer_label") or row.get("answer"):
        parts.append(f"answer: {row.get('answer_label') or ''} {row.get('answer') or ''}")
    if row.get("response"):
        parts.append(f"response: {row['response']}")
    for t in row.get("turns") or []:
        parts.append(f"{t['role']}: {t['content']}")
    return f"<div class='row'>{_e(_clip(chr(10).join(parts)))}</div>"


def _raw(raw: str | None) -> str:
    try:
        value = json.loads(raw or "")
    except ValueError:
        return f"<div class='row'>{_e(_clip(raw))}</div>"
    if isinstance(value, dict):
        if "question" in value and "task" in value:
            return canonical_row(value)
        for key in ("messages", "prompt", "text"):
            if key in value:
                return render_row({"messages": "sft", "prompt": "prompts",
                                   "text": "pretrain"}[key], value)
    return f"<div class='row'>{_e(_clip(json.dumps(value, ensure_ascii=False, indent=1)))}</div>"


def _section(anchor: str, title: str, body: str) -> str:
    return f"<section id='{anchor}'><h2>{_e(title)}</h2>{body}</section>"


def check_results(version: Version) -> tuple[str, list[dict[str, Any]], int]:
    """(where from, each check's result, rows checked): the latest `meddata validate` run
    recorded beside the version (its row suite and the checks of the published files),
    else the build's pre-publish results in the manifest."""
    runs = sorted((version.path / "validations").glob("*.json"))
    if runs:
        try:
            run = json.loads(runs[-1].read_text(encoding="utf-8"))
            return (f"meddata validate, {run.get('run_at', runs[-1].stem)}", run["checks"],
                    run.get("rows_checked", 0))
        except (OSError, ValueError, KeyError):
            pass
    val = version.manifest.get("validation") or {}
    return "the build, before publishing", val.get("results") or [], val.get("rows_checked", 0)


def _observed(check: dict[str, Any], rows: int) -> str:
    """What a check saw, as great-expectations' data docs show it: its measured value, or
    for a per-row expectation how many rows were unexpected."""
    if check.get("observed") is not None:
        value = check["observed"]
        return f"{value:,}" if isinstance(value, int) else str(value)
    if check.get("expectation") == "manifest":
        return "as recorded" if check.get("success") else "differs"
    bad = int(check.get("failing_rows") or 0)
    share = f" ({100 * bad / rows:.2f} %)" if rows else ""
    return f"{bad:,} of {rows:,} rows unexpected{share}"


def checks_table(version: Version) -> str:
    where, checks, rows = check_results(version)
    if not checks:
        return ""
    return (f"<h3>Checks ({_e(where)})</h3>" + _table(
        ["check", "expects", "result", "observed value"],
        [[c["name"], c.get("description") or c.get("expectation") or "",
          "passed" if c.get("success") else "FAILED", _observed(c, rows)] for c in checks]))


def summary_section(version: Version, store: Store | None) -> str:
    m = version.manifest
    tags = []
    if store is not None:
        try:
            tags = sorted(t for t, vid in store.tags(version.kind, version.name).items()
                          if vid == version.id)
        except Exception:
            tags = []
    counts = m.get("stats", {}).get("counts", {})
    rows = [["kind", m["kind"]], ["name", m["name"]], ["id", m["id"]],
            *([["tags", ", ".join(tags)]] if tags else []), ["rows", f"{m['rows']:,}"],
            ["created", m.get("created_at")], ["meddata", m.get("meddata_version")],
            ["rejected input rows", f"{m['rejects']['rows']:,}"]]
    check = (m.get("rejected") or {}).get("check")
    if check:  # preference: rejected answers against the chosen's format and language
        rows.append(["rejected check", f"{check['matched']:,} of {check['pairs_checked']:,} "
                     "pairs match the chosen answer's format (think block, answer line) and "
                     f"language; dropped: {check['rejected_format_mismatch']:,} format, "
                     f"{check['rejected_lang_mismatch']:,} language, "
                     f"{check['no_matching_rejected']:,} with no partner of the same "
                     "language, task and format"
                     + (f"; {check['kept_mismatched']:,} weak-model answers differ in form "
                        "(kept)" if check.get("kept_mismatched") else "")])
    val = m.get("validation")
    if val:
        rows.append(["validation", ("passed" if val["success"] else "FAILED")
                     + f" ({len(val.get('checks', []))} checks on {val['rows_checked']:,} rows)"
                     + (f"; failed: {', '.join(c['name'] for c in val['failed'])}"
                        if val.get("failed") else "")])
    body = _table(None, rows) + checks_table(version)
    parents = m.get("parents") or []
    if parents:
        body += "<h3>Parents</h3>" + _table(["version", "role"], [
            [p["ref"] if isinstance(p, dict) else p,
             p.get("role", "input") if isinstance(p, dict) else "input"] for p in parents])
    body += "<div class='cols'>" + "".join(
        f"<div><h3>Rows per {column}</h3>"
        + _table([column, "rows"], [[k, v] for k, v in counts[column].items()], {1}) + "</div>"
        for column in ("split", "source", "lang", "task") if counts.get(column)) + "</div>"
    from meddata import licenses

    body += "<h3>Licences</h3>" + _table(["source", "licence", "stated at"], [
        [e["source"], e["license"], e.get("url") or e.get("set_by") or ""]
        for e in licenses.of_manifest(m)])
    mix = m.get("mix") or {}
    if mix.get("groups"):
        body += (f"<h3>Mix (by {_e(mix.get('by') or 'weight')}; tokens: "
                 f"{_e(mix['counter'])})</h3>") + _table(
            ["group / source", "target", "rows", "share of rows", "tokens", "share of tokens",
             "repeats"],
            [[name if key == "groups" else f"{name} ({r.get('group')})",
              "-" if r.get("target") is None else f"{r['target']:.3f}", r["rows"],
              f"{r['share_rows']:.3f}", r["tokens"], f"{r['share_tokens']:.3f}",
              r["repeats"]]
             for key in ("groups", "sources") for name, r in mix[key].items()], {2, 4, 6})
    if m.get("recipe"):
        body += ("<details><summary>Recipe</summary><div class='row'>"
                 f"{_e(json.dumps(m['recipe'], indent=1, ensure_ascii=False))}</div></details>")
    return _section("summary", "Summary", body)


def plots_section(facts: Facts, other: Facts | None) -> str:
    version = facts.version
    m = version.manifest
    plots = []
    splits = sorted({split for _, split in facts.lengths})
    for split in splits:
        hists = {source: h for (source, s), h in facts.lengths.items() if s == split}
        plots.append(length_plot(hists, facts.max_tokens, facts.counter,
                                 f"Length per source, split {split}"))
    counts = m.get("stats", {}).get("counts", {})
    if counts.get("source"):
        plots.append(bar_plot(counts["source"], "Source mix"))
    if counts.get("lang"):
        plots.append(bar_plot(counts["lang"], "Language mix"))
    if m.get("stages"):
        plots.append(ledger_plot(m["stages"]))
        if any(s["dropped"] for s in m["stages"]):
            plots.append(drops_plot(m["stages"]))
    if version.kind == "preference":
        plots.append(length_plot({"chosen": facts.chosen, "rejected": facts.rejected},
                                 None, facts.counter, "Chosen and rejected answer length"))
        if counts.get("rejected_by"):
            plots.append(bar_plot(counts["rejected_by"], "Rejected answers by strategy"))
    if version.kind == "kto" and facts.labels:
        plots.append(label_plot(facts.labels))
    if facts.fill is not None and facts.fill.any():
        plots.append(fill_plot(facts.fill))
    if other is not None:
        mine, theirs = _total(facts), _total(other)
        plots.append(length_plot({f"this ({version.id})": mine,
                                  f"against ({other.version.id})": theirs},
                                 facts.max_tokens, facts.counter, "Length, both versions"))
    return _section("plots", "Plots", "<div class='grid'>" + "".join(
        f"<div>{p}</div>" for p in plots) + "</div>")


def _total(facts: Facts) -> np.ndarray:
    return sum(facts.lengths.values(), np.zeros(len(EDGES), np.int64))


def dedup_section(clusters: list[dict[str, Any]], kind: str) -> str:
    if not clusters:
        return _section("dedup", "Dedup clusters", "<p>No duplicates were dropped.</p>")
    body = ["<p>The survivor of a cluster is its first row in the sort order meddata "
            "dedup uses (the earliest row of the earliest input, so a rebuild keeps the "
            "same one); each dropped member is shown with its similarity to it.</p>"]
    for c in clusters:
        survivor = render_row(kind, c["survivor"]) if c["survivor"] else \
            f"<div class='row'>{_e(c['kept'])} (kept in an earlier version)</div>"
        members = "".join(
            f"<p>{_e(c['reason'])}, similarity {m['similarity']}"
            + (f", against {_e(m['against'])}" if m.get("against") else "")
            + f"</p>{_raw(m['raw'])}" for m in c["members"])
        body.append(f"<h3>Cluster of {c['size']} rows, kept {_e(c['kept'])}</h3>"
                    f"<div class='pair'><div><b class='ok'>kept</b>{survivor}</div>"
                    f"<div><b class='bad'>dropped</b>{members}</div></div>")
    return _section("dedup", "Dedup clusters (largest first)", "".join(body))


def decontam_section(matches: list[dict[str, Any]]) -> str:
    if not matches:
        return _section("decontam", "Decontamination", "<p>No rows matched a benchmark.</p>")
    body = []
    for m in matches:
        item = canonical_row(m["item"]) if m.get("item") else \
            f"<div class='row'>{_e(m['matched'])}</div>"
        body.append(f"<h3>{_e(m['method'])} match, similarity {_e(m.get('similarity'))}</h3>"
                    f"<div class='pair'><div><b>benchmark item {_e(m['matched'])}</b>{item}"
                    f"</div><div><b class='bad'>dropped row</b>{_raw(m['raw'])}</div></div>")
    return _section("decontam", "Decontamination matches", "".join(body))


# steps with their own section, and the kinds' own steps: not listed under "Steps"
_OWN_SECTIONS = {"select", "dedup", "decontam", "convert"}


def steps_section(version: Version) -> str:
    """Each named step of the version (curation, de-identification, retrieval, mix): rows
    dropped by rule and changed, the settings it ran with (its thresholds), and a few
    examples, before and after for edits, the rule and value for drops. Only what the
    step's report holds is shown: a de-identified version's examples carry placeholders,
    never an original value."""
    m = version.manifest
    stages = [s for s in m.get("stages", []) if s["stage"] not in _OWN_SECTIONS and (
        s.get("edited") or s.get("rows_changed") or isinstance(m.get(s["stage"]), dict))]
    if not stages:
        return _section("steps", "Steps", "<p>No named step changed or dropped rows.</p>")
    head = ["step", "rows in", "rows out", "dropped by rule", "rows changed", "edits"]
    body = [_table(head, [[s["stage"], s["rows_in"], s["rows_out"],
                           ", ".join(f"{k}: {v:,}" for k, v in s["dropped"].items()) or "-",
                           s.get("rows_changed", 0),
                           ", ".join(f"{k}: {v:,}" for k, v in (s.get("edited") or {}).items())
                           or "-"] for s in stages], {1, 2, 4})]
    for s in stages:
        found = m.get(s["stage"])
        if not isinstance(found, dict):
            continue
        body.append(f"<h3>{_e(s['stage'])}</h3>")
        settings = found.get("settings")
        if isinstance(settings, dict) and settings:
            body.append(_table(["setting", "value"], [[k, json.dumps(v, ensure_ascii=False)]
                                                      for k, v in settings.items()]))
        examples = found.get("examples")
        if isinstance(examples, dict):  # {"dropped": [...], "edited": [...]}
            dropped = examples.get("dropped") or []
            if dropped:
                body.append("<p>dropped, e.g.:</p>" + _table(
                    ["id", "rule", "value", "limit", "text"],
                    [[d.get("id"), d.get("rule"), d.get("value"), d.get("limit"),
                      _clip(d.get("text"))] for d in dropped]))
            edited = examples.get("edited") or []
            if edited:
                body.append("<p>edited, e.g.:</p>" + _table(
                    ["id", "column", "fix", "before", "after"],
                    [[e.get("id"), e.get("column"), e.get("fix"), _clip(e.get("before")),
                      _clip(e.get("after"))] for e in edited]))
        elif isinstance(examples, list) and examples:  # de-identification: redacted only
            body.append("<p>examples (with placeholders):</p>" + _table(
                ["entities", "text"], [[", ".join(x.get("entities") or []), _clip(x.get("text"))]
                                       for x in examples if isinstance(x, dict)]))
        counts = {k: v for k, v in found.items() if k in ("entities", "languages")
                  and isinstance(v, dict)}
        for key, value in counts.items():
            body.append(_table([key, "count"], [[k, v] for k, v in value.items()], {1}))
    return _section("steps", "Steps", "".join(body))


def _reject_origin(ex: dict[str, Any]) -> str:
    """Where a reject came from: file and position for a record a converter rejected; the
    stage and the row's id for a row a build stage dropped (it has no file)."""
    if ex.get("file"):
        return ex["file"] + (f", position {ex['position']}" if ex.get("position") is not None
                             else "")
    try:
        row_id = json.loads(ex.get("raw") or "{}").get("id")
    except (ValueError, AttributeError):
        row_id = None
    return f"stage {ex.get('stage') or '?'}" + (f", row {row_id}" if row_id else "")


def rejects_section(summary: dict[str, Any]) -> str:
    if not summary["counts"]:
        return _section("rejects", "Rejects", "<p>Nothing was rejected.</p>")
    rows = [[stage, reason, file if file != "-" else "(a built row)", n]
            for (stage, reason, file), n in
            sorted(summary["counts"].items(), key=lambda kv: -kv[1])]
    body = [_table(["stage", "reason", "file", "rows"], rows, {3})]
    for reason, examples in summary["examples"].items():
        body.append(f"<h3>{_e(reason)}</h3>")
        for ex in examples:
            body.append(f"<p>{_e(_reject_origin(ex))}: {_e(ex.get('detail') or '')}</p>"
                        f"{_raw(ex['raw'])}")
    return _section("rejects", "Rejects", "".join(body))


def samples_section(facts: Facts) -> str:
    body = []
    for source, rows in sorted(facts.samples.items()):
        body.append(f"<h3>{_e(source)}</h3>" + "".join(
            render_row(facts.version.kind, r) for r in rows))
    return _section("samples", "Samples (the first rows of each source)", "".join(body))


def against_section(facts: Facts, other: Facts) -> str:
    from meddata.catalog import diff

    d = diff(other.version, facts.version)
    rows = [[what, d[what]["count"], ", ".join(d[what]["examples"])]
            for what in ("added", "removed", "changed")]
    rows.append(["unchanged", d["unchanged"], ""])
    body = [f"<p>From {_e(other.version.ref)} to {_e(facts.version.ref)}.</p>",
            _table(["rows", "count", "examples (ids)"], rows, {1})]
    for column in ("source", "lang"):
        mine = facts.version.manifest.get("stats", {}).get("counts", {}).get(column, {})
        theirs = other.version.manifest.get("stats", {}).get("counts", {}).get(column, {})
        keys = sorted(set(mine) | set(theirs))
        if keys:
            body.append(f"<h3>Shift per {column}</h3>" + _table(
                [column, "against", "this", "change"],
                [[k, theirs.get(k, 0), mine.get(k, 0), mine.get(k, 0) - theirs.get(k, 0)]
                 for k in keys], {1, 2, 3}))
    return _section("against", "Against another version", "".join(body))


def render(version: Version, store: Store | None = None, against: Version | None = None,
           progress: bool = False, verify: str = "size", tokenizer: str | None = None) -> str:
    """The page; `verify` is how the version's shards are checked before reading ("none"
    while its publish is still writing it); lengths in `tokenizer`'s tokens when given."""
    facts = collect(version, progress, verify, tokenizer)
    other = collect(against, progress, tokenizer=tokenizer) if against is not None else None
    sections = [summary_section(version, store), plots_section(facts, other)]
    if against is not None:
        sections.append(against_section(facts, other))
    sections += [steps_section(version),
                 dedup_section(dedup_clusters(version, verify), version.kind),
                 decontam_section(decontam_matches(version, store)),
                 rejects_section(rejects_summary(version)), samples_section(facts)]
    nav = "".join(f"<a href='#{a}'>{t}</a>" for a, t in (
        ("summary", "Summary"), ("plots", "Plots"), ("against", "Against"),
        ("steps", "Steps"), ("dedup", "Dedup"), ("decontam", "Decontamination"), ("rejects", "Rejects"),
        ("samples", "Samples")) if a != "against" or against is not None)
    title = f"{version.kind}/{version.name} @ {version.id}"
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title)}: meddata report</title><style>{STYLE}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><p>{version.rows:,} rows; meddata report"
            f"{' against ' + _e(against.ref) if against is not None else ''}</p></header>"
            f"<main><nav>{nav}</nav>{''.join(sections)}</main></body></html>")


def write(version: Version, out: Path, store: Store | None = None,
          against: Version | None = None, progress: bool = False,
          tokenizer: str | None = None) -> Path:
    out = Path(out)
    out.write_text(render(version, store, against, progress, tokenizer=tokenizer),
                   encoding="utf-8")
    return out
