"""Engines: where the steps run. `choose` picks one per command; see meddata.engines.base
for what an engine does."""

from __future__ import annotations

import os

from meddata.engines.base import Engine, ProgressReader, VersionReader
from meddata.engines.local import LocalEngine

NAMES = ("local", "ray")

__all__ = ["NAMES", "Engine", "LocalEngine", "ProgressReader", "VersionReader", "choose"]


def choose(name: str | None = None, address: str | None = None,
           recipe_engine: str | None = None, cpus: int | None = None) -> Engine:
    """The engine named on the command line, else the recipe's, else MEDDATA_ENGINE, else
    local. Ray joins `address`, else MEDDATA_RAY_ADDRESS, else starts locally; an address
    given with another engine is a mistake."""
    chosen = name or recipe_engine or os.environ.get("MEDDATA_ENGINE") or "local"
    if chosen not in NAMES:
        raise ValueError(f"unknown engine {chosen!r}; engines: {', '.join(NAMES)}")
    if address and chosen != "ray":
        raise ValueError("--ray-address needs --engine ray")
    if chosen == "local":
        return LocalEngine()
    from meddata.engines.ray import RayEngine

    return RayEngine(address or os.environ.get("MEDDATA_RAY_ADDRESS") or None, cpus)
