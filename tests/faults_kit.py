"""A seeded fault-injection kit that runs over every converter's bundled examples.

Each example file is mutated in a fixed set of ways (bytes flipped, the file truncated,
re-encoded, a record nested 20,000 deep, a huge line or a huge field added, line ends
changed), each copy converted with `meddata convert SOURCE FILE --max-reject-rate 1`, and
the outcome checked against the unmutated file's conversion:

- the command exits 0, or 1 with one line (`error: ...`), never with a traceback;
- conservation: the convert stage's rows in equal rows out plus rejects, and the rejects
  file holds them all;
- no invented rows: rows in never exceed the records the mutated file can hold (the
  original's records, plus one per mutated byte or added record);
- nothing lost: a mutation that leaves the original records whole (an added record, a
  re-encoding the reader decodes, other line ends) keeps every original row;
- no mojibake stored: no stored text holds a replacement character, a C1 control
  character, or UTF-8 that a round trip shows was decoded as cp1252; a re-encoded CSV or
  text file stores exactly the original rows.

Every new converter (a module in converters/ registered in REGISTRY with an examples/
folder) gets this kit. It is seeded: the same mutations on every run.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from meddata.cli import cli
from meddata.readers import base_suffix, sniff_json
from meddata.store import Store

TEXT_COLUMNS = ("question", "context", "answer", "rationale", "response", "meta")
_C1 = re.compile("[\ufffd\u0080-\u009f]")
_LATIN_PAIR = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u0152-\u2122]")


def _double_encoded(text: str) -> bool:
    """UTF-8 read as cp1252 ("cafÃ©"): the round trip back gives valid UTF-8."""
    if not _LATIN_PAIR.search(text):
        return False
    try:
        text.encode("cp1252").decode("utf-8")
    except UnicodeError:
        return False
    return True


@dataclass
class Mutation:
    name: str
    data: bytes
    extra_records: int = 0     # records the mutation may add (flipped bytes, inserted lines)
    keeps_rows: bool = False   # every original row must still be published
    same_rows: bool = False    # exactly the original rows (a re-encoding read back)
    max_lost: int | None = None  # at most this many original records may be lost


def layout(path: Path) -> str:
    suffix = base_suffix(path)
    if suffix == ".json":
        return sniff_json(path)
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "text"}.get(
        suffix, "other")


def _text(data: bytes) -> tuple[str, str] | None:
    for enc in ("utf-8", "gb18030"):
        try:
            return data.decode(enc), enc
        except UnicodeDecodeError:
            continue
    return None


def _record_starts(text: str) -> list[int]:
    """The line indices (0-based) where the CSV records after the first begin."""
    import csv
    import io

    reader = csv.reader(io.StringIO(text))
    starts = []
    for _ in reader:
        starts.append(reader.line_num)
    return starts[:-1] or [1]


def _deep(depth: int = 20_000) -> str:
    return "[" * depth + "]" * depth


def mutations(path: Path, rng: random.Random) -> list[Mutation]:
    data = path.read_bytes()
    kind = layout(path)
    out: list[Mutation] = []
    # bytes flipped: three positions, bytes that break structure or encoding
    flipped = bytearray(data)
    for _ in range(3):
        flipped[rng.randrange(len(flipped))] = rng.choice(b'\x00\xff\xe9\x92",\n{[\\')
    out.append(Mutation("flip", bytes(flipped), extra_records=3))
    # truncated somewhere in the middle
    out.append(Mutation("truncate", data[:rng.randrange(len(data) // 5, len(data) * 4 // 5)]))
    decoded = _text(data)
    if decoded is not None:
        text, enc = decoded
        for target in ("cp1252", "gb18030", "utf-16"):
            if target == enc:
                continue
            try:
                encoded = text.encode(target)
            except UnicodeEncodeError:
                continue  # (Chinese text has no cp1252 form)
            readable = kind in ("csv", "text") and target != "utf-16"
            out.append(Mutation(f"encode-{target}", encoded, extra_records=1,
                                keeps_rows=readable, same_rows=readable))
        lines = text.split("\n")
        crlf = "\r\n".join(lines[:1] + [""] + lines[1:]) if kind in ("jsonl",) else \
            text.replace("\n", "\r\n")
        out.append(Mutation("crlf", crlf.encode(enc), keeps_rows=True))
        huge = "x" * (2 << 20)
        if kind == "jsonl":
            lines = text.rstrip("\n").split("\n")
            at = rng.randrange(len(lines) + 1)
            out.append(Mutation("huge-line", "\n".join(
                lines[:at] + ['{"broken": "' + huge] + lines[at:]).encode(enc) + b"\n",
                extra_records=1, keeps_rows=True))
            at = rng.randrange(len(lines))
            nested = re.sub(r'(":\s*)"(?:[^"\\]|\\.)*"', lambda m: m.group(1) + _deep(),
                            lines[at], count=1)
            out.append(Mutation("nest", "\n".join(lines[:at] + [nested] + lines[at + 1:])
                                .encode(enc), max_lost=1))
        elif kind == "array":
            body = text.rstrip().rstrip("]")
            out.append(Mutation("huge-line", (body + ', "' + huge + '"]').encode(enc),
                                extra_records=1, keeps_rows=True))
            nested = re.sub(r'(":\s*)"(?:[^"\\]|\\.)*"', lambda m: m.group(1) + _deep(),
                            text, count=1)
            out.append(Mutation("nest", nested.encode(enc), max_lost=1))
        elif kind == "csv":
            lines = text.rstrip("\n").split("\n")
            at = rng.choice(_record_starts(text) + [len(lines)])  # between whole records
            out.append(Mutation("huge-line", "\n".join(lines[:at] + [huge] + lines[at:])
                                .encode(enc) + b"\n", extra_records=1, keeps_rows=True))
            field = '"' + "long field line\n" * 100_000 + '"'
            out.append(Mutation("huge-field", "\n".join(
                lines[:at] + [field + ",x" * 3] + lines[at:]).encode(enc) + b"\n",
                extra_records=1, keeps_rows=True))
            out.append(Mutation("open-quote", "\n".join(
                lines[:at] + ['"never closed,' + lines[at - 1]] + lines[at:]).encode(enc)
                + b"\n", extra_records=1, keeps_rows=True))
        elif kind == "text":
            out.append(Mutation("huge-field", (text + "\n" + huge).encode(enc), keeps_rows=False))
    return out


def convert(runner: CliRunner, store_root: Path, source: str, path: Path, name: str):
    """(exit code, output, the published version or None)."""
    out = runner.invoke(cli, ["--store", str(store_root), "convert", source, str(path),
                              "--name", name, "--max-reject-rate", "1", "--quiet"])
    store = Store(store_root)
    try:
        version = store.resolve(f"canonical/{name}")
    except Exception:  # noqa: BLE001  (nothing published)
        version = None
    return out, version


def rows_of(version) -> list[dict]:
    return version.to_table().to_pylist() if version is not None else []


def garbled(row: dict) -> str | None:
    texts = [row.get(c) for c in TEXT_COLUMNS] + [o["text"] for o in row.get("options") or []] \
        + [t["content"] for t in row.get("turns") or []]
    for text in texts:
        if isinstance(text, str) and (_C1.search(text) or _double_encoded(text)):
            return text[:80]
    return None


def check(source: str, example: Path, rel: Path, work: Path, seed: int) -> list[str]:
    """Run every mutation of one example file; the problems found (empty when all hold)."""
    runner = CliRunner()
    store_root = work / "store"
    base_path = work / "base" / rel
    base_path.parent.mkdir(parents=True, exist_ok=True)
    base_path.write_bytes(example.read_bytes())
    out, base = convert(runner, store_root, source, base_path, "base")
    if base is None or out.exit_code != 0:
        return []  # a file that does not convert alone (a ground-truth file): nothing to vary
    from collections import Counter

    from meddata.converters import get

    # the most rows one record of the file expands into (a CMB-Clin case, its pairs)
    parts = max(Counter(rec.position for rec in get(source)().read(base_path)).values())
    base_stage = base.manifest["stages"][0]
    base_in, base_rows = base_stage["rows_in"], rows_of(base)
    problems = []
    rng = random.Random(f"{seed}/{source}/{rel}")
    for k, mut in enumerate(mutations(example, rng)):
        path = work / f"m{k}" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(mut.data)
        name = f"m{k}"
        out, version = convert(runner, store_root, source, path, name)
        where = f"{source} {rel} {mut.name}"
        if out.exit_code not in (0, 1) or "Traceback" in out.output or (
                out.exception is not None and not isinstance(out.exception, SystemExit)):
            problems.append(f"{where}: crashed: {out.exception!r}")
            continue
        if out.exit_code == 1:
            lines = out.output.strip().splitlines()
            if len(lines) != 1 or not lines[0].startswith("error: "):
                problems.append(f"{where}: exit 1 without a one-line error: {out.output[:200]}")
            if mut.keeps_rows:
                problems.append(f"{where}: refused a file whose records are whole: "
                                f"{lines[-1][:200] if lines else ''}")
            continue
        stage = version.manifest["stages"][0]
        rows_in, rows_out = stage["rows_in"], stage["rows_out"]
        dropped = sum(stage["dropped"].values())
        if rows_in != rows_out + dropped or version.rejects().num_rows != dropped:
            problems.append(f"{where}: not conserved: {rows_in} in, {rows_out} out, "
                            f"{dropped} dropped, {version.rejects().num_rows} rejects")
        if rows_in > base_in + mut.extra_records:
            problems.append(f"{where}: invented records: {rows_in} in from a file of "
                            f"{base_in} (+{mut.extra_records} at most)")
        rows = rows_of(version)
        bad = next((g for r in rows if (g := garbled(r))), None)
        if bad:
            problems.append(f"{where}: stored garbled text: {bad!r}")
        if mut.keeps_rows and rows_out < len(base_rows):
            problems.append(f"{where}: lost rows: {rows_out} of {len(base_rows)}")
        if mut.same_rows:
            key = ("question", "context", "answer", "response", "options", "turns")
            want = sorted(json.dumps([r[c] for c in key], ensure_ascii=False)
                          for r in base_rows)
            got = sorted(json.dumps([r[c] for c in key], ensure_ascii=False) for r in rows)
            if got != want:
                problems.append(f"{where}: rows differ from the original's after decoding")
        if mut.max_lost is not None and rows_out < len(base_rows) - mut.max_lost * parts:
            problems.append(f"{where}: lost more than the broken record: {rows_out} of "
                            f"{len(base_rows)}")
    return problems
