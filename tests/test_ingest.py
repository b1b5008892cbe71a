"""Ingest behaviour over small trees built at test time: duplicates, bad input, re-runs."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from pipeline.cli import EXIT_REJECTIONS, cli
from pipeline.config import Settings
from pipeline.ingest import ingest
from pipeline.warehouse.query import run_readonly_query


def _settings(root: Path, workers: int = 0) -> Settings:
    return Settings(raw_dir=root / "raw", warehouse_dir=root / "warehouse", reports_dir=root / "reports",
                    workers=workers)


def _q(settings: Settings, sql: str) -> pl.DataFrame:
    return run_readonly_query(settings.snapshot_path, sql, max_rows=None)


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_run(sim_club: dict[str, Any], athlete: str = "knee") -> list[Path]:
    """Two good FIT files of one simulated athlete."""
    files = sorted(
        sim_club["raw"] / a["file"] for a in sim_club["truth"]["activities"]
        if a["athlete_id"] == athlete and a["format"] == "fit" and not a.get("broken")
    )
    return files[:2]


@pytest.mark.corpus
def test_same_run_in_three_formats_is_one_activity(tmp_path: Path, corpus_dir: Path) -> None:
    settings = _settings(tmp_path, workers=2)
    folder = settings.raw_dir / "ann"
    folder.mkdir(parents=True)
    names = ["fit/heartandsole__testdata.fit", "gpx/heartandsole__testdata.gpx", "tcx/heartandsole__testdata.tcx",
             "fit/sportslib__2067489619.fit", "gpx/sportslib__2067489619.gpx"]
    for name in names:
        shutil.copy(corpus_dir / name, folder / Path(name).name)
    summary = ingest(settings)
    assert summary.loaded == 2 and summary.duplicates == 3, summary.as_dict()
    acts = _q(settings, "SELECT source_file, source_format FROM activities ORDER BY source_file")
    assert acts["source_format"].to_list() == ["fit", "fit"]
    ledger = {r["path"]: r for r in _q(settings, "SELECT * FROM files").to_dicts()}
    for name in ["heartandsole__testdata.gpx", "heartandsole__testdata.tcx", "sportslib__2067489619.gpx"]:
        row = ledger[f"ann/{name}"]
        assert row["status"] == "duplicate" and row["duplicate_of"], row
    dup = _q(settings, "SELECT count(*) AS n FROM activity_duplicates")["n"][0]
    assert dup == 3


def test_bad_input_is_named_recorded_and_left_untouched(tmp_path: Path, sim_club: dict[str, Any]) -> None:
    settings = _settings(tmp_path)
    folder = settings.raw_dir / "kim"
    (folder / "activities").mkdir(parents=True)
    good = _one_run(sim_club)
    for path in good:
        shutil.copy(path, folder / "activities" / path.name)
    (folder / "activities" / "empty.fit").write_bytes(b"")
    (folder / "activities" / "photo.fit").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)
    (folder / "activities" / "doctype.gpx").write_text(
        '<?xml version="1.0"?><!DOCTYPE gpx [<!ENTITY x "y">]><gpx version="1.1" creator="t"><trk><trkseg>'
        '<trkpt lat="1" lon="1"><time>2026-01-01T00:00:00Z</time></trkpt></trkseg></trk></gpx>')
    (settings.raw_dir / "stray.fit").write_bytes(good[0].read_bytes())
    (folder / "athlete.toml").write_text('name = "Kim"\ntimezone = "Mars/Olympus"\n')
    (folder / "pain.csv").write_text("date,onset,body_part,side,severity,notes\n"
                                     "2026-10-01,9.6 km,knee,right,11,too much\n"
                                     "01/10/2026,9.6 km,knee,right,3,ambiguous date\n")
    before = _tree_digest(settings.raw_dir)
    runner = CliRunner()
    result = runner.invoke(cli, ["ingest", "--raw", str(settings.raw_dir), "--warehouse",
                                 str(settings.warehouse_dir), "--workers", "0"])
    assert result.exit_code == EXIT_REJECTIONS, result.output
    assert "Traceback" not in result.output
    out = result.output
    assert "rejected kim/activities/empty.fit:" in out
    assert "rejected kim/activities/photo.fit:" in out
    assert "rejected kim/activities/doctype.gpx:" in out
    assert "rejected stray.fit: not inside an athlete folder" in out
    assert "rejected kim/athlete.toml:" in out
    assert "pain row rejected kim/pain.csv:2: severity must be 0-10 (got 11)" in out
    assert "pain row rejected kim/pain.csv:3:" in out
    assert _tree_digest(settings.raw_dir) == before, "the raw folder must never change"
    ledger = {r["path"]: r for r in _q(settings, "SELECT path, status, reason FROM files").to_dicts()}
    for name in ["kim/activities/empty.fit", "kim/activities/photo.fit", "kim/activities/doctype.gpx", "stray.fit"]:
        assert ledger[name]["status"] == "rejected" and ledger[name]["reason"], name
    assert sum(r["status"] == "loaded" for r in ledger.values()) == len(good)
    rejected_rows = _q(settings, "SELECT source_file, line, reason FROM pain_rows_rejected ORDER BY line")
    assert rejected_rows["line"].to_list() == [2, 3]


def test_rerun_is_a_no_op_and_new_files_add_only_their_rows(tmp_path: Path, sim_club: dict[str, Any]) -> None:
    settings = _settings(tmp_path)
    folder = settings.raw_dir / "kim" / "activities"
    folder.mkdir(parents=True)
    first, second = _one_run(sim_club)
    shutil.copy(first, folder / first.name)
    s1 = ingest(settings)
    assert s1.loaded == 1
    counts = "SELECT (SELECT count(*) FROM activities) AS a, (SELECT count(*) FROM samples) AS s, " \
             "(SELECT count(*) FROM files) AS f"
    c1 = _q(settings, counts).row(0)
    s2 = ingest(settings)
    assert (s2.loaded, s2.unchanged) == (0, 1)
    assert _q(settings, counts).row(0) == c1
    # the same bytes under another name: recorded as a duplicate file, no new rows
    shutil.copy(first, folder / ("copy-of-" + first.name))
    s3 = ingest(settings)
    assert s3.duplicates == 1 and s3.loaded == 0
    c3 = _q(settings, counts).row(0)
    assert c3[:2] == c1[:2]
    shutil.copy(second, folder / second.name)
    s4 = ingest(settings)
    assert s4.loaded == 1
    c4 = _q(settings, counts).row(0)
    n_second = _q(settings, f"SELECT n_samples FROM activities WHERE source_file LIKE '%{second.name}'")["n_samples"][0]
    assert c4[0] == c1[0] + 1 and c4[1] == c1[1] + n_second
    # a raw file that disappears is reported and kept
    (folder / second.name).unlink()
    s5 = ingest(settings)
    assert s5.missing_files == [f"kim/activities/{second.name}"]
    assert _q(settings, counts).row(0)[:2] == c4[:2]


def test_an_unchanged_file_is_not_read_again(tmp_path: Path, sim_club: dict[str, Any]) -> None:
    settings = _settings(tmp_path)
    folder = settings.raw_dir / "kim" / "activities"
    folder.mkdir(parents=True)
    first, second = _one_run(sim_club)
    target = folder / "run.fit"
    shutil.copy(first, target)
    assert ingest(settings).loaded == 1
    stat = target.stat()
    ledger = _q(settings, "SELECT path, size_bytes, mtime_ns FROM files")
    assert ledger.rows() == [("kim/activities/run.fit", stat.st_size, stat.st_mtime_ns)]
    # other bytes behind the same path, size and modification time: taken as unchanged, not read
    other = bytearray(target.read_bytes())
    other[-3] ^= 0xFF  # breaks the CRC: reading it would reject it
    target.write_bytes(bytes(other))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    s2 = ingest(settings)
    assert (s2.unchanged, s2.loaded, s2.rejected) == (1, 0, [])
    # a new modification time: read, hashed and judged again
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    s3 = ingest(settings)
    assert [path for path, _ in s3.rejected] == ["kim/activities/run.fit"]
    # same bytes as before with a new time (e.g. a copy that kept nothing): unchanged by content
    shutil.copy(first, target)
    s4 = ingest(settings)
    assert (s4.unchanged, s4.loaded, s4.rejected) == (1, 0, [])


def test_strava_export_zip_and_gz_load(tmp_path: Path, sim_club: dict[str, Any]) -> None:
    settings = _settings(tmp_path)
    folder = settings.raw_dir / "kim"
    folder.mkdir(parents=True)
    first, second = _one_run(sim_club)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("activities.csv", "Activity ID,Activity Date,Activity Name,Activity Type,Filename\n"
                                      "1,x,Morning Run,Run,activities/1.fit.gz\n")
        zf.writestr("activities/1.fit.gz", gzip.compress(first.read_bytes(), mtime=0))
    (folder / "export_123.zip").write_bytes(buf.getvalue())
    (folder / (second.name + ".gz")).write_bytes(gzip.compress(second.read_bytes(), mtime=0))
    summary = ingest(settings)
    assert summary.loaded == 2, summary.as_dict()
    acts = _q(settings, "SELECT source_file FROM activities ORDER BY source_file")["source_file"].to_list()
    assert acts == sorted(["kim/export_123.zip!activities/1.fit.gz", f"kim/{second.name}.gz"])
    again = ingest(settings)
    assert again.loaded == 0
