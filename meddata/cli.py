"""The `meddata` command.

Only click and the standard library are imported at start-up, so `meddata --help` stays
fast; each command imports what it needs.
"""

from __future__ import annotations

import json
import sys

import click

from meddata import __version__


class Failure(click.ClickException):
    """A one-line reason on stderr and exit status 1."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _store(ctx: click.Context):
    from meddata.store import Store

    return Store(ctx.obj["store"])


def _published(version) -> None:
    """What a publish did: a new version, or content that already existed (then which tags,
    if any, moved to it)."""
    ref = f"{version.kind}/{version.name}@{version.id}"
    if version.rows == 0:
        click.echo(f"warning: {ref} has no rows: every input row was dropped or rejected "
                   "(the stage table and the version's rejects say why)", err=True)
    if not getattr(version, "existed", False):
        click.echo(f"published {ref}  ({version.rows} rows) in {version.path}"
                   + (f"; tagged {', '.join(version.tags_moved)}" if version.tags_moved else ""))
        return
    from meddata.store import Store

    tags = Store(version.path.parent.parent.parent).tags(version.kind, version.name)
    own = sorted(t for t, v in tags.items() if v == version.id)
    moved = (f"tags moved to it: {', '.join(version.tags_moved)}" if version.tags_moved
             else f"no tag moved (latest is {tags.get('latest', '-')})")
    click.echo(f"already existed: {ref}  ({version.rows} rows, identical content) in "
               f"{version.path}; its tags: {', '.join(own) or '-'}; {moved}")


TRAIN_MODULES = ("torch", "transformers", "trl", "peft", "accelerate")


def _need_train_extra(command: str) -> None:
    """One line instead of a traceback when the `train` extra is not installed."""
    import importlib.util

    missing = [m for m in TRAIN_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise Failure(f"`meddata {command}` needs the train extra ({', '.join(missing)} "
                      "not installed): pip install torch==2.13.0 && pip install -e \".[train]\" "
                      "(or pip install \"meddata[train]\")")


def engine_options(fn):
    """--engine and --ray-address, shared by the commands that run steps."""
    fn = click.option("--ray-address",
                      help="--engine ray: join the running Ray cluster at this address (for "
                           "example ray://head:10001, or auto on a cluster node); without it "
                           "a local Ray is started for the command and stopped after. Env "
                           "MEDDATA_RAY_ADDRESS.")(fn)
    fn = click.option("--engine", type=click.Choice(["local", "ray"]), default=None,
                      help="Where the steps run: local (this process; the default) or ray "
                           "(Ray Data, on this machine or a cluster; needs the ray extra). "
                           "Both publish the same version id. Env MEDDATA_ENGINE.")(fn)
    return fn


def _engine(name: str | None, address: str | None, recipe_engine: str | None = None):
    """The command's one engine (meddata.engines.choose), or a one-line failure."""
    from meddata.engines import choose as choose_engine

    try:
        return choose_engine(name, address, recipe_engine)
    except ValueError as e:
        raise Failure(str(e)) from e


def _store_errors():
    """The errors every command reports in one line: the store's, a pipeline that cannot
    run (a step missing a column, a de-identification salt not set), a model not found."""
    from meddata.models import ModelNotFound
    from meddata.steps.base import StepError
    from meddata.store import StoreError

    return (StoreError, StepError, ModelNotFound)


class _Group(click.Group):
    """Every command ends in one line on an OSError (a full disk, a read-only store, a file
    name too long): what failed and on which file, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OSError as e:
            from meddata.store import os_problem

            raise Failure(os_problem(e) if e.errno is not None else str(e)) from e


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meddata")
@click.option("--store", envvar="MEDDATA_STORE", default="./meddata-store", show_default=True,
              type=click.Path(file_okay=False),
              help="The dataset store folder (env MEDDATA_STORE).")
@click.pass_context
def cli(ctx: click.Context, store: str) -> None:
    """meddata: medical QA, instruction and reasoning data, converted, deduplicated,
    validated and published as immutable versions in the formats TRL reads.

    References name a version as KIND/NAME@SELECTOR, where SELECTOR is a tag (v1, v2,
    latest) or a prefix of the content id; @latest is the default.
    """
    ctx.ensure_object(dict)
    ctx.obj["store"] = store


# ---- store inspection ------------------------------------------------------------------------
@cli.command("ls")
@click.argument("kind", required=False)
@click.option("--json", "as_json", is_flag=True,
              help="Print the versions as a JSON list (kind, name, id, tags, rows, rejects, "
                   "bytes, created_at, parents, path).")
@click.pass_context
def ls_cmd(ctx: click.Context, kind: str | None, as_json: bool) -> None:
    """List the versions in the store (optionally of one KIND)."""
    from pathlib import Path

    from meddata.listing import versions
    from meddata.tables import human_bytes, table

    root = Path(ctx.obj["store"])
    if not root.is_dir():
        raise Failure(f"there is no store at {root} (give --store PATH or set MEDDATA_STORE; "
                      "`meddata build` or `meddata convert` creates one)")
    problems: list[str] = []
    rows = versions(root, kind, problems)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    elif not rows:
        click.echo(f"no versions in {ctx.obj['store']}")
    else:
        click.echo(table([(f"{r['kind']}/{r['name']}", r["id"], ",".join(r["tags"]), r["rows"],
                           r["rejects"], human_bytes(r["bytes"]), r["created_at"])
                          for r in rows],
                         ["dataset", "id", "tags", "rows", "rejects", "size", "created"]))
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)


@cli.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@click.pass_context
def show_cmd(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show a version: inputs, row conservation per stage, schema, stats and reports."""
    from meddata.tables import human_bytes, stages_table, table

    try:
        v = _store(ctx).resolve(ref)
        tags = [t for t, i in _store(ctx).tags(v.kind, v.name).items() if i == v.id]
    except _store_errors() as e:
        raise Failure(str(e)) from e
    try:  # the cheap check: the id, the manifest's digest, every file's presence and size,
        v.verify("size")  # nothing extra; no file is read (`meddata fsck` hashes them all)
        integrity = None
    except _store_errors() as e:
        integrity = str(e)
    m = v.manifest
    if as_json:
        click.echo(json.dumps(m, indent=2, ensure_ascii=False))
        if integrity:
            raise Failure(integrity)
        return
    click.echo(f"{v.kind}/{v.name}@{v.id}  tags: {', '.join(sorted(tags)) or '-'}")
    click.echo(f"created {m['created_at']} by meddata {m['meddata_version']}; "
               f"{m['rows']} rows in {len(m['shards'])} shard(s), "
               f"{human_bytes(m['stats'].get('bytes', 0))}; path {v.path}")
    if m["parents"]:
        click.echo("parents: " + ", ".join(p["ref"] if isinstance(p, dict) else str(p)
                                           for p in m["parents"]))
    from meddata import licenses

    click.echo("\nlicences:\n" + "\n".join(
        f"  {line}" for line in licenses.describe(licenses.of_manifest(m))))
    if m["inputs"]:
        click.echo("\ninputs:")
        for i in m["inputs"]:
            where = i.get("path") or i.get("hub_id") or i.get("ref")
            click.echo(f"  {where}" + (f"  sha256 {i['sha256'][:16]}" if i.get("sha256") else ""))
    if m["stages"]:
        click.echo("\nrow conservation:\n" + stages_table(m["stages"]))
    if m["rejects"]["rows"]:
        click.echo(f"\nrejects: {m['rejects']['rows']} (" + ", ".join(
            f"{k}: {n}" for k, n in m["rejects"]["by_reason"].items()) + ")")
    for report in ("convert_report", "dedup", "decontam", "build", "mix"):
        if m.get(report):
            summary = m[report].get("summary", m[report]) if isinstance(m[report], dict) else None
            click.echo(f"\n{report}: " + json.dumps(summary, ensure_ascii=False)[:2000])
    click.echo("\nschema:\n" + table([(f["name"], f["type"]) for f in m["schema"]],
                                     ["column", "type"]))
    counts = m["stats"].get("counts", {})
    if counts:
        click.echo("\ncounts:")
        for col, values in counts.items():
            click.echo(f"  {col}: " + ", ".join(f"{k}={n}" for k, n in values.items()))
    for key, value in m["stats"].items():
        if key not in ("rows", "bytes", "counts", "nulls"):
            click.echo(f"  {key}: {json.dumps(value, ensure_ascii=False)}")
    for name, rep in m.get("rejected", {}).items():
        click.echo(f"\nrejected by {name}: {rep['generated']} generated, {rep['from_cache']} "
                   f"from the cache, {rep['new_tokens']} new tokens")
    if m.get("validation"):
        val = m["validation"]
        click.echo(f"\nvalidation at publish: {'passed' if val.get('success') else 'FAILED'}"
                   + (" (published with --allow-invalid)" if val.get("allow_invalid") else ""))
    for later in v.validations()[-3:]:
        click.echo(f"later validation {later.get('run_at', '')}: "
                   f"{'passed' if later.get('success') else 'FAILED'}")
    if not integrity:
        click.echo("\nchecked: the id, the manifest and every file's size (cheap: a file "
                   "changed in place at the same size is not seen; `meddata fsck` hashes "
                   "every file, as every load does)")
    if integrity:
        raise Failure(integrity)


