"""Export a version for other tools: LLaMA-Factory (dataset_info.json plus JSON data files in
its documented alpaca / sharegpt layouts) and plain JSON Lines. Rows are read and written
batch by batch.

Each kind's module says how its rows look in LLaMA-Factory (builders/<kind>.py,
`llamafactory_record` and `llamafactory_entry`). Files and dataset_info keys are named
`<kind>_<name>_<split>`, so exports of different kinds into one folder never collide; an
existing dataset_info.json is merged (its other entries kept), and a file that another
version of the same dataset exported is not overwritten unless `overwrite` is given. Each
exported file records which version wrote it in `meddata_exports.json` beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from meddata.store import Version

from . import registry

LEDGER = "meddata_exports.json"


class ExportConflict(ValueError):
    """Exporting would overwrite files another version wrote."""


def _ledger(out: Path) -> dict[str, Any]:
    path = out / LEDGER
    if path.exists():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            return {}
    return {}


def _write_json_array(path: Path, records) -> tuple[int, bool]:
    """Stream records into a JSON array; (count, whether any record has a system)."""
    n, has_system = 0, False
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("[")
        for rec in records:
            f.write(("\n" if n == 0 else ",\n") + json.dumps(rec, ensure_ascii=False))
            has_system |= "system" in rec
            n += 1
        f.write("\n]\n")
    os.replace(tmp, path)
    return n, has_system


def export(version: Version, out_dir: str | Path, fmt: str, layout: str = "sharegpt",
           overwrite: bool = False) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kind = registry.get(version.kind) if version.kind != "canonical" else None
    if fmt == "llamafactory" and (kind is None or kind.llamafactory_record is None):
        raise ValueError(f"kind {version.kind} has no LLaMA-Factory layout")
    if fmt == "llamafactory" and version.kind == "pretrain" and "text" not in version.schema.names:
        from .pretrain import PACKED_EXPORT

        raise ValueError(f"{version.ref}: {PACKED_EXPORT}")
    ledger = _ledger(out)
    stems = {split: f"{version.kind}_{version.name}_{split}" for split in version.splits}
    suffix = ".jsonl" if fmt == "jsonl" else ".json"
    clashes = [f"{stem}{suffix} ({ledger[stem + suffix]['ref']})" for stem in stems.values()
               if stem + suffix in ledger and ledger[stem + suffix]["id"] != version.id]
    if clashes and not overwrite:
        raise ExportConflict(f"{out}: {', '.join(clashes)} came from another version of "
                             f"{version.kind}/{version.name}; pass --overwrite to replace them")
    written: list[Path] = []
    info: dict[str, Any] = {}
    version.verify("full")
    for split, stem in stems.items():
        path = out / f"{stem}{suffix}"
        rows = (row for b in version.iter_batches(split=split, verify="none")
                for row in b.to_pylist())
        if fmt == "jsonl":
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            os.replace(tmp, path)
        else:
            _, has_system = _write_json_array(
                path, (kind.llamafactory_record(r, layout) for r in rows))
            info[stem] = kind.llamafactory_entry(path.name, layout, has_system)
        ledger[path.name] = {"ref": version.ref, "id": version.id}
        written.append(path)
    if fmt == "llamafactory":
        info_path = out / "dataset_info.json"
        existing = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() \
            else {}
        existing.update(info)
        info_path.write_text(json.dumps(existing, ensure_ascii=False, indent=2),
                             encoding="utf-8")
        written.append(info_path)
    (out / LEDGER).write_text(json.dumps(ledger, indent=2, sort_keys=True), encoding="utf-8")
    return written
