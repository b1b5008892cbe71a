"""Bulk-export zips as users download them: Strava (activities.csv + files) and Garmin Connect (nested zips)."""

from __future__ import annotations

import gzip
import io
import shutil
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipeline.config import Settings
from pipeline.errors import RejectedFile
from pipeline.ingest import ingest
from pipeline.sources.archive import ArchiveLimits, read_export_index, read_strava_activities, strava_sport
from pipeline.warehouse.query import run_readonly_query

# The header of a current Strava export (shortened after the first repeats; Strava repeats names).
STRAVA_HEADER = ("Activity ID,Activity Date,Activity Name,Activity Type,Activity Description,Elapsed Time,"
                 "Distance,Max Heart Rate,Relative Effort,Commute,Activity Private Note,Activity Gear,Filename,"
                 "Athlete Weight,Bike Weight,Elapsed Time,Moving Time,Distance,Max Speed")
BOM = "\ufeff"


def _row(activity_id: str, activity_type: str, filename: str, description: str = "") -> str:
    fields = [activity_id, '"Oct 23, 2026, 5:23:59 AM"', "Morning", activity_type, description, "1724", "5.07",
              "145", "12", "false", "", "", filename, "", "", "1724.0", "1724.0", "5076.1", "4.1"]
    return ",".join(fields)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _settings(root: Path, workers: int = 0) -> Settings:
    return Settings(raw_dir=root / "raw", warehouse_dir=root / "warehouse", reports_dir=root / "reports",
                    workers=workers)


def _q(settings: Settings, sql: str) -> pl.DataFrame:
    return run_readonly_query(settings.snapshot_path, sql, max_rows=None)