@cli.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON.")
@click.pass_context
def diff_cmd(ctx: click.Context, a: str, b: str, as_json: bool) -> None:
    """Rows added, removed and changed (by id) from version A to version B; schema changes."""
    from meddata.catalog import diff
    from meddata.tables import table

    store = _store(ctx)
    try:
        result = diff(store.resolve(a), store.resolve(b))
    except (*_store_errors(), ValueError) as e:
        raise Failure(str(e)) from e
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    click.echo(f"{result['a']}  ->  {result['b']}")
    click.echo(table([(k, result[k]["count"], ", ".join(result[k]["examples"]))
                      for k in ("added", "removed", "changed")]
                     + [("unchanged", result["unchanged"], "")],
                     ["rows", "count", "examples"]))
    if result["changed"].get("columns"):
        click.echo("changed columns (rows): " + ", ".join(
            f"{c} ({n})" for c, n in result["changed"]["columns"].items()))
    sch = result["schema"]
    if any(sch.values()):
        click.echo("\nschema changes:")
        for c, t in sch["added"].items():
            click.echo(f"  + {c}: {t}")
        for c, t in sch["removed"].items():
            click.echo(f"  - {c}: {t}")
        for c, (t1, t2) in sch["changed"].items():
            click.echo(f"  ~ {c}: {t1} -> {t2}")
    else:
        click.echo("\nschema unchanged")


@cli.command("sql")
@click.argument("query")
@click.option("--json", "as_json", is_flag=True,
              help="Print the rows as a JSON list of objects (column -> value).")
@click.pass_context
def sql_cmd(ctx: click.Context, query: str, as_json: bool) -> None:
    """Run a read-only SQL QUERY (SELECT only) on the catalog (tables: versions, tags,
    stages, shards) and the store's shards (read_parquet over shards.path). Nothing else can
    be read and nothing written: no COPY, ATTACH, EXPORT, SET, or other files.

    Example: meddata sql "SELECT kind, name, sum(rows) FROM versions GROUP BY ALL"
    """
    import duckdb

    from meddata.catalog import catalog, read_only_query

    con = catalog(_store(ctx))
    try:
        cur = read_only_query(con, query)
    except ValueError as e:
        raise Failure(str(e)) from e
    except duckdb.Error as e:
        raise Failure(f"SQL error: {' '.join(str(e).split())}") from e
    _print_rows(cur.fetchall(), [d[0] for d in cur.description], as_json)


def _print_rows(rows: list[tuple], columns: list[str], as_json: bool) -> None:
    """A query's rows as a table, or with --json as a list of objects (values JSON cannot
    hold, such as dates and decimals, as their text)."""
    from meddata.tables import table

    if as_json:
        click.echo(json.dumps([dict(zip(columns, r)) for r in rows], indent=2,
                              ensure_ascii=False, default=str))
    else:
        click.echo(table(rows, columns))


@cli.command("tag")
@click.argument("ref")
@click.argument("tag")
@click.pass_context
def tag_cmd(ctx: click.Context, ref: str, tag: str) -> None:
    """Point a human TAG (for example `paper-2026`) at the version REF."""
    try:
        _store(ctx).tag(ref, tag)
    except _store_errors() as e:
        raise Failure(str(e)) from e
    click.echo(f"tagged {ref} as {tag}")


@cli.command("fsck")
@click.option("--repair", is_flag=True,
              help="Fix what can be fixed: remove orphan temporary folders, move broken "
                   "versions and files a manifest does not name to .quarantine/, rebuild "
                   "unreadable tags, tag untagged versions (v1.. in order), drop dangling "
                   "tags and tags that hold no id, rewrite cards, remove symlinks.")
