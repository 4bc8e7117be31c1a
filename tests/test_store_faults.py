"""Fault injection on the store: crashes at every point of a publish heal, fsck finds and
repairs what they leave, one broken dataset never hides the others, no symlink is
followed out of the store, names are checked whole, secrets stay off disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest
from click.testing import CliRunner

from conftest import schemas
from meddata.cli import cli
from meddata.fsck import fsck
from meddata.store import Ref, ShardIntegrityError, Store, StoreError

SCHEMA = schemas()["pretrain"]


def table(n: int, tag: str = "") -> pa.Table:
    return pa.Table.from_pylist([{"id": f"d{i}{tag}", "source": "corpus", "lang": "en",
                                  "task": "document", "split": "train", "text": f"text {i}{tag}"}
                                 for i in range(n)], SCHEMA)


def publish(store: Store, name: str = "x", n: int = 5, tag: str = ""):
    return store.publish("pretrain", name, SCHEMA, [table(n, tag)])


def cli_run(store, *args):
    return CliRunner().invoke(cli, ["--store", str(store.root), *args])


# ---- crash points ------------------------------------------------------------------------------
def test_crash_after_rename_before_tags_heals_on_rerun(store, monkeypatch):
    calls = []
    monkeypatch.setattr(Store, "ensure_tagged", lambda self, *a: calls.append(a) or
                        (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        publish(store)
    monkeypatch.undo()
    with pytest.raises(StoreError, match="no tag"):
        store.resolve("pretrain/x@latest")
    v = publish(store)  # the same content again: returns the id and writes the tags
    assert store.tags("pretrain", "x") == {"v1": v.id, "latest": v.id}
    assert store.resolve("pretrain/x@latest").id == v.id


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import pyarrow as pa
    from meddata.builders.pretrain import SCHEMA as schema
    from meddata.store import Store
    with Store(sys.argv[1]).publisher("pretrain", "killed", schema) as pub:
        pub.write(pa.Table.from_pylist([{"id": "a", "source": "s", "lang": "en",
                  "task": "document", "split": "train", "text": "t"}], schema))
        print("writing", flush=True)
        time.sleep(60)
""")


def test_killed_publish_leaves_an_orphan_that_fsck_removes(store, tmp_path):
    publish(store)
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(store.root)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    # while it runs, its folder is in use: fsck leaves it alone even with --repair
    assert [p.kind for p in fsck(store, repair=True)] == []
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    problems = fsck(store)
    assert [p.kind for p in problems] == ["orphan_tmp"] and not problems[0].repaired
    result = cli_run(store, "fsck")
    assert result.exit_code == 1 and "orphan_tmp" in result.output
    result = cli_run(store, "fsck", "--repair")
    assert result.exit_code == 0 and "removed" in result.output
    assert not any((store.root / ".tmp").iterdir())
    assert cli_run(store, "fsck").exit_code == 0


def test_fsck_finds_and_repairs_every_kind_of_damage(store):
    a1 = publish(store, "a")
    a2 = publish(store, "a", n=6)
    b = publish(store, "b")
    c = publish(store, "c")
    d = publish(store, "d")
    # untagged version (a crash before its tags), and a dangling tag
    tags = store.tags("pretrain", "a")
    del tags["v2"]
    tags["latest"] = a1.id
    tags["old"] = "0123456789abcdef"
    store._write_tags("pretrain", "a", tags)
    # b: a manifest that does not parse; c: a shard whose bytes changed
    (b.path / "manifest.json").write_text("{ not json")
    shard = c.path / c.manifest["shards"][0]["path"]
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")
    # d: a shard rewritten together with its manifest entry (sizes and hashes agree, id not)
    new = publish(store, "scratch", n=5, tag="other")
    dshard = d.path / d.manifest["shards"][0]["path"]
    dshard.write_bytes((new.path / new.manifest["shards"][0]["path"]).read_bytes())
    m = d.manifest
    m["shards"][0].update(sha256=new.manifest["shards"][0]["sha256"],
                          bytes=dshard.stat().st_size)
    (d.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ShardIntegrityError, match="version id"):
        store.resolve("pretrain/d").verify("full")

    found = {(p.kind, p.where.split("/")[-1] if p.kind != "untagged" else p.where)
             for p in fsck(store)}
    assert ("untagged", a2.ref) in found
    assert ("dangling_tag", "a@old") in found
    assert ("broken_manifest", b.id) in found
    assert ("bad_shard", c.id) in found
    assert ("id_mismatch", d.id) in found

    repaired = fsck(store, repair=True)
    assert all(p.repaired for p in repaired)
    assert fsck(store) == []
    assert store.tags("pretrain", "a") == {"v1": a1.id, "v2": a2.id, "latest": a2.id}
    quarantined = sorted(p.name for p in (store.root / ".quarantine").iterdir())
    assert len(quarantined) == 3 and all(any(v.id in q for q in quarantined) for v in (b, c, d))


