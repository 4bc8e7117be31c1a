"""`meddata fsck`: find (and with `repair=True` fix) what crashes and hands can leave in a
store.

Problems, each with what `--repair` does:
- orphan_tmp: a temporary folder of a publish that no longer runs (killed): removed. A
  publish in progress holds a lock inside its folder and is never touched.
- broken_tags: tags.json does not parse: set aside as tags.json.broken-<time> and rebuilt
  from the versions (v1.. in order of creation, latest the newest).
- broken_manifest: a version folder whose manifest.json is missing or does not parse;
- id_mismatch: a manifest whose shards and schema no longer hash to the version id (a
  shard was rewritten together with its manifest entry);
- bad_shard: a shard missing, or with another size or sha256 than its manifest says.
  These three are moved, untouched, to <store>/.quarantine/ (nothing is deleted), and tags
  pointing at them are removed.
- untagged: a version no tag points at (a publish that crashed before writing its tags):
  tagged as the next v<N>, and `latest` when it is the newest.
- dangling_tag: a tag pointing at a version that is not there: removed; `latest` moves to
  the newest version left.
- symlink: a symlink inside the store (the store never follows one): removed (the link,
  never what it points to).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from meddata.store import BUSY, BrokenVersion, ShardIntegrityError, Store, StoreError, Version

ORPHAN_AGE_S = 60  # a temporary folder without a lock file is an orphan after this long


@dataclass
class Problem:
    kind: str          # orphan_tmp | broken_tags | broken_manifest | id_mismatch | ...
    where: str         # the path or dataset it concerns
    detail: str
    repaired: str | None = None   # what --repair did, None when nothing was done

    def line(self) -> str:
        fix = f"  -> {self.repaired}" if self.repaired else ""
        return f"{self.kind}: {self.where}: {self.detail}{fix}"


def _stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _in_use(folder: Path) -> bool:
    """Whether a publish still runs in `folder` (it holds the lock on its BUSY file)."""
    busy = folder / BUSY
    if not busy.exists():
        try:
            return time.time() - folder.stat().st_mtime < ORPHAN_AGE_S
        except OSError:
            return False
    try:
        fd = os.open(busy, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _quarantine(store: Store, folder: Path) -> Path:
    dest = store.root / ".quarantine" / f"{folder.parent.parent.name}-{folder.parent.name}-" \
                                        f"{folder.name}-{_stamp()}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(folder, dest)
    return dest


def _symlinks(store: Store) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(store.root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if p.is_symlink():
                out.append(p)
    return out


def fsck(store: Store, repair: bool = False, hashes: bool = True) -> list[Problem]:
    """Every problem found (repaired ones say how). `hashes=False` checks shard sizes only."""
    problems: list[Problem] = []
    if not store.root.exists():
        return problems
    for link in _symlinks(store):
        p = Problem("symlink", str(link), f"points at {os.readlink(link)}")
        if repair:
            link.unlink()
            p.repaired = "link removed"
        problems.append(p)
    tmp_root = store.root / ".tmp"
    if tmp_root.is_dir():
        for folder in sorted(tmp_root.iterdir()):
            if not folder.is_dir() or _in_use(folder):
                continue
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            p = Problem("orphan_tmp", str(folder), f"left by a publish that stopped "
                                                   f"({size} bytes)")
            if repair:
                shutil.rmtree(folder, ignore_errors=True)
                p.repaired = "removed"
            problems.append(p)
    for kind, name in store.names():
        problems += _check_dataset(store, kind, name, repair, hashes)
    return problems


def _check_dataset(store: Store, kind: str, name: str, repair: bool, hashes: bool
                   ) -> list[Problem]:
    problems: list[Problem] = []
    where = f"{kind}/{name}"
    base = store.root / kind / name
    good: list[Version] = []
    for folder in store.version_dirs(kind, name):
        try:
            version = Version(folder)
            version.verify("full" if hashes else "size")
            good.append(version)
            continue
        except BrokenVersion as e:
            problem = Problem("broken_manifest", str(folder), str(e).split(": ", 1)[-1])
        except ShardIntegrityError as e:
            kind_of = "id_mismatch" if "hash to the version id" in str(e) else "bad_shard"
            problem = Problem(kind_of, str(folder), str(e).split(": ", 1)[-1])
        if repair:
            problem.repaired = f"moved to {_quarantine(store, folder)}"
        problems.append(problem)

    newest = max(good, key=_age, default=None)
    try:
        tags = store.tags(kind, name)
        rebuilt = False
    except StoreError as e:
        p = Problem("broken_tags", f"{where}/tags.json", str(e).split(": ", 1)[-1])
        tags, rebuilt = {}, True
        if repair:
            aside = base / f"tags.json.broken-{_stamp()}"
            os.replace(base / "tags.json", aside)
            p.repaired = f"set aside as {aside.name}; rebuilt from the versions"
        problems.append(p)
    changed = rebuilt
    present = {d.name for d in store.version_dirs(kind, name)}
    for tag, vid in sorted(tags.items()):
        if vid not in present:
            p = Problem("dangling_tag", f"{where}@{tag}", f"points at {vid}, which is not there")
            if repair:
                del tags[tag]
                changed = True
                p.repaired = "tag removed"
            problems.append(p)
    if repair and "latest" not in tags and newest is not None and not rebuilt:
        tags["latest"] = newest.id
        changed = True
    tagged = set(tags.values())
    numbers = [int(t[1:]) for t in tags if re.fullmatch(r"v\d+", t)]
    for version in sorted(good, key=_age):
        if version.id in tagged:
            continue
        if not rebuilt:
            p = Problem("untagged", version.ref, "no tag points at this version")
        if repair:
            numbers.append(max(numbers, default=0) + 1)
            tags[f"v{numbers[-1]}"] = version.id
            if version is newest:
                tags["latest"] = version.id
            changed = True
            if not rebuilt:
                p.repaired = f"tagged v{numbers[-1]}" + (" and latest" if version is newest
                                                          else "")
        if not rebuilt:
            problems.append(p)
    if repair and changed:
        with store._locked(kind, name):
            store._write_tags(kind, name, tags)
    return problems


def _age(version: Version) -> tuple:
    """Creation order: the manifest's time (to the second), then the folder's mtime."""
    return (version.manifest.get("created_at", ""), version.path.stat().st_mtime_ns, version.id)


def as_json(problems: list[Problem]) -> str:
    return json.dumps([p.__dict__ for p in problems], indent=2)
