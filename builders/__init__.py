"""Builders: canonical rows -> sft | preference | kto | pretrain | prompts (DESIGN.md §4).

One module per kind, each with `SCHEMA` and `build(rows, recipe, **context) -> (rows,
dropped)` (kto: `unpair` over preference pairs); `pipeline.run` drives them from a recipe
and publishes the version.
"""

KINDS = ("sft", "preference", "kto", "pretrain", "prompts")
