"""Every onset form joins to the right run and sample, in two time zones, across DST changes.

The test writes its own pain logs for simulated runs of the ``spike`` (America/New_York,
DST ends 2026-11-01) and ``control`` (Europe/Berlin, DST ends 2026-10-25) athletes. The
truth comes from reading the FIT files with fitparse directly (independently of our
importer): a target record is picked in each run and written in every onset form the
pain log accepts. After an ingest, each report must point at that run and at a sample
within 1 s (time forms) or 10 m (distance forms) of the target.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import fitparse
import polars as pl
import pytest

from pipeline.config import Settings
from pipeline.ingest import ingest
from pipeline.warehouse.query import run_readonly_query

MILE_M = 1609.344
ZONES = {"spike": "America/New_York", "control": "Europe/Berlin"}
DST_END = {"spike": datetime(2026, 11, 1).date(), "control": datetime(2026, 10, 25).date()}


def _records(path: Path) -> list[dict[str, Any]]:
    """(t_utc, distance_m, moving_s) per record, from fitparse and the timer events."""
    fit = fitparse.FitFile(str(path), check_crc=True)
    records: list[tuple[datetime, float]] = []
    stops: list[tuple[datetime, datetime | None]] = []
    for msg in fit.get_messages(["record", "event"]):
        values = msg.get_values()
        ts = values["timestamp"].replace(tzinfo=timezone.utc)
        if msg.name == "record":
            records.append((ts, float(values["distance"])))
        elif values.get("event") == "timer":
            if values.get("event_type") in ("stop", "stop_all"):
                stops.append((ts, None))
            elif values.get("event_type") == "start" and stops and stops[-1][1] is None:
                stops[-1] = (stops[-1][0], ts)
    start = records[0][0]
    out = []
    for ts, dist in records:
        paused = sum(
            ((min(ts, b) - a).total_seconds() for a, b in stops if b is not None and a < ts), 0.0
        )
        out.append({"t_utc": ts, "distance_m": dist, "moving_s": (ts - start).total_seconds() - paused})
    return out


def _pick_runs(truth: dict[str, Any], athlete: str) -> list[dict[str, Any]]:
    runs = [
        a for a in truth["activities"]
        if a["athlete_id"] == athlete and a["sport"] == "running" and a["format"] == "fit"
        and not a.get("broken") and a["has_gps"]
    ]
    dst = DST_END[athlete]

    def local_date(a: dict[str, Any]) -> Any:
        return datetime.fromisoformat(a["start_local"]).date()

    # the runs of the DST change week, plus one with a pause if there is one
    week = [a for a in runs if abs((local_date(a) - dst).days) <= 3]
    paused = [a for a in runs if a["n_pauses"] > 0 and a not in week][:1]
    chosen = week + paused
    # one run per local date, so the `run` column is never needed
    by_date: dict[Any, list[dict[str, Any]]] = {}
    for a in runs:
        by_date.setdefault(local_date(a), []).append(a)
    return [a for a in chosen if len(by_date[local_date(a)]) == 1]


def _fmt_hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"+{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _rows_for(run: dict[str, Any], records: list[dict[str, Any]], zone: str) -> list[dict[str, Any]]:
    """One pain-log row per onset form, all pointing at the same target record."""
    target = records[int(len(records) * 0.6)]
    local = target["t_utc"].astimezone(ZoneInfo(zone))
    date = local.date().isoformat()
    rows = [
        ("clock", local.strftime("%H:%M:%S"), "time"),
        ("instant", local.isoformat(), "time"),
        ("elapsed", _fmt_hms(target["moving_s"]), "moving"),
        ("distance_km", f"{target['distance_m'] / 1000:.3f} km", "distance"),
        ("distance_mi", f"{target['distance_m'] / MILE_M:.4f} mi", "distance"),
        ("distance_approx", f"~{target['distance_m'] / 1000:.3f} km", "distance"),
    ]
    return [
        {"date": date, "onset": onset, "form": form, "check": check, "file": run["file"], "target": target}
        for form, onset, check in rows
    ]


@pytest.fixture(scope="module")
def joined(sim_club: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("painjoin")
    raw = root / "raw"
    planted: dict[tuple[str, int], dict[str, Any]] = {}
    for athlete, zone in ZONES.items():
        runs = _pick_runs(sim_club["truth"], athlete)
        assert runs, f"no suitable runs for {athlete}"
        shutil.copytree(sim_club["raw"] / athlete, raw / athlete)
        rows: list[dict[str, Any]] = []
        for run in runs:
            rows += _rows_for(run, _records(sim_club["raw"] / run["file"]), zone)
        lines = ["date,onset,body_part,side,severity,notes"]
        for i, row in enumerate(rows):
            lines.append(f"{row['date']},{row['onset']},knee,left,3,form {row['form']}")
            planted[(f"{athlete}/pain.csv", i + 2)] = row
        (raw / athlete / "pain.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = Settings(raw_dir=raw, warehouse_dir=root / "wh", reports_dir=root / "rep", workers=2)
    ingest(settings)
    frame = run_readonly_query(
        settings.snapshot_path,
        "SELECT p.*, a.source_file AS activity_file FROM pain_reports p "
        "LEFT JOIN activities a USING (activity_id) WHERE p.superseded_utc IS NULL",
        max_rows=None,
    )
    got = {(r["source_file"], r["line"]): r for r in frame.to_dicts()}
    return {"planted": planted, "got": got, "settings": settings}


def test_each_form_in_two_zones_is_covered(joined: dict[str, Any]) -> None:
    forms = {(key[0].split("/")[0], row["form"]) for key, row in joined["planted"].items()}
    for athlete in ZONES:
        for form in ["clock", "instant", "elapsed", "distance_km", "distance_mi", "distance_approx"]:
            assert (athlete, form) in forms
    # the DST change week is in the planted set for both zones
    for athlete in ZONES:
        dates = {datetime.fromisoformat(r["date"]).date() for k, r in joined["planted"].items()
                 if k[0].startswith(athlete)}
        assert any(abs((d - DST_END[athlete]).days) <= 3 for d in dates), athlete


def test_every_form_joins_the_right_run_and_sample(joined: dict[str, Any]) -> None:
    for key, row in joined["planted"].items():
        got = joined["got"][key]
        where = f"{key[0]}:{key[1]} {row['onset']!r} ({row['form']})"
        assert got["status"] == "matched", (where, got["status"], got["status_detail"])
        assert got["activity_file"] == row["file"], where
        target = row["target"]
        if row["check"] in ("time", "moving"):
            assert abs((got["sample_t_utc"] - target["t_utc"]).total_seconds()) <= 1, where
        else:
            assert abs(got["onset_distance_m"] - target["distance_m"]) <= 10, where
        if row["form"] == "distance_approx":
            assert got["onset_approx"] is True
            assert got["onset_distance_lo_m"] < got["onset_distance_m"] < got["onset_distance_hi_m"], where


def test_appended_rows_add_only_new_reports_and_edits_keep_history(joined: dict[str, Any]) -> None:
    settings: Settings = joined["settings"]
    path = settings.raw_dir / "control" / "pain.csv"
    original = path.read_text(encoding="utf-8")
    lines = original.splitlines()

    def current() -> pl.DataFrame:
        return run_readonly_query(settings.snapshot_path,
                                  "SELECT report_id, line, severity, superseded_utc FROM pain_reports "
                                  "WHERE source_file = 'control/pain.csv'", max_rows=None)

    before = current()
    assert before["superseded_utc"].null_count() == before.height
    # append a row: exactly one new report, the old ones untouched
    extra = lines[1].split(",")
    extra[4], extra[5] = "2", "appended row"
    appended = lines + [",".join(extra)]
    path.write_text("\n".join(appended) + "\n", encoding="utf-8")
    ingest(settings)
    after = current()
    assert after.height == before.height + 1
    assert set(before["report_id"]) < set(after["report_id"])
    # edit a row's severity: the old version is kept, superseded; the new one is current
    edited = list(appended)
    parts = edited[1].split(",")
    assert parts[4] == "3"
    parts[4] = "7"
    edited[1] = ",".join(parts)
    path.write_text("\n".join(edited) + "\n", encoding="utf-8")
    ingest(settings)
    final = current()
    line2 = final.filter(pl.col("line") == 2)
    assert line2.height == 2
    assert line2.filter(pl.col("superseded_utc").is_null())["severity"].to_list() == [7]
    assert line2.filter(pl.col("superseded_utc").is_not_null())["severity"].to_list() == [3]
    path.write_text(original, encoding="utf-8")
