"""`meddata ls`: the store's versions read from their manifest.json and tags.json files with
the standard library alone.

A listing is what a user runs most often, so it imports neither pyarrow nor DuckDB (nor the
pandas DuckDB pulls in): meddata/store.py and meddata/catalog.py need them for everything
else. The folder layout read here is the store's (ROOT/KIND/NAME/tags.json and
ROOT/KIND/NAME/ID/manifest.json); folders starting with "." (temporary publishes,
quarantine) and symlinks are skipped, as the store skips them. A tags.json or manifest.json
that does not parse is left out and described in `problems`, one line each.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir()
                  if d.is_dir() and not d.is_symlink() and not d.name.startswith("."))


def _tag_order(tag: str) -> tuple:
    return (tag == "latest", len(tag), tag)


def versions(root: Path, kind: str | None = None, problems: list[str] | None = None
             ) -> list[dict[str, Any]]:
    """One record per readable version (of one kind), ordered by kind, name, creation time:
    kind, name, id, tags, rows, rejects, bytes, created_at, parents, path."""
    problems = problems if problems is not None else []
    out = []
    for kind_dir in _dirs(root):
        if kind and kind_dir.name != kind:
            continue
        for name_dir in _dirs(kind_dir):
            tags: dict[str, list[str]] = {}
            tags_file = name_dir / "tags.json"
            if tags_file.exists():
                try:
                    named = json.loads(tags_file.read_text(encoding="utf-8"))
                    if not isinstance(named, dict):
                        raise ValueError("not an object of tag -> id")
                    for tag, vid in named.items():
                        tags.setdefault(str(vid), []).append(tag)
                except (OSError, ValueError) as e:
                    problems.append(f"{kind_dir.name}/{name_dir.name}: tags.json is unreadable "
                                    f"({e}); `meddata fsck --repair` rebuilds it from the "
                                    "versions")
                    continue
            for version_dir in _dirs(name_dir):
                try:
                    m = json.loads((version_dir / "manifest.json").read_text(encoding="utf-8"))
                    if not isinstance(m, dict) or "id" not in m:
                        raise ValueError("not a meddata manifest")
                    out.append({
                        "kind": m["kind"], "name": m["name"], "id": m["id"],
                        "tags": sorted(tags.get(m["id"], []), key=_tag_order),
                        "rows": m["rows"], "rejects": m["rejects"]["rows"],
                        "bytes": m["stats"].get("bytes", 0), "created_at": m["created_at"],
                        "parents": [p["ref"] if isinstance(p, dict) else str(p)
                                    for p in m.get("parents", [])],
                        "path": str(version_dir)})
                except (OSError, ValueError) as e:
                    problems.append(f"{version_dir}: manifest.json is unreadable ({e}); "
                                    "`meddata fsck` reports it, `--repair` moves it aside")
                except (KeyError, TypeError, AttributeError) as e:
                    problems.append(f"{version_dir}: manifest.json lacks a field ({e!r}); "
                                    "`meddata fsck`")
    return sorted(out, key=lambda r: (r["kind"], r["name"], r["created_at"], r["id"]))
