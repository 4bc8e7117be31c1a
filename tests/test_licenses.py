"""Licences: each converter's, recorded per version, carried through dedup, decontam and
build into the dataset card, and a recipe's allow/deny policy refusing a build before work."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from conftest import EXAMPLES
from meddata import convert, licenses
from meddata import recipe as recipe_mod
from meddata.builders import pipeline
from meddata.cli import cli
from meddata.converters import REGISTRY, get


def card_header(version) -> dict:
    text = (version.path / "README.md").read_text(encoding="utf-8")
    return yaml.safe_load(text.split("---")[1])


def test_every_converter_states_a_licence_and_where():
    for name in REGISTRY:
        cls = get(name)
        assert licenses.normalize(cls.license) == cls.license, name
        if cls.license != licenses.UNKNOWN:
            assert cls.license_url and cls.license_url.startswith("https://"), name
    assert get("pubmedqa").license == "mit"
    assert get("cmb").license == "apache-2.0"
    assert get("shennong").license == "research-only"
    assert get("corpus").license == "unknown"


def test_card_license_field_as_the_hub_reads_it():
    e = licenses.entry
    assert licenses.card_fields([e("a", "MIT", None, "converter")]) == {"license": "mit"}
    assert licenses.card_fields([e("a", "unknown", None, "converter")]) == {
        "license": "unknown"}
    assert licenses.card_fields([e("a", "research-only", "https://x", "converter")]) == {
        "license": "other", "license_name": "research-only", "license_link": "https://x"}
    mixed = licenses.card_fields([e("a", "mit", None, "converter"),
                                  e("b", "apache-2.0", None, "converter"),
                                  e("c", "mit", None, "converter")])
    assert mixed == {"license": "other", "license_name": "mixed",
                     "license_details": "apache-2.0: b; mit: a, c"}
    assert licenses.card_fields([]) == {}


def test_convert_records_the_licence_and_license_overrides(store, tmp_path):
    runner = CliRunner()
    s = ["--store", str(store.root)]
    out = runner.invoke(cli, s + ["convert", "medqa", str(EXAMPLES / "medqa"), "--quiet"])
    assert out.exit_code == 0, out.output
    v = store.resolve("canonical/medqa")
    assert v.manifest["licenses"] == [{"source": "medqa", "license": "mit", "set_by": "converter",
                                       "url": "https://github.com/jind11/MedQA/blob/master/LICENSE"}]
    assert card_header(v)["license"] == "mit"
    assert "medqa: mit (https://github.com/jind11/MedQA" in runner.invoke(
        cli, s + ["show", "canonical/medqa"]).output
    # the same rows under another licence: a version never changes, so it says what to do
    out = runner.invoke(cli, s + ["convert", "medqa", str(EXAMPLES / "medqa"), "--quiet",
                                  "--license", "CC-BY-4.0"])
    assert out.exit_code == 1
    assert "recorded under licence mit" in out.output and "another --name" in out.output
    out = runner.invoke(cli, s + ["convert", "medqa", str(EXAMPLES / "medqa"), "--quiet",
                                  "--license", "CC-BY-4.0", "--name", "medqa-ccby"])
    assert out.exit_code == 0, out.output
    v2 = store.resolve("canonical/medqa-ccby")
    assert licenses.ids(v2.manifest["licenses"]) == ["cc-by-4.0"]
    assert v2.manifest["licenses"][0]["set_by"] == "--license"
    out = runner.invoke(cli, s + ["convert", "medqa", str(EXAMPLES / "medqa"), "--quiet",
                                  "--license", "CC BY 4.0", "--name", "x"])
    assert out.exit_code == 1 and "is not an id" in out.output
    assert not (store.root / "canonical" / "x").exists()


def test_licences_travel_through_dedup_decontam_and_build_into_the_card(store):
    runner = CliRunner()
    s = ["--store", str(store.root)]
    for source, extra in (("medqa", []), ("shennong", []), ("medmcqa", ["--name", "bench"])):
        out = runner.invoke(cli, s + ["convert", source, str(EXAMPLES / source), "--quiet",
                                      *extra])
        assert out.exit_code == 0, out.output
    out = runner.invoke(cli, s + ["dedup", "canonical/shennong", "--quiet"])
    assert out.exit_code == 0, out.output
    steps = store.root.parent / "steps.yaml"
    steps.write_text("- dedup: {threshold: 0.9}\n")
    out = runner.invoke(cli, s + ["curate", "canonical/medqa", "--steps", str(steps),
                                  "--quiet"])
    assert out.exit_code == 0, out.output
    assert licenses.ids(store.resolve("canonical/medqa-curated").manifest["licenses"]) == [
        "mit"]
    out = runner.invoke(cli, s + ["decontam", "canonical/shennong-dedup", "--against",
                                  "canonical/bench", "--quiet"])
    assert out.exit_code == 0, out.output
    v = store.resolve("canonical/shennong-dedup-decontam")
    # the benchmark lends no rows, so no licence
    assert [(e["source"], e["license"]) for e in v.manifest["licenses"]] == [
        ("shennong", "research-only")]
    assert card_header(v)["license"] == "other"
    assert card_header(v)["license_name"] == "research-only"

    recipe = recipe_mod.from_dict({
        "name": "mixed", "sources": [{"ref": "canonical/medqa"},
                                     {"ref": "canonical/shennong-dedup-decontam"}],
        "dedup": {}, "decontam": {"against": ["canonical/bench"]}})
    built = pipeline.build("sft", recipe, store, progress=False)
    assert licenses.ids(built.manifest["licenses"]) == ["mit", "research-only"]
    header = card_header(built)
    assert header["license"] == "other" and header["license_name"] == "mixed"
    assert header["license_details"] == "mit: medqa; research-only: shennong"
    card = (built.path / "README.md").read_text(encoding="utf-8")
    assert "- shennong: research-only (https://github.com/michael-wzhu" in card
    page = (built.path / "report.html").read_text(encoding="utf-8")
    assert "<h3>Licences</h3>" in page and "<td>research-only</td>" in page
    shown = runner.invoke(cli, s + ["show", built.ref]).output
    assert "medqa: mit" in shown and "shennong: research-only" in shown


def test_a_policy_refuses_the_build_before_any_work(store):
    convert.publish(get("medqa")(), [str(EXAMPLES / "medqa")], store, progress=False)
    data = {"name": "p", "sources": [{"ref": "canonical/medqa"},
                                     {"source": "cmexam", "paths": [str(EXAMPLES / "cmexam")]}],
            "licenses": {"allow": ["MIT", "apache-2.0"]}}
    try:
        pipeline.build("sft", recipe_mod.from_dict(data), store, progress=False)
    except ValueError as e:
        message = str(e)
    else:
        raise AssertionError("a research-only source was built under allow: [mit, apache-2.0]")
    assert "\n" not in message
    assert message.startswith("recipe.sources[1]: source cmexam is licensed research-only")
    assert "allow: [apache-2.0, mit]" in message
    # before any work: cmexam was not converted, nothing was published
    assert not (store.root / "canonical" / "cmexam").exists()
    assert not (store.root / "sft").exists()

    data["licenses"] = {"deny": ["Unknown", "research-only"]}
    try:
        pipeline.build("sft", recipe_mod.from_dict(data), store, progress=False)
    except ValueError as e:
        assert "source cmexam is licensed research-only" in str(e)
        assert "deny: [research-only, unknown]" in str(e)
    else:
        raise AssertionError("a denied licence was built")
    # an override in the recipe is what the policy sees
    data["sources"][1]["license"] = "cc-by-4.0"
    data["licenses"] = {"deny": ["research-only"]}
    v = pipeline.build("sft", recipe_mod.from_dict(data), store, progress=False, report=False)
    assert licenses.ids(v.manifest["licenses"]) == ["cc-by-4.0", "mit"]


def test_recipe_licenses_settings_are_checked():
    base = {"sources": [{"ref": "canonical/x"}]}
    for bad, words in (({"allow": []}, "give a list of licence ids"),
                       ({"allow": ["mit"], "deny": ["unknown"]}, "{allow: [ids]} or"),
                       ({"permit": ["mit"]}, "{allow: [ids]} or"),
                       ({"deny": ["cc by"]}, "recipe.licenses.deny: licence 'cc by'")):
        try:
            recipe_mod.from_dict({**base, "licenses": bad})
        except recipe_mod.RecipeError as e:
            assert words in str(e), (bad, str(e))
        else:
            raise AssertionError(f"accepted licenses: {bad}")
    try:
        recipe_mod.from_dict({"sources": [{"ref": "canonical/x", "license": "mit"}]})
    except recipe_mod.RecipeError as e:
        assert "applies to `source` conversions" in str(e)
    else:
        raise AssertionError("license on a ref source accepted")
