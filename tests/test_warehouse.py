"""The DuckDB warehouse: schema, round trips, idempotence, locking, snapshots, views, docs.

Activities are built here with ``pl.DataFrame(schema=...)``; nothing depends
on the importers or the simulator.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from pipeline.errors import WarehouseError, WarehouseLocked
from pipeline.schema import (
    ACTIVITY_SCHEMA,
    LAP_SCHEMA,
    PAIN_REPORT_SCHEMA,
    PAUSE_SCHEMA,
    RUNNING_SPORTS,
    SAMPLE_SCHEMA,
    NormalisedActivity,
    as_utc,
)
from pipeline.warehouse import FileLoad, Warehouse, run_readonly_query
from pipeline.warehouse.migrations import MIGRATIONS

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "warehouse.md"
UTC = timezone.utc
T0 = datetime(2024, 5, 6, 6, 0, tzinfo=UTC)  # a Monday

# polars dtype -> DuckDB information_schema type, written independently of the migrations
DUCK_TYPE = {
    pl.String(): "VARCHAR",
    pl.Datetime("us", "UTC"): "TIMESTAMP WITH TIME ZONE",
    pl.Int32(): "INTEGER",
    pl.Int64(): "BIGINT",
    pl.Float64(): "DOUBLE",
    pl.Boolean(): "BOOLEAN",
    pl.Date(): "DATE",
}


# ---------------------------------------------------------------------- builders


def sha_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def make_activity(
    name: str,
    *,
    athlete: str = "ann",
    start: datetime = T0,
    minutes: float = 40,
    step_s: int = 5,
    session: int = 0,
    sport: str = "running",
    offset_s: int | None = 3600,
    profile: Any = None,
) -> NormalisedActivity:
    """A synthetic activity: samples every ``step_s`` s; ``profile(elapsed_s) -> (speed, cadence, hr)``."""
    profile = profile or (lambda t: (3.0, 170.0, 150.0))
    sha = sha_of(name)
    aid = f"{sha[:16]}-{session}"
    n = int(minutes * 60 / step_s) + 1
    t, el, dist, spd, cad, hr = [], [], [], [], [], []
    d = 0.0
    for i in range(n):
        e = float(i * step_s)
        s, c, h = profile(e)
        if i:
            d += spd[-1] * step_s
        t.append(start + timedelta(seconds=e))
        el.append(e)
        dist.append(d)
        spd.append(s)
        cad.append(c)
        hr.append(h)
    cols: dict[str, list[Any]] = {c: [None] * n for c in SAMPLE_SCHEMA}
    cols.update(
        activity_id=[aid] * n,
        t_utc=t,
        elapsed_s=el,
        moving_s=el,
        distance_m=dist,
        speed_mps=spd,
        cadence_spm=cad,
        hr_bpm=hr,
        lat_deg=[51.5 + i * 1e-5 for i in range(n)],
        lon_deg=[-0.1] * n,
    )
    samples = pl.DataFrame(cols, schema=SAMPLE_SCHEMA)
    end = t[-1]
    laps = pl.DataFrame(
        {
            "activity_id": [aid],
            "lap_index": [0],
            "start_utc": [start],
            "end_utc": [end],
            "elapsed_s": [el[-1]],
            "moving_s": [el[-1]],
            "distance_m": [dist[-1]],
            "avg_speed_mps": [dist[-1] / el[-1]],
            "avg_hr_bpm": [sum(hr) / n],
            "avg_cadence_spm": [sum(cad) / n],
            "trigger": ["session_end"],
        },
        schema=LAP_SCHEMA,
    )
    pauses = pl.DataFrame(
        {
            "activity_id": [aid],
            "pause_index": [0],
            "start_utc": [start + timedelta(minutes=1)],
            "end_utc": [start + timedelta(minutes=1, seconds=20)],
            "duration_s": [20.0],
        },
        schema=PAUSE_SCHEMA,
    )
    activity = {
        "activity_id": aid,
        "athlete_id": athlete,
        "sport": sport,
        "sub_sport": None,
        "start_utc": start,
        "end_utc": end,
        "utc_offset_s": offset_s,
        "timezone": "Europe/London",
        "tz_source": "gps",
        "elapsed_s": el[-1],
        "moving_s": el[-1],
        "distance_m": dist[-1],
        "distance_source": "device",
        "avg_speed_mps": dist[-1] / el[-1],
        "avg_hr_bpm": sum(hr) / n,
        "max_hr_bpm": max(hr),
        "avg_cadence_spm": sum(cad) / n,
        "avg_power_w": None,
        "total_ascent_m": 12.0,
        "total_descent_m": 11.0,
        "has_gps": True,
        "n_samples": n,
        "device_manufacturer": "garmin",
        "device_product": "fr965",
        "source_file": f"{athlete}/activities/{name}.fit",
        "source_format": "fit",
        "source_sha256": sha,
        "session_index": session,
    }
    return NormalisedActivity(activity=activity, samples=samples, laps=laps, pauses=pauses)


def ledger_for(act: NormalisedActivity, **extra: Any) -> dict[str, Any]:
    return {
        "path": act.activity["source_file"],
        "sha256": act.activity["source_sha256"],
        "size_bytes": 4321,
        "format": "fit",
        **extra,
    }


def pain_row(report_id: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in PAIN_REPORT_SCHEMA}
    row.update(
        report_id=report_id,
        athlete_id="ann",
        source_file="ann/pain.csv",
        line=2,
        date_local=date(2024, 5, 6),
        onset_raw="+30:00",
        onset_kind="elapsed",
        onset_approx=False,
        body_part="knee",
        body_part_raw="knee",
        side="left",
        severity=4,
        status="unmatched",
    )
    row.update(values)
    return row


def pain_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=PAIN_REPORT_SCHEMA)


NO_REJECTS = pl.DataFrame(schema={"source_file": pl.String(), "line": pl.Int32(), "reason": pl.String()})


def count(wh: Warehouse, table: str) -> int:
    return int(wh.query(f"SELECT count(*) AS n FROM {table}")["n"][0])


@pytest.fixture
def wh(tmp_path: Path):
    with Warehouse.open(tmp_path / "wh" / "pipeline.duckdb") as warehouse:
        warehouse.begin_run(command="pytest")
        yield warehouse


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ---------------------------------------------------------------------- schema and migrations


def test_migrations_are_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "w" / "pipeline.duckdb"
    with Warehouse.open(path) as wh:
        first = wh.query("SELECT version, name, applied_utc FROM _migrations ORDER BY version")
    assert first["version"].to_list() == [v for v, _, _ in MIGRATIONS]
    assert path.is_file() and Path(f"{path}.lock").is_file()
    with Warehouse.open(path) as wh:
        again = wh.query("SELECT version, name, applied_utc FROM _migrations ORDER BY version")
    assert_frame_equal(first, again)


def test_a_version_4_warehouse_keeps_its_samples_when_their_run_column_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 5 drops ``samples._run_id`` (a sample's run is its activity's), nothing else."""
    import pipeline.warehouse.migrations as migrations
    import pipeline.warehouse.store as store

    path = tmp_path / "pipeline.duckdb"
    act = make_activity("v4")
    # the schema and the writer as they were at version 4
    monkeypatch.setattr(migrations, "MIGRATIONS", [m for m in MIGRATIONS if m[0] <= 4])
    monkeypatch.setattr(store, "_RUN_VIA_ACTIVITY", frozenset())
    with Warehouse.open(path) as wh:
        assert "_run_id" in wh.query("SELECT * FROM samples LIMIT 0").columns  # as version 4 had it
        run_id = wh.begin_run(command="test")
        wh.load_file(ledger=ledger_for(act), activities=[act])
        wh.finish_run(run_id, status="ok", summary={})
        before = wh.query("SELECT * EXCLUDE (_run_id) FROM samples ORDER BY t_utc")
    monkeypatch.undo()
    with Warehouse.open(path) as wh:
        assert wh.query("SELECT max(version) AS v FROM _migrations")["v"][0] == MIGRATIONS[-1][0] >= 5
        after = wh.query("SELECT * FROM samples ORDER BY t_utc")
        assert wh.query("SELECT DISTINCT _run_id FROM activities")["_run_id"].to_list() == [run_id]
    assert before.height == act.samples.height > 0
    assert_frame_equal(after, before)


