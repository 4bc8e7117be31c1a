"""Licences that travel with the data.

Every converter states the licence of its source's public release (`Converter.license`,
an SPDX id in the Hugging Face Hub's lower-case spelling, or `research-only` where the
release restricts use to research without a standard licence, or `unknown` where the
release states none) and where that is stated (`Converter.license_url`). A canonical
version records it in its manifest (`licenses`: one entry per source), `meddata convert
--license NAME` overriding it; every version made from other versions (dedup, decontam,
curate, build) records the union of its data parents' entries. The dataset card's YAML
`license:` is that one id, or `other` with the list (`card_fields`), and a recipe's
`licenses: {allow: [...]}` or `{deny: [...]}` refuses a build that would include anything
else, before any work (`check_policy`).
"""

from __future__ import annotations

import re
from typing import Any

RESEARCH_ONLY = "research-only"
UNKNOWN = "unknown"
SPECIAL = (RESEARCH_ONLY, UNKNOWN)

# Licence ids the Hugging Face Hub accepts in a card's `license:` field
# (https://huggingface.co/docs/hub/repositories-licenses); any other id goes to the card as
# `license: other` with `license_name`.
HUB_IDS = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause
bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0
cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1
eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc lppl-1.3c ms-pl
mpl-2.0 odc-by odbl osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl unknown
""".split())
_ID = re.compile(r"[a-z0-9][a-z0-9.+-]*")


class LicenseError(ValueError):
    """A licence name that is not an id, or a build its recipe's licence policy refuses."""


def normalize(name: str) -> str:
    """The id as stored and compared: lower case, trimmed (`MIT` -> `mit`,
    `Apache-2.0` -> `apache-2.0`). Anything that is not one word of letters, digits, `.`,
    `+` or `-` is an error naming what would work."""
    text = str(name).strip().lower()
    if not _ID.fullmatch(text):
        raise LicenseError(f"licence {name!r} is not an id: give an SPDX id such as mit, "
                           f"apache-2.0 or cc-by-4.0, or {RESEARCH_ONLY} or {UNKNOWN}")
    return text


def entry(source: str, license: str, url: str | None, set_by: str) -> dict[str, Any]:
    """One manifest entry: the source, its licence id, where that is stated, and who set it
    (`converter` or `--license`)."""
    return {"source": source, "license": normalize(license), "url": url, "set_by": set_by}


def for_converter(conv_cls, override: str | None = None) -> dict[str, Any]:
    """The entry of a conversion: the converter's published licence, or `override`."""
    if override is not None:
        return entry(conv_cls.source, override, None, "--license")
    return entry(conv_cls.source, conv_cls.license, conv_cls.license_url, "converter")


