"""Builders: canonical rows -> sft | preference | kto | pretrain | prompts.

One module per output kind, each declaring `KIND` (registry.py): its schema, its steps,
its length, validation and export. `pipeline.build` builds a kind from a recipe.
"""