def test_broken_tags_and_manifests_do_not_take_down_ls_show_validate(store):
    good = publish(store, "good")
    bad = publish(store, "bad")
    (store.root / "pretrain" / "bad" / "tags.json").write_text("{")
    broken = publish(store, "broken")
    (broken.path / "manifest.json").write_text("")
    result = cli_run(store, "ls")
    assert result.exit_code == 0
    assert "pretrain/good" in result.output and good.id in result.output
    assert "tags.json is unreadable" in result.output and "manifest.json is unreadable" in \
        result.output
    result = cli_run(store, "show", "pretrain/bad")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("\n") == 1 and "tags.json" in result.output
    result = cli_run(store, "validate", "pretrain/bad", "pretrain/good")
    assert result.exit_code == 1 and "pretrain/bad: error:" in result.output
    assert f"{good.ref}: passed" in result.output
    assert cli_run(store, "fsck", "--repair").exit_code == 0
    assert store.tags("pretrain", "bad") == {"v1": bad.id, "latest": bad.id}


def test_show_checks_sizes_and_the_id(store):
    v = publish(store)
    shard = v.path / v.manifest["shards"][0]["path"]
    shard.write_bytes(shard.read_bytes() + b"x")
    result = cli_run(store, "show", "pretrain/x")
    assert result.exit_code == 1 and "bytes, manifest says" in result.output
    assert "row conservation" in result.output or "schema" in result.output


# ---- symlinks and names ---------------------------------------------------------------------
def test_symlinked_lock_is_refused_not_truncated(store, tmp_path):
    publish(store)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    lock = store.root / "pretrain" / "x" / ".lock"
    lock.unlink()
    lock.symlink_to(victim)
    with pytest.raises(StoreError, match="symlink"):
        publish(store, n=7)
    assert victim.read_text() == "precious"
    assert [p.kind for p in fsck(store)] == ["symlink"]


def test_symlinked_validations_folder_is_refused(store, tmp_path):
    v = publish(store)
    outside = tmp_path / "outside"
    outside.mkdir()
    (v.path / "validations").symlink_to(outside)
    result = cli_run(store, "validate", "pretrain/x")
    assert result.exit_code == 1 and "leads outside the store" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not any(outside.iterdir())


def test_symlinked_version_folder_outside_is_not_read(store, tmp_path):
    v = publish(store)
    real = tmp_path / "elsewhere"
    os.rename(v.path, real)
    v.path.symlink_to(real)
    with pytest.raises(StoreError):
        store.resolve("pretrain/x@latest")


@pytest.mark.parametrize("name", ["x\n", "x\r", "a\tb", "../x", "x/y", ".hidden", ""])
def test_names_are_checked_whole(store, name):
    with pytest.raises(StoreError):
        store.publisher("pretrain", name, SCHEMA)
    with pytest.raises(StoreError):
        Ref.parse(f"pretrain/{name}@latest")


# ---- secrets ---------------------------------------------------------------------------------
def test_judge_key_and_url_credentials_are_redacted(monkeypatch):
    pytest.importorskip("httpx")
    import asyncio

    from meddata.train.judge import Judge, JudgeUnavailable

    monkeypatch.setenv("MY_JUDGE_KEY", "sk-very-secret")
    judge = Judge(url="http://user:hunter2@127.0.0.1:9/v1", api_key_env="MY_JUDGE_KEY",
                  retries=0, timeout=0.5)
    with pytest.raises(JudgeUnavailable) as err:
        asyncio.run(judge.score_all(["q"], ["r"], ["a"]))
    assert "hunter2" not in str(err.value) and "sk-very-secret" not in str(err.value)
    assert "***@127.0.0.1" in str(err.value)
    with pytest.raises(ValueError, match="NOT_SET_ANYWHERE"):
        Judge(api_key_env="NOT_SET_ANYWHERE")


def test_manifests_never_hold_keys(store):
    v = store.publish("pretrain", "s", SCHEMA, [table(2)],
                      recipe={"judge": {"api_key": "sk-123", "url": "https://u:pw@h/v1"},
                              "hub": "https://h/x?token=abc&page=2"})
    text = (v.path / "manifest.json").read_text()
    assert "sk-123" not in text and "pw@" not in text and "token=abc" not in text
    assert "page=2" in text


def test_stage_time_of_orphan_is_respected(store):
    """A temporary folder without a lock file (older meddata) is left alone while young."""
    folder = store.root / ".tmp" / "pretrain-x-young"
    folder.mkdir(parents=True)
    assert fsck(store) == []
    old = time.time() - 3600
    os.utime(folder, (old, old))
    assert [p.kind for p in fsck(store)] == ["orphan_tmp"]
