"""A FIT file on the watch's own clock (seconds since power-on) loads without a date, end to end.

The file is written here with the simulator's FIT encoder, the way a
Forerunner 70 ANT-FS dump is laid out: every ``date_time`` below 0x10000000
and an ``activity.local_timestamp`` that is the download time, not the run's.
It must load with its durations, distance and time series, no instant, and
stay out of everything that needs a date (runs, weekly load, pain join).
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from pipeline.cli import EXIT_REJECTIONS, cli
from pipeline.errors import RejectedFile
from pipeline.normalise import read_activities
from pipeline.simulate.fitenc import Field, FitWriter, MessageDef, fit_time
from pipeline.sources.fit import read_fit

F = Field
FILE_ID = MessageDef(0, (F("type", 0, "enum"), F("manufacturer", 1, "uint16"), F("product", 2, "uint16"),
                         F("serial_number", 3, "uint32z"), F("time_created", 4, "uint32")))
EVENT = MessageDef(21, (F("timestamp", 253, "uint32"), F("event", 0, "enum"), F("event_type", 1, "enum")))
RECORD = MessageDef(20, (F("timestamp", 253, "uint32"), F("distance", 5, "uint32"), F("speed", 6, "uint16"),
                         F("heart_rate", 3, "uint8"), F("cadence", 4, "uint8")))
_TOTALS = (F("timestamp", 253, "uint32"), F("start_time", 2, "uint32"), F("total_elapsed_time", 7, "uint32"),
           F("total_timer_time", 8, "uint32"), F("total_distance", 9, "uint32"))
LAP = MessageDef(19, _TOTALS + (F("sport", 25, "enum"),))
SESSION = MessageDef(18, _TOTALS + (F("sport", 5, "enum"), F("first_lap_index", 25, "uint16"),
                                    F("num_laps", 26, "uint16")))
ACTIVITY = MessageDef(34, (F("timestamp", 253, "uint32"), F("num_sessions", 1, "uint16"),
                           F("local_timestamp", 5, "uint32")))

START = 17_217_864  # seconds since power-on (the corpus FR70 run's start)
N, PAUSE_AT, PAUSE_S, SPEED_MPS = 900, 400, 75, 3.2
DOWNLOAD = datetime(2026, 10, 1, 12, 0, tzinfo=timezone.utc)  # inside the simulated club's weeks


def device_clock_fit(*, session_start: int = START) -> bytes:
    """A 1 Hz run on the device clock: a timer pause after record PAUSE_AT, one lap, one session."""
    w = FitWriter()
    for local, mdef in enumerate((FILE_ID, EVENT, RECORD, LAP, SESSION, ACTIVITY)):
        w.define(local, mdef)
    w.write(0, {"type": 4, "manufacturer": 1, "product": 1436, "serial_number": 1215347, "time_created": START})
    w.write(1, {"timestamp": START, "event": 0, "event_type": 0})  # timer start
    for i in range(N):
        t = START + i + (PAUSE_S if i > PAUSE_AT else 0)
        w.write(2, {"timestamp": t, "distance": round(i * SPEED_MPS * 100), "speed": round(SPEED_MPS * 1000),
                    "heart_rate": 140 + i % 20, "cadence": 86 + i % 3})
        if i == PAUSE_AT:
            w.write(1, {"timestamp": t, "event": 0, "event_type": 4})  # stop_all
            w.write(1, {"timestamp": t + PAUSE_S, "event": 0, "event_type": 0})
    last = START + N - 1 + PAUSE_S
    w.write(1, {"timestamp": last, "event": 0, "event_type": 4})
    totals = {"timestamp": last, "start_time": session_start, "total_elapsed_time": (N - 1 + PAUSE_S) * 1000,
              "total_timer_time": (N - 1) * 1000, "total_distance": round((N - 1) * SPEED_MPS * 100), "sport": 1}
    w.write(3, totals)
    w.write(4, {**totals, "first_lap_index": 0, "num_laps": 1})
    w.write(5, {"timestamp": last, "num_sessions": 1, "local_timestamp": int(fit_time(DOWNLOAD))})
    return w.to_bytes()


def test_both_decoders_read_the_device_clock_alike() -> None:
    data = device_clock_fit()
    fast, reference = read_fit(data, path="x.fit"), read_fit(data, path="x.fit", fast=False)
    assert type(fast[0].samples).__name__ == "SampleColumns"  # the fast path took it
    assert fast[0].device_clock and reference[0].device_clock
    assert (fast[0].start_utc, fast[0].end_utc, fast[0].pauses) == (reference[0].start_utc, reference[0].end_utc,
                                                                      reference[0].pauses)
    assert list(fast[0].samples) == list(reference[0].samples)


def test_read_activities_keeps_durations_and_stores_no_instant() -> None:
    (a,) = read_activities(Path("x/fr70.fit"), rel_path="x/fr70.fit", athlete_id="x", athlete_tz="Europe/Paris",
                           data=device_clock_fit())
    row = a.activity
    assert row["device_time_s"] == START
    assert row["start_utc"] is row["end_utc"] is row["utc_offset_s"] is row["timezone"] is None
    assert row["tz_source"] == "none"
    assert row["elapsed_s"] == N - 1 + PAUSE_S and row["moving_s"] == N - 1
    assert row["distance_m"] == pytest.approx((N - 1) * SPEED_MPS) and row["n_samples"] == N
    s = a.samples
    assert s["t_utc"].null_count() == N
    assert s["elapsed_s"][PAUSE_AT + 1] - s["elapsed_s"][PAUSE_AT] == 1 + PAUSE_S
    assert s["moving_s"][-1] == N - 1
    assert s["distance_m"][-1] == pytest.approx((N - 1) * SPEED_MPS)
    assert set(s["cadence_spm"].to_list()) == {172.0, 174.0, 176.0}  # strides * 2
    assert a.pauses["duration_s"].to_list() == [PAUSE_S] and a.pauses["start_utc"][0] is None
    assert a.laps["elapsed_s"].to_list() == [N - 1 + PAUSE_S] and a.laps["end_utc"][0] is None


def test_an_absolute_session_start_with_device_relative_records_is_rejected() -> None:
    absolute = int(fit_time(DOWNLOAD))
    with pytest.raises(RejectedFile, match="device-relative FIT timestamps .*in a file whose other times are absolute"):
        read_activities(Path("x.fit"), rel_path="x.fit", athlete_id="x", athlete_tz=None,
                        data=device_clock_fit(session_start=absolute))


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_nightly_loads_it_and_leaves_it_out_of_every_date(tmp_path: Path, sim_club: dict[str, Any],
                                                          clean_env: None) -> None:
    raw = tmp_path / "data" / "raw"
    shutil.copytree(sim_club["raw"], raw)  # the fixture's folder stays as it is
    athlete = sorted(p.name for p in raw.iterdir() if (p / "athlete.toml").is_file())[0]
    (raw / athlete / "activities" / "fr70-dump.fit").write_bytes(device_clock_fit())
    warehouse, reports = tmp_path / "data" / "warehouse", tmp_path / "reports"
    result = CliRunner().invoke(cli, ["nightly", "--raw", str(raw), "--warehouse", str(warehouse),
                                      "--reports", str(reports), "--workers", "2"])
    assert result.exit_code in (0, EXIT_REJECTIONS), result.output
    assert f"{athlete}/activities/fr70-dump.fit" not in result.output  # not rejected, not skipped

    db = warehouse / "snapshot.duckdb"
    (row,) = _rows(db, "SELECT activity_id, athlete_id, start_utc, device_time_s, tz_source, n_samples, elapsed_s "
                       "FROM activities WHERE source_file LIKE '%fr70-dump.fit'")
    aid = row[0]
    assert row[1:] == (athlete, None, START, "none", N, N - 1 + PAUSE_S)
    assert _rows(db, f"SELECT count(*), count(t_utc) FROM samples WHERE activity_id = '{aid}'") == [(N, 0)]
    assert _rows(db, "SELECT count(*) FROM activities WHERE device_time_s IS NOT NULL") == [(1,)]
    # not a run with a date: not in runs, weekly_load or pain_onsets, no pain report joined to it
    assert _rows(db, f"SELECT count(*) FROM runs WHERE activity_id = '{aid}'") == [(0,)]
    assert _rows(db, f"SELECT count(*) FROM pain_reports WHERE activity_id = '{aid}'") == [(0,)]
    assert _rows(db, f"SELECT count(*) FROM pain_onsets WHERE activity_id = '{aid}'") == [(0,)]
    assert _rows(db, "SELECT count(*) FROM weekly_load WHERE week_start_local IS NULL") == [(0,)]
    weekly = _rows(db, f"SELECT sum(runs) FROM weekly_load WHERE athlete_id = '{athlete}'")[0][0]
    dated = _rows(db, f"SELECT count(*) FROM activities WHERE athlete_id = '{athlete}' AND start_utc IS NOT NULL "
                      "AND sport IN ('running', 'trail_running', 'treadmill_running')")[0][0]
    assert weekly == dated > 0
    # the reports render; the athlete's page lists the run as one without a date
    assert (reports / "index.html").is_file()
    pages = [p for p in reports.rglob("*.html") if aid in p.read_text(encoding="utf-8")]
    assert len(pages) == 1 and "Runs without a date" in pages[0].read_text(encoding="utf-8")