def of_manifest(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """A version's licence entries. A version published before licences were recorded:
    its converter's licence for a canonical conversion, else one `unknown` entry."""
    if isinstance(manifest.get("licenses"), list):
        return manifest["licenses"]
    recipe = manifest.get("recipe") or {}
    source = recipe.get("convert", {}).get("source") if isinstance(recipe, dict) else None
    if source:
        from meddata.converters import get

        try:
            return [for_converter(get(source))]
        except KeyError:
            pass
    return [entry(f"{manifest.get('kind')}/{manifest.get('name')}@{manifest.get('id')}",
                  UNKNOWN, None, "not recorded")]


def union(lists) -> list[dict[str, Any]]:
    """The distinct entries of several versions, sorted by source and licence."""
    seen: dict[tuple, dict[str, Any]] = {}
    for entries in lists:
        for e in entries:
            seen.setdefault((e["source"], e["license"], e.get("url")), e)
    return [seen[k] for k in sorted(seen, key=lambda k: (k[0], k[1], k[2] or ""))]


def inherit(store, parents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The licences of a version made from `parents` (manifest parent records): the union
    of those whose rows it holds. Parents with a `role` (dedup_against, benchmark,
    retrieval_index) lend no rows and no licence."""
    data = [p for p in parents if isinstance(p, dict) and not p.get("role")]
    return union(of_manifest(store.resolve(p["ref"]).manifest) for p in data)


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return sorted({e["license"] for e in entries})


def card_fields(entries: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The dataset card's YAML licence fields, as the Hugging Face Hub reads them: one id
    (`license: mit`); an id the Hub does not list, such as research-only, as `license:
    other` with `license_name` (and `license_link` when known); several ids as `license:
    other`, `license_name: mixed` and the list in `license_details`."""
    if not entries:
        return {}
    found = ids(entries)
    if len(found) == 1:
        one = found[0]
        if one in HUB_IDS:
            return {"license": one}
        links = sorted({e["url"] for e in entries if e.get("url")})
        return {"license": "other", "license_name": one,
                **({"license_link": links[0]} if len(links) == 1 else {})}
    return {"license": "other", "license_name": "mixed",
            "license_details": "; ".join(
                f"{lic}: " + ", ".join(sorted({e['source'] for e in entries
                                               if e['license'] == lic}))
                for lic in found)}


def describe(entries: list[dict[str, Any]]) -> list[str]:
    """One line per entry: the source, its licence, and where that is stated."""
    return [f"{e['source']}: {e['license']}" + (f" ({e['url']})" if e.get("url") else "")
            + {"--license": " (set with --license)",
               "not recorded": " (not recorded)"}.get(e.get("set_by"), "")
            for e in entries]


def card_lines(entries: list[dict[str, Any]] | None) -> list[str]:
    """The card's body lines: each source with its licence and where that is stated."""
    if not entries:
        return []
    return ["", "## Licences", "",
            "The rows come from sources under these terms; each row keeps its source's.",
            ""] + [f"- {line}" for line in describe(entries)]


def check_policy(policy: dict[str, Any] | None, sources: list[tuple[str, list[dict]]]) -> None:
    """Refuse, in one line, a build whose sources hold a licence the policy does not allow.
    `policy` is the recipe's `licenses` ({allow: [...]} or {deny: [...]}); `sources` pairs
    each recipe source's name with its licence entries."""
    if not policy:
        return
    allow = {normalize(x) for x in policy.get("allow") or []} if "allow" in policy else None
    deny = {normalize(x) for x in policy.get("deny") or []}
    for where, entries in sources:
        for e in entries:
            lic = e["license"]
            if (allow is not None and lic not in allow) or lic in deny:
                rule = (f"allow: [{', '.join(sorted(allow))}]" if allow is not None
                        else f"deny: [{', '.join(sorted(deny))}]")
                raise LicenseError(
                    f"{where}: source {e['source']} is licensed {lic}, which the recipe's "
                    f"licenses ({rule}) refuses; nothing was built (drop the source, or "
                    "change the policy if its terms suit your use)")


def check_policy_settings(policy: Any, where: str = "recipe.licenses") -> None:
    """A `licenses:` value that is a mapping with exactly one of allow or deny, each a list
    of ids; anything else is an error naming the key."""
    if policy is None:
        return
    if not isinstance(policy, dict) or len(policy) != 1 or \
            next(iter(policy)) not in ("allow", "deny"):
        raise LicenseError(f"{where}: give {{allow: [ids]}} or {{deny: [ids]}}, for example "
                           f"{{deny: [{RESEARCH_ONLY}, {UNKNOWN}]}}")
    key, values = next(iter(policy.items()))
    if isinstance(values, str):
        values = policy[key] = [values]
    if not isinstance(values, list) or not values:
        raise LicenseError(f"{where}.{key}: give a list of licence ids, for example [mit, "
                           "apache-2.0, cc-by-4.0]")
    for v in values:
        try:
            normalize(v)
        except LicenseError as e:
            raise LicenseError(f"{where}.{key}: {e}") from None