def _tcx_other(start: datetime, n: int = 120, run_cadence: int = 88) -> bytes:
    """A TCX activity with ``Sport="Other"``, as Garmin Connect exports an activity it has no sport for."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<TrainingCenterDatabase '
             'xmlns="http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2" '
             'xmlns:ns3="http://www.garmin.com/xmlschemas/ActivityExtension/v2"><Activities>',
             f'<Activity Sport="Other"><Id>{start.strftime("%Y-%m-%dT%H:%M:%SZ")}</Id>'
             f'<Lap StartTime="{start.strftime("%Y-%m-%dT%H:%M:%SZ")}"><TotalTimeSeconds>{n - 1}</TotalTimeSeconds>'
             f"<DistanceMeters>{(n - 1) * 3.0}</DistanceMeters><TriggerMethod>Manual</TriggerMethod><Track>"]
    for i in range(n):
        t = (start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        parts.append(f"<Trackpoint><Time>{t}</Time><Position><LatitudeDegrees>{46 + i * 2.7e-5}</LatitudeDegrees>"
                     f"<LongitudeDegrees>7.0</LongitudeDegrees></Position><AltitudeMeters>500</AltitudeMeters>"
                     f"<DistanceMeters>{i * 3.0}</DistanceMeters><HeartRateBpm><Value>140</Value></HeartRateBpm>"
                     f"<Extensions><ns3:TPX><ns3:Speed>3.0</ns3:Speed><ns3:RunCadence>{run_cadence}</ns3:RunCadence>"
                     f"</ns3:TPX></Extensions></Trackpoint>")
    parts.append("</Track></Lap></Activity></Activities></TrainingCenterDatabase>")
    return "".join(parts).encode()


def _sim_files(sim_club: dict[str, Any]) -> dict[str, Any]:
    acts = sim_club["truth"]["activities"]
    gpx = next(a for a in acts if a["format"] == "gpx")
    fit = next(a for a in acts if a["format"] == "fit" and a["sport"] == "running" and not a.get("broken")
               and a["athlete_id"] != gpx["athlete_id"])
    return {"gpx": gpx, "fit": fit}


# --------------------------------------------------------------------------- activities.csv


def test_strava_types_map_to_fit_sports() -> None:
    assert strava_sport("Run") == ("running", None)
    assert strava_sport("Trail Run") == ("running", "trail")
    assert strava_sport("TrailRun") == ("running", "trail")  # the API's spelling
    assert strava_sport("Virtual Run") == ("running", "virtual_activity")
    assert strava_sport("Ride") == ("cycling", None)
    assert strava_sport("E-Bike Ride") == ("cycling", "e_bike_fitness")
    assert strava_sport("Gravel Ride") == ("cycling", "gravel_cycling")
    assert strava_sport("Mountain Bike Ride") == ("cycling", "mountain")
    assert strava_sport("Virtual Ride") == ("cycling", "virtual_activity")
    assert strava_sport("Walk") == ("walking", None)
    assert strava_sport("Hike") == ("hiking", None)
    assert strava_sport("Swim") == ("swimming", None)
    assert strava_sport("Kitesurf") == ("kitesurf", None)
    assert strava_sport("Stand Up Paddling") == ("stand_up_paddling", None)
    assert strava_sport("  ") is None and strava_sport(None) is None


def test_activities_csv_read_by_header_name() -> None:
    text = (BOM + STRAVA_HEADER + "\n"
            + _row("101", "Run", "activities/101.gpx", '"Easy, then ""fast""\nsecond line"') + "\n"
            + "\n"
            + _row("102", "Ride", "") + "\n"
            + "103,x,y,Walk\n")  # a row cut short: the missing cells are empty
    rows = read_strava_activities(text.encode("utf-8"), path="export.zip!activities.csv")
    assert [(r.activity_id, r.activity_type, r.filename) for r in rows] == [
        ("101", "Run", "activities/101.gpx"), ("102", "Ride", ""), ("103", "Walk", "")]
    assert rows[0].line == 3 and rows[1].line == 5  # the description spans two lines
    # an older export: lower-case names, another order
    old = "id,date,name,type,description,elapsed_time,distance,commute,gear,filename\n" \
          "7,2015-01-01,Run,Run,,100,1.0,false,,activities/7.gpx\n"
    (r,) = read_strava_activities(old.encode(), path="old.zip!activities.csv")
    assert (r.activity_id, r.activity_type, r.filename) == ("7", "Run", "activities/7.gpx")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"Activity ID,Activity Date,Activity Type,Filename\n1,x,Run\xe9,a.gpx\n", "not UTF-8"),
        (b"Aktivitaets-ID,Datum,Name,Dateiname\n1,x,y,a.gpx\n", "no 'Activity Type' column"),
        (b"Activity Date,Activity Type\nx,Run\n", "neither a 'Filename' nor an 'Activity ID'"),
        (b"", "empty CSV"),
        (b'Activity ID,Activity Type,Filename\n1,Run,"' + b"x" * 200_000 + b'"\n', "not a readable CSV"),
    ],
    ids=["latin1", "localised-header", "no-file-column", "empty", "huge-field"],
)
def test_unusable_activities_csv_is_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(RejectedFile, match=message) as info:
        read_strava_activities(data, path="export.zip!activities.csv")
    assert info.value.path == "export.zip!activities.csv"
    assert info.value.line is not None or info.value.offset is not None or not data


def test_export_index_matches_rows_to_members_and_never_fails() -> None:
    csv_text = (STRAVA_HEADER + "\n" + _row("1", "Run", "activities/1.gpx") + "\n"
                + _row("2", "Hike", "") + "\n"  # no Filename: matched by its id
                + _row("3", "Ride", "activities/missing.fit.gz") + "\n"  # no such member
                + _row("4", "", "activities/4.tcx") + "\n")  # no type: nothing to say
    members = {"export_9/activities.csv": csv_text.encode(), "export_9/activities/1.gpx": b"<gpx/>",
               "export_9/activities/2.fit.gz": b"x", "export_9/activities/4.tcx": b"<x/>",
               "export_9/profile.json": b"{}"}
    index = read_export_index(Path("e.zip"), data=_zip(members))
    assert index.sports == {"export_9/activities/1.gpx": ("running", None),
                            "export_9/activities/2.fit.gz": ("hiking", None)}
    assert index.other_members == 2  # the CSV and the JSON
    assert index.note == "export_9/activities.csv: 4 rows, a type for 2 of 3 activity files"
    # a CSV above the size limit, or unreadable, leaves an empty index with a note, never an error
    small = read_export_index(Path("e.zip"), data=_zip(members), limits=ArchiveLimits(max_csv_bytes=100))
    assert small.sports == {} and "above the 100-byte limit" in (small.note or "")
    bad = read_export_index(Path("e.zip"), data=_zip({"activities.csv": b"\xff\xfe\x00junk"}))
    assert bad.sports == {} and "activities.csv not used: not UTF-8" in (bad.note or "")
    assert read_export_index(Path("e.zip"), data=b"not a zip") == read_export_index(Path("e.zip"), data=_zip({}))


# --------------------------------------------------------------------------- Strava export, ingested


def _strava_export(sim_club: dict[str, Any], *, csv_bytes: bytes | None) -> bytes:
    files = _sim_files(sim_club)
    gpx = (sim_club["raw"] / files["gpx"]["file"]).read_bytes()
    assert b"<type>running</type>" in gpx
    members = {
        "activities/555.gpx": gpx.replace(b"<type>running</type>", b""),  # as a phone app may write it
        "activities/556.tcx.gz": gzip.compress(_tcx_other(datetime(2024, 5, 4, 7, 30, tzinfo=timezone.utc)), mtime=0),
        "activities/557.fit.gz": gzip.compress((sim_club["raw"] / files["fit"]["file"]).read_bytes(), mtime=0),
        "profile.csv": b"Athlete ID,Email\n1,a@b.c\n",
    }
    if csv_bytes is not None:
        members = {"activities.csv": csv_bytes, **members}
    return _zip(members)


def _load_export(root: Path, export: bytes, workers: int = 0) -> tuple[Settings, Any]:
    settings = _settings(root, workers)
    folder = settings.raw_dir / "kim"
    folder.mkdir(parents=True)
    (folder / "export_123.zip").write_bytes(export)
    return settings, ingest(settings)


def test_strava_csv_gives_the_sport_a_file_leaves_unknown(tmp_path: Path, sim_club: dict[str, Any]) -> None:
    csv_text = (BOM + STRAVA_HEADER + "\n"
                + _row("555", "Run", "") + "\n"  # the GPX, matched by its id
                + _row("556", "Trail Run", "activities/556.tcx.gz", '"hills, mud"') + "\n"
                + _row("557", "Ride", "activities/557.fit.gz") + "\n"  # the FIT says running: the file wins
                + _row("558", "Yoga", "") + "\n")  # a manual activity: no file
    # decoded in worker processes: the CSV's sport travels with the job
    settings, summary = _load_export(tmp_path / "with", _strava_export(sim_club, csv_bytes=csv_text.encode()),
                                     workers=2)
    assert summary.loaded == 3 and not summary.rejected, summary.as_dict()
    acts = {r["source_file"].rsplit("/", 1)[-1]: r for r in _q(
        settings, "SELECT source_file, sport, sub_sport, avg_cadence_spm FROM activities").to_dicts()}
    truth_gpx = _sim_files(sim_club)["gpx"]
    assert (acts["555.gpx"]["sport"], acts["555.gpx"]["sub_sport"]) == ("running", None)
    # as a run, the GPX's strides/min cadence is doubled into steps/min, as the simulator's truth has it
    assert acts["555.gpx"]["avg_cadence_spm"] == pytest.approx(truth_gpx["avg_cadence_spm"], abs=1.5)
    assert (acts["556.tcx.gz"]["sport"], acts["556.tcx.gz"]["sub_sport"]) == ("running", "trail")
    assert acts["556.tcx.gz"]["avg_cadence_spm"] == pytest.approx(176.0)
    assert acts["557.fit.gz"]["sport"] == "running"
    archive = _q(settings, "SELECT status, reason FROM files WHERE path = 'kim/export_123.zip'").row(0, named=True)
    assert archive["status"] == "skipped"
    assert archive["reason"] == ("archive: 3 members read; 2 other files passed over (not activity files); "
                                 "activities.csv: 4 rows, a type for 3 of 3 activity files")

    # the same export without its CSV: the GPX and TCX stay of unknown sport, cadence as recorded
    settings2, summary2 = _load_export(tmp_path / "without", _strava_export(sim_club, csv_bytes=None))
    assert summary2.loaded == 3
    plain = {r["source_file"].rsplit("/", 1)[-1]: r for r in _q(
        settings2, "SELECT source_file, sport, avg_cadence_spm FROM activities").to_dicts()}
    assert plain["555.gpx"]["sport"] == plain["556.tcx.gz"]["sport"] == "generic"
    assert plain["555.gpx"]["avg_cadence_spm"] == pytest.approx(truth_gpx["avg_cadence_spm"] / 2, abs=1.0)


def test_a_broken_strava_csv_is_noted_and_the_files_still_load(tmp_path: Path, sim_club: dict[str, Any]) -> None:
    latin1 = (STRAVA_HEADER + "\n" + _row("555", "Run", "", "Caf\xe9 run") + "\n").encode("latin-1")
    settings, summary = _load_export(tmp_path, _strava_export(sim_club, csv_bytes=latin1))
    assert summary.loaded == 3 and not summary.rejected, summary.as_dict()
    reason = _q(settings, "SELECT reason FROM files WHERE path = 'kim/export_123.zip'")["reason"][0]
    assert "activities.csv not used: not UTF-8 text" in reason
    sports = _q(settings, "SELECT sport FROM activities ORDER BY source_file")["sport"].to_list()
    assert sports == ["generic", "generic", "running"]


# --------------------------------------------------------------------------- Garmin Connect account export


def _garmin_export(fits: dict[str, bytes], *, extra: dict[str, bytes] | None = None) -> bytes:
    """The layout of a Garmin Connect account export: the FIT files in a nested zip, JSON everywhere else."""
    return _zip({
        "DI_CONNECT/DI-Connect-User/user_profile.json": b'{"userName": "kim"}',
        "DI_CONNECT/DI-Connect-Fitness/kim_0_summarizedActivities.json": b'[{"summarizedActivitiesExport": []}]',
        "DI_CONNECT/DI-Connect-Wellness/2026-09-01_2026-12-10_123_sleepData.json": b"[]",
        "DI_CONNECT/DI-Connect-Metrics/MetricsMaxMetData_20260101_20261231_123.json": b"[]",
        "DI_CONNECT/DI-Connect-Uploaded-Files/UploadedFiles_0-_Part1.zip": _zip(fits),
        **(extra or {}),
    })


def test_garmin_account_export_loads_its_fit_files(tmp_path: Path, sim_club: dict[str, Any]) -> None:
    knee = [a for a in sim_club["truth"]["activities"]
            if a["athlete_id"] == "knee" and a["format"] == "fit" and not a.get("broken")][:2]
    fits = {f"kim@example.com_{100 + i}.fit": (sim_club["raw"] / a["file"]).read_bytes() for i, a in enumerate(knee)}
    settings = _settings(tmp_path)
    folder = settings.raw_dir / "kim"
    folder.mkdir(parents=True)
    (folder / "garmin_export.zip").write_bytes(_garmin_export(fits))
    summary = ingest(settings)
    assert summary.loaded == 2 and not summary.rejected and summary.skipped == 0, summary.as_dict()
    part = "kim/garmin_export.zip!DI_CONNECT/DI-Connect-Uploaded-Files/UploadedFiles_0-_Part1.zip!"
    acts = _q(settings, "SELECT source_file, device_product FROM activities ORDER BY source_file")
    assert acts["source_file"].to_list() == [part + name for name in sorted(fits)]
    # the simulator's watch is a Forerunner 945 (product 3113): named from the FIT SDK's table
    assert acts["device_product"].to_list() == [a["device"]["product_name"] for a in knee]
    ledger = _q(settings, "SELECT path, status, reason FROM files ORDER BY path")
    assert not any(p.endswith(".json") for p in ledger["path"].to_list()), "JSON files are passed over, not ledgered"
    archive = ledger.filter(pl.col("path") == "kim/garmin_export.zip").row(0, named=True)
    assert archive["status"] == "skipped"
    assert archive["reason"] == "archive: 2 members read; 4 other files passed over (not activity files)"
    again = ingest(settings)
    assert (again.loaded, again.unchanged) == (0, 1)


def test_garmin_export_nested_too_deep_is_refused_whole(tmp_path: Path, sim_club: dict[str, Any]) -> None:
    fit = next(a for a in sim_club["truth"]["activities"] if a["format"] == "fit" and not a.get("broken"))
    data = (sim_club["raw"] / fit["file"]).read_bytes()
    settings = _settings(tmp_path)
    folder = settings.raw_dir / "kim"
    folder.mkdir(parents=True)
    (folder / "deep.zip").write_bytes(_garmin_export({"a.fit": data, "more.zip": _zip({"b.fit": data})}))
    shutil.copy(sim_club["raw"] / fit["file"], folder / "single.fit")
    summary = ingest(settings)
    assert summary.loaded == 1  # the loose file; the archive is refused before any member loads
    (path, reason), = summary.rejected
    assert path == "kim/deep.zip" and "nested deeper than 2 levels" in reason
