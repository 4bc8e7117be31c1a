"""A DuckDB catalog over the store's manifests, and version diffs computed in DuckDB.

Tables: `versions` (one row per version), `tags`, `stages` (row conservation per stage),
`shards`. Each version's rows can be queried with `read_parquet` over its shard paths.

The connection can read nothing but those shards: DuckDB's `enable_external_access` is
off, `allowed_paths` lists the shards of the versions in the catalog, and
`lock_configuration` keeps any query from changing that. `meddata sql` also runs only
SELECT statements, so a query cannot write a file (COPY, EXPORT), attach a database,
install or load an extension, or change a setting.
"""

from __future__ import annotations

import json
import os
from typing import Any

import duckdb
import pyarrow as pa

from meddata.store import Store, Version


def catalog(store: Store, problems: list[str] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the catalog tables registered. A dataset whose
    tags.json or a version whose manifest.json does not parse is left out and described in
    `problems` (when given), one line each; the rest of the store is still listed."""
    from meddata.store import StoreError

    problems = problems if problems is not None else []
    versions, tags, stages, shards = [], [], [], []
    tag_index: dict[tuple[str, str, str], list[str]] = {}
    for kind, name in store.names():
        try:
            named = store.tags(kind, name)
        except StoreError as e:
            problems.append(str(e))
            continue
        for tag, vid in named.items():
            tags.append({"kind": kind, "name": name, "tag": tag, "id": vid})
            tag_index.setdefault((kind, name, vid), []).append(tag)
    for v in store.versions(problems=problems):
        try:
            row, st_rows, sh_rows = _catalog_rows(v, tag_index)
        except (KeyError, TypeError, AttributeError) as e:
            problems.append(f"{v.path}: manifest.json lacks a field ({e!r}); `meddata fsck`")
            continue
        versions.append(row)
        stages.extend(st_rows)
        shards.extend(sh_rows)

    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    schemas = {
        "versions": pa.schema([("kind", pa.string()), ("name", pa.string()), ("id", pa.string()),
                               ("created_at", pa.string()), ("rows", pa.int64()),
                               ("bytes", pa.int64()), ("rejects", pa.int64()),
                               ("tags", pa.string()), ("parents", pa.string()),
                               ("meddata_version", pa.string()), ("path", pa.string())]),
        "tags": pa.schema([("kind", pa.string()), ("name", pa.string()), ("tag", pa.string()),
                           ("id", pa.string())]),
        "stages": pa.schema([("kind", pa.string()), ("name", pa.string()), ("id", pa.string()),
                             ("position", pa.int64()), ("stage", pa.string()),
                             ("rows_in", pa.int64()), ("rows_out", pa.int64()),
                             ("dropped", pa.string())]),
        "shards": pa.schema([("kind", pa.string()), ("name", pa.string()), ("id", pa.string()),
                             ("path", pa.string()), ("split", pa.string()), ("rows", pa.int64()),
                             ("bytes", pa.int64()), ("sha256", pa.string())]),
    }
    for table, rows in (("versions", versions), ("tags", tags), ("stages", stages),
                        ("shards", shards)):
        arrow = pa.Table.from_pylist(rows, schema=schemas[table])
        con.register(f"_{table}", arrow)
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM _{table}")
        con.unregister(f"_{table}")
    _lock_down(con, [row["path"] for row in shards])
    return con


def _lock_down(con: duckdb.DuckDBPyConnection, paths: list[str]) -> None:
    """No file access but to `paths` (the store's shards), and no setting changes after."""
    con.execute("SET allowed_directories = []")
    con.execute("SET allowed_paths = ?", [paths])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def read_only_query(con: duckdb.DuckDBPyConnection, query: str):
    """Run `query` when every statement in it is a SELECT (the last one's result is
    returned); anything else is refused with a ValueError naming the statement type."""
    statements = con.extract_statements(query)
    if not statements:
        raise ValueError("empty query")
    for st in statements:
        if st.type != duckdb.StatementType.SELECT:
            raise ValueError(f"only SELECT queries run here (this is {st.type.name}); "
                             "`meddata sql` reads the catalog and the store's shards, and "
                             "writes nothing")
    cur = None
    for st in statements:
        cur = con.execute(st)
    return cur


def _catalog_rows(v: Version, tag_index: dict) -> tuple[dict, list[dict], list[dict]]:
    m = v.manifest
    row = {
        "kind": v.kind, "name": v.name, "id": v.id, "created_at": m["created_at"],
        "rows": m["rows"], "bytes": m["stats"].get("bytes", 0),
        "rejects": m["rejects"]["rows"],
        "tags": ",".join(sorted(tag_index.get((v.kind, v.name, v.id), []),
                                key=lambda t: (t == "latest", len(t), t))),
        "parents": ",".join(p["ref"] if isinstance(p, dict) else str(p)
                            for p in m["parents"]),
        "meddata_version": m["meddata_version"], "path": str(v.path),
    }
    stages = [{"kind": v.kind, "name": v.name, "id": v.id, "position": i,
               "stage": st["stage"], "rows_in": st["rows_in"], "rows_out": st["rows_out"],
               "dropped": json.dumps(st["dropped"])} for i, st in enumerate(m["stages"])]
    shards = [{"kind": v.kind, "name": v.name, "id": v.id,
               "path": os.path.abspath(v.path / sh["path"]),
               "split": sh["split"], "rows": sh["rows"], "bytes": sh["bytes"],
               "sha256": sh["sha256"]} for sh in m["shards"]]
    return row, stages, shards


def _quote(col: str) -> str:
    return '"' + col.replace('"', '""') + '"'


def diff(a: Version, b: Version, examples: int = 5) -> dict[str, Any]:
    """Rows added, removed and changed by id from `a` to `b`, and schema changes.

    A row is changed when any column the two versions share differs; `changed.columns`
    counts, per column, the changed rows in which it differs. Both versions are
    hash-verified first.
    """
    a.verify()
    b.verify()
    fa = {f.name: str(f.type) for f in a.schema}
    fb = {f.name: str(f.type) for f in b.schema}
    if "id" not in fa or "id" not in fb:
        raise ValueError("diff needs an `id` column in both versions")
    common = [c for c in fa if c in fb and c != "id"]
    body = ", ".join(f"{_quote(c)} := {_quote(c)}" for c in common) or "x := 1"
    con = duckdb.connect()

    # one 64-bit hash per shared column as well, to name the columns a changed row changed
    per_column = "".join(f", hash(to_json({_quote(c)})) AS c{i}" for i, c in enumerate(common))

    def rel(v: Version) -> str:
        files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in v.shard_paths())
        return (f"SELECT id, md5(to_json(struct_pack({body}))::VARCHAR) AS h{per_column} "
                f"FROM read_parquet([{files}])")

    con.execute(f"CREATE TEMP TABLE ha AS {rel(a)}")
    con.execute(f"CREATE TEMP TABLE hb AS {rel(b)}")

    def ids(sql: str) -> tuple[int, list[str]]:
        n = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
        sample = [r[0] for r in con.execute(f"{sql} ORDER BY 1 LIMIT {examples}").fetchall()]
        return n, sample

    added = ids("SELECT hb.id FROM hb ANTI JOIN ha USING (id)")
    removed = ids("SELECT ha.id FROM ha ANTI JOIN hb USING (id)")
    changed = ids("SELECT ha.id FROM ha JOIN hb USING (id) WHERE ha.h <> hb.h")
    unchanged = con.execute("SELECT count(*) FROM ha JOIN hb USING (id) WHERE ha.h = hb.h"
                            ).fetchone()[0]
    columns: dict[str, int] = {}
    if changed[0] and common:
        counts = con.execute("SELECT " + ", ".join(
            f"count(*) FILTER (WHERE ha.c{i} <> hb.c{i})" for i in range(len(common)))
            + " FROM ha JOIN hb USING (id) WHERE ha.h <> hb.h").fetchone()
        columns = {c: n for c, n in zip(common, counts) if n}
    return {
        "a": a.ref, "b": b.ref,
        "rows": {"a": a.rows, "b": b.rows},
        "added": {"count": added[0], "examples": added[1]},
        "removed": {"count": removed[0], "examples": removed[1]},
        "changed": {"count": changed[0], "examples": changed[1], "columns": columns},
        "unchanged": unchanged,
        "schema": {
            "added": {c: t for c, t in fb.items() if c not in fa},
            "removed": {c: t for c, t in fa.items() if c not in fb},
            "changed": {c: [fa[c], fb[c]] for c in common if fa[c] != fb[c]},
        },
    }
