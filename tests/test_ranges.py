"""Large files split into spans (meddata.ranges): the chunk counts and cuts on adversarial
bytes, the planned spans' first lines, and that reading the spans (each on its own, then
stitched in order) gives exactly what one reader over the whole file gives."""

from __future__ import annotations

import dataclasses
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meddata import ranges
from meddata.readers import Span, read_csv, read_file


class Reading:
    """A converter's `read` in its simplest form (takes spans)."""

    def read(self, path, span=None):
        return read_file(path, span)


class Whole:
    """A converter whose `read` takes no span: its files are read whole."""

    def read(self, path):
        return read_file(path)


def count(path, layout, start, end):
    return ranges.count_chunk(ranges.Chunk(0, str(path), layout, start, end))


def plan(path, range_bytes, conv=None):
    split = ranges.FileRanges(conv or Reading(), [path], range_bytes)
    return split.spans([ranges.count_chunk(c) for c in split.chunks])


def read_span(path, span: Span):
    """What an engine's task yields for a span: its records, then its end."""
    span = dataclasses.replace(span)
    span.reached = span.stop
    yield from (("record", r) for r in (read_file(path) if span.whole
                                        else read_file(path, span)))
    yield (ranges.END, span.number, span.reached)


def stitched(path, range_bytes, tasks: bool):
    """The records of the file's spans, stitched; with `tasks`, every span is read first
    on its own from its planned start (as an engine's tasks read them)."""
    spans = plan(path, range_bytes)
    ahead = (p for s in spans for p in read_span(path, s)) if tasks else None
    dropped: set[int] = set()
    records = [p[1] for p in ranges.stitch(spans, lambda s: read_span(path, s), ahead, dropped)]
    return records, spans, dropped


def key(rec):
    return rec.position, rec.raw, rec.record, rec.error


