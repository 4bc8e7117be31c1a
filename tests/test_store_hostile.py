"""The store under hostile conditions (issue 34): `meddata sql` cannot write or read
outside the store's shards, tags hold ids only, every file of a version is checked, full
and read-only disks end in one line and leave the store as it was, and the smaller ones
(long names, manifests without shards, CSV line ends and encodings, deep recipes, orphaned
temporary folders, fsck's tag order, a Ray that a killed command started)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from conftest import EXAMPLES, schemas
from meddata.cli import cli
from meddata.fsck import fsck
from meddata.store import ShardIntegrityError, Store, StoreError, Version, content_digest

SCHEMA = schemas()["pretrain"]


def table(n: int, tag: str = "", split: str = "train") -> pa.Table:
    return pa.Table.from_pylist([{"id": f"d{i}{tag}", "source": "corpus", "lang": "en",
                                  "task": "document", "split": split, "text": f"text {i}{tag}"}
                                 for i in range(n)], SCHEMA)


def publish(store: Store, name: str = "x", n: int = 5, tag: str = "", rejects: bool = False,
            report: bool = False):
    with store.publisher("pretrain", name, SCHEMA) as pub:
        pub.write(table(n, tag))
        if report:
            pub.attach_report(lambda v: f"<html><body>{v.rows} rows</body></html>")
        if rejects:
            pub.reject([{"file": "in.jsonl", "position": 1, "raw": "{", "reason": "bad_json",
                         "detail": "not JSON"}])
    return pub.version


def cli_run(store, *args):
    return CliRunner().invoke(cli, ["--store", str(store.root), *args])


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for a folder)."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = None if p.is_dir() else p.read_bytes()
    return out


def kinds(problems) -> set[str]:
    return {p.kind for p in problems}


# ---- 1. sql reads the catalog and the shards, nothing else, and writes nothing ---------------
def test_sql_is_read_only_and_limited_to_the_shards(store, tmp_path):
    v = publish(store)
    shard = v.shard_paths()[0]
    before = snapshot(store.root)
    ok = cli_run(store, "sql", "SELECT name, rows FROM versions")
    assert ok.exit_code == 0 and "x" in ok.output
    rows = cli_run(store, "sql", f"SELECT count(*) AS n FROM read_parquet('{shard}')")
    assert rows.exit_code == 0 and "5" in rows.output, rows.output
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    outside = tmp_path / "outside.parquet"
    pq.write_table(table(2), outside)
    inside_extra = v.path / "data" / "dev-00001.parquet"
    for query in [
        f"COPY (SELECT * FROM read_parquet('{shard}')) TO '{inside_extra}'",
        f"COPY (SELECT 1 AS x) TO '{shard}' (FORMAT parquet, USE_TMP_FILE false)",
        f"COPY (SELECT 1 AS x) TO '{store.root}/pretrain/x/tags.json' (FORMAT csv)",
        f"ATTACH '{v.path}/db.duckdb' AS d",
        f"SELECT * FROM read_text('{secret}')",
        f"SELECT * FROM read_parquet('{outside}')",
        f"SELECT * FROM read_csv('{store.root}/pretrain/x/tags.json')",
        f"SELECT * FROM glob('{store.root}/*')",
        "SET enable_external_access = true",
        f"EXPORT DATABASE '{tmp_path}/exp'",
        "INSTALL httpfs",
        "SELECT 1; COPY (SELECT 1) TO 'x.csv'",
    ]:
        result = cli_run(store, "sql", query)
        assert result.exit_code == 1, (query, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert "do not read" not in result.output
    assert snapshot(store.root) == before
    assert not (tmp_path / "exp").exists()
    assert fsck(store) == []


# ---- 2. tags hold ids only ------------------------------------------------------------------
def test_a_tag_cannot_point_outside_its_dataset(store):
    a = publish(store, "medmcqa")
    b = publish(store, "medqa", tag="q")
    tags = store.tags("pretrain", "medmcqa")
    tags["latest"] = f"../medqa/{b.id}"
    (store.root / "pretrain" / "medmcqa" / "tags.json").write_text(json.dumps(tags))
    with pytest.raises(StoreError, match="not a version id"):
        store.resolve("pretrain/medmcqa")
    result = cli_run(store, "show", "pretrain/medmcqa")
    assert result.exit_code == 1 and "not a version id" in result.output
    assert b.id not in result.output.replace(f"../medqa/{b.id}", "")
    found = fsck(store)
    assert ("bad_tag", "pretrain/medmcqa@latest") in {(p.kind, p.where) for p in found}
    repaired = fsck(store, repair=True)
    assert all(p.repaired for p in repaired)
    assert store.tags("pretrain", "medmcqa") == {"v1": a.id, "latest": a.id}
    assert fsck(store) == []


# ---- 3. checks see every change -------------------------------------------------------------
def _swap_same_size(path: Path) -> None:
    """Change a shard in place, keeping its size."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_same_size_change_is_caught_by_full_checks_and_the_cheap_ones_say_so(store):
    v = publish(store)
    shard = v.shard_paths()[0]
    size = shard.stat().st_size
    _swap_same_size(shard)
    assert shard.stat().st_size == size
    shown = cli_run(store, "show", "pretrain/x")
    assert shown.exit_code == 0 and "cheap" in shown.output and "fsck" in shown.output
    assert kinds(fsck(store)) == {"bad_shard"}
    cheap = cli_run(store, "fsck", "--sizes-only")
    assert cheap.exit_code == 0 and "sizes only" in cheap.output
    with pytest.raises(ShardIntegrityError, match="sha256"):
        store.load("pretrain/x", split="train")


