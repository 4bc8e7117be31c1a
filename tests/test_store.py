from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pytest
from click.testing import CliRunner

from conftest import schemas
from meddata.catalog import catalog, diff
from meddata.cli import cli
from meddata.store import ShardIntegrityError, StoreError

MSG = [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]


def sample_rows(schema: pa.Schema, n: int = 3) -> list[dict]:
    """Rows with a value of the right type in every column (lists of structs included)."""
    def value(field: pa.Field, i: int):
        t = field.type
        if field.name in ("messages", "prompt", "chosen", "rejected", "completion", "turns"):
            return [{"role": "user", "content": f"question {i} 问题"},
                    {"role": "assistant", "content": f"answer {i}"}][: 1 if field.name == "prompt"
                                                                     else 2]
        if pa.types.is_string(t):
            return f"{field.name}-{i}"
        if pa.types.is_boolean(t):
            return i % 2 == 0
        if pa.types.is_list(t) and pa.types.is_struct(t.value_type):  # options
            return [{"label": "A", "text": f"opt {i}"}, {"label": "B", "text": "other"}]
        if pa.types.is_list(t):
            return list(range(i, i + 5))
        raise AssertionError(t)
    return [{f.name: value(f, i) for f in schema} for i in range(n)]


@pytest.mark.parametrize("kind", sorted(schemas()))
def test_round_trip_every_kind(store, kind):
    schema = schemas()[kind]
    rows = sample_rows(schema)
    v = store.publish(kind.replace("_", "-"), "t", schema, [pa.Table.from_pylist(rows, schema)])
    ds = v.to_dataset()  # every split, in shard order
    assert ds.to_list() == rows
    # Store.load without a split: a DatasetDict keyed by split, like datasets.load_dataset
    loaded = store.load(f"{kind.replace('_', '-')}/t@latest")
    assert sorted(loaded) == v.splits
    assert sum(loaded.num_rows.values()) == len(rows)
    assert ds.data.schema.remove_metadata().equals(schema)
    assert v.scan().collect().height == len(rows)
    manifest = v.manifest
    assert manifest["rows"] == 3 and manifest["shards"][0]["sha256"]
    assert [f["name"] for f in manifest["schema"]] == schema.names


def test_identical_content_same_id_no_new_tag(store):
    schema = schemas()["sft"]
    table = pa.Table.from_pylist(sample_rows(schema), schema)
    v1 = store.publish("sft", "x", schema, [table])
    v1b = store.publish("sft", "x", schema, [table], inputs=[{"path": "elsewhere"}])
    assert v1b.id == v1.id
    assert store.tags("sft", "x") == {"v1": v1.id, "latest": v1.id}
    v2 = store.publish("sft", "x", schema, [table.slice(0, 2)])
    assert v2.id != v1.id
    assert store.tags("sft", "x") == {"v1": v1.id, "v2": v2.id, "latest": v2.id}
    assert store.resolve("sft/x@v1").id == v1.id
    assert store.resolve(f"sft/x@{v2.id[:6]}").id == v2.id
    assert store.resolve("sft/x").id == v2.id
    with pytest.raises(StoreError, match="no tag or id"):
        store.resolve("sft/x@v9")


def test_exception_mid_publish_leaves_nothing(store):
    schema = schemas()["sft"]
    table = pa.Table.from_pylist(sample_rows(schema), schema)
    with pytest.raises(RuntimeError):
        with store.publisher("sft", "broken", schema) as pub:
            pub.write(table)
            raise RuntimeError("killed halfway")
    assert store.versions() == []
    assert not (store.root / "sft" / "broken").exists()
    assert list((store.root / ".tmp").iterdir()) == []
    result = CliRunner().invoke(cli, ["--store", str(store.root), "ls"])
    assert result.exit_code == 0 and "no versions" in result.output


def test_writer_thread_error_surfaces_and_leaves_nothing(store, monkeypatch):
    import meddata.store as store_mod

    def broken(writer, table):
        raise OSError("disk full")

    monkeypatch.setattr(store_mod, "_write_row_groups", broken)
    schema = schemas()["sft"]
    table = pa.Table.from_pylist(sample_rows(schema), schema)
    with pytest.raises(OSError, match="disk full"):
        store.publish("sft", "full", schema, [table])
    assert store.versions() == []
    assert list((store.root / ".tmp").iterdir()) == []


def test_shards_do_not_depend_on_batching(store, monkeypatch):
    import meddata.store as store_mod

    monkeypatch.setattr(store_mod, "SHARD_ROWS", 2 * store_mod.ROW_GROUP_ROWS)
    schema = schemas()["sft"]
    rows = sample_rows(schema, 1) * (5 * store_mod.ROW_GROUP_ROWS + 17)
    table = pa.Table.from_pylist(rows, schema)
    one = store.publish("sft", "a", schema, [table])
    many = store.publish("sft", "b", schema, [table.slice(i, 3000)
                                              for i in range(0, table.num_rows, 3000)])
    assert one.id == many.id
    assert [s["rows"] for s in one.manifest["shards"]] == [2 * 8192, 2 * 8192, 8192 + 17]
    assert sum(store.load("sft/b@latest").num_rows.values()) == table.num_rows


