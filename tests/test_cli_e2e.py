"""End to end: simulate -> nightly -> DuckDB rows and HTML reports, through the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from pipeline.cli import EXIT_LOCKED, EXIT_REFUSED, EXIT_REJECTIONS, cli

REPO = Path(__file__).resolve().parents[1]


def _tree(tmp_path: Path, sim_club: dict[str, Any]) -> dict[str, Path]:
    raw = tmp_path / "data" / "raw"
    shutil.copytree(sim_club["raw"], raw)
    return {"raw": raw, "warehouse": tmp_path / "data" / "warehouse", "reports": tmp_path / "reports"}


def _args(tree: dict[str, Path], *names: str) -> list[str]:
    out: list[str] = []
    for name in names:
        out += [f"--{name}", str(tree[name])]
    return out


def _count(db: Path, sql: str) -> Any:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_nightly_end_to_end(tmp_path: Path, sim_club: dict[str, Any], clean_env: None) -> None:
    tree = _tree(tmp_path, sim_club)
    truth = sim_club["truth"]
    runner = CliRunner()
    result = runner.invoke(cli, ["nightly", *_args(tree, "raw", "warehouse", "reports"), "--workers", "2"])
    # the simulator plants a truncated and a corrupt file: the run completes and says so
    assert result.exit_code == EXIT_REJECTIONS, result.output
    broken = [a["file"] for a in truth["activities"] if a.get("broken")]
    assert len(broken) >= 2
    for rel in broken:
        assert f"rejected {rel}:" in result.output
    assert "summary run=" in result.output

    db = tree["warehouse"] / "pipeline.duckdb"
    snapshot = tree["warehouse"] / "snapshot.duckdb"
    assert db.is_file() and snapshot.is_file()

    good = [a for a in truth["activities"] if not a.get("broken")]
    originals = [a for a in good if not a.get("duplicate_of")]
    (n_acts,) = _count(snapshot, "SELECT count(*) FROM activities")[0]
    assert n_acts == len(originals)
    # every loaded activity's sample count equals what the simulator wrote
    rows = dict(_count(snapshot, "SELECT source_file, n_samples FROM activities"))
    for act in originals:
        assert rows[act["file"]] == act["n_records"], act["file"]
    (n_samples,) = _count(snapshot, "SELECT count(*) FROM samples")[0]
    assert n_samples == sum(a["n_records"] for a in originals)
    # ledger: every file has a status, broken ones rejected with a reason
    ledger = dict(_count(snapshot, "SELECT path, status FROM files"))
    for rel in broken:
        assert ledger[rel] == "rejected"
    dups = [a["file"] for a in good if a.get("duplicate_of")]
    for rel in dups:
        assert ledger[rel] == "duplicate"
    # pain reports: nothing dropped
    n_rows = sum(1 for _ in truth["pain_reports"])
    (n_pain,) = _count(snapshot, "SELECT count(*) FROM pain_reports WHERE superseded_utc IS NULL")[0]
    assert n_pain == n_rows

    # one report page per athlete plus the club index
    athletes = sorted(truth["athletes"])
    assert (tree["reports"] / "index.html").is_file()
    for athlete_id in athletes:
        page = tree["reports"] / athlete_id / "index.html"
        assert page.is_file() and page.stat().st_size > 1000

    # idempotent: a second run loads nothing new and changes no row counts
    before = _count(snapshot, "SELECT (SELECT count(*) FROM activities), (SELECT count(*) FROM samples)")
    again = runner.invoke(cli, ["nightly", *_args(tree, "raw", "warehouse", "reports")])
    assert again.exit_code == 0, again.output
    assert "0 loaded" in again.output
    assert _count(snapshot, "SELECT (SELECT count(*) FROM activities), (SELECT count(*) FROM samples)") == before


def test_sql_command_reads_snapshot_and_refuses_writes(tmp_path: Path, sim_club: dict[str, Any],
                                                       clean_env: None) -> None:
    tree = _tree(tmp_path, sim_club)
    runner = CliRunner()
    runner.invoke(cli, ["ingest", *_args(tree, "raw", "warehouse"), "--workers", "0"])
    ok = runner.invoke(
        cli,
        ["sql", "--warehouse", str(tree["warehouse"]), "--format", "csv", "-p", "a", "knee",
         "SELECT athlete_id, count(*) AS n FROM activities WHERE athlete_id = $a GROUP BY 1"],
    )
    assert ok.exit_code == 0, ok.output
    lines = ok.output.strip().splitlines()
    assert lines[0] == "athlete_id,n" and lines[1].startswith("knee,")
    refused = runner.invoke(cli, ["sql", "--warehouse", str(tree["warehouse"]), "DROP TABLE activities"])
    assert refused.exit_code == EXIT_REFUSED
    assert "error:" in refused.output


def test_second_ingest_is_locked_out(tmp_path: Path, sim_club: dict[str, Any], clean_env: None) -> None:
    """While one process holds the warehouse, `pipeline ingest` exits at once with code 4."""
    from pipeline.warehouse import Warehouse

    tree = _tree(tmp_path, sim_club)
    with Warehouse.open(tree["warehouse"] / "pipeline.duckdb"):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", "ingest", *_args(tree, "raw", "warehouse")],
            capture_output=True, text=True, timeout=60, env=env,
        )
    assert proc.returncode == EXIT_LOCKED, proc.stderr
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_help_has_an_example_for_every_command() -> None:
    runner = CliRunner()
    for name in ["simulate", "ingest", "report", "nightly", "sql"]:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0
        assert "Example" in result.output, name
        assert f"pipeline {name}" in result.output or "crontab" in result.output, name


def test_console_script_and_module_agree() -> None:
    exe = Path(sys.executable).parent / "pipeline"
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    a = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    b = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, timeout=60)
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout


def test_missing_raw_folder_is_a_usage_error(tmp_path: Path, clean_env: None) -> None:
    result = CliRunner().invoke(cli, ["ingest", "--raw", str(tmp_path / "nope"), "--warehouse", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert "raw folder" in result.output and "does not exist" in result.output
    assert not (tmp_path / "w").exists()