# ---- the counting pass ------------------------------------------------------------------------
def test_a_chunk_starting_at_a_newline_cuts_right_after_it(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    c = count(path, "jsonl", 8, 18)  # byte 8 is the first newline
    assert c.cuts[0] == ranges.Cut(9, 1) and c.lines == 2
    spans = plan(path, 8)
    assert [(s.start, s.first, s.end, s.stop) for s in spans] == [
        (0, 1, 9, 2), (9, 2, 18, 3), (18, 3, None, None)]


def test_a_chunk_starting_inside_a_quoted_field_cuts_after_the_record(tmp_path):
    path = tmp_path / "q.csv"
    data = b'id,text\n1,"one\ntwo, ""three""\nfour"\n2,plain\n'
    path.write_bytes(data)
    inside = data.index(b"two")
    c = count(path, "csv", inside, len(data))
    # before the chunk: an odd number of quotes; the first line start outside quotes is
    # after "four", the end of the record
    assert c.cuts[1] == ranges.Cut(data.index(b"2,plain"), 2)
    # with an even count before it, the first newline after an even number of quotes
    assert c.cuts[0] == ranges.Cut(data.index(b"four"), 1)
    assert [r.position for r in read_csv(path)] == [2, 5]
    # chunks of `inside` bytes: the second, 'two, ""three""\n', has no line start outside
    # quotes and offers its only one ("four", inside the field); the third offers the
    # record start after the field. Reading drops the span that starts inside the field.
    spans = plan(path, inside)
    assert [(s.start, s.first) for s in spans] == [
        (0, 1), (data.index(b"four"), 4), (data.index(b"2,plain"), 5)]
    records, _, dropped = stitched(path, inside, tasks=True)
    assert [key(r) for r in records] == [key(r) for r in read_csv(path)] and dropped == {1}


def test_crlf_split_between_cr_and_lf_and_lone_crs_end_csv_lines(tmp_path):
    path = tmp_path / "crlf.csv"
    data = b"id,text\r\n1,a\r\n2,b\r3,c\r\n4,d\r\n"
    path.write_bytes(data)
    cr = data.index(b"\r\n2,b")  # a chunk that ends on the CR of a CRLF
    first = count(path, "csv", 0, cr + 1)
    assert first.lines == 1  # the CR is no line end: its LF is the next chunk's first byte
    second = count(path, "csv", cr + 1, len(data))
    assert second.cuts[0] == ranges.Cut(cr + 2, 1)  # right after the LF, which ends a line
    assert first.lines + second.lines == 5  # "2,b\r" ends a line of its own
    assert count(path, "jsonl", 0, len(data)).lines == 4  # JSON Lines: newlines only
    assert [r.position for r in read_csv(path)] == [2, 3, 4, 5]
    # cuts follow newlines only (not the lone CR), numbered as read_csv numbers lines
    assert [(s.start, s.first) for s in plan(path, 5)] == [
        (0, 1), (data.index(b"1,a"), 2), (data.index(b"2,b"), 3), (data.index(b"4,d"), 5)]


def test_a_record_longer_than_a_range_makes_one_span_of_several_chunks(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_bytes(b'{"a": "' + b"x" * 100 + b'"}\n{"a": 2}\n')
    spans = plan(path, 10)
    assert len(ranges.FileRanges(Reading(), [path], 10).chunks) == 12
    assert [(s.start, s.first) for s in spans] == [(0, 1), (110, 2)]
    csv_path = tmp_path / "long.csv"
    data = b'id,text\n1,"' + b"y\n" * 50 + b'"\n2,b\n'
    csv_path.write_bytes(data)
    spans = plan(csv_path, 10)
    assert (data.index(b"2,b"), 53) in [(s.start, s.first) for s in spans]
    # a chunk wholly inside the quoted field offers a line start inside it (its newlines
    # all have the other parity): the first span reads on over those spans
    inside = [s.number for s in spans if 8 < s.start < data.index(b"2,b")]
    records, _, dropped = stitched(csv_path, 10, tasks=True)
    assert [key(r) for r in records] == [key(r) for r in read_file(csv_path)]
    assert inside and dropped == set(inside)


def test_a_stray_quote_does_not_end_the_splitting(tmp_path):
    """A quote inside an unquoted field flips the quote count for the rest of the file;
    where every line start of a chunk has the other parity, that parity is taken."""
    path = tmp_path / "stray.csv"
    data = b"id,text\n1,5\" tall\n" + b"".join(b'%d,"plain, quoted"\n' % i for i in range(2, 60))
    path.write_bytes(data)
    spans = plan(path, 50)
    assert len(spans) > 10 and spans[-1].start > len(data) / 2
    records, _, dropped = stitched(path, 50, tasks=True)
    assert [key(r) for r in records] == [key(r) for r in read_file(path)] and not dropped
    assert records[0].record == {"id": "1", "text": '5" tall'}


def test_what_is_read_whole(tmp_path):
    small = tmp_path / "small.jsonl"
    small.write_bytes(b'{"a": 1}\n' * 3)
    gz = tmp_path / "big.jsonl.gz"
    gz.write_bytes(b"\x1f\x8b" + b"0" * 100)
    wide = tmp_path / "wide.csv"
    wide.write_bytes("id,text\n1,a\n2,b\n".encode("utf-16"))
    text = tmp_path / "doc.txt"
    text.write_bytes(b"line\n" * 40)
    array = tmp_path / "array.json"
    array.write_bytes(b'[{"a": 1},\n{"a": 2}]\n' * 5)
    for path in (small, gz, wide, text, array):
        assert ranges.split_layout(path, 30) is None, path
        assert [s.whole for s in plan(path, 30)] == [True]
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"a": 1}\n' * 40)
    assert len(plan(big, 30)) > 1
    assert [s.whole for s in plan(big, 30, Whole())] == [True]  # its read takes no span


def test_parquet_spans_are_runs_of_row_groups(tmp_path):
    path = tmp_path / "rows.parquet"
    table = pa.table({"id": [f"r{i}" for i in range(100)], "text": ["t" * 50] * 100})
    pq.write_table(table, path, row_group_size=10)
    spans = plan(path, 1)
    assert [(s.row_groups, s.first, s.stop) for s in spans] == [
        ((g, g + 1), 10 * g + 1, 10 * g + 11 if g < 9 else None) for g in range(10)]
    records, _, _ = stitched(path, 1, tasks=True)
    assert [key(r) for r in records] == [key(r) for r in read_file(path)]
    assert [s.whole for s in plan(path, path.stat().st_size)] == [True]


# ---- stitching --------------------------------------------------------------------------------
def test_a_span_run_over_is_read_again_from_where_the_one_before_stopped(tmp_path):
    path = tmp_path / "stray.csv"
    # a stray quote in an unquoted field flips the quote count: the planned starts after it
    # lie inside the next record's quoted field, whose reader then runs over them
    lines = [b"id,text", b'1,say "hi', *[b'%d,"a\nb"' % i for i in range(2, 12)]]
    path.write_bytes(b"\n".join(lines) + b"\n")
    whole = [key(r) for r in read_file(path)]
    for tasks in (False, True):
        records, spans, dropped = stitched(path, 6, tasks)
        assert [key(r) for r in records] == whole
        assert len(spans) > 3
        assert bool(dropped) == tasks  # the tasks' reading of the spans run over is dropped


def test_a_broken_record_recovering_over_a_boundary(tmp_path):
    path = tmp_path / "broken.csv"
    rows = [b"id,text", b'1,"never closes', b"2,x,extra", b"3,y,extra", b"4,z", b"5,w"]
    path.write_bytes(b"\n".join(rows) + b"\n")
    whole = [key(r) for r in read_file(path)]
    assert whole[0][3].startswith("CSV error")  # one reject for lines 2 to 4
    for size in range(1, 30):
        assert [key(r) for r in stitched(path, size, tasks=True)[0]] == whole, size


def _csv_field(rng: random.Random) -> bytes:
    k = rng.random()
    if k < 0.3:
        return b"w%d" % rng.randrange(100)
    if k < 0.6:
        return b'"' + rng.choice([b"a", b"b,c", b'say ""hi""', b"one\ntwo", b"x\r\ny", b"\n\n",
                                  b"caf\xe9", "中文".encode("gb18030"), "中文".encode()]) + b'"'
    if k < 0.65:
        return b'stray"quote'
    if k < 0.68:
        return b'"unclosed ' + b"z" * rng.randrange(5)
    return b""


def _csv_file(rng: random.Random) -> bytes:
    rows = [b"id,question,answer"]
    for i in range(rng.randint(0, 40)):
        k = rng.random()
        if k < 0.05:
            rows.append(b"")
        elif k < 0.1:
            rows.append(b",".join(_csv_field(rng) for _ in range(rng.randint(1, 5))))
        else:
            rows.append(b",".join([b"%d" % i, _csv_field(rng), _csv_field(rng)]))
    end = rng.choice([b"\n", b"\r\n", b"\r"])
    data = end.join(rows) + (end if rng.random() < 0.7 else b"")
    return (b"\xef\xbb\xbf" if rng.random() < 0.1 else b"") + data


def _jsonl_file(rng: random.Random) -> bytes:
    rows = []
    for i in range(rng.randint(0, 40)):
        rows.append(rng.choice([b"", b"{broken", b'{"a": "caf\xe9"}', b'{"a": "x\r"}\r',
                                b'{"a": %d, "b": "%s"}' % (i, b"y" * rng.randrange(80))]))
    data = b"\n".join(rows) + (b"\n" if rng.random() < 0.7 else b"")
    return (b"\xef\xbb\xbf" if rng.random() < 0.1 else b"") + data


@pytest.mark.parametrize("layout", ["csv", "jsonl"])
def test_spans_read_what_one_reader_reads(tmp_path, layout):
    """Generated files (multi-line quoted fields, escaped quotes, stray and unclosed
    quotes, blank lines, CRLF and lone CR line ends, a BOM, GB18030 and cp1252 bytes), each
    split at many range sizes: the same records, positions, raw text and errors."""
    make = _csv_file if layout == "csv" else _jsonl_file
    for seed in range(60):
        path = tmp_path / f"f{seed}.{layout}"
        path.write_bytes(make(random.Random(seed)))
        whole = [key(r) for r in read_file(path)]
        for size in (1, 3, 16, 50, 200):
            for tasks in (False, True):
                records, _, _ = stitched(path, size, tasks)
                assert [key(r) for r in records] == whole, (seed, size, tasks)


def test_the_plan_does_not_depend_on_anything_but_the_file(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(_csv_file(random.Random(3)) * 3)
    split = ranges.FileRanges(Reading(), [path], 40)
    counts = [ranges.count_chunk(c) for c in split.chunks]
    # the counts may come from tasks run in any order and on any worker: a count depends
    # on its chunk only, and the spans on the counts only
    assert [ranges.count_chunk(c) for c in reversed(split.chunks)][::-1] == counts
    assert split.spans(counts) == plan(path, 40)
    with pytest.raises(ValueError, match="counts for"):
        split.spans(counts[1:])