def test_flipped_byte_is_caught_with_shard_name(store):
    schema = schemas()["sft"]
    v = store.publish("sft", "x", schema, [pa.Table.from_pylist(sample_rows(schema), schema)])
    shard = v.shard_paths()[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardIntegrityError, match=shard.name):
        store.load("sft/x@latest")
    shard.write_bytes(bytes(data[:-1]))
    with pytest.raises(ShardIntegrityError, match="bytes"):
        v.verify("size")


def test_splits_become_shards_and_card_configs(store):
    import datasets
    import yaml

    schema = schemas()["sft"]
    rows = sample_rows(schema, 4)
    rows[0]["split"] = rows[1]["split"] = "validation"
    rows[2]["split"] = rows[3]["split"] = "train"
    v = store.publish("sft", "x", schema, [pa.Table.from_pylist(rows, schema)])
    assert v.splits == ["train", "validation"]
    assert store.load("sft/x", split="validation").num_rows == 2
    card = (v.path / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    files = header["configs"][0]["data_files"]
    assert {f["split"] for f in files} == {"train", "validation"}
    assert header["pretty_name"] == "meddata sft/x" and header["size_categories"] == ["n<1K"]
    assert header["task_categories"] == ["text-generation", "question-answering"]
    from meddata.store import size_category

    assert [size_category(n) for n in (999, 1_000, 250_000, 10**9)] == [
        "n<1K", "1K<n<10K", "100K<n<1M", "n>1B"]
    loaded = datasets.load_dataset(str(v.path))  # the card's configs drive the loader
    assert loaded["train"].num_rows == 2 and loaded["validation"].num_rows == 2


def test_diff_on_a_constructed_pair(store):
    schema = schemas()["pretrain"]
    a = [{"id": f"r{i}", "source": "s", "lang": "en", "task": "document", "split": "train",
          "text": f"text {i}"} for i in range(5)]
    b = [dict(r) for r in a[1:]]  # r0 removed
    b[0]["text"] = "changed"       # r1 changed
    b.append({**a[0], "id": "r9"})  # r9 added
    va = store.publish("pretrain", "d", schema, [pa.Table.from_pylist(a, schema)])
    schema_b = schema.append(pa.field("extra", pa.int64()))
    vb = store.publish("pretrain", "d", schema_b,
                       [pa.Table.from_pylist([{**r, "extra": 1} for r in b], schema_b)])
    result = diff(va, vb)
    assert result["added"] == {"count": 1, "examples": ["r9"]}
    assert result["removed"] == {"count": 1, "examples": ["r0"]}
    assert result["changed"] == {"count": 1, "examples": ["r1"], "columns": {"text": 1}}
    assert result["unchanged"] == 3
    assert result["schema"]["added"] == {"extra": "int64"}
    out = CliRunner().invoke(cli, ["--store", str(store.root), "diff", "pretrain/d@v1",
                                   "pretrain/d@v2"])
    assert out.exit_code == 0, out.output
    assert "+ extra: int64" in out.output
    assert "changed columns (rows): text (1)" in out.output


def test_catalog_and_cli_inspection(store):
    schema = schemas()["sft"]
    store.publish("sft", "x", schema, [pa.Table.from_pylist(sample_rows(schema), schema)])
    con = catalog(store)
    assert con.execute("SELECT kind, name, rows FROM versions").fetchall() == [("sft", "x", 3)]
    runner = CliRunner()
    out = runner.invoke(cli, ["--store", str(store.root), "ls"])
    assert "sft/x" in out.output and "v1,latest" in out.output
    out = runner.invoke(cli, ["--store", str(store.root), "show", "sft/x"])
    assert out.exit_code == 0 and "messages" in out.output
    out = runner.invoke(cli, ["--store", str(store.root), "show", "sft/nope"])
    assert out.exit_code == 1 and "no dataset sft/nope" in out.output
    out = runner.invoke(cli, ["--store", str(store.root), "sql",
                              "SELECT sum(rows) AS n FROM shards"])
    assert out.exit_code == 0 and out.output.split()[-1] == "3"
    out = runner.invoke(cli, ["--store", str(store.root), "show", "--json", "sft/x"])
    assert json.loads(out.output)["kind"] == "sft"


def test_conservation_is_enforced(store):
    with pytest.raises(StoreError, match="not conserved"):
        with store.publisher("sft", "x", schemas()["sft"]) as pub:
            pub.add_stage("build", 10, 8, {"too_long": 1})
    assert store.versions() == []


@pytest.mark.parametrize("argv", [["--help"], ["convert", "--help"], ["ls", "--help"],
                                  ["build", "--help"]])
def test_help_does_not_import_heavy_modules(argv):
    code = f"import sys; from meddata.cli import cli; sys.argv=['meddata', *{argv!r}]; cli()"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "click" in imported
    for heavy in ("torch", "transformers", "trl", "great_expectations", "datasets", "peft",
                  "ray"):
        assert heavy not in imported, f"{heavy} imported by meddata {' '.join(argv)}"


def test_card_of_a_version_built_from_versions(tmp_path):
    runner = CliRunner()
    store = str(tmp_path / "store")
    assert runner.invoke(cli, ["--store", store, "build", "preference", "--quiet"]).exit_code == 0
    out = runner.invoke(cli, ["--store", store, "build", "kto", "--from", "preference/examples",
                              "--quiet"])
    assert out.exit_code == 0, out.output
    from meddata.store import Store

    v = Store(store).resolve("kto/examples")
    card = (v.path / "README.md").read_text()
    assert "None" not in card
    assert f"- parent: {Store(store).resolve('preference/examples').ref}" in card
