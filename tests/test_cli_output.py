"""What the CLI prints for scripts and for terminals (issue 33): --json on ls, sql and build,
progress without carriage returns when stderr is not a terminal, no empty lines on a
terminal that reports no width, `ls` on a missing store, and what a republish did."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from meddata.cli import cli


def run_cli(*argv, stderr=subprocess.PIPE, env=None):
    env = {k: v for k, v in (env or os.environ).items()
           if not k.startswith(("TQDM_", "MEDDATA_PROGRESS"))}
    return subprocess.run([sys.executable, "-m", "meddata.cli", *argv], stdout=subprocess.PIPE,
                          stderr=stderr, env=env, timeout=600)


def test_piped_progress_has_no_carriage_returns(tmp_path):
    proc = run_cli("--store", str(tmp_path / "s"), "build", "sft")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    err = proc.stderr.decode()
    assert "\r" not in err and "\x1b[" not in err
    lines = err.splitlines()
    assert any(line.startswith("build sft: 62/62 rows (100 %)") for line in lines), err
    assert any(line.startswith("convert medqa: ") for line in lines)
    assert all(line.strip() for line in lines)
    assert proc.stdout.decode().startswith("published sft/examples@")
    quiet = run_cli("--store", str(tmp_path / "s2"), "build", "sft", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == b""


def test_terminal_without_a_width_gets_bars_not_empty_lines(tmp_path):
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()  # a new pseudo-terminal reports 0 columns
    proc = subprocess.Popen([sys.executable, "-m", "meddata.cli", "--store",
                             str(tmp_path / "s"), "build", "sft"], stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read().decode()
    assert proc.wait(timeout=600) == 0
    os.close(master)
    err = b"".join(chunks).decode()
    lines = err.replace("\r\n", "\n").split("\n")
    assert "build sft" in err and "100%" in err
    assert not [line for line in lines[:-1] if not line.strip("\r ")], repr(err[:500])
    assert out.startswith("published sft/examples@")


def test_ls_sql_build_json_and_a_missing_store(tmp_path):
    runner = CliRunner()
    store = str(tmp_path / "store")
    out = runner.invoke(cli, ["--store", store, "ls"])
    assert out.exit_code == 1 and out.output.count("\n") == 1
    assert f"there is no store at {store}" in out.output
    out = runner.invoke(cli, ["--store", store, "build", "sft", "--quiet", "--json"])
    assert out.exit_code == 0, out.output
    built = json.loads(out.output)
    assert built["ref"].startswith("sft/examples@") and built["rows"] == 51
    assert built["existed"] is False and built["tags_moved"] == ["v1", "latest"]
    assert built["validation"]["success"] and built["stages"][0]["stage"] == "select"
    listed = json.loads(runner.invoke(cli, ["--store", store, "ls", "--json", "sft"]).output)
    assert [(r["kind"], r["name"], r["id"], r["rows"], r["tags"]) for r in listed] == [
        ("sft", "examples", built["id"], 51, ["v1", "latest"])]
    out = runner.invoke(cli, ["--store", store, "sql", "--json",
                              "SELECT kind, name, rows FROM versions WHERE kind = 'sft'"])
    assert out.exit_code == 0 and json.loads(out.output) == [
        {"kind": "sft", "name": "examples", "rows": 51}]


def test_republishing_identical_content_says_so(tmp_path):
    runner = CliRunner()
    store = str(tmp_path / "store")
    first = runner.invoke(cli, ["--store", store, "build", "sft", "--quiet"])
    assert first.exit_code == 0 and "; tagged v1, latest" in first.output.splitlines()[0]
    again = runner.invoke(cli, ["--store", store, "build", "sft", "--quiet"])
    line = again.output.splitlines()[0]
    assert line.startswith("already existed: sft/examples@") and "its tags: latest, v1" in line
    assert "no tag moved" in line


def test_ls_imports_neither_pyarrow_nor_duckdb(tmp_path):
    assert CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "build", "sft",
                                    "--quiet"]).exit_code == 0
    code = ("import sys; from meddata.cli import main; "
            f"sys.argv=['meddata', '--store', {str(tmp_path / 's')!r}, 'ls']; main()")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                          capture_output=True, text=True)
    assert "sft/examples" in proc.stdout
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in proc.stderr.splitlines() if line.startswith("import time:")}
    for heavy in ("pyarrow", "duckdb", "pandas", "numpy"):
        assert heavy not in imported, f"{heavy} imported by meddata ls"


def test_max_tokens_without_a_tokenizer_warns_and_report_counts_real_tokens(tmp_path, tiny):
    runner = CliRunner()
    store = str(tmp_path / "store")
    out = runner.invoke(cli, ["--store", store, "build", "sft", "--quiet", "--max-tokens",
                              "4000"])
    assert out.exit_code == 0, out.output
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "give --tokenizer" in warnings[0]
    out = runner.invoke(cli, ["--store", store, "build", "sft", "--quiet", "--max-tokens",
                              "4000", "--tokenizer", tiny, "--name", "tok"])
    assert out.exit_code == 0 and "give --tokenizer" not in out.stderr
    page = tmp_path / "r.html"
    out = runner.invoke(cli, ["--store", store, "report", "sft/examples", "--out", str(page),
                              "--quiet", "--tokenizer", tiny])
    assert out.exit_code == 0, out.output
    assert "length (tokenizer)" in page.read_text(encoding="utf-8")
    runner.invoke(cli, ["--store", store, "report", "sft/examples", "--out", str(page),
                        "--quiet"])
    assert "length (tokenizer)" not in page.read_text(encoding="utf-8")


def test_build_says_why_validate_runs_more_checks(tmp_path):
    runner = CliRunner()
    store = str(tmp_path / "store")
    built = runner.invoke(cli, ["--store", store, "build", "sft", "--quiet"]).output
    line = next(x for x in built.splitlines() if x.startswith("validation: passed"))
    import re

    n = int(re.search(r"\((\d+) row checks", line).group(1))
    assert "adds 3 checks of the published files: row_conservation, shard_hashes, " \
        "row_count" in line
    validated = runner.invoke(cli, ["--store", store, "validate", "sft/examples"]).output
    assert f"passed ({n + 3} checks" in validated