def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.duckdb"
    with Warehouse.open(path) as wh:
        wh.query("INSERT INTO _migrations VALUES (999, 'from the future', now())")
    with pytest.raises(WarehouseError, match="version 999") as first:
        Warehouse.open(path)
    assert not isinstance(first.value, WarehouseLocked)
    # the failed open released the lock (flock conflicts across descriptors,
    # even in one process): a second attempt fails the same way, not "locked"
    with pytest.raises(WarehouseError, match="version 999") as second:
        Warehouse.open(path)
    assert not isinstance(second.value, WarehouseLocked)


@pytest.mark.parametrize(
    ("table", "schema", "extra"),
    [
        ("activities", ACTIVITY_SCHEMA, {"_run_id": "VARCHAR"}),
        ("samples", SAMPLE_SCHEMA, {}),  # a sample's run is its activity's
        ("laps", LAP_SCHEMA, {"_run_id": "VARCHAR"}),
        ("pauses", PAUSE_SCHEMA, {"_run_id": "VARCHAR"}),
        (
            "pain_reports",
            PAIN_REPORT_SCHEMA,
            {
                "first_seen_utc": "TIMESTAMP WITH TIME ZONE",
                "superseded_utc": "TIMESTAMP WITH TIME ZONE",
                "_run_id": "VARCHAR",
            },
        ),
    ],
)
def test_tables_follow_the_normalised_schema(wh: Warehouse, table: str, schema: dict, extra: dict) -> None:
    got = wh.query(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = $t ORDER BY ordinal_position",
        {"t": table},
    )
    expected = [(name, DUCK_TYPE[dtype]) for name, dtype in schema.items()] + list(extra.items())
    assert list(got.iter_rows()) == expected


# ---------------------------------------------------------------------- round trip

ZONES = ["UTC", "Asia/Kathmandu", "America/St_Johns", "Pacific/Chatham", "Europe/London"]
instants = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2090, 1, 1),
    timezones=st.sampled_from([UTC, ZoneInfo("Asia/Kathmandu"), ZoneInfo("America/St_Johns")]),
)
maybe_float = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
maybe_text = st.one_of(st.none(), st.text(max_size=12))


@st.composite
def activities(draw: st.DrawFn) -> NormalisedActivity:
    sha = draw(st.text("0123456789abcdef", min_size=64, max_size=64))
    session = draw(st.integers(0, 3))
    aid = f"{sha[:16]}-{session}"
    start = draw(instants)
    gaps = draw(st.lists(st.integers(1, 10**7), max_size=25))
    times, t = [], as_utc(start)
    for gap in gaps:
        times.append(t)
        t += timedelta(microseconds=gap)
    n = len(times)
    cols: dict[str, Any] = {"activity_id": [aid] * n, "t_utc": times}
    for name in SAMPLE_SCHEMA:
        if name not in cols:
            cols[name] = draw(st.lists(maybe_float, min_size=n, max_size=n))
    samples = pl.DataFrame(cols, schema=SAMPLE_SCHEMA)
    n_laps = draw(st.integers(0, 3))
    laps = pl.DataFrame(
        {
            "activity_id": [aid] * n_laps,
            "lap_index": list(range(n_laps)),
            "start_utc": draw(st.lists(instants.map(as_utc), min_size=n_laps, max_size=n_laps)),
            "end_utc": draw(st.lists(st.none() | instants.map(as_utc), min_size=n_laps, max_size=n_laps)),
            **{
                c: draw(st.lists(maybe_float, min_size=n_laps, max_size=n_laps))
                for c in ("elapsed_s", "moving_s", "distance_m", "avg_speed_mps", "avg_hr_bpm", "avg_cadence_spm")
            },
            "trigger": draw(st.lists(maybe_text, min_size=n_laps, max_size=n_laps)),
        },
        schema=LAP_SCHEMA,
    )
    n_pauses = draw(st.integers(0, 2))
    pauses = pl.DataFrame(
        {
            "activity_id": [aid] * n_pauses,
            "pause_index": list(range(n_pauses)),
            "start_utc": draw(st.lists(instants.map(as_utc), min_size=n_pauses, max_size=n_pauses)),
            "end_utc": draw(st.lists(instants.map(as_utc), min_size=n_pauses, max_size=n_pauses)),
            "duration_s": draw(st.lists(maybe_float, min_size=n_pauses, max_size=n_pauses)),
        },
        schema=PAUSE_SCHEMA,
    )
    row: dict[str, Any] = {}
    for name, dtype in ACTIVITY_SCHEMA.items():
        if dtype == pl.Float64():
            row[name] = draw(maybe_float)
        elif dtype == pl.String():
            row[name] = draw(maybe_text)
        elif dtype == pl.Int32():
            row[name] = draw(st.none() | st.integers(-(2**31), 2**31 - 1))
        elif dtype == pl.Int64():
            row[name] = draw(st.none() | st.integers(-(2**63), 2**63 - 1))
        elif dtype == pl.Boolean():
            row[name] = draw(st.none() | st.booleans())
        else:
            row[name] = draw(st.none() | instants)
    row.update(
        activity_id=aid,
        athlete_id=draw(st.text(min_size=1, max_size=8)),
        start_utc=start,  # aware in some zone: stored as the same instant
        source_sha256=sha,
        session_index=session,
    )
    return NormalisedActivity(activity=row, samples=samples, laps=laps, pauses=pauses)


