"""The dataset store: immutable, content-addressed versions of `kind/name`.

Layout::

    <store>/<kind>/<name>/<id>/data/<split>-00000.parquet ...
                              /manifest.json
                              /rejects.parquet
                              /README.md
                              /validations/<utc time>.json   (later runs; not part of the id)
    <store>/<kind>/<name>/tags.json                            {"v1": id, ..., "latest": id}
    <store>/.tmp/                                              publishes in progress

A version id is the first 16 hex digits of sha256 over the Arrow schema and the shards'
sha256 digests, so the same content always gets the same id. Publishing writes into
`.tmp/` and renames the finished folder into place: a crash leaves no half version.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from meddata import __version__
from meddata.schema import REJECTS
from meddata.secrets import redact

DEFAULT_STORE = "./meddata-store"
BUSY = ".publishing"  # lock file inside a publish's temporary folder
REPORT = "report.html"  # the data report inside a version (meddata/report.py)
ROW_GROUP_ROWS = 8_192
SHARD_ROWS = 61 * ROW_GROUP_ROWS  # 499,712: shards hold whole row groups
# Columns whose value counts go into the manifest's stats.
COUNTED_COLUMNS = ("source", "subset", "split", "lang", "task", "rejected_by", "label")
# String columns with few distinct values, dictionary encoded in the shards.
DICTIONARY_NAMES = frozenset({"source", "subset", "split", "lang", "task", "label",
                              "answer_label", "role", "rejected_by"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # always used with fullmatch
# what a reference or an existing tag may hold: a file name's 255 characters (a name that an
# earlier meddata published, longer than today's limit of 100, still resolves)
_NAME_READ = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_HEX = re.compile(r"[0-9a-f]{4,64}")
ID = re.compile(r"[0-9a-f]{16}")  # a version id; the only thing a tag may hold
MAX_NAME = 100  # characters in a kind, name or tag (a temporary folder's name holds two)
ORPHAN_AGE_S = 60  # a temporary folder without a lock file is an orphan after this long
CARD = "README.md"  # a version's dataset card; a name folder's card points at `latest`
# Files hashed in the manifest (`attached`) that are not part of the version id.
ATTACHED = ("rejects.parquet", CARD, REPORT)


class StoreError(Exception):
    """A reference that does not resolve, or a store that is not in the expected state."""


class ShardIntegrityError(StoreError):
    """A shard's bytes no longer match the size or sha256 recorded in its manifest, or the
    manifest no longer matches the version's content id."""


class StoreWriteError(StoreError, OSError):
    """A write into the store failed (a full disk, a read-only store): one line that says
    what and where; nothing was published and the store is as it was."""


class BrokenVersion(StoreError):
    """A version folder whose manifest.json is missing or does not parse."""