@click.option("--sizes-only", is_flag=True,
              help="Cheap: compare file sizes only, not their sha256 (a file changed in "
                   "place at the same size is not seen).")
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
@click.pass_context
def fsck_cmd(ctx, repair, sizes_only, as_json) -> None:
    """Check the store: orphan temporary folders, untagged versions, dangling tags and tags
    that hold anything but an id, manifests that do not parse or were edited, ids that no
    longer match their manifest, every file of a version (shards, rejects, card, report)
    against its size and sha256, files a manifest does not name, symlinks, name cards that
    do not point at `latest`. Exit 1 when something is wrong and not repaired."""
    from meddata.fsck import as_json as problems_json
    from meddata.fsck import fsck

    store = _store(ctx)
    if not store.root.is_dir():
        raise Failure(f"no store at {store.root} (give --store PATH or set MEDDATA_STORE)")
    problems = fsck(store, repair=repair, hashes=not sizes_only)
    if as_json:
        click.echo(problems_json(problems))
    else:
        for p in problems:
            click.echo(p.line())
        left = sum(1 for p in problems if not p.repaired)
        click.echo(f"{ctx.obj['store']}: " + ("no problems" if not problems else
                   f"{len(problems)} problem(s), {len(problems) - left} repaired")
                   + (" (sizes only: a file changed in place at the same size is not seen; "
                      "run without --sizes-only to hash every file)" if sizes_only else ""))
    if any(not p.repaired for p in problems):
        ctx.exit(1)


# ---- conversion ----------------------------------------------------------------------------
class SourcesHelp(click.Command):
    """`meddata convert --help`: the sources, from the converter registry."""

    def format_epilog(self, ctx, formatter) -> None:
        from meddata.converters import REGISTRY

        with formatter.section("Sources"):
            formatter.write_text(", ".join(sorted(REGISTRY)))


@cli.command("convert", cls=SourcesHelp)
@click.argument("source")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--subset", help="Subset name (for example medqa us|mcmle|tw, medical_o1 "
                               "en|zh|en_mix|zh_mix); inferred from file names when omitted. "
                               "mmlu, ceval, cmmlu: subjects or groups, comma-separated "
                               "(medical, general, stem, humanities, social_sciences, other).")
@click.option("--split", help="Split name for every row; inferred from file names "
                              "(train, dev, validation, test) when omitted, else train.")
@click.option("--name", help="Publish as canonical/NAME (default: the source name).")
@click.option("--max-reject-rate", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="Fail, publishing nothing, when more input records than this are rejected.")
@click.option("--cop-base", type=click.Choice(["0", "1"]),
              help="medmcqa: base of the answer index, when a file cannot decide it.")
@click.option("--hub-config", help="Config name when INPUT is a Hugging Face dataset id.")
@click.option("--license", "license_id", metavar="NAME",
              help="The licence of these files (an SPDX id such as cc-by-4.0, research-only or "
                   "unknown), recorded instead of the one the source's release states.")
@engine_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def convert_cmd(ctx, source, inputs, subset, split, name, max_reject_rate, cop_base, hub_config,
                license_id, engine, ray_address, quiet) -> None:
    """Convert raw SOURCE files (or one hub dataset id) into canonical/NAME.

    SOURCE is a converter's name (the list below). INPUTS are files (JSON, JSONL,
    Parquet, CSV, TXT, optionally .gz) or folders of them. Malformed records go to the version's
    rejects.parquet with file, position, raw text and reason. With --engine ray each
    file is converted by its own task (the same version as on the local engine). The
    version records the licence of the source's public release (`meddata show` lists
    it); --license records another.
    """
    from meddata import convert as conv_mod
    from meddata.converters import get
    from meddata.tables import table

    try:
        cls = get(source)
    except KeyError as e:
        raise Failure(e.args[0]) from e
    options = {"cop_base": int(cop_base)} if cop_base is not None else {}
    if options and "cop_base" not in cls.options:
        raise Failure(f"--cop-base does not apply to {source}")
    try:
        conv = cls(subset=subset, split=split, **options)
        result = conv_mod.publish(conv, list(inputs), _store(ctx), name=name,
                              max_reject_rate=max_reject_rate, hub_config=hub_config,
                              progress=not quiet, engine=_engine(engine, ray_address),
                              license=license_id)
    except (conv_mod.ConversionError, FileNotFoundError, ValueError, RuntimeError,
            *_store_errors()) as e:
        raise Failure(str(e)) from e
    v = result.version
    _published(v)
    rows = [("rows in", result.rows_in), ("rows out", result.rows_out)]
    rows += [(f"rejected: {reason}", n) for reason, n in result.rejects.most_common()]
    click.echo(table(rows, ["", "count"]))
    report = v.manifest.get("convert_report")
    if report:
        click.echo(", ".join(f"{k}: {n}" for k, n in report.items()))


# ---- dedup and decontamination ------------------------------------------------------------------
@cli.command("dedup")
@click.argument("ref")
@click.option("--against", multiple=True,
              help="An earlier canonical version (repeatable): rows of REF that duplicate its "
                   "rows are dropped too, from a saved index of it (built once, reused).")
@click.option("--name", help="Publish as canonical/NAME (default: <name>-dedup).")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True),
              help="Exact Jaccard of 3-token shingles for a near duplicate (default: the "
                   "dedup step's, 0.65; `meddata curate --help` lists every setting).")
@click.option("--priority", help="Comma-separated sources, best first: whose row survives.")
@engine_options
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def dedup_cmd(ctx, ref, against, name, threshold, priority, engine, ray_address, quiet) -> None:
    """Remove exact and near duplicates from canonical version REF (MinHash, candidates
    from grouped band hashes, each verified by exact Jaccard and gold answers)."""
    from meddata import canonical
    from meddata.tables import table

    settings = {"source_priority": [p for p in (priority or "").split(",") if p],
                "against": list(against)}
    if threshold is not None:
        settings["threshold"] = threshold
    try:
        v = canonical.dedup(_store(ctx), ref, name, settings, progress=not quiet,
                            engine=_engine(engine, ray_address))
    except (ValueError, RuntimeError, *_store_errors()) as e:
        raise Failure(str(e)) from e
    s = v.manifest["dedup"]["summary"]
    _published(v)
    rows = [("rows in", s["rows_in"]), ("rows out", s["rows_out"]),
            ("exact duplicates", s["exact_duplicate"]), ("near duplicates", s["near_duplicate"]),
            ("clusters", s["clusters"])]
    if s["against"]:
        rows.append(("duplicates of earlier versions", s["duplicate_of_earlier"]))
    click.echo(table(rows, ["", "count"]))


@cli.command("decontam")
@click.argument("ref")
@click.option("--against", multiple=True, required=True,
              help="A benchmark canonical version (repeat for several).")
@click.option("--name", help="Publish as canonical/NAME (default: <name>-decontam).")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=0.8,
              show_default=True, help="Verified MinHash similarity that counts as a match.")