def as_utc_frame(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Read-back frame in ``schema`` (instants converted to UTC), done here, not by the code under test."""
    out = df.select(list(schema))
    return out.with_columns(
        [pl.col(c).dt.convert_time_zone("UTC") for c, t in schema.items() if isinstance(t, pl.Datetime)]
    ).cast(schema)


@pytest.fixture(scope="module")
def shared_wh(tmp_path_factory: pytest.TempPathFactory):
    """One warehouse for the hypothesis examples (emptied before each)."""
    with Warehouse.open(tmp_path_factory.mktemp("rt") / "w.duckdb") as warehouse:
        yield warehouse


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(act=activities(), zone_in=st.sampled_from(ZONES), zone_out=st.sampled_from(ZONES))
def test_round_trip_preserves_every_value_and_instant(
    shared_wh: Warehouse, act: NormalisedActivity, zone_in: str, zone_out: str
) -> None:
    wh = shared_wh
    for table in ("activities", "samples", "laps", "pauses", "files", "_ingest_runs"):
        wh.query(f"DELETE FROM {table}")
    run_id = wh.begin_run(command="hypothesis")
    try:
        wh.query(f"SET TimeZone = '{zone_in}'")  # a session zone must not shift instants
        ledger = {"path": "x/a.fit", "sha256": act.activity["source_sha256"]}
        wh.load_file(ledger=ledger, activities=[act])
        wh.query(f"SET TimeZone = '{zone_out}'")

        got = wh.activities()
        utc_row = {k: as_utc(v) if isinstance(v, datetime) else v for k, v in act.activity.items()}
        expected = pl.DataFrame([utc_row], schema=ACTIVITY_SCHEMA, orient="row")
        assert got.schema == pl.Schema(ACTIVITY_SCHEMA)
        assert_frame_equal(got, expected, check_exact=True)
        assert got["start_utc"][0] == as_utc(act.activity["start_utc"])  # same instant, any zone

        samples = wh.samples_for([act.activity_id])
        assert samples.schema == pl.Schema(SAMPLE_SCHEMA)
        assert_frame_equal(samples, act.samples.sort("t_utc"), check_exact=True)
        assert samples["t_utc"].to_list() == sorted(act.samples["t_utc"].to_list())

        laps = wh.query("SELECT * FROM laps ORDER BY lap_index")
        assert_frame_equal(as_utc_frame(laps, LAP_SCHEMA), act.laps, check_exact=True)
        pauses = wh.query("SELECT * FROM pauses ORDER BY pause_index")
        assert_frame_equal(as_utc_frame(pauses, PAUSE_SCHEMA), act.pauses, check_exact=True)
        for table in ("activities", "laps", "pauses"):  # samples take their activity's run
            assert wh.query(f"SELECT DISTINCT _run_id FROM {table}")["_run_id"].to_list() in ([run_id], [])
    finally:
        wh.query("SET TimeZone = 'UTC'")
        wh.finish_run(run_id, status="ok", summary={})


def test_samples_are_stored_in_time_order(wh: Warehouse) -> None:
    act = make_activity("shuffled", minutes=2)
    shuffled_samples = act.samples.sample(fraction=1.0, shuffle=True, seed=3)
    shuffled = NormalisedActivity(act.activity, shuffled_samples, act.laps, act.pauses)
    wh.load_file(ledger=ledger_for(act), activities=[shuffled])
    stored = wh.query("SELECT t_utc FROM samples")  # physical order, no ORDER BY
    assert stored["t_utc"].to_list() == sorted(act.samples["t_utc"].to_list())


# ---------------------------------------------------------------------- ledger, idempotence, duplicates


def test_reloading_the_same_file_is_a_no_op(wh: Warehouse) -> None:
    act = make_activity("a")
    wh.load_file(ledger=ledger_for(act), activities=[act])
    before = {t: count(wh, t) for t in ("activities", "samples", "laps", "pauses", "files")}
    assert before == {"activities": 1, "samples": act.samples.height, "laps": 1, "pauses": 1, "files": 1}
    wh.load_file(ledger=ledger_for(act), activities=[act])
    assert {t: count(wh, t) for t in before} == before
    assert wh.file_known(act.activity["source_sha256"]) == "loaded"
    row = wh.ledger().row(0, named=True)
    assert row["status"] == "loaded"
    assert row["activity_ids"] == [act.activity_id]
    assert row["athlete_id"] == "ann"
    assert row["size_bytes"] == 4321


def test_file_known_and_record_file(wh: Warehouse) -> None:
    assert wh.file_known("f" * 64) is None
    x = {"path": "ann/activities/x.fit", "sha256": "f" * 64}
    wh.record_file(ledger={**x, "status": "rejected", "reason": "bad crc"})
    assert wh.file_known("f" * 64) == "rejected"
    first = wh.ledger().row(0, named=True)
    wh.record_file(ledger={**x, "status": "skipped", "reason": "settings"})
    rows = wh.ledger()
    assert rows.height == 1  # upserted by (sha256, path)
    assert rows["status"][0] == "skipped"
    assert rows["first_seen_utc"][0] == first["first_seen_utc"]
    wh.record_file(ledger={"path": "ann/activities/copy.fit", "sha256": "f" * 64, "status": "duplicate"})
    assert wh.ledger().height == 2
    assert wh.file_known("f" * 64) == "duplicate"  # duplicate outranks skipped
    with pytest.raises(WarehouseError, match="needs a reason"):
        wh.record_file(ledger={"path": "p", "sha256": "e" * 64, "status": "rejected"})
    with pytest.raises(WarehouseError, match="unknown keys"):
        wh.record_file(ledger={"path": "p", "sha256": "e" * 64, "status": "skipped", "reason": "r", "mtime": 1})
    with pytest.raises(WarehouseError, match="load_file"):
        wh.record_file(ledger={"path": "p", "sha256": "e" * 64, "status": "loaded"})


def test_a_loaded_file_is_never_downgraded(wh: Warehouse) -> None:
    act = make_activity("keep")
    wh.load_file(ledger=ledger_for(act), activities=[act])
    with pytest.raises(WarehouseError, match="already loaded"):
        wh.record_file(ledger=ledger_for(act, status="rejected", reason="oops"))
    assert wh.ledger()["status"].to_list() == ["loaded"]


def test_a_rejected_file_can_load_later(wh: Warehouse) -> None:
    act = make_activity("retry")
    wh.record_file(ledger=ledger_for(act, status="rejected", reason="parser bug"))
    wh.load_file(ledger=ledger_for(act), activities=[act])
    assert wh.ledger()["status"].to_list() == ["loaded"]
    assert count(wh, "activities") == 1


def test_missing_files_lists_vanished_paths_without_deleting(wh: Warehouse) -> None:
    a, b = make_activity("a"), make_activity("b", start=T0 + timedelta(days=1))
    for act in (a, b):
        wh.load_file(ledger=ledger_for(act), activities=[act])
    assert wh.missing_files({a.activity["source_file"]}) == [b.activity["source_file"]]
    assert wh.missing_files(set()) == sorted([a.activity["source_file"], b.activity["source_file"]])
    assert count(wh, "files") == 2 and count(wh, "activities") == 2


def test_duplicate_activities_are_recorded_apart_without_samples(wh: Warehouse) -> None:
    original = make_activity("watch")
    copy = make_activity("phone", start=T0 + timedelta(seconds=30))
    copy.activity["device_product"] = "pixel"
    wh.load_file(ledger=ledger_for(original), activities=[original])
    assert (
        wh.find_overlapping(athlete_id="ann", start_utc=copy.activity["start_utc"], end_utc=copy.activity["end_utc"])
        == original.activity_id
    )
    wh.load_file(ledger=ledger_for(copy), activities=[copy], duplicates={copy.activity_id: original.activity_id})
    # nothing of the copy in the activity tables: no query can count the run twice
    assert wh.query("SELECT activity_id FROM activities")["activity_id"].to_list() == [original.activity_id]
    assert wh.activities()["activity_id"].to_list() == [original.activity_id]
    assert wh.samples_for([copy.activity_id]).height == 0
    assert count(wh, "samples") == original.samples.height
    assert count(wh, "laps") == 1 and count(wh, "pauses") == 1
    assert wh.query("SELECT count(*) AS n FROM runs")["n"][0] == 1
    dup = wh.query("SELECT * FROM activity_duplicates").row(0, named=True)
    assert (dup["activity_id"], dup["duplicate_of"]) == (copy.activity_id, original.activity_id)
    assert dup["start_utc"] == copy.activity["start_utc"] and dup["device_product"] == "pixel"
    assert dup["source_file"] == copy.activity["source_file"] and dup["n_samples"] == copy.samples.height
    ledger = wh.ledger().filter(pl.col("path") == copy.activity["source_file"]).row(0, named=True)
    assert ledger["status"] == "duplicate" and ledger["duplicate_of"] == original.activity_id
    assert ledger["activity_ids"] == [copy.activity_id]
    # reloading the duplicate file is a no-op too
    wh.load_file(ledger=ledger_for(copy), activities=[copy], duplicates={copy.activity_id: original.activity_id})
    assert count(wh, "activity_duplicates") == 1


def test_a_file_with_one_new_and_one_duplicate_session(wh: Warehouse) -> None:
    original = make_activity("watch")
    fresh = make_activity("multi", session=0, start=T0 + timedelta(hours=3))
    dup = make_activity("multi", session=1, start=T0 + timedelta(minutes=1))
    wh.load_file(ledger=ledger_for(original), activities=[original])
    wh.load_file(ledger=ledger_for(fresh), activities=[fresh, dup], duplicates={dup.activity_id: original.activity_id})
    assert sorted(wh.activities()["activity_id"]) == sorted([original.activity_id, fresh.activity_id])
    row = wh.ledger().filter(pl.col("path") == fresh.activity["source_file"]).row(0, named=True)
    assert row["status"] == "loaded" and row["activity_ids"] == [fresh.activity_id, dup.activity_id]
    assert count(wh, "samples") == original.samples.height + fresh.samples.height


def test_duplicate_of_an_unknown_activity_rolls_back(wh: Warehouse) -> None:
    act = make_activity("orphan")
    with pytest.raises(WarehouseError, match="unknown activities"):
        wh.load_file(ledger=ledger_for(act), activities=[act], duplicates={act.activity_id: "nope-0"})
    for table in ("activities", "activity_duplicates", "files"):
        assert count(wh, table) == 0, table


# ---------------------------------------------------------------------- transactions and validation


def test_an_error_mid_load_leaves_no_partial_rows(wh: Warehouse) -> None:
    good = make_activity("multi", session=0)
    bad = make_activity("multi", session=1, start=T0 + timedelta(hours=1))
    # the second session claims to duplicate an activity that is not there: found inside the
    # transaction, after the first session's activity row, samples, laps and pauses went in
    with pytest.raises(WarehouseError, match="multi.fit.*unknown activities"):
        wh.load_file(ledger=ledger_for(good), activities=[good, bad], duplicates={bad.activity_id: "nope-0"})
    for table in ("activities", "samples", "laps", "pauses", "files", "activity_duplicates"):
        assert count(wh, table) == 0, table
    assert wh.file_known(good.activity["source_sha256"]) is None
    # the warehouse is usable afterwards and the good session alone loads
    wh.load_file(ledger=ledger_for(good), activities=[good])
    assert count(wh, "samples") == good.samples.height


def test_a_dated_activity_needs_a_time_on_every_sample(wh: Warehouse) -> None:
    act = make_activity("untimed")
    broken = act.samples.with_columns(
        pl.when(pl.int_range(pl.len()) == pl.len() - 1).then(None).otherwise(pl.col("t_utc")).alias("t_utc")
    )
    with pytest.raises(WarehouseError, match="untimed.fit.*1 rows without t_utc"):
        wh.load_file(ledger=ledger_for(act), activities=[NormalisedActivity(act.activity, broken, act.laps, act.pauses)])
    assert count(wh, "samples") == 0 and count(wh, "files") == 0


def test_frames_outside_the_schema_are_refused(wh: Warehouse) -> None:
    act = make_activity("odd")
    widened = act.samples.with_columns(pl.lit(1.0).alias("gct_balance"))
    extra = NormalisedActivity(act.activity, widened, act.laps, act.pauses)
    with pytest.raises(WarehouseError, match="unexpected columns"):
        wh.load_file(ledger=ledger_for(act), activities=[extra])
    missing = NormalisedActivity(act.activity, act.samples.drop("hr_bpm"), act.laps, act.pauses)
    with pytest.raises(WarehouseError, match="missing columns"):
        wh.load_file(ledger=ledger_for(act), activities=[missing])
    stray = NormalisedActivity({**act.activity, "shoe": "x"}, act.samples, act.laps, act.pauses)
    with pytest.raises(WarehouseError, match="shoe"):
        wh.load_file(ledger=ledger_for(act), activities=[stray])
    other = NormalisedActivity(act.activity, act.samples.with_columns(activity_id=pl.lit("zz-0")), act.laps, act.pauses)
    with pytest.raises(WarehouseError, match="another activity_id"):
        wh.load_file(ledger=ledger_for(act), activities=[other])
    with pytest.raises(WarehouseError, match="source_sha256"):
        wh.load_file(ledger=ledger_for(act, sha256="0" * 64), activities=[act])
    assert count(wh, "activities") == 0 and count(wh, "files") == 0


def test_load_needs_a_run(tmp_path: Path) -> None:
    act = make_activity("norun")
    with Warehouse.open(tmp_path / "w.duckdb") as wh:
        with pytest.raises(WarehouseError, match="begin_run"):
            wh.load_file(ledger=ledger_for(act), activities=[act])
        wh.load_file(ledger=ledger_for(act, run_id="manual"), activities=[act])
        assert wh.query("SELECT DISTINCT _run_id FROM activities")["_run_id"].to_list() == ["manual"]
        assert "_run_id" not in wh.query("SELECT * FROM samples LIMIT 0").columns  # the activity's run


# ---------------------------------------------------------------------- runs


def test_runs_are_recorded_and_a_crash_marks_them(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with Warehouse.open(path) as wh:
        run = wh.begin_run(command="pipeline ingest")
        wh.finish_run(run, status="ok", summary={"loaded": 3, "when": T0})
        row = wh.query("SELECT * FROM _ingest_runs").row(0, named=True)
    assert row["status"] == "ok" and row["command"] == "pipeline ingest"
    assert json.loads(row["summary"]) == {"loaded": 3, "when": str(T0)}
    assert row["finished_utc"] >= row["started_utc"]

    with pytest.raises(RuntimeError), Warehouse.open(path) as wh:
        failed = wh.begin_run(command="boom")
        raise RuntimeError("parser exploded")
    # a process that dies without closing: its run is 'running' until the next open
    code = (
        "from pathlib import Path; import os; from pipeline.warehouse import Warehouse\n"
        f"wh = Warehouse.open(Path({str(path)!r})); wh.begin_run(command='killed'); os._exit(1)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=subprocess_env(), check=False, timeout=60)
    with Warehouse.open(path) as wh:
        runs = {r["command"]: r for r in wh.query("SELECT * FROM _ingest_runs").iter_rows(named=True)}
    assert runs["boom"]["status"] == "failed" and "parser exploded" in runs["boom"]["summary"]
    assert runs["boom"]["run_id"] == failed
    assert runs["killed"]["status"] == "interrupted" and runs["killed"]["finished_utc"] is not None


# ---------------------------------------------------------------------- find_overlapping


@pytest.mark.parametrize(
    ("new", "min_overlap", "expect"),
    [
        ((0, 40), 0.5, "a"),  # identical
        ((20, 60), 0.5, "a"),  # 20 of 40 min = 0.5 of the shorter
        ((25, 65), 0.5, None),  # 15 of 40 min
        ((25, 65), 0.3, "a"),
        ((10, 20), 0.5, "a"),  # contained: 100 % of the shorter
        ((41, 50), 0.1, None),  # after
        ((-30, -1), 0.1, None),  # before
        ((30, 30), 0.5, "a"),  # zero-length inside
        ((100, 140), 0.5, "b"),
        ((60, 120), 0.5, "b"),  # 20 min of a 40-min 'b' but 0 of 'a'
        ((35, 105), 0.1, "a"),  # a: 5 of 40 (0.125) vs b: 5 of 40 -> tie on fraction and minutes -> earlier start
    ],
)
def test_find_overlapping(wh: Warehouse, new: tuple[int, int], min_overlap: float, expect: str | None) -> None:
    a = make_activity("a", minutes=40)
    b = make_activity("b", start=T0 + timedelta(minutes=100), minutes=40)
    other = make_activity("c", athlete="bob", minutes=40)
    for act in (a, b, other):
        wh.load_file(ledger=ledger_for(act), activities=[act])
    ids = {"a": a.activity_id, "b": b.activity_id, None: None}
    got = wh.find_overlapping(
        athlete_id="ann",
        start_utc=T0 + timedelta(minutes=new[0]),
        end_utc=T0 + timedelta(minutes=new[1]),
        min_overlap=min_overlap,
    )
    assert got == ids[expect]
    index = wh.overlap_index()
    assert index.find("ann", T0 + timedelta(minutes=new[0]), T0 + timedelta(minutes=new[1]),
                      min_overlap=min_overlap) == ids[expect]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spans=st.lists(st.tuples(st.sampled_from(["ann", "bob"]), st.integers(0, 600), st.integers(0, 240)),
                   min_size=1, max_size=12),
    queries=st.lists(st.tuples(st.sampled_from(["ann", "bob", "cat"]), st.integers(-60, 700), st.integers(0, 300),
                               st.sampled_from([0.1, 0.5, 0.9, 1.0])), min_size=1, max_size=10),
)
def test_overlap_index_answers_as_the_warehouse_query(
    shared_wh: Warehouse, spans: list[tuple[str, int, int]], queries: list[tuple[str, int, int, float]]
) -> None:
    wh = shared_wh
    for table in ("activities", "samples", "laps", "pauses", "files", "activity_duplicates", "_ingest_runs"):
        wh.query(f"DELETE FROM {table}")
    run_id = wh.begin_run(command="hypothesis")
    try:
        acts = [make_activity(f"s{i}", athlete=a, start=T0 + timedelta(minutes=m), minutes=max(d, 1), step_s=60)
                for i, (a, m, d) in enumerate(spans)]
        wh.load_files([FileLoad(ledger=ledger_for(act), activities=[act]) for act in acts])
        index = wh.overlap_index()
        assert len(index) == len(acts)
        for athlete, m, d, min_overlap in queries:
            start, end = T0 + timedelta(minutes=m), T0 + timedelta(minutes=m + d)
            expected = wh.find_overlapping(athlete_id=athlete, start_utc=start, end_utc=end, min_overlap=min_overlap)
            assert index.find(athlete, start, end, min_overlap=min_overlap) == expected
    finally:
        wh.finish_run(run_id, status="ok", summary={})


def test_load_files_is_one_transaction_for_the_batch(wh: Warehouse) -> None:
    a = make_activity("a", minutes=30)
    b = make_activity("b", start=T0 + timedelta(hours=3), minutes=30)
    copy = make_activity("a-gpx", minutes=30)  # the same run from another file, in the same batch
    again = ledger_for(a, path="ann/a-again.fit")  # same bytes as a, another path: loads nothing more
    wh.load_files([
        FileLoad(ledger=ledger_for(a), activities=[a]),
        FileLoad(ledger=ledger_for(b), activities=[b]),
        FileLoad(ledger=ledger_for(copy), activities=[copy], duplicates={copy.activity_id: a.activity_id}),
        FileLoad(ledger=again, activities=[a]),
    ])
    assert sorted(wh.activities()["activity_id"]) == sorted([a.activity_id, b.activity_id])
    assert wh.query("SELECT count(*) AS n FROM samples")["n"][0] == a.samples.height + b.samples.height
    files = {r["path"]: r for r in wh.ledger().iter_rows(named=True)}
    assert set(files) == {ledger_for(x)["path"] for x in (a, b, copy)}
    assert files[ledger_for(copy)["path"]]["status"] == "duplicate"
    assert files[ledger_for(copy)["path"]]["duplicate_of"] == a.activity_id
    assert files[ledger_for(a)["path"]]["activity_ids"] == [a.activity_id]
    dup = wh.query("SELECT activity_id, duplicate_of FROM activity_duplicates").rows()
    assert dup == [(copy.activity_id, a.activity_id)]

    # one bad file: nothing of the batch is written, and the error names that file
    c = make_activity("c", start=T0 + timedelta(days=1))
    d = make_activity("d", start=T0 + timedelta(days=2))
    bad = NormalisedActivity(activity=d.activity, samples=d.samples.with_columns(activity_id=pl.lit("other")),
                             laps=d.laps, pauses=d.pauses)
    before = wh.content_fingerprint()
    with pytest.raises(WarehouseError, match=re.escape(ledger_for(d)["path"])):
        wh.load_files([FileLoad(ledger=ledger_for(c), activities=[c]), FileLoad(ledger=ledger_for(d), activities=[bad])])
    with pytest.raises(WarehouseError, match="unknown activities"):
        wh.load_files([FileLoad(ledger=ledger_for(c), activities=[c]),
                       FileLoad(ledger=ledger_for(d), activities=[d], duplicates={d.activity_id: "nope-0"})])
    assert wh.content_fingerprint() == before
    wh.load_files([FileLoad(ledger=ledger_for(c), activities=[c]), FileLoad(ledger=ledger_for(d), activities=[d])])
    assert wh.activities().height == 4
    wh.load_files([FileLoad(ledger=ledger_for(c), activities=[c])])  # already loaded: a no-op
    assert wh.activities().height == 4 and wh.ledger().height == 5
    wh.load_files([])


def test_find_overlapping_prefers_the_larger_overlap_and_checks_input(wh: Warehouse) -> None:
    a = make_activity("a", minutes=40)
    b = make_activity("b", start=T0 + timedelta(minutes=45), minutes=40)
    for act in (a, b):
        wh.load_file(ledger=ledger_for(act), activities=[act])
    # 30 to 80: 10 min of a (0.25 of 40) and 35 min of b (0.875)
    got = wh.find_overlapping(
        athlete_id="ann", start_utc=T0 + timedelta(minutes=30), end_utc=T0 + timedelta(minutes=80), min_overlap=0.2
    )
    assert got == b.activity_id
    assert wh.find_overlapping(athlete_id="bob", start_utc=T0, end_utc=T0 + timedelta(hours=2)) is None
    london = T0.astimezone(ZoneInfo("Europe/London"))  # aware in another zone: same instant
    same = wh.find_overlapping(athlete_id="ann", start_utc=london, end_utc=london + timedelta(minutes=40))
    assert same == a.activity_id
    inside = T0 + timedelta(minutes=5)
    assert wh.find_overlapping(athlete_id="ann", start_utc=inside, end_utc=None) == a.activity_id
    naive = inside.replace(tzinfo=None)  # taken as UTC, like pipeline.schema does
    assert wh.find_overlapping(athlete_id="ann", start_utc=naive, end_utc=naive) == a.activity_id
    with pytest.raises(WarehouseError, match="before start"):
        wh.find_overlapping(athlete_id="ann", start_utc=T0, end_utc=T0 - timedelta(seconds=1))
    with pytest.raises(WarehouseError, match="min_overlap"):
        wh.find_overlapping(athlete_id="ann", start_utc=T0, end_utc=T0, min_overlap=0)


# ---------------------------------------------------------------------- athletes, pain history


def test_upsert_athletes(wh: Warehouse) -> None:
    schema = {
        "athlete_id": pl.String,
        "name": pl.String,
        "timezone": pl.String,
        "unit": pl.String,
        "distance_cap_m": pl.Float64,
    }
    rows = [("ann", "Ann", "Europe/London", "mi", 14484.1), ("bob", "Bob", "UTC", "km", None)]
    wh.upsert_athletes(pl.DataFrame(rows, schema=schema, orient="row"))
    wh.upsert_athletes(pl.DataFrame([("ann", "Ann B", "Europe/Paris", "km", None)], schema=schema, orient="row"))
    got = wh.query("SELECT athlete_id, name, timezone, unit, distance_cap_m FROM athletes ORDER BY athlete_id")
    assert got.rows() == [("ann", "Ann B", "Europe/Paris", "km", None), ("bob", "Bob", "UTC", "km", None)]
    with pytest.raises(WarehouseError, match="unique"):
        wh.upsert_athletes(pl.DataFrame([("x", "", "", "km", None)] * 2, schema=schema, orient="row"))


def test_replace_pain_keeps_history(wh: Warehouse) -> None:
    act = make_activity("painrun")
    wh.load_file(ledger=ledger_for(act), activities=[act])
    onset = T0 + timedelta(minutes=30)
    r1 = pain_row("r1", line=2)
    r2 = pain_row("r2", line=3, body_part="calf", severity=3)
    rejects = pl.DataFrame({"source_file": ["ann/pain.csv"], "line": [4], "reason": ["severity must be 0-10 (got 11)"]})
    wh.replace_pain(reports=pain_frame([r1, r2]), rejected_rows=rejects.cast({"line": pl.Int32}))
    first = {r["report_id"]: r for r in wh.query("SELECT * FROM pain_reports").iter_rows(named=True)}
    assert set(first) == {"r1", "r2"} and all(r["superseded_utc"] is None for r in first.values())

    # next run: r1's join improved (same row in the CSV), r2 was edited (new id r2b)
    r1_matched = {**r1, "status": "matched", "activity_id": act.activity_id, "onset_utc": onset, "sample_t_utc": onset}
    r2b = {**r2, "report_id": "r2b", "severity": 5}
    wh.replace_pain(reports=pain_frame([r1_matched, r2b]), rejected_rows=NO_REJECTS)
    rows = {r["report_id"]: r for r in wh.query("SELECT * FROM pain_reports").iter_rows(named=True)}
    assert set(rows) == {"r1", "r2", "r2b"}
    assert rows["r2"]["superseded_utc"] is not None and rows["r2"]["severity"] == 3  # old version kept
    assert rows["r2b"]["superseded_utc"] is None and rows["r2b"]["severity"] == 5
    assert rows["r1"]["status"] == "matched" and rows["r1"]["sample_t_utc"] == onset
    assert rows["r1"]["first_seen_utc"] == first["r1"]["first_seen_utc"]
    assert rows["r1"]["superseded_utc"] is None
    assert count(wh, "pain_rows_rejected") == 0
    current = wh.query("SELECT report_id FROM pain_reports_current ORDER BY report_id")["report_id"].to_list()
    assert current == ["r1", "r2b"]
    superseded_at = rows["r2"]["superseded_utc"]

    # the edit is undone: r2 is current again, r2b superseded; r2's history timestamp clears
    wh.replace_pain(reports=pain_frame([r1_matched, r2]), rejected_rows=NO_REJECTS)
    rows = {r["report_id"]: r for r in wh.query("SELECT * FROM pain_reports").iter_rows(named=True)}
    assert rows["r2"]["superseded_utc"] is None and rows["r2b"]["superseded_utc"] >= superseded_at
    assert count(wh, "pain_reports") == 3


def test_replace_pain_refuses_repeated_ids_and_rolls_back(wh: Warehouse) -> None:
    wh.replace_pain(reports=pain_frame([pain_row("r1")]), rejected_rows=NO_REJECTS)
    with pytest.raises(WarehouseError, match="ann/pain.csv:7"):
        wh.replace_pain(reports=pain_frame([pain_row("r9", line=7), pain_row("r9", line=7)]), rejected_rows=NO_REJECTS)
    assert wh.query("SELECT report_id, superseded_utc FROM pain_reports").rows() == [("r1", None)]


# ---------------------------------------------------------------------- views


def two_speed(t: float) -> tuple[float, float, float]:
    """3.0 m/s, 170 spm, 140 bpm for 15 min, then 2.5 m/s, 160 spm, 155 bpm."""
    return (3.0, 170.0, 140.0) if t < 15 * 60 else (2.5, 160.0, 155.0)


def test_pain_onsets_compares_the_five_minutes_before_with_the_first_ten(wh: Warehouse) -> None:
    act = make_activity("onset", minutes=40, profile=two_speed, offset_s=3600)
    wh.load_file(ledger=ledger_for(act), activities=[act])
    onset = T0 + timedelta(minutes=30)
    matched = pain_row(
        "p1",
        status="matched",
        activity_id=act.activity_id,
        onset_utc=onset,
        sample_t_utc=onset,
        onset_elapsed_s=1800.0,
        onset_distance_m=5000.0,
    )
    unmatched = pain_row("p2", line=3)
    wh.replace_pain(reports=pain_frame([matched, unmatched]), rejected_rows=NO_REJECTS)
    got = wh.query("SELECT * FROM pain_onsets")
    assert got.height == 1
    row = got.row(0, named=True)
    # from the construction: 2.5 m/s -> 400 s/km before the onset, 3.0 m/s -> 333.3 s/km at the start
    assert row["pre5_pace_s_per_km"] == pytest.approx(400.0)
    assert row["first10_pace_s_per_km"] == pytest.approx(1000 / 3)
    assert row["pace_change_s_per_km"] == pytest.approx(400.0 - 1000 / 3)
    assert (row["pre5_cadence_spm"], row["first10_cadence_spm"]) == (pytest.approx(160.0), pytest.approx(170.0))
    assert (row["pre5_hr_bpm"], row["first10_hr_bpm"]) == (pytest.approx(155.0), pytest.approx(140.0))
    assert row["hr_change_bpm"] == pytest.approx(15.0)
    assert row["pre5_samples"] == 5 * 60 // 5 + 1 and row["first10_samples"] == 10 * 60 // 5 + 1
    assert row["onset_local"] == datetime(2024, 5, 6, 7, 30)  # 06:30 UTC + 1 h
    assert row["run_start_local"] == datetime(2024, 5, 6, 7, 0)
    assert row["onset_distance_km"] == pytest.approx(5.0)
    assert row["onset_fraction_of_run"] == pytest.approx(5000.0 / act.activity["distance_m"])
    runs = wh.query("SELECT pain_reports, max_pain_severity FROM runs").row(0)
    assert runs == (1, 4)


def test_weekly_load_uses_the_local_iso_week(wh: Warehouse) -> None:
    sunday_late = datetime(2024, 5, 12, 23, 30, tzinfo=UTC)  # Sunday UTC, Monday 00:30 at UTC+1
    plan = [
        ("mon", T0, 3600, 40, "running"),
        ("wed", T0 + timedelta(days=2), 3600, 60, "trail_running"),
        ("sun", sunday_late, 3600, 20, "running"),  # next ISO week locally
        ("sun_utc", sunday_late - timedelta(hours=2), 0, 20, "running"),  # same week
        ("ride", T0 + timedelta(days=3), 3600, 60, "cycling"),  # not a run
    ]
    for name, start, offset, minutes, sport in plan:
        act = make_activity(name, start=start, offset_s=offset, minutes=minutes, sport=sport)
        wh.load_file(ledger=ledger_for(act), activities=[act])
    km = 3.0 * 60 / 1000  # per minute at 3 m/s
    expected = [
        (date(2024, 5, 6), 3, (40 + 60 + 20) * km, (40 + 60 + 20) / 60, 60 * km),
        (date(2024, 5, 13), 1, 20 * km, 20 / 60, 20 * km),
    ]
    for zone in ("UTC", "America/Los_Angeles", "Asia/Tokyo"):  # the session zone must not matter
        wh.query(f"SET TimeZone = '{zone}'")
        got = wh.query(
            "SELECT week_start_local, runs, distance_km, moving_h, longest_run_km FROM weekly_load "
            "WHERE athlete_id = 'ann' ORDER BY week_start_local"
        ).rows()
        assert [g[:2] for g in got] == [e[:2] for e in expected], zone
        for g, e in zip(got, expected):
            assert g[2:] == pytest.approx(e[2:]), zone


def test_local_start_falls_back_to_a_known_zone(wh: Warehouse) -> None:
    wh.upsert_athletes(
        pl.DataFrame(
            {"athlete_id": ["ann"], "name": ["Ann"], "timezone": ["Asia/Tokyo"], "unit": ["km"]}
        ).with_columns(distance_cap_m=pl.lit(None, dtype=pl.Float64))
    )
    cases = [
        ("offset", 3600, "America/New_York", datetime(2024, 7, 1, 13, 0)),  # the offset wins
        ("zone", None, "America/New_York", datetime(2024, 7, 1, 8, 0)),  # EDT, UTC-4
        ("badzone", None, "Mars/Olympus_Mons", datetime(2024, 7, 1, 21, 0)),  # athlete's Tokyo, UTC+9
    ]
    expected = {}
    for i, (name, offset, zone, local) in enumerate(cases):
        start = datetime(2024, 7, 1, 12, 0, tzinfo=UTC) + timedelta(days=7 * i)
        act = make_activity(name, start=start, offset_s=offset)
        act.activity["timezone"] = zone
        wh.load_file(ledger=ledger_for(act), activities=[act])
        expected[act.activity_id] = local + timedelta(days=7 * i)
    got = dict(wh.query("SELECT activity_id, start_local FROM runs").rows())
    assert got == expected


def test_running_only_and_runs_view_use_the_running_sports(wh: Warehouse) -> None:
    sports = sorted(RUNNING_SPORTS) + ["cycling", "walking", "swimming"]
    for i, sport in enumerate(sports):
        act = make_activity(f"s{i}", start=T0 + timedelta(days=i), minutes=5, sport=sport)
        wh.load_file(ledger=ledger_for(act), activities=[act])
    assert sorted(wh.activities(running_only=True)["sport"].to_list()) == sorted(RUNNING_SPORTS)
    assert sorted(wh.activities()["sport"].to_list()) == sorted(sports)
    assert sorted(wh.query("SELECT sport FROM runs")["sport"].to_list()) == sorted(RUNNING_SPORTS)


# ---------------------------------------------------------------------- lock


LOCK_PROBE = """
import json, sys, time
from pathlib import Path
from pipeline.errors import WarehouseLocked
from pipeline.warehouse import Warehouse
path = Path(sys.argv[1])
def attempt(wait, timeout):
    t0 = time.monotonic()
    try:
        wh = Warehouse.open(path, wait=wait, timeout_s=timeout)
    except WarehouseLocked as exc:
        return {"locked": str(exc), "s": time.monotonic() - t0}
    wh.close()
    return {"opened": True, "s": time.monotonic() - t0}
print(json.dumps(attempt(False, 1.0)), flush=True)
print(json.dumps(attempt(True, 0.3)), flush=True)
print("waiting", flush=True)
print(json.dumps(attempt(True, 30.0)), flush=True)
"""


def test_the_write_lock_across_processes(tmp_path: Path) -> None:
    """Another process: fails fast naming our pid; wait=True gives up after its timeout,
    or gets the lock once we close."""
    path = tmp_path / "w.duckdb"
    wh = Warehouse.open(path)
    probe = subprocess.Popen(
        [sys.executable, "-c", LOCK_PROBE, str(path)], stdout=subprocess.PIPE, text=True, env=subprocess_env()
    )
    assert probe.stdout is not None
    try:
        fast = json.loads(probe.stdout.readline())
        assert "locked" in fast, fast
        assert f"pid {os.getpid()}" in fast["locked"]
        assert fast["s"] < 1.0
        patient = json.loads(probe.stdout.readline())
        assert "locked" in patient and "after waiting 0.3 s" in patient["locked"], patient
        assert 0.3 <= patient["s"] < 2.0
        assert probe.stdout.readline().strip() == "waiting"
        time.sleep(0.4)
    finally:
        wh.close()
    out, _ = probe.communicate(timeout=60)
    waited = json.loads(out)
    assert waited.get("opened") is True, waited
    assert waited["s"] >= 0.3
    assert probe.returncode == 0


def test_a_second_open_in_the_same_process_is_locked_too(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with Warehouse.open(path):
        with pytest.raises(WarehouseLocked, match=f"pid {os.getpid()}"):
            Warehouse.open(path)
    Warehouse.open(path).close()  # released on close


# ---------------------------------------------------------------------- snapshot


READER = """
import sys
from pathlib import Path
from pipeline.warehouse.query import open_readonly
con = open_readonly(Path(sys.argv[1]))
def n():
    return con.sql("SELECT count(*) FROM activities").fetchall()[0][0]
print(n(), flush=True)
sys.stdin.readline()
print(n(), flush=True)
con.close()
"""


def test_publish_snapshot_while_a_reader_holds_it(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "snapshot.duckdb"
    with Warehouse.open(tmp_path / "wh" / "pipeline.duckdb") as wh:
        wh.begin_run(command="pytest")
        first = make_activity("one")
        wh.load_file(ledger=ledger_for(first), activities=[first])
        wh.publish_snapshot(dest)
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(dest)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        assert reader.stdin is not None and reader.stdout is not None
        try:
            assert reader.stdout.readline().strip() == "1"
            second = make_activity("two", start=T0 + timedelta(days=1))
            wh.load_file(ledger=ledger_for(second), activities=[second])
            wh.publish_snapshot(dest)  # replaces the file the reader has open
            fresh = run_readonly_query(dest, "SELECT count(*) AS n FROM activities")
            assert fresh["n"][0] == 2
            reader.stdin.write("\n")
            reader.stdin.flush()
            assert reader.stdout.readline().strip() == "1"  # its session still reads the old, complete copy
        finally:
            reader.communicate(timeout=60)  # closes stdin, lets it exit, closes stdout
        assert reader.returncode == 0
        # the snapshot has every sample, and the folder holds nothing half-written
        got = run_readonly_query(dest, "SELECT count(*) AS n FROM samples")
        assert got["n"][0] == first.samples.height + second.samples.height
    assert sorted(p.name for p in dest.parent.iterdir()) == ["snapshot.duckdb"]


# ---------------------------------------------------------------------- documentation


DOC_HEADING = re.compile(r"^###\s+`(?P<name>[A-Za-z_][A-Za-z0-9_]*)`\s*$")
DOC_ROW = re.compile(
    r"^\|\s*`(?P<col>[A-Za-z_][A-Za-z0-9_]*)`\s*\|(?P<type>[^|]*)\|(?P<unit>[^|]*)\|(?P<meaning>.*)\|\s*$"
)
TYPE_ALIASES = {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}


def documented() -> dict[str, dict[str, tuple[str, str]]]:
    """``{object: {column: (type, meaning)}}`` from the ### sections of docs/warehouse.md."""
    objects: dict[str, dict[str, tuple[str, str]]] = {}
    current: str | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            current = None
        heading = DOC_HEADING.match(line)
        if heading:
            current = heading["name"]
            objects[current] = {}
            continue
        row = DOC_ROW.match(line)
        if row and current is not None:
            kind = row["type"].strip()
            objects[current][row["col"]] = (TYPE_ALIASES.get(kind, kind), row["meaning"].strip())
    return objects


def test_every_column_is_documented(wh: Warehouse) -> None:
    live = wh.query(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
    )
    docs = documented()
    problems = []
    live_objects: dict[str, set[str]] = {}
    for table, column, kind in live.iter_rows():
        live_objects.setdefault(table, set()).add(column)
        entry = docs.get(table, {}).get(column)
        if entry is None:
            problems.append(f"{table}.{column} is not documented")
        elif entry[0] != kind:
            problems.append(f"{table}.{column}: documented as {entry[0]}, is {kind}")
        elif not entry[1]:
            problems.append(f"{table}.{column}: no meaning given")
    for table, columns in docs.items():
        for column in columns:
            if column not in live_objects.get(table, set()):
                problems.append(f"docs describe {table}.{column}, which does not exist")
    assert not problems, "\n".join(problems)
    assert {"pain_onsets", "weekly_load", "files", "samples"} <= set(live_objects)
    assert "duckdb -readonly data/warehouse/snapshot.duckdb" in DOC.read_text(encoding="utf-8")


def test_every_view_is_documented_as_a_view(wh: Warehouse) -> None:
    views = set(wh.query("SELECT table_name FROM information_schema.tables WHERE table_type = 'VIEW' "
                         "AND table_schema = 'main'")["table_name"])
    assert {"pain_onsets", "weekly_load", "runs", "pain_reports_current"} <= views
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("\n## Views\n"):text.index("\n## Example queries\n")]
    headed = {m for m in re.findall(r"^### `(\w+)`$", section, flags=re.M)}
    assert headed == views


