"""The data report: written by build (and by `meddata report`), self-contained, every
section present, its numbers equal to the manifest's; drawn by headless Chromium when the
machine has it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pyarrow as pa
import pytest
from click.testing import CliRunner

from meddata.cli import cli
from meddata.schema import CANONICAL
from meddata.store import Store

SECTIONS = ("summary", "plots", "dedup", "decontam", "rejects", "samples")


class Page(HTMLParser):
    """Sections by id (their texts in order, and their tables as rows of cells), tags seen,
    external references."""

    def __init__(self, text: str):
        super().__init__()
        self.sections: dict[str, list[str]] = {}
        self.tables: dict[str, list[list[list[str]]]] = {}
        self.tags: list[str] = []
        self.external: list[str] = []
        self._section: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "section":
            self._section = attrs.get("id")
            self.sections[self._section] = []
            self.tables[self._section] = []
        elif tag == "table" and self._section:
            self.tables[self._section].append([])
        elif tag == "tr" and self._section:
            self.tables[self._section][-1].append([])
        elif tag in ("td", "th") and self._section:
            self.tables[self._section][-1][-1].append("")
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            if re.match(r"(https?:)?//", value):
                self.external.append(value)

    def handle_data(self, data):
        if self._section and data.strip():
            self.sections[self._section].append(data.strip())
            if self.tags[-1] in ("td", "th"):
                self.tables[self._section][-1][-1][-1] += data.strip()


def build(store, kind, *extra):
    out = CliRunner().invoke(cli, ["--store", str(store), "build", kind, "--quiet", *extra])
    assert out.exit_code == 0, out.output
    return out


def cells_after(texts: list[str], label: str) -> str:
    return texts[texts.index(label) + 1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    build(root / "store", "preference")
    return Store(root / "store")


def test_build_writes_the_report_into_the_version(built):
    v = built.resolve("preference/examples")
    assert v.manifest["report"] == "report.html"
    assert "[report.html](report.html)" in (v.path / "README.md").read_text()
    text = (v.path / "report.html").read_text()
    page = Page(text)
    assert set(SECTIONS) <= set(page.sections)
    assert "script" not in page.tags and page.external == []  # opens offline, no CDN
    summary = page.sections["summary"]
    m = v.manifest
    assert cells_after(summary, "rows") == f"{m['rows']:,}"
    assert cells_after(summary, "id") == v.id
    for source, n in m["stats"]["counts"]["source"].items():
        assert cells_after(summary, source) == str(n)
    # rejects: the per-reason table sums to the manifest's count
    (counts, *_) = page.tables["rejects"]
    assert counts[0] == ["stage", "reason", "file", "rows"]
    by_reason: dict[str, int] = {}
    for _stage, reason, _file, n in counts[1:]:
        by_reason[reason] = by_reason.get(reason, 0) + int(n.replace(",", ""))
    assert by_reason == m["rejects"]["by_reason"] and sum(by_reason.values()) > 0
    assert text.count("<svg") >= 7  # lengths per split, mix, ledger, drops, chosen/rejected
    for source in m["stats"]["counts"]["source"]:
        assert source in page.sections["samples"]


def test_no_report_and_the_report_command(tmp_path):
    store = tmp_path / "store"
    build(store, "sft", "--no-report", "--name", "a")
    a = Store(store).resolve("sft/a")
    assert "report" not in a.manifest and not (a.path / "report.html").exists()
    build(store, "sft", "--validation-ratio", "0.3", "--name", "b")
    b = Store(store).resolve("sft/b")
    out_file = tmp_path / "changes.html"
    out = CliRunner().invoke(cli, ["--store", str(store), "report", "sft/b", "--against",
                                   "sft/a", "--out", str(out_file), "--quiet"])
    assert out.exit_code == 0, out.output
    page = Page(out_file.read_text())
    assert "against" in page.sections
    from meddata.catalog import diff

    d = diff(a, b)
    against = page.sections["against"]
    for what in ("added", "removed", "changed"):
        assert cells_after(against, what) == f"{d[what]['count']:,}"
    bad = CliRunner().invoke(cli, ["--store", str(store), "report", "sft/nope"])
    assert bad.exit_code != 0 and "sft/nope" in bad.output


def test_dedup_clusters_and_decontam_matches(tmp_path):
    store = Store(tmp_path / "store")
    q = "A {} year old man has fever, cough and chest pain for three days. What is the diagnosis?"
    opts = [{"label": "A", "text": "pneumonia"}, {"label": "B", "text": "asthma"}]

    def row(i, question, split="train"):
        return {"id": f"x/{i}", "source": "medqa", "subset": "us", "split": split, "lang": "en",
                "task": "mcq", "question": question, "context": None, "options": opts,
                "answer_label": "A", "answer": "pneumonia", "rationale": None, "response": None,
                "meta": "{}", "raw_sha1": f"{i:040d}", "turns": None}
    rows = [row(i, q.format(40)) for i in range(3)] + [row(9, "Which vitamin prevents scurvy?")]
    store.publish("canonical", "train", CANONICAL, [pa.Table.from_pylist(rows, CANONICAL)])
    bench = [row(100, "Which vitamin prevents scurvy?", "test")]
    store.publish("canonical", "bench", CANONICAL, [pa.Table.from_pylist(bench, CANONICAL)])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "name": "clean", "sources": [{"ref": "canonical/train"}], "dedup": {},
        "decontam": {"against": ["canonical/bench"]}}))
    build(store.root, "sft", "--recipe", str(recipe), "--allow-invalid")
    v = store.resolve("sft/clean")
    page = Page((v.path / "report.html").read_text())
    dedup = " ".join(page.sections["dedup"])
    assert "Cluster of 3 rows, kept x/0" in dedup and "exact_duplicate" in dedup
    decontam = " ".join(page.sections["decontam"])
    assert "benchmark item x/100" in decontam and "scurvy" in decontam


def test_counts_do_not_depend_on_the_batch_size(built, monkeypatch):
    from meddata import report

    v = built.resolve("preference/examples")
    whole = report.collect(v)
    monkeypatch.setattr(report, "READ_ROWS", 7)
    batched = report.collect(v)
    assert whole.rows_seen == batched.rows_seen == v.rows
    assert whole.lengths.keys() == batched.lengths.keys()
    for key in whole.lengths:
        assert (whole.lengths[key] == batched.lengths[key]).all()
    assert (whole.chosen == batched.chosen).all() and whole.chosen.sum() == v.rows


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="no chromium binary (Debian: apt install chromium)")
def test_headless_chromium_draws_the_plots(built, tmp_path):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    page = built.resolve("preference/examples").path / "report.html"
    proc = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=2000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    assert "Failed to load resource" not in proc.stderr
    dom = proc.stdout
    svgs = re.findall(r"<svg.*?</svg>", dom, re.S)
    assert len(svgs) >= 7
    assert all(re.search(r"<path[^>]+d=\"M", s) for s in svgs)  # each plot drew something
    shot = tmp_path / "shot.png"
    subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu",
                    "--window-size=1280,1600", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_report_reads_in_chinese_and_names_each_check(tmp_path):
    """CJK fonts in the page's font stack (body and plots), build-stage rejects named by
    stage and row rather than "-:", and every check with its observed value (issue 33,
    item 7)."""
    store = tmp_path / "store"
    build(store, "sft")
    v = Store(store).resolve("sft/examples")
    text = (v.path / "report.html").read_text()
    style = text[text.index("<style>"):text.index("</style>")]
    for font in ("Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei"):
        assert style.count(font) == 2, font  # the page's text and the plots' text
    page = Page(text)
    rejects = " ".join(page.sections["rejects"])
    assert "-:" not in rejects and "stage sft, row " in rejects
    summary = page.sections["summary"]
    checks = summary[summary.index("observed value") + 1:]
    assert "unique_ids" in checks and f"0 of {v.rows} rows unexpected (0.00 %)" in checks
    validated = CliRunner().invoke(cli, ["--store", str(store), "validate", "sft/examples",
                                         "--json", str(tmp_path / "v.json")])
    assert validated.exit_code == 0
    out = CliRunner().invoke(cli, ["--store", str(store), "report", "sft/examples", "--out",
                                   str(tmp_path / "r.html"), "--quiet"])
    assert out.exit_code == 0
    again = Page((tmp_path / "r.html").read_text()).sections["summary"]
    assert any(t.startswith("Checks (meddata validate") for t in again) or \
        any(t.startswith("Checks (the build") for t in again)
    assert "row_count" in again or "unique_ids" in again


def test_length_histograms_are_small_multiples_with_whole_counts():
    import numpy as np

    from meddata import report

    hists = {name: np.zeros(len(report.EDGES), np.int64) for name in ("a", "b", "c")}
    hists["a"][1] = 1
    hists["b"][2] = 2
    hists["c"][4] = 1
    svg = report.length_plot(hists, 100, "estimate", "t")
    assert svg.count('<g id="axes_') == 3  # one plot per series
    ticks = re.findall(r'<g id="ytick_\d+">.*?<text[^>]*>([^<]*)</text>', svg, re.S)
    assert ticks and all(t.strip().lstrip("−-").isdigit() for t in ticks), ticks  # whole rows
    two = report.length_plot({k: hists[k] for k in ("a", "b")}, None, "estimate", "t")
    assert two.count('<g id="axes_') == 1 and "opacity: 0.25" in two  # see-through steps
    assert "length (estimate); bins as marked" in svg


def test_chinese_renders_with_the_pages_font_stack(tmp_path):
    """With a CJK font installed (fonts-noto-cjk), headless Chromium draws the report's
    Chinese text with real glyphs: the screenshot differs from one of the same number of
    characters no font has (drawn as empty boxes)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("no chromium")
    fonts = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True) \
        if shutil.which("fc-list") else None
    if fonts is None or not fonts.stdout.strip():
        pytest.skip("no CJK font installed (apt-get install fonts-noto-cjk)")
    from meddata import report

    def shot(text: str, name: str) -> bytes:
        page = tmp_path / f"{name}.html"
        page.write_text(f"<!doctype html><meta charset='utf-8'><style>{report.STYLE}</style>"
                        f"<body><p style='font-size:40px'>{text}</p></body>",
                        encoding="utf-8")
        png = tmp_path / f"{name}.png"
        subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu",
                        "--window-size=600,200", f"--screenshot={png}", page.as_uri()],
                       capture_output=True, timeout=120, check=True)
        return png.read_bytes()

    chinese = shot("糖尿病是代谢性疾病", "zh")
    boxes = shot("\U000f0000" * 9, "boxes")  # a private-use plane: no font has these
    again = shot("糖尿病是代谢性疾病", "zh2")
    assert chinese == again and chinese != boxes