class VersionProblem(ShardIntegrityError):
    """One thing wrong with a version's files; `kind` names it for `meddata fsck`:
    id_mismatch, manifest_edited, bad_shard, bad_file, extra_file, symlink."""

    def __init__(self, kind: str, message: str, path: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.path = path  # the file it concerns, relative to the version folder


def check_name(part: str, what: str = "kind or name") -> str:
    if not isinstance(part, str) or not _NAME.fullmatch(part):
        shown = part if len(str(part)) <= 60 else f"{str(part)[:40]}... ({len(part)} characters)"
        raise StoreError(f"bad {what} {shown!r}: use letters, digits, . _ - (at most "
                         f"{MAX_NAME} characters, starting with a letter or digit)")
    return part


def cache_dir() -> Path:
    """Where loads keep their Arrow cache: $MEDDATA_CACHE, else $XDG_CACHE_HOME/meddata, else
    ~/.cache/meddata. Never inside the store, so a read-only (shared, mounted) store loads."""
    if os.environ.get("MEDDATA_CACHE"):
        return Path(os.environ["MEDDATA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "meddata"


def publish_in_progress(folder: Path) -> bool:
    """Whether a publish still runs in the temporary `folder` (it holds the lock on its BUSY
    file; a folder without one counts as running for ORPHAN_AGE_S after its last change)."""
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


def os_problem(e: OSError) -> str:
    """An OSError in a few words with its file: `no space left on device (<path>)`."""
    import errno

    what = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded",
            errno.ENAMETOOLONG: "file name too long"}.get(e.errno)
    what = what or (e.strerror or str(e)).strip().rstrip(".")
    where = e.filename if e.filename is not None else None
    return f"{what} ({where})" if where else what


def default_store_path() -> Path:
    return Path(os.environ.get("MEDDATA_STORE", DEFAULT_STORE))


def _utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def schema_fingerprint(schema: pa.Schema) -> str:
    """A stable text form of a schema, without metadata."""
    return schema.remove_metadata().to_string(show_field_metadata=False,
                                              show_schema_metadata=False)


def schema_to_json(schema: pa.Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


def content_digest(schema_text: str, shards: list[dict[str, Any]],
                   files: list[dict[str, Any]] = ()) -> str:
    """sha256 over a version's schema, its shards' paths and sha256 digests, and those of
    its other files (a retrieval index's), when it has any: the version id is its first
    16 hex digits."""
    content: dict[str, Any] = {"schema": schema_text,
                               "shards": [[s["path"], s["sha256"]] for s in shards]}
    if files:
        content["files"] = [[f["path"], f["sha256"]] for f in files]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 over the manifest as written, without its own `manifest_sha256` key: any later
    edit of a count, a stage or a file's hash is seen by `verify` and `fsck`."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False,
                                     default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Ref:
    """`kind/name@selector`, where selector is a tag (`v2`, `latest`) or an id prefix."""

    kind: str
    name: str
    selector: str = "latest"

    @classmethod
    def parse(cls, text: str) -> Ref:
        body, _, selector = text.partition("@")
        parts = body.strip("/").split("/")
        if len(parts) != 2 or not all(_NAME_READ.fullmatch(p) for p in parts) or \
                len(selector) > 64:
            shown = text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"
            raise StoreError(f"bad reference {shown!r}: expected kind/name[@tag|@id] (letters, "
                             "digits, . _ -), for example canonical/medmcqa@latest")
        return cls(parts[0], parts[1], selector or "latest")

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}@{self.selector}"


class Version:
    """One published, immutable version."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.this_run: dict[str, Any] | None = None  # set by the run that returned it
        self.existed = False            # set by a publish that found this content already there
        self.tags_moved: list[str] = []  # ... and the tags that publish pointed at it
        try:
            if self.path.is_symlink() or (self.path / "manifest.json").is_symlink():
                raise ValueError("a symlink, which meddata does not follow")
            with open(self.path / "manifest.json", encoding="utf-8") as f:
                self.manifest: dict[str, Any] = json.load(f)
            _check_manifest(self.manifest)
        except (OSError, ValueError, RecursionError) as e:
            raise BrokenVersion(f"{self.path}: manifest.json is unreadable ({e}); "
                                "`meddata fsck` reports it, `--repair` moves it aside") from None

    id = property(lambda self: self.manifest["id"])
    kind = property(lambda self: self.manifest["kind"])
    name = property(lambda self: self.manifest["name"])
    rows = property(lambda self: self.manifest["rows"])

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}@{self.id}"

    def __repr__(self) -> str:
        return f"Version({self.ref})"

    def as_parent(self, **extra: Any) -> dict[str, Any]:
        """How a version is recorded among another version's parents."""
        return {"ref": self.ref, "kind": self.kind, "name": self.name, "id": self.id,
                "content_sha256": self.manifest["content_sha256"], **extra}

    def shard_paths(self, split: str | None = None) -> list[Path]:
        """The shards' paths (of one split); a symlinked shard is refused, never read."""
        paths = [self.path / s["path"] for s in self.manifest["shards"]
                 if split is None or s["split"] == split]
        for p in paths:
            if p.is_symlink():
                raise VersionProblem("symlink", f"{self.ref}: shard {p.relative_to(self.path)} "
                                     "is a symlink; meddata does not read through it",
                                     str(p.relative_to(self.path)))
        return paths

    @property
    def splits(self) -> list[str]:
        return sorted({s["split"] for s in self.manifest["shards"] if s["rows"]})

    @property
    def schema(self) -> pa.Schema:
        return pq.read_schema(self.shard_paths()[0])

    def listed_files(self) -> list[dict[str, Any]]:
        """Every file the manifest hashes: shards, other content (`files`), and the
        attached rejects, card and report."""
        m = self.manifest
        return [*m["shards"], *m.get("files", []), *m.get("attached", [])]

    def check_id(self) -> None:
        """The manifest's shard list and schema must hash to the version's id (and folder
        name): a shard rewritten together with its manifest entry is caught here."""
        m = self.manifest
        digest = content_digest(m.get("schema_text", ""), m.get("shards", []),
                                m.get("files", []))
        if digest != m.get("content_sha256") or digest[:16] != m["id"] or \
                self.path.name != m["id"]:
            raise VersionProblem(
                "id_mismatch", f"{self.ref}: the manifest's shards and schema do not hash to "
                "the version id (the version was changed after publishing)")

    def problems(self, mode: str = "full") -> list[VersionProblem]:
        """Everything wrong with the version's files, first the id. `size` (cheap: a
        directory listing and a stat per file) checks the id, the manifest's own digest and
        row counts, that every file the manifest hashes is there with its size and is no
        symlink, and that nothing else is in the folder (besides validations/*.json);
        `full` also reads every file and compares its sha256. `none` checks nothing."""
        if mode == "none":
            return []
        out: list[VersionProblem] = []
        try:
            self.check_id()
        except VersionProblem as e:
            out.append(e)
        m = self.manifest
        if "manifest_sha256" in m and manifest_digest(m) != m["manifest_sha256"]:
            out.append(VersionProblem("manifest_edited", f"{self.ref}: manifest.json was "
                                      "edited after publishing (its digest does not match)"))
        if m["rows"] != sum(s["rows"] for s in m["shards"]):
            out.append(VersionProblem(
                "manifest_edited", f"{self.ref}: the manifest says {m['rows']} rows, its shards "
                f"{sum(s['rows'] for s in m['shards'])}"))
        content = len(m["shards"]) + len(m.get("files", []))
        for i, entry in enumerate(self.listed_files()):
            rel = entry["path"]
            path = self.path / rel
            # shards and index files are the content (in the id); the rest is attached
            what = "shard" if rel.startswith("data/") else "file"
            bad = "bad_shard" if i < content else "bad_file"
            if path.is_symlink():
                out.append(VersionProblem("symlink", f"{self.ref}: {what} {rel} is a symlink; "
                                          "meddata does not read through it", rel))
                continue
            if not path.is_file():
                out.append(VersionProblem(bad, f"{self.ref}: {what} {rel} is missing", rel))
                continue
            size = path.stat().st_size
            if size != entry["bytes"]:
                out.append(VersionProblem(bad, f"{self.ref}: {what} {rel} has {size} bytes, "
                                          f"manifest says {entry['bytes']}", rel))
            elif mode == "full" and sha256_file(path) != entry["sha256"]:
                out.append(VersionProblem(
                    bad, f"{self.ref}: {what} {rel} does not match its sha256 in the manifest "
                    "(the file changed after publishing)", rel))
        out += self._unlisted()
        return out

    def _unlisted(self) -> list[VersionProblem]:
        """Files and links in the folder that the manifest does not name."""
        listed = {e["path"] for e in self.listed_files()} | {"manifest.json"}
        folders = {str(Path(p).parent) for p in listed} | {"validations"}
        out = []
        for dirpath, dirnames, filenames in os.walk(self.path):
            rel_dir = os.path.relpath(dirpath, self.path)
            for n in sorted(dirnames + filenames):
                rel = n if rel_dir == "." else f"{rel_dir}/{n}"
                p = Path(dirpath) / n
                if p.is_symlink():
                    if rel not in listed:  # a listed one is reported with its file
                        out.append(VersionProblem("symlink", f"{self.ref}: {rel} is a symlink "
                                                  "(meddata does not follow it)", rel))
                elif n in dirnames:
                    if rel not in folders and not any(f.startswith(rel + "/") for f in folders):
                        out.append(VersionProblem("extra_file", f"{self.ref}: folder {rel} is "
                                                  "not in the manifest", rel))
                elif rel not in listed and not (rel_dir == "validations"
                                                and n.endswith(".json")):
                    out.append(VersionProblem("extra_file", f"{self.ref}: {rel} is not in the "
                                              "manifest (added after publishing)", rel))
            dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
        return out

    def verify(self, mode: str = "full") -> None:
        """Raise the first of `problems(mode)`: `full` (the default on every load) hashes
        every file, `size` is the cheap check (no file is read), `none` checks nothing."""
        found = self.problems(mode)
        if found:
            raise found[0]

    def iter_batches(self, columns: list[str] | None = None, split: str | None = None,
                     batch_size: int = 8_192, verify: str = "full") -> Iterator[pa.RecordBatch]:
        self.verify(verify)
        for path in self.shard_paths(split):
            yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)

    def to_table(self, columns: list[str] | None = None, split: str | None = None,
                 verify: str = "full") -> pa.Table:
        self.verify(verify)
        tables = [pq.read_table(p, columns=columns) for p in self.shard_paths(split)]
        return pa.concat_tables(tables) if tables else self.schema.empty_table()

    def to_dataset(self, split: str | None = None, verify: str = "full"):
        """The rows (of one split, or all) as one `datasets.Dataset`: memory-mapped Arrow,
        cached under cache_dir() (never inside the store, which may be read-only)."""
        import datasets

        self.verify(verify)
        files = [str(p) for p in self.shard_paths(split)]
        if not files:
            raise StoreError(f"{self.ref} has no shards for split {split!r}; "
                             f"splits: {', '.join(self.splits) or 'none'}")
        cache = cache_dir() / "datasets"
        return datasets.Dataset.from_parquet(files, cache_dir=str(cache), keep_in_memory=False)

    def to_dataset_dict(self, verify: str = "full"):
        """Every split as a `datasets.DatasetDict` keyed by split name, as
        `datasets.load_dataset` returns it."""
        import datasets

        self.verify(verify)
        splits = self.splits or sorted({s["split"] for s in self.manifest["shards"]})
        return datasets.DatasetDict({s: self.to_dataset(split=s, verify="none")
                                     for s in splits})

    def scan(self, split: str | None = None, verify: str = "full"):
        """The rows as a polars LazyFrame, for analysis."""
        import polars as pl

        self.verify(verify)
        return pl.scan_parquet([str(p) for p in self.shard_paths(split)])

    def rejects(self) -> pa.Table:
        path = self.path / "rejects.parquet"
        if path.is_symlink():
            raise VersionProblem("symlink", f"{self.ref}: rejects.parquet is a symlink; "
                                 "meddata does not read through it", "rejects.parquet")
        return pq.read_table(path) if path.exists() else REJECTS.empty_table()

    def validations(self) -> list[dict[str, Any]]:
        folder = self.path / "validations"
        if not folder.is_dir() or folder.is_symlink():
            return []
        out = []
        for p in sorted(folder.glob("*.json")):
            if p.is_symlink():
                continue
            try:
                out.append(json.loads(p.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue  # a half-written or damaged result is not a result
        return out


_SAFE_REL = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


def _check_manifest(m: Any) -> None:
    """The fields every reader relies on, with their types (ValueError naming what is
    wrong): a manifest without `shards`, or with a path that leaves the folder, is broken."""
    if not isinstance(m, dict):
        raise ValueError("not a meddata manifest")
    need = {"id": str, "kind": str, "name": str, "rows": int, "shards": list,
            "content_sha256": str, "created_at": str, "schema": list, "stats": dict,
            "rejects": dict, "stages": list, "inputs": list, "parents": list,
            "meddata_version": str}
    for key, typ in need.items():
        if key not in m:
            raise ValueError(f"no `{key}`")
        if not isinstance(m[key], typ) or (typ is int and isinstance(m[key], bool)):
            raise ValueError(f"`{key}` is not a {typ.__name__}")
    if not ID.fullmatch(m["id"]):
        raise ValueError(f"`id` {m['id'][:40]!r} is not a version id")
    for key in ("shards", "files", "attached"):
        entries = m.get(key, [])
        if not isinstance(entries, list):
            raise ValueError(f"`{key}` is not a list")
        for e in entries:
            if not isinstance(e, dict) or not all(k in e for k in ("path", "bytes", "sha256")):
                raise ValueError(f"an entry of `{key}` lacks path, bytes or sha256")
            if not isinstance(e["path"], str) or not _SAFE_REL.fullmatch(e["path"]) or \
                    ".." in e["path"].split("/"):
                raise ValueError(f"`{key}` names a bad path {str(e['path'])[:80]!r}")
            if key == "shards" and not (isinstance(e.get("rows"), int) and "split" in e):
                raise ValueError("a shard lacks rows or split")


class Store:
    """A folder of versions. `Store()` uses $MEDDATA_STORE or ./meddata-store."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_store_path()

    # ---- publishing -------------------------------------------------------------------
    def publisher(self, kind: str, name: str, schema: pa.Schema, **manifest: Any) -> Publisher:
        for part in (kind, name):
            check_name(part)
        return Publisher(self, kind, name, schema, manifest)

    def publish(self, kind: str, name: str, schema: pa.Schema,
                batches: Iterable[pa.RecordBatch | pa.Table], **manifest: Any) -> Version:
        with self.publisher(kind, name, schema, **manifest) as pub:
            for batch in batches:
                pub.write(batch)
        return pub.version

    # ---- resolving --------------------------------------------------------------------
    def _name_dir(self, kind: str, name: str) -> Path:
        return self.root / kind / name

    def inside(self, path: Path) -> Path:
        """`path`, after checking that it does not lead out of the store through a symlink
        (the store never reads or writes outside its root)."""
        root = self.root.resolve()
        target = path.resolve()
        if target != root and root not in target.parents:
            raise StoreError(f"{path} leads outside the store {self.root} (a symlink?); "
                             "meddata does not follow it")
        return path

    def raw_tags(self, kind: str, name: str) -> dict[str, str]:
        """tags.json as written (an object of strings), before the values are checked."""
        path = self._name_dir(kind, name) / "tags.json"
        if path.is_symlink():
            raise StoreError(f"{kind}/{name}: tags.json is a symlink, which meddata does not "
                             "read through; `meddata fsck --repair` removes it")
        if not path.exists():
            return {}
        try:
            tags = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
                raise ValueError("not an object of tag -> id")
        except (OSError, ValueError, RecursionError) as e:
            raise StoreError(f"{kind}/{name}: tags.json is unreadable ({e}); `meddata fsck "
                             "--repair` rebuilds it from the versions") from None
        return tags

    def tags(self, kind: str, name: str) -> dict[str, str]:
        """tag -> version id. A tag holds an id (16 hex digits) and nothing else: a value
        such as `../other/<id>` is refused, so no tag leads outside its dataset."""
        tags = self.raw_tags(kind, name)
        for tag, vid in tags.items():
            if not ID.fullmatch(vid) or not _NAME_READ.fullmatch(tag):
                raise StoreError(f"{kind}/{name}: tag {tag[:40]!r} in tags.json holds "
                                 f"{vid[:60]!r}, not a version id; `meddata fsck --repair` "
                                 "removes it")
        return tags

    def names(self) -> list[tuple[str, str]]:
        if not self.root.exists():
            return []
        return sorted((k.name, n.name) for k in self.root.iterdir()
                      if k.is_dir() and not k.is_symlink() and not k.name.startswith(".")
                      for n in k.iterdir() if n.is_dir() and not n.is_symlink())

    def version_dirs(self, kind: str, name: str) -> list[Path]:
        base = self._name_dir(kind, name)
        return sorted(d for d in base.iterdir()
                      if d.is_dir() and not d.is_symlink() and not d.name.startswith("."))

    def versions(self, kind: str | None = None, name: str | None = None,
                 problems: list[str] | None = None) -> list[Version]:
        """Every readable version (of one kind or name). A folder whose manifest does not
        parse is left out and described in `problems`, when given: one broken dataset never
        hides the others."""
        out = []
        for k, n in self.names():
            if (kind and k != kind) or (name and n != name):
                continue
            for d in self.version_dirs(k, n):
                try:
                    out.append(Version(d))
                except BrokenVersion as e:
                    if problems is not None:
                        problems.append(str(e))
        return sorted(out, key=lambda v: (v.kind, v.name, v.manifest.get("created_at", ""),
                                          v.id))

    def resolve(self, ref: str | Ref) -> Version:
        ref = Ref.parse(ref) if isinstance(ref, str) else ref
        base = self._name_dir(ref.kind, ref.name)
        if base.is_symlink() or base.parent.is_symlink():
            raise StoreError(f"{base} is a symlink; meddata does not follow it")
        if not base.exists():
            known = ", ".join(f"{k}/{n}" for k, n in self.names()) or "none"
            raise StoreError(f"no dataset {ref.kind}/{ref.name} in store {self.root} "
                             f"(datasets: {known})")
        tags = self.tags(ref.kind, ref.name)
        if ref.selector in tags:
            target = base / tags[ref.selector]
            if not target.is_dir():
                raise StoreError(f"{ref}: tag {ref.selector} points at {tags[ref.selector]}, "
                                 "which is not in the store (`meddata fsck --repair`)")
            return Version(self.inside(target))
        if _HEX.fullmatch(ref.selector):
            hits = [d for d in self.version_dirs(ref.kind, ref.name)
                    if d.name.startswith(ref.selector)]
            if len(hits) == 1:
                return Version(hits[0])
            if len(hits) > 1:
                raise StoreError(f"{ref}: id prefix is ambiguous ({len(hits)} versions match)")
        raise StoreError(f"{ref}: no tag or id {ref.selector!r}; tags: "
                         f"{', '.join(sorted(tags)) or 'none'}")

    def load(self, ref: str | Ref, split: str | None = None, verify: str = "full"):
        """One split as a `datasets.Dataset`; without `split`, a `datasets.DatasetDict` keyed
        by split (as `datasets.load_dataset` returns), so validation rows never join the
        training rows unasked. Every file is checked against the manifest first."""
        version = self.resolve(ref)
        if split is None:
            return version.to_dataset_dict(verify=verify)
        return version.to_dataset(split=split, verify=verify)

    def scan(self, ref: str | Ref, split: str | None = None, verify: str = "full"):
        return self.resolve(ref).scan(split=split, verify=verify)

    def record_validation(self, version: Version, result: dict[str, Any]) -> Path:
        """Store a later validation result beside the version; its content id is unchanged."""
        folder = version.path / "validations"
        folder.mkdir(exist_ok=True)
        self.inside(folder)
        if folder.is_symlink():
            raise StoreError(f"{folder} is a symlink; meddata does not write through it")
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = folder / f"{stamp}.json"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return path

    @contextlib.contextmanager
    def _locked(self, kind: str, name: str) -> Iterator[None]:
        base = self._name_dir(kind, name)
        base.mkdir(parents=True, exist_ok=True)
        self.inside(base)
        try:  # O_NOFOLLOW: a symlinked lock file is refused, never truncated through
            fd = os.open(base / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            import errno

            why = ("a symlink, which is refused" if e.errno == errno.ELOOP
                   else os_problem(e.__class__(e.errno, e.strerror)))
            raise StoreWriteError(f"{base / '.lock'}: cannot open the lock file ({why})") \
                from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write_tags(self, kind: str, name: str, tags: dict[str, str]) -> None:
        """Write tags.json and the name folder's card (which points at `latest`): both are
        written in full beside their targets, then renamed over them, so a full disk leaves
        the old ones as they were."""
        base = self._name_dir(kind, name)
        path, card = base / "tags.json", base / CARD
        for p in (path, card):
            if p.is_symlink():
                raise StoreError(f"{p} is a symlink; meddata does not write through it")
        tmp = path.with_name(f".tags-{uuid.uuid4().hex}.json")
        card_tmp = card.with_name(f".card-{uuid.uuid4().hex}.md")
        latest = tags.get("latest")
        try:
            tmp.write_text(json.dumps(tags, indent=2, sort_keys=True), encoding="utf-8")
            if latest:
                card_tmp.write_text(self.name_card(kind, name, latest), encoding="utf-8")
            os.replace(tmp, path)
            if latest:
                os.replace(card_tmp, card)
            elif card.exists():
                card.unlink()
        finally:
            for t in (tmp, card_tmp):
                with contextlib.suppress(OSError):
                    t.unlink()

    def name_card(self, kind: str, name: str, vid: str) -> str:
        """The dataset card of the name folder: its YAML `configs` point the Hugging Face
        loader at the `latest` version's shards only, so `datasets.load_dataset(<store>/
        <kind>/<name>)` reads one version, never every version concatenated."""
        import yaml

        version = Version(self._name_dir(kind, name) / vid)
        splits = sorted({s["split"] for s in version.manifest["shards"]})
        header = {"configs": [{"config_name": "default", "data_files": [
            {"split": s, "path": f"{vid}/data/{s}-*.parquet"} for s in splits]}],
            "tags": ["medical", "meddata", kind]}
        return "\n".join([
            "---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
            f"# {kind}/{name}", "",
            f"This folder holds every version of {kind}/{name}; this card points at the one "
            f"tagged `latest`, {vid} (see tags.json). Other versions: load "
            f"`<store>/{kind}/{name}/<id>`, or `Store.load('{kind}/{name}@<tag or id>')`.", ""])

    def ensure_tagged(self, kind: str, name: str, vid: str) -> str | None:
        """Give an untagged version the tags a publish would have given it (the next v<N>,
        and `latest`): a publish that crashed between moving the version into place and
        writing its tags heals when it runs again. Call with the name's lock held. Returns
        the new tag, or None when the version already had one."""
        tags = self.tags(kind, name)
        if vid in tags.values():
            return None
        numbers = [int(t[1:]) for t in tags if re.fullmatch(r"v\d+", t)]
        tag = f"v{max(numbers, default=0) + 1}"
        tags[tag] = vid
        tags["latest"] = vid
        self._write_tags(kind, name, tags)
        return tag

    def tag(self, ref: str | Ref, tag: str) -> None:
        """Point a human tag (not `v<N>`, which publishing owns) at a version."""
        if re.fullmatch(r"v\d+", tag) or not _NAME.fullmatch(tag):
            raise StoreError(f"tag {tag[:60]!r} is reserved or malformed (letters, digits, "
                             f". _ -, at most {MAX_NAME} characters; v<N> belongs to publishing)")
        version = self.resolve(ref)
        with self._locked(version.kind, version.name):
            tags = self.tags(version.kind, version.name)
            tags[tag] = version.id
            self._write_tags(version.kind, version.name, tags)


class Publisher:
    """Writes one version: shards per split, rejects, manifest, dataset card; then renames.

    Use as a context manager; an exception inside the block removes everything written.
    """

    def __init__(self, store: Store, kind: str, name: str, schema: pa.Schema,
                 manifest: dict[str, Any]):
        self.store, self.kind, self.name = store, kind, name
        self.schema = schema.remove_metadata()
        self.extra = dict(manifest)
        self.stages: list[dict[str, Any]] = []
        self._busy: int | None = None
        self.tmp = store.root / ".tmp" / f"{kind}-{name}-{uuid.uuid4().hex}"
        # the kind and name folders, when this publish creates them: a publish that fails
        # removes them again, so the store is left as it was (the store's own .tmp/ stays)
        self._created = [d for d in (store.root / kind, store.root / kind / name)
                         if not d.exists()]
        try:
            (self.tmp / "data").mkdir(parents=True)
            store.inside(self.tmp)
            # held while this publish runs, so `meddata fsck` never takes it for an orphan
            self._busy = os.open(self.tmp / BUSY, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                                 0o644)
            fcntl.flock(self._busy, fcntl.LOCK_EX)
        except OSError as e:
            self._release()
            shutil.rmtree(self.tmp, ignore_errors=True)
            self._remove_created()
            raise StoreWriteError(f"cannot publish {kind}/{name} in the store {store.root}: "
                                  f"{os_problem(e)}; nothing was published") from None
        self._clean_own_orphans()
        self._writer = ShardWriter(self.tmp, self.schema, background=True)
        self._shards: list[dict[str, Any]] = []  # written by the workers (add_written)
        self._files: list[dict[str, Any]] = []   # other content (add_file)
        self._rejects: pq.ParquetWriter | None = None
        self.reject_counts: Counter[str] = Counter()
        self.rows = 0
        self._counts: dict[str, Counter[str]] = {c: Counter() for c in COUNTED_COLUMNS
                                                 if c in self.schema.names}
        self._nulls: Counter[str] = Counter()
        self.version: Version | None = None
        self._closed = False
        self._report: Callable[[Version], str] | None = None

    def _clean_own_orphans(self) -> None:
        """Remove the temporary folders that earlier publishes of this kind/name left when
        they were killed (no lock held, unchanged for ORPHAN_AGE_S); `meddata fsck --repair`
        removes the rest."""
        own = re.compile(re.escape(f"{self.kind}-{self.name}-") + r"[0-9a-f]{32}")
        with contextlib.suppress(OSError):
            for folder in (self.store.root / ".tmp").iterdir():
                if folder != self.tmp and own.fullmatch(folder.name) and \
                        not folder.is_symlink() and folder.is_dir() and \
                        not publish_in_progress(folder):
                    shutil.rmtree(folder, ignore_errors=True)

    def _remove_created(self) -> None:
        for folder in reversed(self._created):
            if folder == self.store.root / self.kind / self.name:
                try:  # the lock file goes only when no other publish of the name holds it
                    fd = os.open(folder / ".lock", os.O_RDWR | os.O_NOFOLLOW)
                except OSError:
                    fd = None
                if fd is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        if len(os.listdir(folder)) == 1:
                            os.unlink(folder / ".lock")
                    except OSError:
                        pass
                    finally:
                        os.close(fd)
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: another publish may have begun there

    def attach_report(self, render: Callable[[Version], str]) -> None:
        """Write `render(version)` as report.html into the version, named in its manifest
        and linked from its card (render runs on the finished shards, before the rename)."""
        self._report = render

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    # ---- rows ------------------------------------------------------------------------
    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Rows written by this process (shards `<split>-00000.parquet`, ...)."""
        self._writer.write(batch)

    @property
    def data_dir(self) -> Path:
        """Where workers write the shards of their units (a ShardWriter each, `unit=`)."""
        return self.tmp

    def add_written(self, written: dict[str, Any]) -> None:
        """Shards a worker wrote into this version (`ShardWriter.close()` of its unit)."""
        self._shards += written["shards"]
        self._add_stats(written)

    def find_ids(self, hashes) -> list[str]:
        """The ids among the shards written so far whose hashes (meddata.steps.keys.
        key_hashes) are `hashes`: examples for a unique-id check that only saw hashes."""
        import numpy as np

        from meddata.steps.keys import key_hashes

        found: list[str] = []
        for shard in self._shards:
            for batch in pq.ParquetFile(self.tmp / shard["path"]).iter_batches(columns=["id"]):
                ids = batch.column("id")
                found += ids.filter(pa.array(np.isin(key_hashes(ids), hashes))).to_pylist()
        return list(dict.fromkeys(found))

    def _add_stats(self, written: dict[str, Any]) -> None:
        self.rows += written["rows"]
        for col, counts in written["counts"].items():
            self._counts[col].update(counts)
        self._nulls.update(written["nulls"])

    def add_file(self, rel: str, source: Path) -> None:
        """Move `source` into the version as `rel` (e.g. index/bm25/params.index.json): part
        of its content, hashed into its id and verified like a shard."""
        if rel.startswith("/") or ".." in Path(rel).parts or rel.split("/")[0] == "data":
            raise StoreError(f"bad file path {rel!r} for a version")
        target = self.tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), target)
        self._files.append({"path": rel, "bytes": target.stat().st_size,
                            "sha256": sha256_file(target)})

    def reject(self, rows: list[dict[str, Any]]) -> None:
        """Quarantine input rows: dicts with the fields of meddata.schema.REJECTS."""
        if not rows:
            return
        if self._rejects is None:
            self._rejects = pq.ParquetWriter(self.tmp / "rejects.parquet", REJECTS,
                                             compression="zstd")
        self._rejects.write_table(pa.Table.from_pylist(rows, schema=REJECTS))
        self.reject_counts.update(r["reason"] for r in rows)

    def add_stage(self, name: str, rows_in: int, rows_out: int,
                  dropped: dict[str, int] | None = None, **extra: Any) -> None:
        """Record a stage's row conservation: rows_in == rows_out + sum(dropped)."""
        dropped = {k: int(v) for k, v in (dropped or {}).items() if v}
        if rows_in != rows_out + sum(dropped.values()):
            raise StoreError(f"stage {name}: rows are not conserved: {rows_in} in, {rows_out} "
                             f"out, {sum(dropped.values())} dropped ({dropped})")
        self.stages.append({"stage": name, "rows_in": int(rows_in), "rows_out": int(rows_out),
                            "dropped": dropped, **extra})

    # ---- finishing -------------------------------------------------------------------
    def abort(self) -> None:
        self._closed = True
        self._writer.abort()
        if self._rejects is not None:
            with contextlib.suppress(Exception):
                self._rejects.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._release()
        self._remove_created()

    def _release(self) -> None:
        if self._busy is not None:
            os.close(self._busy)
            self._busy = None

    def commit(self) -> Version:
        if self._closed:
            raise StoreError("publisher already closed")
        self._closed = True
        try:
            return self._commit()
        except BaseException as e:
            self._writer.abort()
            if self._rejects is not None:
                with contextlib.suppress(Exception):
                    self._rejects.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            self._release()
            if isinstance(e, Exception):
                self._remove_created()
            if isinstance(e, OSError):
                raise StoreWriteError(f"cannot publish {self.kind}/{self.name} in the store "
                                      f"{self.store.root}: {os_problem(e)}; nothing was "
                                      "published") from None
            raise
        finally:
            self._release()

    def _commit(self) -> Version:
        written = self._writer.close(empty=not self._shards)
        self._shards += written["shards"]
        self._add_stats(written)
        if self._rejects is not None:
            self._rejects.close()
        self._shards.sort(key=lambda s: s["path"])
        self._files.sort(key=lambda f: f["path"])
        digest = content_digest(schema_fingerprint(self.schema), self._shards, self._files)
        vid = digest[:16]
        base = self.store._name_dir(self.kind, self.name)
        final = base / vid
        with self.store._locked(self.kind, self.name):
            if final.exists():  # identical content: returns the existing version, and gives
                shutil.rmtree(self.tmp, ignore_errors=True)  # it tags if a crash left none
                self.version = Version(self.store.inside(final))
                tag = self.store.ensure_tagged(self.kind, self.name, vid)
                self.version.existed = True
                self.version.tags_moved = [tag, "latest"] if tag else []
                return self.version
            manifest = redact(self._manifest(vid, digest))
            if self._report is not None:
                manifest["report"] = REPORT
            self._write_manifest(manifest)
            if self._report is not None and not self._write_report():
                del manifest["report"]
                self._write_manifest(manifest)
            # every other file is hashed in the manifest too (not in the id), and the
            # manifest carries its own digest: `fsck` sees any later change
            manifest["attached"] = [
                {"path": rel, "bytes": (self.tmp / rel).stat().st_size,
                 "sha256": sha256_file(self.tmp / rel)}
                for rel in ATTACHED if (self.tmp / rel).is_file()]
            manifest = json.loads(json.dumps(manifest, ensure_ascii=False, default=str))
            manifest["manifest_sha256"] = manifest_digest(manifest)
            self._write_manifest(manifest, card=False)
            os.unlink(self.tmp / BUSY)
            os.rename(self.tmp, final)
            try:
                tag = self.store.ensure_tagged(self.kind, self.name, vid)
            except Exception:
                # the tags could not be written (a full disk): take the version back out,
                # so the store is as it was before this publish
                os.rename(final, self.tmp)
                raise
        self.version = Version(final)
        self.version.tags_moved = [tag, "latest"] if tag else []
        return self.version

    def _write_manifest(self, manifest: dict[str, Any], card: bool = True) -> None:
        (self.tmp / "manifest.json").write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        if card:
            (self.tmp / CARD).write_text(dataset_card(manifest), encoding="utf-8")

    def _write_report(self) -> bool:
        """The report, or a warning: a report that cannot be drawn never costs the build."""
        try:
            html = self._report(Version(self.tmp))
            (self.tmp / REPORT).write_text(html, encoding="utf-8")
            return True
        except Exception as e:  # noqa: BLE001 - any failure of the page is reported, not fatal
            print(f"warning: {self.kind}/{self.name}: no report.html ({type(e).__name__}: {e})",
                  file=sys.stderr)
            return False

    def _manifest(self, vid: str, digest: str) -> dict[str, Any]:
        extra = dict(self.extra)
        stats = {"rows": self.rows,
                 "bytes": sum(s["bytes"] for s in self._shards),
                 "nulls": {k: v for k, v in self._nulls.items() if v},
                 "counts": {c: dict(sorted(v.items())) for c, v in self._counts.items()},
                 **extra.pop("stats", {})}
        return {
            "id": vid,
            "content_sha256": digest,
            "kind": self.kind,
            "name": self.name,
            "created_at": _utcnow(),
            "meddata_version": __version__,
            "rows": self.rows,
            "inputs": extra.pop("inputs", []),
            "recipe": extra.pop("recipe", None),
            "parents": extra.pop("parents", []),
            "stages": self.stages,
            "rejects": {"rows": sum(self.reject_counts.values()),
                        "by_reason": dict(self.reject_counts.most_common())},
            "shards": self._shards,
            **({"files": self._files} if self._files else {}),
            "schema": schema_to_json(self.schema),
            "schema_text": schema_fingerprint(self.schema),
            "stats": stats,
            **extra,
        }


class ShardWriter:
    """Rows into a version's shards under `folder`/data: a file per split (and per
    SHARD_ROWS rows), whole row groups of ROW_GROUP_ROWS, so the bytes (and the id) do not
    depend on how the rows arrived in batches. The driver's publisher writes
    `<split>-00000.parquet`, ...; a worker writing one read unit of a run writes
    `<split>-<unit>-00000.parquet`, ... into the same folder: sorted by path, the shards are
    in input order whichever worker wrote which. Each file is written under a temporary name
    and renamed when complete, so a task that Ray runs again replaces its files whole.
    `close()` gives the shards (path, split, rows, bytes, sha256) and the rows, value counts
    and nulls the manifest's stats need."""

    def __init__(self, folder: Path, schema: pa.Schema, unit: int | None = None,
                 background: bool = False):
        self.folder, self.schema = Path(folder), schema.remove_metadata()
        self.prefix = "" if unit is None else f"{unit:05d}-"
        self.background = background
        self._writers: dict[str, tuple[pq.ParquetWriter, int, int]] = {}  # split -> (w, idx, rows)
        self._pending: dict[str, list[pa.Table]] = {}
        self._shards: list[dict[str, Any]] = []  # appended by the writer thread
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: deque[Future] = deque()
        self.rows = 0
        self.counts: dict[str, Counter[str]] = {c: Counter() for c in COUNTED_COLUMNS
                                                if c in self.schema.names}
        self.nulls: Counter[str] = Counter()

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows == 0:
            return
        if batch.schema.remove_metadata() != self.schema:
            batch = batch.select(self.schema.names).cast(self.schema)
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        self.rows += table.num_rows
        for col, counter in self.counts.items():
            for item in pc.value_counts(table.column(col)).to_pylist():
                counter[str(item["values"])] += item["counts"]
        for col in self.schema.names:
            self.nulls[col] += table.column(col).null_count
        if "split" in self.schema.names:
            column = table.column("split")
            splits = pc.unique(column)  # Arrow scalars (a Python str would import pandas)
            for split in splits:
                part = table if len(splits) == 1 else table.filter(
                    pc.is_null(column) if not split.is_valid else pc.equal(column, split))
                self._write_split(split.as_py() or "unsplit", part)
        else:
            self._write_split("train", table)

    def _write_split(self, split: str, table: pa.Table) -> None:
        split = re.sub(r"[^A-Za-z0-9._-]", "_", split)
        pending = self._pending.setdefault(split, [])
        pending.append(table)
        buffered = sum(t.num_rows for t in pending)
        if buffered >= ROW_GROUP_ROWS:
            whole = pa.concat_tables(pending)
            cut = buffered - buffered % ROW_GROUP_ROWS
            self._emit(split, whole.slice(0, cut))
            self._pending[split] = [whole.slice(cut)] if cut < buffered else []

    def _emit(self, split: str, table: pa.Table) -> None:
        writer, idx, rows = self._writers.get(split, (None, -1, SHARD_ROWS))
        offset = 0
        while offset < table.num_rows:
            if writer is None or rows >= SHARD_ROWS:
                if writer is not None:
                    self._run(self._close_shard, split, writer, idx, rows)
                idx += 1
                writer, rows = self._open_shard(split, idx), 0
            take = min(SHARD_ROWS - rows, table.num_rows - offset)
            self._run(_write_row_groups, writer, table.slice(offset, take))
            rows += take
            offset += take
        self._writers[split] = (writer, idx, rows)

    def _run(self, fn, *args) -> None:
        """Parquet encoding and file work, here or (`background`) on one writer thread, in
        submission order, while the caller prepares the next batch (pyarrow releases the
        GIL while it encodes). At most two tasks wait, which bounds the memory they hold; a
        task's error is raised here or at close."""
        if not self.background:
            fn(*args)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meddata-write")
        while len(self._inflight) >= 2 or (self._inflight and self._inflight[0].done()):
            self._inflight.popleft().result()
        self._inflight.append(self._pool.submit(fn, *args))

    def _drain(self, raise_errors: bool = True) -> None:
        while self._inflight:
            future = self._inflight.popleft()
            if raise_errors:
                future.result()
            else:
                with contextlib.suppress(BaseException):
                    future.result()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _rel(self, split: str, idx: int) -> str:
        return f"data/{split}-{self.prefix}{idx:05d}.parquet"

    def _open_shard(self, split: str, idx: int) -> pq.ParquetWriter:
        path = self.folder / (self._rel(split, idx) + ".part")
        return pq.ParquetWriter(path, self.schema, compression="zstd",
                                use_dictionary=dictionary_columns(self.schema),
                                use_content_defined_chunking=True, write_statistics=True)

    def _close_shard(self, split: str, writer: pq.ParquetWriter, idx: int, rows: int) -> None:
        writer.close()
        rel = self._rel(split, idx)
        path = self.folder / rel
        os.replace(self.folder / (rel + ".part"), path)
        self._shards.append({"path": rel, "split": split, "rows": rows,
                             "bytes": path.stat().st_size, "sha256": sha256_file(path)})

    def close(self, empty: bool = False) -> dict[str, Any]:
        """Finish every shard; `empty`: with no rows at all, still write one (empty) shard,
        which carries the schema."""
        for split, pending in sorted(self._pending.items()):
            if pending:
                self._emit(split, pa.concat_tables(pending))
        self._pending = {}
        if not self._writers and empty:
            self._writers["train"] = (self._open_shard("train", 0), 0, 0)
        for split, (writer, idx, rows) in sorted(self._writers.items()):
            self._run(self._close_shard, split, writer, idx, rows)
        self._writers = {}
        self._drain()
        return {"shards": sorted(self._shards, key=lambda s: s["path"]), "rows": self.rows,
                "counts": {c: dict(v) for c, v in self.counts.items()},
                "nulls": dict(self.nulls)}

    def abort(self) -> None:
        self._drain(raise_errors=False)
        for writer, _, _ in self._writers.values():
            with contextlib.suppress(Exception):
                writer.close()
        self._writers = {}


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Parquet paths of the low-cardinality string columns (names in DICTIONARY_NAMES, also
    inside lists and structs, e.g. `options.list.element.label`). Only these are dictionary
    encoded: on free text a dictionary costs encoding time and overflows to plain anyway."""
    paths: list[str] = []

    def walk(path: str, name: str, t: pa.DataType) -> None:
        if pa.types.is_struct(t):
            for f in t:
                walk(f"{path}.{f.name}", f.name, f.type)
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            walk(f"{path}.list.element", name, t.value_type)
        elif name in DICTIONARY_NAMES and (pa.types.is_string(t) or pa.types.is_large_string(t)):
            paths.append(path)

    for field in schema:
        walk(field.name, field.name, field.type)
    return paths


def _write_row_groups(writer: pq.ParquetWriter, table: pa.Table) -> None:
    writer.write_table(table.combine_chunks(), row_group_size=ROW_GROUP_ROWS)


# the Hub's task_categories for each kind (what the rows train or evaluate)
CARD_TASKS = {"canonical": ("question-answering", "text-generation"),
              "sft": ("text-generation", "question-answering"),
              "index": ("text-retrieval",)}
_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
          (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
          (1_000_000_000, "100M<n<1B"))


def size_category(rows: int) -> str:
    """The Hub's size_categories bucket for a row count."""
    return next((label for limit, label in _SIZES if rows < limit), "n>1B")


def dataset_card(manifest: dict[str, Any]) -> str:
    """A Hugging Face dataset card whose YAML `configs` point at the shards, split by split."""
    import yaml

    splits = sorted({s["split"] for s in manifest["shards"]})
    header = {
        "pretty_name": f"meddata {manifest['kind']}/{manifest['name']}",
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits]}],
        "task_categories": list(CARD_TASKS.get(manifest["kind"], ("text-generation",))),
        "size_categories": [size_category(manifest["rows"])],
        "tags": ["medical", "meddata", manifest["kind"]],
    }
    langs = sorted(manifest["stats"].get("counts", {}).get("lang", {}))
    if langs:
        header["language"] = langs
    from meddata import licenses  # `license:` as the Hub reads it: one id, or other + list
    header.update(licenses.card_fields(manifest.get("licenses")))
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {manifest['kind']}/{manifest['name']} @ {manifest['id']}", "",
             f"Built by meddata {manifest['meddata_version']} on {manifest['created_at']}.", "",
             f"- rows: {manifest['rows']}",
             f"- rejected input rows: {manifest['rejects']['rows']} (see rejects.parquet)"]
    parents = [p["ref"] if isinstance(p, dict) else p for p in manifest["parents"]]
    lines += [f"- parent: {ref}" for ref in parents]
    for inp in manifest["inputs"]:
        name = inp.get("path") or inp.get("hub_id") or inp.get("ref")
        if name in parents:  # a version built from versions: its inputs are its parents
            continue
        lines.append(f"- input: {name}"
                     + (f" (sha256 {inp['sha256'][:12]})" if inp.get("sha256") else ""))
    if manifest["stages"]:
        lines += ["", "| stage | rows in | rows out | dropped |", "|---|---|---|---|"]
        for st in manifest["stages"]:
            dropped = ", ".join(f"{k}: {v}" for k, v in st["dropped"].items()) or "-"
            lines.append(f"| {st['stage']} | {st['rows_in']} | {st['rows_out']} | {dropped} |")
    lines += licenses.card_lines(manifest.get("licenses"))
    from meddata.steps.mix import card_lines as mix_lines  # target and realised shares

    lines += mix_lines(manifest)
    if manifest.get("report"):
        lines += ["", f"The data report: [{manifest['report']}]({manifest['report']})."]
    lines += ["", "Load it with `meddata.store.Store(<store>).load('"
              f"{manifest['kind']}/{manifest['name']}@{manifest['id']}')`, or with "
              "`datasets.load_dataset(\"parquet\", data_files=...)` on the shards.", ""]
    return "\n".join(lines)