BOOKKEEPING_ROW = re.compile(r"^\|(?P<tables>[^|]*)\|(?P<columns>[^|]*)\|[^|]*\|\s*$")


def test_the_bookkeeping_columns_are_documented() -> None:
    """docs/warehouse.md's "Content and bookkeeping" table lists exactly what the fingerprint leaves out."""
    from pipeline.warehouse.content import BOOKKEEPING_COLUMNS, BOOKKEEPING_TABLES

    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("\n## Content and bookkeeping\n"):text.index("\n## For developers\n")]
    documented: dict[str, tuple[str, ...]] = {}
    whole: set[str] = set()
    for line in section.splitlines():
        row = BOOKKEEPING_ROW.match(line)
        if not row or "---" in line or "bookkeeping columns" in line:
            continue
        tables = re.findall(r"`(\w+)`", row["tables"])
        if "whole table" in row["tables"]:
            whole.update(tables)
            continue
        for table in tables:
            documented[table] = tuple(re.findall(r"`(\w+)`", row["columns"]))
    migrations = documented.pop("_migrations")
    assert migrations == ("applied_utc",)
    assert documented == BOOKKEEPING_COLUMNS
    assert whole | {"_migrations"} == set(BOOKKEEPING_TABLES)


def test_loads_go_through_arrow_never_executemany() -> None:
    offenders = [p for p in (REPO / "pipeline").rglob("*.py") if "executemany" in p.read_text(encoding="utf-8")]
    assert offenders == []
    store = (REPO / "pipeline" / "warehouse" / "store.py").read_text(encoding="utf-8")
    insert = store[store.index("    def _insert("):store.index("    def _run_for(")]
    assert ".register(" in insert and ".to_arrow(" in insert and "INSERT INTO {table} BY NAME SELECT" in insert


