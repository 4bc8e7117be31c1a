"""Export a version for other tools: LLaMA-Factory (dataset_info.json plus JSON data files in
its documented alpaca / sharegpt layouts) and plain JSON Lines.

LLaMA-Factory layouts used (its data/README.md):
- sft: sharegpt `messages` with role/content tags (or alpaca instruction/input/output/system);
- preference: sharegpt with `"ranking": true`, `chosen` and `rejected` message objects;
- kto: sharegpt `messages` (prompt then completion) and `kto_tag` -> a JSON boolean `label`;
- pretrain: `{"text": ...}` with columns {"prompt": "text"};
- prompts: alpaca instruction / output (its ppo stage reads a plain sft dataset).
One data file per split; each is its own dataset_info entry, named `<name>_<split>`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meddata.store import Version

SHAREGPT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"}


def _split_system(msgs: list[dict[str, str]]) -> tuple[str | None, list[dict[str, str]]]:
    if msgs and msgs[0]["role"] == "system":
        return msgs[0]["content"], msgs[1:]
    return None, msgs


def llamafactory_record(kind: str, row: dict[str, Any], layout: str) -> dict[str, Any]:
    if kind == "sft":
        system, msgs = _split_system(row["messages"])
        if layout == "alpaca":
            rec = {"instruction": msgs[0]["content"], "input": "", "output": msgs[-1]["content"]}
            return {**rec, "system": system} if system else rec
        return {"messages": msgs, **({"system": system} if system else {})}
    if kind == "preference":
        system, prompt = _split_system(row["prompt"])
        rec = {"messages": prompt, "chosen": row["chosen"][-1], "rejected": row["rejected"][-1]}
        return {**rec, "system": system} if system else rec
    if kind == "kto":
        system, prompt = _split_system(row["prompt"])
        rec = {"messages": prompt + row["completion"], "label": bool(row["label"])}
        return {**rec, "system": system} if system else rec
    if kind == "pretrain":
        return {"text": row["text"]}
    if kind == "prompts":
        system, prompt = _split_system(row["prompt"])
        rec = {"instruction": prompt[-1]["content"], "input": "", "output": row["answer"]}
        return {**rec, "system": system} if system else rec
    raise ValueError(f"kind {kind} has no LLaMA-Factory layout")


def dataset_info_entry(kind: str, file_name: str, layout: str, has_system: bool
                       ) -> dict[str, Any]:
    if kind == "pretrain":
        return {"file_name": file_name, "columns": {"prompt": "text"}}
    if (kind == "sft" and layout == "alpaca") or kind == "prompts":
        cols = {"prompt": "instruction", "query": "input", "response": "output"}
        if has_system:
            cols["system"] = "system"
        return {"file_name": file_name, "columns": cols}
    cols: dict[str, str] = {"messages": "messages"}
    if has_system:
        cols["system"] = "system"
    entry: dict[str, Any] = {"file_name": file_name, "formatting": "sharegpt"}
    if kind == "preference":
        entry["ranking"] = True
        cols.update({"chosen": "chosen", "rejected": "rejected"})
    if kind == "kto":
        cols["kto_tag"] = "label"
    entry["columns"] = cols
    entry["tags"] = SHAREGPT_TAGS
    return entry


def export(version: Version, out_dir: str | Path, fmt: str, layout: str = "sharegpt"
           ) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kind, written = version.kind, []
    info: dict[str, Any] = {}
    for split in version.splits:
        rows = version.to_table(split=split).to_pylist()
        stem = f"{version.name}_{split}"
        if fmt == "jsonl":
            path = out / f"{stem}.jsonl"
            with open(path, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            written.append(path)
            continue
        records = [llamafactory_record(kind, r, layout) for r in rows]
        path = out / f"{stem}.json"
        path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
        written.append(path)
        info[stem] = dataset_info_entry(kind, path.name, layout,
                                        any("system" in r for r in records))
    if fmt == "llamafactory":
        info_path = out / "dataset_info.json"
        existing = json.loads(info_path.read_text()) if info_path.exists() else {}
        existing.update(info)
        info_path.write_text(json.dumps(existing, ensure_ascii=False, indent=2), encoding="utf-8")
        written.append(info_path)
    return written
