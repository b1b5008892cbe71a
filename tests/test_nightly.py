"""`pipeline nightly`: reports rebuilt only when the warehouse changed; exit codes and the docs for cron.

Through click's CliRunner on a small copy of the simulated club; the processes (locks, readers,
progress bar on a terminal) are in tests/test_concurrency.py.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipeline import cli as cli_module
from pipeline.cli import cli

REPO = Path(__file__).resolve().parents[1]
OPERATIONS = REPO / "docs" / "operations.md"
#: Held back from the first run, added later.
LATER = "knee/activities/2026-11-12-0630-long.fit"


def _tree(tmp_path: Path, src: Path) -> dict[str, Path]:
    """The knee runner's folder (one athlete, four weeks of runs), without LATER."""
    raw = tmp_path / "raw"
    shutil.copytree(src / "knee", raw / "knee")
    (raw / LATER).unlink()
    return {"raw": raw, "warehouse": tmp_path / "warehouse", "reports": tmp_path / "reports"}


def _nightly(tree: dict[str, Path], *extra: str) -> Any:
    args = ["nightly", "--raw", str(tree["raw"]), "--warehouse", str(tree["warehouse"]),
            "--reports", str(tree["reports"]), "--workers", "0", *extra]
    result = CliRunner().invoke(cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def _pages(reports: Path) -> dict[str, int]:
    return {p.relative_to(reports).as_posix(): p.stat().st_mtime_ns for p in reports.rglob("*.html")}


def test_reports_are_rebuilt_only_when_the_warehouse_changed(
    sim_club: dict[str, Any], tmp_path: Path, clean_env: None
) -> None:
    tree = _tree(tmp_path, sim_club["raw"])
    first = _nightly(tree)
    assert first.exit_code == 0, first.output
    built = _pages(tree["reports"])
    assert set(built) == {"index.html", "knee/index.html"}
    manifest = json.loads((tree["reports"] / cli_module.REPORTS_MANIFEST).read_text())
    assert sorted(manifest["pages"]) == sorted(built) and len(manifest["fingerprint"]) == 64

    # nothing new: the ingest runs, the pages are kept as they are
    same = _nightly(tree)
    assert same.exit_code == 0, same.output
    assert "reports: 2 pages (unchanged: the warehouse did not change)" in same.output
    assert _pages(tree["reports"]) == built
    assert "summary run=" in same.output.splitlines()[-1]

    # a new run in the raw folder: rebuilt
    shutil.copy2(sim_club["raw"] / LATER, tree["raw"] / LATER)
    grown = _nightly(tree)
    assert grown.exit_code == 0, grown.output
    assert "1 loaded" in grown.output and "unchanged: the warehouse" not in grown.output
    rebuilt = _pages(tree["reports"])
    assert all(rebuilt[page] > built[page] for page in built)

    # an edited pain log changes the warehouse too (no new file): rebuilt
    with (tree["raw"] / "knee" / "pain.csv").open("a", encoding="utf-8") as fh:
        fh.write("2026-11-15,08:12,3 km,calf,left,2,a new niggle\n")
    edited = _nightly(tree)
    assert edited.exit_code == 0, edited.output
    assert "0 loaded" in edited.output and "unchanged: the warehouse" not in edited.output
    again = _pages(tree["reports"])
    assert all(again[page] > rebuilt[page] for page in rebuilt)

    # a page gone missing is written again, although the warehouse did not change
    (tree["reports"] / "knee" / "index.html").unlink()
    healed = _nightly(tree)
    assert "unchanged: the warehouse" not in healed.output
    assert (tree["reports"] / "knee" / "index.html").is_file()

    # and --all-reports rebuilds regardless
    before = _pages(tree["reports"])
    forced = _nightly(tree, "--all-reports")
    assert forced.exit_code == 0 and "unchanged: the warehouse" not in forced.output
    assert all(t > before[p] for p, t in _pages(tree["reports"]).items())


def test_the_fingerprint_ignores_bookkeeping_only(sim_ingested: dict[str, Any], tmp_path: Path) -> None:
    """A re-run changes run ids and timestamps but not the fingerprint; one changed value does."""
    from pipeline.warehouse import Warehouse
    from pipeline.warehouse.content import BOOKKEEPING_COLUMNS

    db = tmp_path / "copy.duckdb"
    shutil.copy(sim_ingested["settings"].snapshot_path, db)
    with Warehouse.open(db) as wh:
        before = wh.content_fingerprint()
        for table, columns in BOOKKEEPING_COLUMNS.items():
            sets = ", ".join(
                f'"{c}" = now()' if c.endswith("_utc") else f'"{c}" = 42' if c.endswith("_ns")
                else f"\"{c}\" = 'another-run'"
                for c in columns
            )
            wh.query(f"UPDATE {table} SET {sets}")
        wh.query("INSERT INTO _ingest_runs (run_id, command, started_utc, status) VALUES ('x', 'y', now(), 'ok')")
        assert wh.content_fingerprint() == before
        wh.query("UPDATE activities SET avg_hr_bpm = avg_hr_bpm + 1 WHERE rowid = (SELECT min(rowid) FROM activities)")
        changed = wh.content_fingerprint()
        assert changed != before
        # samples, laps and pauses are counted (written only with their activity row)
        wh.query("DELETE FROM samples WHERE rowid = (SELECT min(rowid) FROM samples)")
        assert wh.content_fingerprint() not in (before, changed)


# ---------------------------------------------------------------------- docs/operations.md


def test_exit_codes_are_documented() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    documented = {int(code) for code in re.findall(r"^\|\s*(\d+)\s*\|", text, flags=re.M)}
    codes = {getattr(cli_module, name) for name in dir(cli_module) if name.startswith("EXIT_")}
    assert documented == codes


def test_the_cron_and_systemd_examples_run_the_real_command() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    cron = [line for line in text.splitlines() if re.match(r"^\d+ \d+ \* \* \*", line)]
    assert len(cron) == 1 and "pipeline -v nightly" in cron[0] and ">>" in cron[0] and "2>&1" in cron[0]
    assert "ExecStart=/srv/pipeline/.venv/bin/pipeline -v nightly" in text
    assert re.search(r"^SuccessExitStatus=3 4$", text, flags=re.M)
    assert "OnCalendar=" in text and "Persistent=true" in text and "WantedBy=timers.target" in text
    # the options the examples use exist
    for args in (["-v", "nightly", "--help"], ["nightly", "--wait", "--help"]):
        assert CliRunner().invoke(cli, args).exit_code == 0


@pytest.mark.parametrize("option", ["--raw", "--warehouse", "--reports", "--wait", "--workers", "--all-reports"])
def test_nightly_options_are_documented(option: str) -> None:
    assert option in OPERATIONS.read_text(encoding="utf-8")
