"""`meddata fsck`: find (and with `repair=True` fix) what crashes, full disks and hands can
leave in a store.

Problems, each with what `--repair` does:
- orphan_tmp: a temporary folder of a publish that no longer runs (killed): removed. A
  publish in progress holds a lock inside its folder and is never touched.
- broken_tags: tags.json does not parse: set aside as tags.json.broken-<time> and rebuilt
  from the versions (v1.. in order of creation, latest the newest).
- bad_tag: a tag whose value is not a version id (for example `../other/<id>`): removed.
- broken_manifest: a version folder whose manifest.json is missing, does not parse or lacks
  the fields readers need (for example `shards`);
- id_mismatch: a manifest whose shards and schema no longer hash to the version id (a
  shard was rewritten together with its manifest entry);
- manifest_edited: manifest.json changed after publishing (its own digest, or its row
  count against its shards', disagrees);
- bad_shard: a shard (or an index file, part of the content) missing, or with another
  size or sha256 than its manifest says;
- bad_file: rejects.parquet, report.html, README.md or another hashed file missing or
  changed. A changed README.md (the card) is rewritten from the manifest when that gives
  back the hashed bytes; otherwise, like the four above, the version folder is moved,
  untouched, to <store>/.quarantine/ (nothing is deleted) and tags pointing at it removed.
- extra_file: a file in a version folder that its manifest does not name (a shard added to
  data/ would be served by the Hugging Face loader): moved to <store>/.quarantine/.
- untagged: a version no tag points at (a publish that crashed before writing its tags):
  tagged as the next v<N>, in order of creation, and `latest` when it is the newest.
- dangling_tag: a tag pointing at a version that is not there: removed; `latest` moves to
  the newest version left.
- stale_card: the name folder's README.md (which points the Hugging Face loader at
  `latest`) is missing or points elsewhere: rewritten.
- symlink: a symlink inside the store (the store never follows one): removed (the link,
  never what it points to).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from meddata.store import (
    _NAME_READ,
    CARD,
    ID,
    BrokenVersion,
    Store,
    StoreError,
    Version,
    dataset_card,
    publish_in_progress,
    sha256_file,
)

_in_use = publish_in_progress
SERIOUS = ("id_mismatch", "manifest_edited", "bad_shard", "bad_file")


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
        except BrokenVersion as e:
            problem = Problem("broken_manifest", str(folder), str(e).split(": ", 1)[-1])
            if repair:
                problem.repaired = f"moved to {_quarantine(store, folder)}"
            problems.append(problem)
            continue
        found = [p for p in version.problems("full" if hashes else "size")
                 if p.kind != "symlink"]  # every symlink is reported (and removed) above
        serious = [p for p in found if p.kind in SERIOUS]
        if repair and serious and all(p.kind == "bad_file" and p.path == CARD
                                      for p in serious):
            fixed = _rewrite_card(version)
            if fixed:
                problems += [Problem(p.kind, str(folder), str(p).split(": ", 1)[-1], fixed)
                             for p in serious]
                found = [p for p in found if p.kind not in SERIOUS]
                serious = []
        moved = None
        if repair and serious:
            moved = f"moved to {_quarantine(store, folder)}"
        for p in found:
            problem = Problem(p.kind, str(folder), str(p).split(": ", 1)[-1])
            if repair and moved:
                problem.repaired = moved
            elif repair and p.kind == "extra_file":
                problem.repaired = f"moved to {_set_aside(store, version, p.path)}"
            problems.append(problem)
        if not serious:
            good.append(version)

    newest = max(good, key=_age, default=None)
    try:
        tags = store.raw_tags(kind, name)
        rebuilt = False
    except StoreError as e:
        p = Problem("broken_tags", f"{where}/tags.json", str(e).split(": ", 1)[-1])
        tags, rebuilt = {}, True
        if repair:
            aside = base / f"tags.json.broken-{_stamp()}"
            if (base / "tags.json").is_symlink():
                (base / "tags.json").unlink()
                p.repaired = "link removed; rebuilt from the versions"
            else:
                os.replace(base / "tags.json", aside)
                p.repaired = f"set aside as {aside.name}; rebuilt from the versions"
        problems.append(p)
    changed = rebuilt
    for tag, vid in sorted(tags.items()):
        if not ID.fullmatch(vid) or not _NAME_READ.fullmatch(tag):
            p = Problem("bad_tag", f"{where}@{tag[:60]}",
                        f"holds {vid[:80]!r}, not a version id (a tag holds an id only)")
            if repair:
                del tags[tag]
                changed = True
                p.repaired = "tag removed"
            problems.append(p)
    present = {d.name for d in store.version_dirs(kind, name)}
    for tag, vid in sorted(tags.items()):
        if ID.fullmatch(vid) and vid not in present:
            p = Problem("dangling_tag", f"{where}@{tag}", f"points at {vid}, which is not there")
            if repair:
                del tags[tag]
                changed = True
                p.repaired = "tag removed"
            problems.append(p)
    tagged = set(tags.values())
    numbers = [int(t[1:]) for t in tags if re.fullmatch(r"v\d+", t)]
    for version in sorted(good, key=_age):  # v1, v2, ... in order of creation
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
    if repair and "latest" not in tags and newest is not None:
        tags["latest"] = newest.id
        changed = True
    if repair and changed:
        with store._locked(kind, name):
            store._write_tags(kind, name, tags)
    latest = tags.get("latest")
    if latest in {v.id for v in good}:
        card = base / CARD
        if not card.is_symlink():
            want = store.name_card(kind, name, latest)
            have = card.read_text(encoding="utf-8", errors="replace") if card.is_file() else None
            if have != want:
                p = Problem("stale_card", str(card),
                            "missing" if have is None else "does not point at `latest`")
                if repair:
                    with store._locked(kind, name):
                        store._write_tags(kind, name, tags)
                    p.repaired = "rewritten"
                problems.append(p)
    return problems


def _rewrite_card(version: Version) -> str | None:
    """Write a version's card again from its manifest; only when that gives back the bytes
    the manifest hashes (the card is made from the manifest alone)."""
    entry = next(e for e in version.manifest["attached"] if e["path"] == CARD)
    path = version.path / CARD
    text = dataset_card(version.manifest)
    tmp = path.with_name(".card-repair")
    tmp.write_text(text, encoding="utf-8")
    if sha256_file(tmp) != entry["sha256"]:
        tmp.unlink()
        return None
    os.replace(tmp, path)
    return "rewritten from the manifest"


def _set_aside(store: Store, version: Version, rel: str) -> Path:
    """Move one file the manifest does not name out of a version, into .quarantine/."""
    dest = store.root / ".quarantine" / f"{version.kind}-{version.name}-{version.id}-extra-" \
                                        f"{_stamp()}" / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(version.path / rel, dest)
    return dest


def _age(version: Version) -> tuple:
    """Creation order: the manifest's time (to the second), then the folder's mtime."""
    return (version.manifest.get("created_at", ""), version.path.stat().st_mtime_ns, version.id)


def as_json(problems: list[Problem]) -> str:
    return json.dumps([p.__dict__ for p in problems], indent=2)