def test_every_attached_file_is_hashed_and_checked(store):
    v = publish(store, rejects=True, report=True)
    attached = {e["path"] for e in v.manifest["attached"]}
    assert attached == {"rejects.parquet", "README.md", "report.html"}
    # the id is still the hash of the shards and schema only
    m = v.manifest
    assert content_digest(m["schema_text"], m["shards"])[:16] == v.id
    rejects = v.path / "rejects.parquet"
    saved = rejects.read_bytes()
    rejects.unlink()
    assert kinds(fsck(store)) == {"bad_file"}
    assert cli_run(store, "show", "pretrain/x").exit_code == 1
    rejects.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
    assert kinds(fsck(store)) == {"bad_file"}
    rejects.write_bytes(saved)
    assert fsck(store) == []
    report = v.path / "report.html"
    report.write_text(report.read_text().replace("5 rows", "9 rows"))
    found = fsck(store, hashes=False)
    assert found == []  # same size: only the full check sees it
    found = fsck(store)
    assert kinds(found) == {"bad_file"} and "report.html" in found[0].detail
    fsck(store, repair=True)
    assert store.versions() == [] and len(list((store.root / ".quarantine").iterdir())) == 1


def test_a_changed_card_is_rewritten_from_the_manifest(store):
    v = publish(store)
    card = v.path / "README.md"
    good = card.read_bytes()
    card.write_text(good.decode().replace("data/train-*.parquet", "../../other/*.parquet"))
    found = fsck(store)
    assert kinds(found) == {"bad_file"} and "README.md" in found[0].detail
    assert all(p.repaired for p in fsck(store, repair=True))
    assert card.read_bytes() == good
    assert fsck(store) == []


def test_an_extra_shard_is_seen_everywhere_and_set_aside(store):
    v = publish(store)
    extra = v.path / "data" / "dev-00001.parquet"
    pq.write_table(table(3, "extra"), extra)
    with pytest.raises(ShardIntegrityError, match="not in the manifest"):
        store.load("pretrain/x")
    assert cli_run(store, "show", "pretrain/x").exit_code == 1
    assert kinds(fsck(store, hashes=False)) == {"extra_file"}
    repaired = fsck(store, repair=True)
    assert [p.kind for p in repaired] == ["extra_file"] and "quarantine" in repaired[0].repaired
    assert not extra.exists() and fsck(store) == []
    assert sum(store.load("pretrain/x").num_rows.values()) == 5


def test_an_edited_row_count_is_seen_by_show_load_and_fsck(store):
    v = publish(store)
    m = json.loads((v.path / "manifest.json").read_text())
    m["rows"] = 1300
    (v.path / "manifest.json").write_text(json.dumps(m))
    result = cli_run(store, "show", "pretrain/x")
    assert result.exit_code == 1 and "manifest" in result.output
    with pytest.raises(ShardIntegrityError, match="manifest"):
        store.load("pretrain/x", split="train")
    assert kinds(fsck(store)) == {"manifest_edited"}
    # any other edit too (a stage, a count), through the manifest's own digest
    m["rows"] = 5
    m["stats"]["rows"] = 7
    (v.path / "manifest.json").write_text(json.dumps(m))
    assert kinds(fsck(store, hashes=False)) == {"manifest_edited"}
    fsck(store, repair=True)
    assert store.versions() == [] and (store.root / ".quarantine").exists()