@engine_options
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def decontam_cmd(ctx, ref, against, name, threshold, engine, ray_address, quiet) -> None:
    """Drop rows of canonical version REF that overlap benchmark versions (n-grams, MinHash,
    PubMedQA PMID and title); the manifest names the benchmark row each one matched."""
    from meddata import canonical
    from meddata.tables import table

    try:
        v = canonical.decontam(_store(ctx), ref, {"against": list(against),
                                                  "threshold": threshold}, name,
                               progress=not quiet, engine=_engine(engine, ray_address))
    except (ValueError, RuntimeError, *_store_errors()) as e:
        raise Failure(str(e)) from e
    s = v.manifest["decontam"]["summary"]
    _published(v)
    click.echo(table([("rows in", s["rows_in"]), ("rows out", s["rows_out"])]
                     + [(f"contaminated: {k}", n) for k, n in s["by_method"].items()],
                     ["", "count"]))
    for d in v.manifest["decontam"]["dropped"][:5]:
        click.echo(f"  {d['id']}  matched {d['matched']} ({d['method']})")


class StepsHelp(click.Command):
    """`meddata curate --help`: the steps and their settings, from the step registry."""

    def format_epilog(self, ctx, formatter) -> None:
        from meddata.steps import registry

        with formatter.section("Steps (name: what it does; settings with defaults)"):
            for name in registry.names():
                try:
                    text = registry.help_text(name)
                except (ImportError, registry.SettingsError):
                    continue  # a step whose module is not installed here
                formatter.write_text(text.replace("\n", "\n\n"))


@cli.command("curate", cls=StepsHelp)
@click.argument("ref")
@click.option("--steps", "steps_file", required=True, type=click.Path(dir_okay=False),
              help="A YAML list of steps in order, e.g. `- normalize: {}` then "
                   "`- quality: {}` (the same list as a recipe's `curate:`).")