def test_a_half_written_snapshot_is_cleaned_up(tmp_path: Path) -> None:
    """A publisher killed mid-copy leaves ``.snapshot.duckdb.*.tmp``; the next publish removes it."""
    dest = tmp_path / "out" / "snapshot.duckdb"
    dest.parent.mkdir()
    left = dest.parent / ".snapshot.duckdb.k1ll3d.tmp"
    left.write_bytes(b"half a database")
    unrelated = dest.parent / "notes.txt"
    unrelated.write_text("keep me")
    with Warehouse.open(tmp_path / "wh" / "pipeline.duckdb") as wh:
        wh.begin_run(command="pytest")
        act = make_activity("one")
        wh.load_file(ledger=ledger_for(act), activities=[act])
        wh.publish_snapshot(dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["notes.txt", "snapshot.duckdb"]
    assert run_readonly_query(dest, "SELECT count(*) AS n FROM samples")["n"][0] == act.samples.height


def test_a_stale_lock_file_does_not_block(tmp_path: Path) -> None:
    """The pid a killed ingest left in the lock file is only text: the next open takes over."""
    path = tmp_path / "w.duckdb"
    lock = tmp_path / "w.duckdb.lock"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    lock.write_text(f"{dead}\n")
    with Warehouse.open(path):
        assert lock.read_text().strip() == str(os.getpid())
    assert lock.read_text() == ""  # a clean close clears it


def test_the_lock_message_says_when_its_pid_is_gone(tmp_path: Path) -> None:
    """Held, but the pid in the file is not running (a child may hold it): the message says so."""
    from pipeline.warehouse import check_unlocked

    path = tmp_path / "w.duckdb"
    check_unlocked(path)  # no lock file yet: fine, and nothing is created
    assert list(tmp_path.iterdir()) == []
    with Warehouse.open(path):
        with pytest.raises(WarehouseLocked, match=rf"locked by pid {os.getpid()}: another ingest"):
            check_unlocked(path)
        (tmp_path / "w.duckdb.lock").write_text("999999999\n")
        with pytest.raises(WarehouseLocked, match="pid 999999999, which is no longer running"):
            check_unlocked(path)
    check_unlocked(path)


def test_the_early_lock_check_imports_no_heavy_library() -> None:
    """`pipeline ingest` checks the lock before loading DuckDB and polars, so a locked-out run is quick."""
    code = ("import sys; import pipeline.cli; from pipeline.warehouse import check_unlocked; "
            "print(sorted(m for m in ('duckdb', 'polars', 'pyarrow', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                         check=True, timeout=60).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("kernel", [True, False])
def test_snapshot_copy_is_byte_exact_with_or_without_copy_file_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: bool
) -> None:
    from pipeline.warehouse.store import _copy_file

    if not kernel:
        def refuse(*_args: Any) -> int:
            raise OSError(95, "Operation not supported")

        monkeypatch.setattr(os, "copy_file_range", refuse)
    data = os.urandom(3 * (1 << 20) + 12345)
    (tmp_path / "src").write_bytes(data)
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as out:
        _copy_file(src, out)
    assert (tmp_path / "dst").read_bytes() == data


def test_loading_runs_duckdb_on_one_thread_and_restores_it(wh: Warehouse) -> None:
    """The ingest's loads leave the other cores to the decoders; afterwards queries get them back."""

    def threads() -> int:
        return int(wh._rows("SELECT current_setting('threads')")[0][0])

    before = threads()
    with wh.loading():
        assert threads() == 1
    assert threads() == before
    with pytest.raises(RuntimeError), wh.loading():
        raise RuntimeError("a failed load")
    assert threads() == before