def test_symlinks_are_refused_on_every_read_path(store, tmp_path):
    v = publish(store)
    other = publish(store, "other", tag="o")
    # a symlinked shard (to a copy of itself, inside the store): not read through
    shard = v.shard_paths()[0]
    copy = tmp_path / "copy.parquet"
    shutil.copy(shard, copy)
    shard.unlink()
    shard.symlink_to(copy)
    with pytest.raises(StoreError, match="symlink"):
        store.load("pretrain/x", split="train")
    with pytest.raises(StoreError, match="symlink"):
        Version(v.path).verify("size")
    with pytest.raises(StoreError, match="symlink"):
        list(Version(v.path).iter_batches(verify="none"))
    assert "symlink" in kinds(fsck(store))
    # a symlinked manifest: the version is broken, never read
    manifest = other.path / "manifest.json"
    saved = tmp_path / "manifest.json"
    shutil.copy(manifest, saved)
    manifest.unlink()
    manifest.symlink_to(saved)
    with pytest.raises(StoreError, match="symlink"):
        store.resolve("pretrain/other")
    # a symlinked README would send the Hugging Face loader elsewhere: refused and flagged
    third = publish(store, "third", tag="t")
    card = third.path / "README.md"
    card.unlink()
    card.symlink_to(tmp_path / "elsewhere.md")
    with pytest.raises(StoreError, match="symlink"):
        store.resolve("pretrain/third").verify("size")
    found = [p for p in fsck(store) if p.kind == "symlink"]
    assert {Path(p.where).name for p in found} >= {"README.md", "manifest.json", shard.name}
    fsck(store, repair=True)
    assert not card.is_symlink() and not manifest.is_symlink()


def test_a_manifest_without_shards_is_one_line_everywhere(store, tmp_path):
    v = publish(store)
    m = json.loads((v.path / "manifest.json").read_text())
    del m["shards"]
    (v.path / "manifest.json").write_text(json.dumps(m))
    for args in (["show", "pretrain/x"], ["validate", "pretrain/x"],
                 ["export", "pretrain/x", "--format", "jsonl", "--out", str(tmp_path / "o")]):
        result = cli_run(store, *args)
        assert result.exit_code == 1, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "shards" in result.output, result.output
    assert kinds(fsck(store)) == {"broken_manifest"}


def test_long_names_are_one_line(store):
    result = cli_run(store, "convert", "medmcqa", str(EXAMPLES / "medmcqa"), "--name",
                     "n" * 300, "--quiet")
    assert result.exit_code == 1 and "at most 100 characters" in result.output
    assert isinstance(result.exception, SystemExit)
    result = cli_run(store, "show", "canonical/" + "n" * 300)
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    ok = publish(store, "n" * 100)
    assert store.resolve("pretrain/" + "n" * 100).id == ok.id