@click.option("--name", help="Publish as canonical/NAME (default: <name>-curated).")
@engine_options
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def curate_cmd(ctx, ref, steps_file, name, engine, ray_address, quiet) -> None:
    """Run named steps over canonical version REF and publish canonical/NAME.

    Each dropped row goes to the version's rejects with the step, the rule and the value;
    edits are counted per step in the manifest and the data report.
    """
    import yaml

    from meddata import canonical
    from meddata.steps.registry import SettingsError
    from meddata.tables import stages_table

    try:
        steps = yaml.safe_load(open(steps_file, encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise Failure(f"{steps_file}: {e}") from e
    try:
        v = canonical.curate(_store(ctx), ref, steps, name, progress=not quiet,
                             engine=_engine(engine, ray_address))
    except SettingsError as e:
        raise Failure(f"{steps_file}: {e}") from e
    except (ValueError, RuntimeError, OSError, *_store_errors()) as e:
        raise Failure(str(e)) from e
    _published(v)
    # this run's ledger (the same content may have been published before by other steps)
    click.echo("\n" + stages_table((getattr(v, "this_run", None) or v.manifest)["stages"]))


# ---- building ------------------------------------------------------------------------------
class KindChoice(click.ParamType):
    """An output kind from the registry (builders/registry.py), checked when parsed."""

    name = "kind"

    def get_metavar(self, param, ctx=None) -> str:
        from meddata.builders.registry import names

        return "{" + ",".join(names()) + "}"

    def convert(self, value, param, ctx):
        from meddata.builders.registry import names

        if value not in names():
            self.fail(f"{value!r} is not one of {', '.join(names())}", param, ctx)
        return value


@cli.command("build")
@click.argument("kind", type=KindChoice())
@click.argument("refs", nargs=-1)
@click.option("--recipe", "recipe_path", type=click.Path(dir_okay=False),
              help="Recipe YAML (see docs/recipes.md). Without a recipe and without REFS, the "
                   "bundled examples are converted and built.")
@click.option("--name", help="Publish as KIND/NAME (default: the recipe's name).")
@click.option("--seed", type=int, help="Override the recipe's seed.")
@click.option("--reasoning", type=click.Choice(["think", "inline", "none"]),
              help="How rationales are rendered (override).")
@click.option("--prompt-style", type=click.Choice(["instruct", "plain"]), help="Override.")
@click.option("--system-prompt", help="A system message for every conversation (override).")
@click.option("--validation-ratio", type=click.FloatRange(0, 1, max_open=True),
              help="Share of rows in the validation split (override).")
@click.option("--max-tokens", "--max-length", "max_tokens", type=click.IntRange(8),
              help="Drop rows longer than this many tokens (with --tokenizer: the model's "
                   "count, chat template included); set it to the trainer's max_length so "
                   "the trainer cuts nothing.")
@click.option("--tokenizer", type=click.Path(exists=True, file_okay=False),
              help="Local tokenizer folder for token counts (and packing).")
@click.option("--tokenizer-backend", type=click.Choice(["auto", "fast", "hf"]),
              help="What encodes text with --tokenizer: fast (fastokens), hf (the tokenizers "
                   "library) or auto (fast when it matches tokenizers on a probe set, else "
                   "hf). The ids, and so the version, never depend on it. Default: the "
                   "recipe's tokenizer_backend, else MEDDATA_TOKENIZER_BACKEND, else auto.")
@click.option("--pack", is_flag=True, default=None,
              help="pretrain: also pack input_ids (needs --tokenizer and --max-tokens).")
@click.option("--rejected", "rejected_strategy",
              type=click.Choice(["auto", "distractor", "cross_sample", "weak_model"]),
              help="Rejected-response strategy for preference and kto (override).")
@click.option("--rejected-model",
              help="weak_model: the model that writes rejected answers (a local folder or a "
                   "hub id); implies --rejected weak_model.")
@click.option("--rejected-backend", type=click.Choice(["transformers", "vllm"]),
              help="weak_model: generation backend (vllm needs the vllm extra).")
@click.option("--from", "from_ref", help="kto: unpair this preference version instead.")
@click.option("--allow-invalid", is_flag=True,
              help="Publish even when validation fails (recorded in the manifest).")
@click.option("--allow-short-mix", is_flag=True,
              help="Publish even when the recipe's mix cannot meet a share within 1 point "
                   "(the manifest and the card say which group).")
@click.option("--retrieve", "retrieve_index",
              help="Add the top passages of this index (index/NAME) to each row's context "
                   "before rendering (retrieval-augmented training data).")
@click.option("--retrieve-k", type=click.IntRange(1), default=3, show_default=True,
              help="--retrieve: passages per row.")
@click.option("--no-report", is_flag=True,
              help="Do not write the version's report.html (see `meddata report`).")
@engine_options
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as one JSON object (version, stages, counts, lengths, "
                   "validation, report) instead of tables; progress stays on stderr.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def build_cmd(ctx, kind, refs, recipe_path, name, seed, reasoning, prompt_style, system_prompt,
              validation_ratio, max_tokens, tokenizer, tokenizer_backend, pack, rejected_strategy,
              rejected_model, rejected_backend, from_ref, allow_invalid, allow_short_mix,
              retrieve_index, retrieve_k, no_report, engine, ray_address, as_json, quiet) -> None:
    """Build a KIND version from canonical versions (REFS), a recipe, or the examples.

    \b
    meddata build preference                       # the bundled examples, offline
    meddata build sft canonical/medqa canonical/medmcqa --validation-ratio 0.05
    meddata build kto --from preference/examples@latest
    meddata build preference --rejected-model path/to/Qwen2.5-0.5B-Instruct
    """
    from meddata import recipe as recipe_mod
    from meddata.builders import pipeline
    from meddata.convert import ConversionError
    from meddata.models import ModelNotFound
    from meddata.tables import stages_table, table

    rejected = {"strategy": "weak_model", "model": rejected_model} if rejected_model else {}
    if rejected_strategy:
        rejected["strategy"] = rejected_strategy
    if rejected_backend:
        rejected["backend"] = rejected_backend
    try:
        if recipe_path:
            base = recipe_mod.load(recipe_path)
        elif refs or from_ref:
            base = None  # no recipe: the refs (or the parent) are the inputs
        else:
            base = pipeline.examples_recipe()
        data = base.to_dict() if base else {"name": name or ("default" if refs else None),
                                            "sources": []}
        recipe = recipe_mod.from_dict(data, check_sources=False).with_overrides(
            refs, kind=kind, seed=seed, reasoning=reasoning, prompt_style=prompt_style,
            system_prompt=system_prompt, validation_ratio=validation_ratio,
            max_tokens=max_tokens, tokenizer=tokenizer, tokenizer_backend=tokenizer_backend,
            pack=pack, from_ref=from_ref, rejected=rejected,
            retrieve={"index": retrieve_index, "k": retrieve_k} if retrieve_index else None)
        if recipe.max_tokens and not recipe.tokenizer:
            click.echo(f"warning: max_tokens {recipe.max_tokens} counts estimated tokens "
                       "(words + CJK characters), often 2-3 times fewer than a model's "
                       "tokens, so longer rows pass; give --tokenizer FOLDER to count the "
                       "model's own", err=True)
        if allow_short_mix:
            if recipe.mix is None:
                raise recipe_mod.RecipeError("--allow-short-mix: the recipe has no `mix`")
            recipe.mix.allow_short = True
        version = pipeline.build(kind, recipe, _store(ctx), name=name, progress=not quiet,
                                 allow_invalid=allow_invalid, report=not no_report,
                                 engine=_engine(engine, ray_address, recipe.engine))
    except (recipe_mod.RecipeError, ConversionError, ValueError, FileNotFoundError, OSError,
            RuntimeError, ModelNotFound, *_store_errors()) as e:
        raise Failure(str(e)) from e
    m = version.manifest
    if as_json:
        click.echo(json.dumps(_build_summary(version), indent=2, ensure_ascii=False,
                              default=str))
        return
    _published(version)
    click.echo("\n" + stages_table(m["stages"]))
    counts = m["stats"]["counts"]
    for col in ("source", "lang", "split", "rejected_by", "label"):
        if counts.get(col):
            click.echo(f"\n{col}:\n" + table(sorted(counts[col].items()), [col, "rows"]))
    lengths = m["stats"].get("length_tokens", {})
    if lengths:
        click.echo(f"\nlength in tokens ({lengths.get('counter')}): " + ", ".join(
            f"{k} {v}" for k, v in lengths.items() if k != "counter"))
    encoder = m["stats"].get("tokenizer", {}).get("encoder")
    if encoder:
        click.echo(f"tokenizer backend: {encoder['backend']} ({encoder['reason']})")
    if m["stats"].get("kto"):
        k = m["stats"]["kto"]
        click.echo(f"kto: {k['desirable']} desirable / {k['undesirable']} undesirable "
                   f"(ratio {k['desirable_ratio']})")
    for name, rep in (version.this_run or m).get("rejected", {}).items():
        if name == "check":  # rejected answers against the chosen's format and language
            click.echo(f"rejected check: {rep['matched']} of {rep['pairs_checked']} pairs "
                       "match the chosen's format and language; dropped: "
                       f"{rep['rejected_format_mismatch']} format, "
                       f"{rep['rejected_lang_mismatch']} language, "
                       f"{rep['no_matching_rejected']} with no partner of the same language, "
                       "task and format"
                       + (f"; {rep['kept_mismatched']} weak-model answers differ in form "
                          "(kept)" if rep.get("kept_mismatched") else ""))
        elif "generated" in rep:  # a weak model's counts
            click.echo(f"{name}: {rep['generated']} generated, {rep['from_cache']} from the "
                       f"cache, {rep['new_tokens']} new tokens ({rep['cache']})")
    val = m["validation"]
    from meddata.validation import MANIFEST_CHECKS

    click.echo(f"validation: {'passed' if val['success'] else 'FAILED'} "
               f"({len(val['checks'])} row checks on {val['rows_checked']} rows, before "
               f"publishing; `meddata validate` adds {len(MANIFEST_CHECKS)} checks of the "
               f"published files: {', '.join(MANIFEST_CHECKS)})"
               + ("; published with --allow-invalid" if not val["success"] else ""))
    if m.get("mix", {}).get("groups"):
        from meddata.steps.mix import card_lines

        click.echo("\n" + "\n".join(card_lines(m)[3:]))
    if m.get("report"):
        click.echo(f"report: {version.path / m['report']}")


def _build_summary(version) -> dict:
    """What `build` prints, as one object (`build --json`)."""
    m = version.manifest
    val = m["validation"]
    return {"ref": f"{version.kind}/{version.name}@{version.id}", "kind": version.kind,
            "name": version.name, "id": version.id, "rows": version.rows,
            "path": str(version.path), "existed": version.existed,
            "tags_moved": version.tags_moved, "stages": m["stages"],
            "counts": m["stats"]["counts"], "length_tokens": m["stats"].get("length_tokens"),
            "kto": m["stats"].get("kto"),
            "rejected": (version.this_run or m).get("rejected", {}),
            "validation": {"success": val["success"], "checks": len(val["checks"]),
                           "rows_checked": val["rows_checked"]},
            "report": str(version.path / m["report"]) if m.get("report") else None}


@cli.group("index")
def index_group() -> None:
    """Retrieval indexes over a canonical corpus (kind `index` in the store): build one,
    query it; `meddata eval --rag` and the recipe key `retrieve` use them."""


@index_group.command("build")
@click.argument("ref")
@click.option("--method", type=click.Choice(["bm25", "dense"]), default="bm25",
              show_default=True, help="bm25 (bm25s, offline) or dense (sentence-transformers "
                                      "embeddings in a faiss index).")
@click.option("--name", help="Publish as index/NAME (default: the corpus's name).")
@click.option("--model", type=click.Path(exists=True, file_okay=False),
              help="dense: a local sentence-transformers model folder.")
@click.option("--chunk-tokens", type=click.IntRange(8), default=256, show_default=True,
              help="Chunk length in tokens (words, and each CJK character).")
@click.option("--overlap", type=click.IntRange(0), default=32, show_default=True,
              help="Tokens shared by consecutive chunks of a document.")
@click.option("--stemmer", default="english", show_default=True,
              help="bm25: PyStemmer language for Latin-script words, or none.")
@click.option("--decontam", "benchmarks", multiple=True,
              help="Drop corpus rows that match items of this benchmark version (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def index_build_cmd(ctx, ref, method, name, model, chunk_tokens, overlap, stemmer, benchmarks,
                    quiet) -> None:
    """Build and publish an index over a canonical version: its `document` rows (title and
    text), or any rows (question and context), cut into overlapping chunks.

    \b
    meddata index build canonical/corpus
    meddata index build canonical/medrag --decontam canonical/pubmedqa-test --name medrag
    meddata index build canonical/corpus --method dense --model path/to/bge-small
    """
    from meddata import retrieval
    from meddata.tables import stages_table

    store = _store(ctx)
    settings = retrieval.IndexSettings(method=method, model=model, chunk_tokens=chunk_tokens,
                                       overlap=overlap, stemmer=stemmer)
    try:
        version = retrieval.build(store, ref, settings, name, list(benchmarks),
                                  progress=not quiet)
    except (ValueError, OSError, ImportError, *_store_errors()) as e:
        raise Failure(str(e)) from e
    _published(version)
    click.echo("\n" + stages_table(version.manifest["stages"]))


@index_group.command("query")
@click.argument("ref")
@click.argument("text")
@click.option("--k", type=click.IntRange(1), default=5, show_default=True)
@click.pass_context
def index_query_cmd(ctx, ref, text, k) -> None:
    """Print the top-k chunks of an index for TEXT, with scores and document ids."""
    from meddata import retrieval

    try:
        index = retrieval.Index(_store(ctx).resolve(ref))
        (hits,) = index.query([text], k)
    except (ValueError, OSError, ImportError, *_store_errors()) as e:
        raise Failure(str(e)) from e
    click.echo(f"{index.version.ref} ({index.settings.method}, {index.rows} chunks)")
    for rank, h in enumerate(hits, 1):
        body = " ".join(h.row["text"].split())
        click.echo(f"\n{rank}. score {h.score:.4f}  {h.row['id']}  (document {h.row['doc_id']})")
        if h.row.get("title"):
            click.echo(f"   {h.row['title']}")
        click.echo(f"   {body[:400]}{' ...' if len(body) > 400 else ''}")


@cli.command("report")
@click.argument("ref")
@click.option("--against", "against_ref", help="Compare with this version: rows added, "
              "removed and changed, shifts per source and language, lengths overlaid.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="The HTML file to write (default: report-KIND-NAME-ID.html here).")
@click.option("--tokenizer", type=click.Path(exists=True, file_okay=False),
              help="Measure lengths with this local tokenizer folder (chat template "
                   "included), e.g. the model you will train; default: the tokenizer the "
                   "version was built with, if any, else an estimate (words + CJK "
                   "characters).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def report_cmd(ctx, ref, against_ref, out_path, tokenizer, quiet) -> None:
    """Write one self-contained HTML page about a version: summary, plots (lengths, mix,
    the ledger, drops), dedup clusters, decontamination matches, rejects and samples. It
    opens offline (plots are inline SVG, no scripts).

    \b
    meddata report sft/examples
    meddata report sft/examples@v2 --against sft/examples@v1 --out changes.html
    """
    from pathlib import Path

    from meddata import report

    store = _store(ctx)
    try:
        version = store.resolve(ref)
        against = store.resolve(against_ref) if against_ref else None
        out = Path(out_path or f"report-{version.kind}-{version.name}-{version.id}.html")
        report.write(version, out, store, against, progress=not quiet, tokenizer=tokenizer)
    except (OSError, ValueError, *_store_errors()) as e:
        raise Failure(str(e)) from e
    click.echo(f"wrote {out} ({out.stat().st_size / 1024:,.0f} KB)")


@cli.command("validate")
@click.argument("refs", nargs=-1, required=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write the full results (all checks, all refs) to this file.")
@click.option("--sample", type=click.IntRange(1),
              help="Run the expectations on a seeded random sample of this many rows "
                   "(derived columns are still computed over every row).")
@click.option("--max-chars", type=click.IntRange(1), default=100_000, show_default=True,
              help="Upper bound on the characters of a row's text.")
@click.option("--max-identifiers", type=click.IntRange(0),
              help="Fail a canonical version in which the de-identification detector finds "
                   "more identifiers than this (names, phones, ID numbers...; see "
                   "docs/deidentify.md). De-identified versions are always checked, with 0 "
                   "unless this is given.")
@click.pass_context
def validate_cmd(ctx, refs, json_path, sample, max_chars, max_identifiers) -> None:
    """Validate versions with their kind's Great Expectations suite; exit 1 on any failure.

    Prints each failed expectation with the number of failing rows and up to five example
    ids. Results are also stored beside each version (its content id does not change).
    """
    from meddata.tables import table
    from meddata.validation.run import Bounds, validate

    store = _store(ctx)
    results, failed_any = [], False
    for ref in refs:
        try:
            version = store.resolve(ref)
        except _store_errors() as e:
            click.echo(f"{ref}: error: {e}")
            failed_any = True
            continue
        result = validate(version, sample=sample,
                          bounds=Bounds(max_chars=max_chars, max_identifiers=max_identifiers))
        try:
            store.record_validation(version, result)
        except _store_errors() as e:
            click.echo(f"{version.ref}: the result is not stored: {e}")
            failed_any = True
        except OSError as e:  # a read-only (shared, mounted) store: validating still works
            from meddata.store import os_problem

            click.echo(f"note: {version.ref}: the result is not stored beside the version "
                       f"({os_problem(e)}); --json FILE keeps it", err=True)
        results.append(result)
        failed = [c for c in result["checks"] if not c["success"]]
        failed_any |= bool(failed)
        how = {"full": f"all {result['rows_checked']} rows",
               "sample": f"a sample of {result['rows_checked']} of {result['rows_total']} rows",
               }.get(result["mode"], "the manifest only: its shards changed")
        status = "passed" if not failed else f"FAILED {len(failed)} of {len(result['checks'])}"
        click.echo(f"{version.ref}: {status} ({len(result['checks'])} checks on {how})")
        if failed:
            click.echo(table([(c["name"], c["failing_rows"], ", ".join(map(str, c["examples"])))
                              for c in failed], ["failed expectation", "rows", "examples"]))
    if json_path:
        from pathlib import Path

        Path(json_path).write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    if failed_any:
        ctx.exit(1)


@cli.command("export")
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(["llamafactory", "jsonl", "lm-eval"]),
              required=True,
              help="llamafactory: dataset_info.json plus JSON files in its documented "
                   "layouts; jsonl: one JSON object per row; lm-eval: a canonical benchmark "
                   "as an lm-evaluation-harness task folder (YAML + data) with meddata "
                   "eval's prompts (run it with lm_eval --include_path OUT).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder to write into (created).")
@click.option("--layout", type=click.Choice(["sharegpt", "alpaca"]), default="sharegpt",
              show_default=True, help="llamafactory layout for sft data.")
@click.option("--overwrite", is_flag=True,
              help="Replace files that another version of the same dataset exported there.")
@click.pass_context
def export_cmd(ctx, ref, fmt, out_dir, layout, overwrite) -> None:
    """Export version REF for other tools (LLaMA-Factory, or plain JSONL). Files are named
    <kind>_<name>_<split>; dataset_info.json entries are merged, not replaced."""
    from meddata.builders import export

    try:
        if fmt == "lm-eval":
            from meddata.evaluation.lm_eval_task import export_task

            written, counts = export_task(_store(ctx).resolve(ref), out_dir)
            click.echo(f"{counts['items']} items; {counts['open_or_unanswered']} open-answer "
                       "or unanswered items left out", err=True)
        else:
            written = export.export(_store(ctx).resolve(ref), out_dir, fmt, layout=layout,
                                    overwrite=overwrite)
    except (ValueError, *_store_errors()) as e:
        raise Failure(str(e)) from e
    for path in written:
        click.echo(f"wrote {path}")


# ---- training ------------------------------------------------------------------------------------
ALLOW_DOWNLOAD_HELP = ("Let a hub id that is not in the local Hugging Face cache be "
                       "downloaded (the same as MEDDATA_ALLOW_DOWNLOAD=1). Without it, models "
                       "load from aliases, local folders and the cache only, and an unknown "
                       "name fails at once.")


def _allow_download(flag: bool) -> None:
    import os

    from meddata.models import ALLOW_DOWNLOAD_ENV

    if flag:
        os.environ[ALLOW_DOWNLOAD_ENV] = "1"


class TrainGroup(click.Group):
    """`meddata train STAGE`: one subcommand per stage, its help listing that stage's
    settings (read from the stage module's Settings class, without importing torch)."""

    def list_commands(self, ctx) -> list[str]:
        from meddata.train import STAGES

        return list(STAGES)

    def get_command(self, ctx, name):
        from meddata.train import STAGES

        return _stage_command(name) if name in STAGES else None


def _stage_command(stage: str) -> click.Command:
    from meddata.train import bundled_configs, data_kind, module
    from meddata.train.settings import describe

    settings = module(stage).Settings
    kind = data_kind(stage)
    keys = "\n".join(f"  {k:<28} {d:<14} {h}" for k, d, h in describe(settings))
    doc = (module(stage).__doc__ or "").strip().split("\n\n")[0]

    @click.command(stage, help=f"{doc}\n\nTrains on a {kind} version; "
                   "writes the adapter and training_manifest.json naming the data versions.",
                   epilog=f"\b\nSettings of `{stage}` (--set KEY=VALUE, or a --config file):\n"
                          f"{keys}\n\nAny field of the stage's TRL config: --set "
                          "trl.FIELD=VALUE, or a `trl:` section in the config file.")
    @click.option("--data", "data_ref", required=True,
                  help=f"The dataset version to train on (a {kind} version).")
    @click.option("--model", required=True,
                  help="A model folder, a hub id (online), an alias (smollm2-135m-instruct), "
                       "or the output folder of an earlier stage to continue from.")
    @click.option("--config", "config_path",
                  help="A YAML file of settings, or the name of a bundled one "
                       f"(train/configs/: {', '.join(bundled_configs())}).")
    @click.option("--output", help="Output folder (default runs/<stage>-<data name>).")
    @click.option("--max-steps", type=int, help="Stop after this many optimizer steps.")
    @click.option("--merge", is_flag=True, default=None,
                  help="Also save the base model with the LoRA weights merged in.")
    @click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                  help="A setting, YAML-valued (repeatable): --set lora_r=8 --set "
                       "trl.weight_decay=0.01.")
    @click.option("--allow-download", is_flag=True, help=ALLOW_DOWNLOAD_HELP)
    @click.option("--quiet", is_flag=True, help="No progress bars or library logging.")
    @click.pass_context
    def command(ctx, data_ref, model, config_path, output, max_steps, merge, sets,
                allow_download, quiet):
        _need_train_extra("train")
        _allow_download(allow_download)
        from meddata.models import ModelNotFound
        from meddata.train import check, load_settings, run
        from meddata.train.judge import JudgeUnavailable
        from meddata.train.settings import TrainError, parse_overrides

        try:
            overrides = parse_overrides(sets)
            for key, value in (("output_dir", output), ("max_steps", max_steps),
                               ("merge", merge)):
                if value is not None:
                    overrides[key] = value
            loaded = load_settings(stage, config_path, overrides)
            store = _store(ctx)
            check(stage, store, data_ref, model, loaded)  # before anything heavy is imported
            if quiet:
                _silence_libraries()  # (and the trainer's bars: see train.common.trl_config)
            manifest = run(stage, store, data_ref, model, loaded)
        except (TrainError, ModelNotFound, JudgeUnavailable, ValueError, OSError,
                *_store_errors()) as e:
            raise Failure(str(e)) from e
        click.echo(f"{stage}: {manifest['global_step']} steps on "
                   f"{', '.join(d['ref'] for d in manifest['data'])}")
        click.echo(f"adapter: {manifest['outputs']['adapter']}")
        if manifest["outputs"]["merged"]:
            click.echo(f"merged model: {manifest['outputs']['merged']}")
        for k, v in manifest["metrics"].items():
            click.echo(f"  {k}: {v:.4g}")

    return command


@cli.group("train", cls=TrainGroup)
def train_group() -> None:
    """Train a stage (cpt, sft, reward, rlhf, dpo, kto, grpo) on a dataset version with TRL
    and LoRA. `meddata train STAGE --help` lists that stage's settings.

    On CPU it is slow: on a shared 2-core machine, `train sft --max-steps 2` of the 135M
    smollm2-135m-instruct took 300 s and 4.0 GiB, `train dpo --max-steps 2` 386 s and
    10.6 GiB (each evaluates the validation split once, at the end; loading the GGUF
    model costs tens of seconds per command). docs/train.md ("What a CPU run costs") has
    the conditions; benchmarks/readme_model_lines.py measures them on your machine."""


def _silence_libraries() -> None:
    """--quiet: no progress bars from datasets, transformers and the hub client, and their
    logs at errors only (train and eval import them anyway)."""
    import os

    # tqdm reads TQDM_* defaults when it is first imported: this silences bars libraries
    # draw with a bare tqdm (transformers' GGUF de-quantization), before they import it
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@cli.command("eval")
@click.option("--model", "models", multiple=True, required=True,
              help="A model folder, hub id, alias, or training output; BASE:ADAPTER (or "
                   "BASE::ADAPTER) pairs a base with an adapter folder. Repeat to compare.")
@click.option("--bench", "benches", multiple=True, required=True,
              help="A canonical benchmark version (repeatable), e.g. canonical/medqa.")
@click.option("--split", default="test", show_default=True,
              help="The split evaluated; 'all' for every split.")
@click.option("--method", type=click.Choice(["loglik", "generate"]), default="loglik",
              show_default=True, help="Score the choices by log-likelihood (lm-eval's "
                                      "multiple_choice), or generate and extract the answer.")
@click.option("--prompt", "prompt_style", type=click.Choice(["lm-eval", "meddata"]),
              default="lm-eval", show_default=True,
              help="lm-eval: each benchmark's preset (lm-evaluation-harness's prompt where it "
                   "has the task, CMB's for CMExam and CMB); meddata: meddata's own prompt.")
@click.option("--choices", type=click.Choice(["letters", "text"]), default="letters",
              show_default=True, help="loglik: score the option letters or the option texts.")
@click.option("--limit", type=click.IntRange(1), help="At most N items per benchmark.")
@click.option("--shots", type=click.IntRange(0), default=0, show_default=True,
              help="Few-shot examples: the first K of the dev split (MMLU's), else of train "
                   "or validation, else of the evaluated split (never the item itself).")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(1), default=256, show_default=True)
@click.option("--max-length", type=click.IntRange(2),
              help="Tokens the model sees (the last ones are kept); default: the model's "
                   "context length.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Write results.json, results.md and every item's record "
                   "(items/<model>/<bench>.jsonl) into this folder.")
@click.option("--rag", "rag_indexes", multiple=True,
              help="A retrieval index (index/NAME): each model is also scored with the top-k "
                   "passages for each question, as a row of its own (repeatable).")
@click.option("--k", "rag_k", type=click.IntRange(1), default=5, show_default=True,
              help="--rag: passages per question.")
@click.option("--rag-tokens", type=click.IntRange(16), default=1024, show_default=True,
              help="--rag: the passages' token budget (the last one is cut; the question is "
                   "never cut).")
@click.option("--lm-eval-layout", is_flag=True,
              help="With --out, also write <model>/results_<date>.json and "
                   "samples_<task>_<date>.jsonl as lm-evaluation-harness does.")
@click.option("--allow-download", is_flag=True, help=ALLOW_DOWNLOAD_HELP)
@click.option("--quiet", is_flag=True, help="No progress bars or library messages.")
@click.pass_context
def eval_cmd(ctx, models, benches, split, method, prompt_style, choices, limit, shots,
             batch_size, max_new_tokens, max_length, out_dir, rag_indexes, rag_k, rag_tokens,
             lm_eval_layout, allow_download, quiet) -> None:
    """Evaluate one or more models on benchmark versions and print a comparison table:
    accuracy with a 95 % interval (single- and multiple-answer apart), BLEU-1..4 and
    ROUGE-1/2/L on open answers, per case for CMB-Clin."""
    _need_train_extra("eval")
    from pathlib import Path

    from meddata.evaluation.output import markdown, write_lm_eval_layout
    from meddata.evaluation.runner import EvalConfig, check, compare
    from meddata.models import ModelNotFound
    from meddata.train.settings import TrainError

    if lm_eval_layout and not out_dir:
        raise click.UsageError("--lm-eval-layout writes into the --out folder; give --out")
    _allow_download(allow_download)
    store = _store(ctx)
    out = Path(out_dir) if out_dir else None
    try:
        versions = [store.resolve(b) for b in benches]
        config = EvalConfig(method=method, prompt=prompt_style, choices=choices,
                            split=None if split == "all" else split, limit=limit, shots=shots,
                            batch_size=batch_size, max_new_tokens=max_new_tokens,
                            max_length=max_length, rag_k=rag_k, rag_tokens=rag_tokens)
        check(list(models), versions, config)  # before any model or index loads
        if quiet:
            _silence_libraries()
        indexes = []
        if rag_indexes:
            from meddata.retrieval import Index

            indexes = [Index(store.resolve(r)) for r in rag_indexes]
        for index in indexes:
            for v in versions:
                if v.ref not in index.benchmarks:
                    click.echo(f"warning: {index.version.ref} was not decontaminated against "
                               f"{v.ref}: its passages may contain the benchmark's items "
                               f"(rebuild with `meddata index build ... --decontam {v.ref}`)",
                               err=True)
        report = compare(list(models), versions, config, progress=not quiet, out=out,
                         indexes=indexes)
    except (TrainError, ModelNotFound, OSError, ValueError, *_store_errors()) as e:
        raise Failure(str(e)) from e
    table = markdown(report)
    click.echo(table)
    for m in report["models"]:
        for ref, r in m["results"].items():
            if r.get("unparseable"):
                click.echo(f"{m['model']} on {ref}: {r['unparseable']} unparseable answers "
                           "(counted wrong)")
    if out:
        (out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
        (out / "results.md").write_text(table + "\n")
        click.echo(f"wrote {out / 'results.json'}, {out / 'results.md'} and per-item "
                   f"records under {out / 'items'}")
        if lm_eval_layout:
            try:
                written = write_lm_eval_layout(report, out)
            except ImportError as e:
                raise Failure("--lm-eval-layout writes through lm-eval's EvaluationTracker: "
                              "pip install -e \".[lm-eval]\" (results.json and the items "
                              "are written)") from e
            click.echo(f"wrote {len(written)} files in lm-eval's layout under {out}")


def main() -> None:
    try:
        cli(obj={})
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