# ---- 4. full and read-only disks --------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path):
    """A 2 MB tmpfs, where this process may mount one (root); skipped elsewhere."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _big_table(n: int, seed: int) -> pa.Table:
    """About 150 bytes of entropy a row: 20,000 rows do not fit in 2 MB, compressed."""
    import base64
    import random

    rng = random.Random(seed)
    return pa.Table.from_pylist([{"id": f"b{i}", "source": "corpus", "lang": "en",
                                  "task": "document", "split": "train",
                                  "text": base64.b64encode(rng.randbytes(150)).decode()}
                                 for i in range(n)], SCHEMA)


def test_disk_full_during_a_publish_leaves_the_store_as_it_was(small_fs):
    store = Store(small_fs / "store")
    old = publish(store)
    before = snapshot(store.root)
    with pytest.raises(StoreError, match="no space left on device") as info:
        store.publish("pretrain", "x", SCHEMA, [_big_table(20_000, 1)])
    assert "\n" not in str(info.value)
    assert snapshot(store.root) == before
    assert store.resolve("pretrain/x@latest").id == old.id
    # a new name: no folder is left behind either
    with pytest.raises(StoreError, match="no space left on device"):
        store.publish("pretrain", "new", SCHEMA, [_big_table(20_000, 2)])
    assert snapshot(store.root) == before
    assert fsck(store) == []


def test_disk_full_in_convert_is_one_line(small_fs, tmp_path):
    big = tmp_path / "dev.json"
    with open(EXAMPLES / "medmcqa" / "dev.json", encoding="utf-8") as f:
        lines = [json.loads(x) for x in f if x.strip()]
    with open(big, "w", encoding="utf-8") as f:
        for i in range(8000):
            rec = dict(lines[i % len(lines)])
            rec["id"] = f"big-{i}"
            rec["question"] = f"{rec['question']} {os.urandom(400).hex()}"
            f.write(json.dumps(rec) + "\n")
    store = Store(small_fs / "store")
    publish(store)
    before = snapshot(store.root)
    result = cli_run(store, "convert", "medmcqa", str(big), "--quiet")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.output.startswith("error:") and "no space left" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert snapshot(store.root) == before


def test_disk_full_while_writing_the_tags_takes_the_version_back_out(store, monkeypatch):
    old = publish(store)
    before = snapshot(store.root)
    real = Path.write_text

    def full(self, *a, **k):
        if self.name.startswith(".tags-"):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(StoreError, match="no space left on device"):
        publish(store, n=6)
    monkeypatch.undo()
    assert snapshot(store.root) == before
    assert store.resolve("pretrain/x@latest").id == old.id
    assert cli_run(store, "show", "pretrain/x@latest").exit_code == 0


@pytest.fixture
def read_only_store(small_fs, monkeypatch, tmp_path):
    """A store on a tmpfs remounted read-only (root can still not write there)."""
    store = Store(small_fs / "store")
    publish(store, "x", n=5)
    convert = cli_run(store, "convert", "medmcqa", str(EXAMPLES / "medmcqa" / "dev.json"),
                      "--quiet")
    assert convert.exit_code == 0, convert.output
    done = subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only: {done.stderr.decode().strip()}")
    monkeypatch.setenv("MEDDATA_CACHE", str(tmp_path / "cache"))
    return store


def test_a_read_only_store_loads_and_says_one_line_for_writes(read_only_store, tmp_path):
    store = read_only_store
    with pytest.raises(OSError):
        (store.root / "probe").write_text("x")
    ds = store.load("pretrain/x")
    assert ds["train"].num_rows == 5
    assert (tmp_path / "cache" / "datasets").is_dir()
    result = cli_run(store, "validate", "pretrain/x")
    assert result.exit_code == 0 and "passed" in result.output, result.output
    assert "not stored" in result.output and "read-only" in result.output
    for args in (["convert", "medmcqa", str(EXAMPLES / "medmcqa" / "dev.json"), "--name",
                  "again", "--quiet"],
                 ["dedup", "canonical/medmcqa", "--quiet"],
                 ["tag", "pretrain/x", "paper"]):
        result = cli_run(store, *args)
        assert result.exit_code == 1, (args, result.output)
        assert isinstance(result.exception, SystemExit), (args, result.exception)
        assert "read-only file system" in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, (args, result.output)


def test_the_cache_is_under_the_users_cache_folder(store, monkeypatch, tmp_path):
    from meddata.store import cache_dir

    monkeypatch.delenv("MEDDATA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "meddata"
    publish(store)
    store.load("pretrain/x", split="train")
    assert not (store.root / ".cache").exists()
    assert (tmp_path / "xdg" / "meddata" / "datasets").is_dir()


# ---- 5. the smaller ones ----------------------------------------------------------------------
def test_publishing_removes_its_own_old_orphans(store):
    publish(store)
    orphan = store.root / ".tmp" / f"pretrain-x-{uuid.uuid4().hex}"
    (orphan / "data").mkdir(parents=True)
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    other = store.root / ".tmp" / f"pretrain-y-{uuid.uuid4().hex}"
    other.mkdir()
    os.utime(other, (old, old))
    fresh = store.root / ".tmp" / f"pretrain-x-{uuid.uuid4().hex}"
    fresh.mkdir()  # just created: might be a publish starting up
    publish(store, n=6)
    assert not orphan.exists()
    assert other.exists() and fresh.exists()


def test_fsck_repair_without_tags_json_tags_v1_in_order(store):
    vs = [publish(store, n=n) for n in (3, 4, 5)]
    (store.root / "pretrain" / "x" / "tags.json").unlink()
    found = fsck(store)
    assert [p.kind for p in found if p.kind == "untagged"] == ["untagged"] * 3
    fsck(store, repair=True)
    assert store.tags("pretrain", "x") == {"v1": vs[0].id, "v2": vs[1].id, "v3": vs[2].id,
                                           "latest": vs[2].id}
    assert fsck(store) == []


def test_csv_with_lone_cr_and_utf16(store, tmp_path):
    text = (EXAMPLES / "cmexam" / "test.csv").read_text(encoding="utf-8")
    ref = cli_run(store, "convert", "cmexam", str(EXAMPLES / "cmexam" / "test.csv"), "--name",
                  "ref", "--quiet")
    assert ref.exit_code == 0, ref.output
    want = store.resolve("canonical/ref")
    for enc in ("utf-16", "utf-16-be", "utf-32"):
        path = tmp_path / enc / "test.csv"
        path.parent.mkdir()
        body = text.encode(enc)
        if enc == "utf-16-be":
            body = b"\xfe\xff" + body
        path.write_bytes(body)
        result = cli_run(store, "convert", "cmexam", str(path), "--name", enc, "--quiet")
        assert result.exit_code == 0, result.output
        assert store.resolve(f"canonical/{enc}").id == want.id
    cr = tmp_path / "cr" / "test.csv"
    cr.parent.mkdir()
    cr.write_bytes(text.replace("\r\n", "\n").replace("\n", "\r").encode())
    result = cli_run(store, "convert", "cmexam", str(cr), "--name", "cr", "--quiet")
    assert result.exit_code == 0, result.output
    got = store.resolve("canonical/cr")
    assert got.rows == want.rows and got.manifest["rejects"]["rows"] == 0


def test_a_recipe_nested_past_the_recursion_limit_is_one_line(store, tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: x\nsources: " + "[" * 5000 + "]" * 5000 + "\n")
    result = cli_run(store, "build", "sft", "--recipe", str(deep), "--quiet")
    assert result.exit_code == 1 and str(deep) in result.output
    assert "nested too deeply" in result.output and len(result.output.splitlines()) == 1


# ---- issue 32, items 4 and 5: loads keep splits apart ----------------------------------------
def test_load_returns_splits_and_the_name_folder_reads_latest_only(store):
    import datasets

    with store.publisher("pretrain", "x", SCHEMA) as pub:
        pub.write(pa.concat_tables([table(6, "a"), table(2, "v", split="validation")]))
    first = pub.version
    second = publish(store, n=4, tag="b")
    loaded = store.load("pretrain/x@v1")
    assert isinstance(loaded, datasets.DatasetDict)
    assert loaded.num_rows == {"train": 6, "validation": 2}
    assert store.load("pretrain/x@v1", split="train").num_rows == 6
    # the name folder's card points the Hugging Face loader at latest, never at every version
    name_dir = store.root / "pretrain" / "x"
    got = datasets.load_dataset(str(name_dir), cache_dir=str(store.root.parent / "hf"))
    assert got.num_rows == {"train": 4}
    assert sorted(got["train"]["id"]) == sorted(f"d{i}b" for i in range(4))
    store._write_tags("pretrain", "x", {**store.tags("pretrain", "x"), "latest": first.id})
    got = datasets.load_dataset(str(name_dir), cache_dir=str(store.root.parent / "hf2"))
    assert got.num_rows == {"train": 6, "validation": 2}
    assert second.id not in (name_dir / "README.md").read_text()
    assert fsck(store) == []
    (name_dir / "README.md").unlink()
    assert kinds(fsck(store)) == {"stale_card"}
    fsck(store, repair=True)
    assert fsck(store) == []


# ---- a command that started a local Ray stops it when it is stopped ---------------------------
RAY_SCRIPT = """
import sys, time
from meddata.engines.ray import RayEngine
print("starting", flush=True)
with RayEngine(cpus=1).session():
    print("started", flush=True)
    time.sleep(120)
"""


def _marked(psutil, mark: str) -> list:
    """Live processes whose environment carries `mark` (the command and what it started)."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("MEDDATA_TEST_MARK") == mark and \
                    p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.Error, OSError):
            continue
    return out


@pytest.mark.parametrize(("sig", "when"), [("SIGTERM", "starting"), ("SIGINT", "started")])
def test_a_stopped_command_stops_the_ray_it_started(tmp_path, sig, when):
    """The signal arrives while Ray starts (its processes appearing) or while it runs."""
    pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    import signal

    script = tmp_path / "ray_cmd.py"
    script.write_text(RAY_SCRIPT)
    mark = uuid.uuid4().hex
    env = {**os.environ, "MEDDATA_TEST_MARK": mark}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "starting"
        if when == "started":
            assert proc.stdout.readline().strip() == "started"
        else:
            deadline = time.time() + 60
            while not psutil.Process(proc.pid).children() and time.time() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)  # Ray's own processes are starting
        assert psutil.Process(proc.pid).children()
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=60)
        deadline = time.time() + 30
        while _marked(psutil, mark) and time.time() < deadline:
            time.sleep(0.5)
        assert _marked(psutil, mark) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in _marked(psutil, mark):
            p.kill()
