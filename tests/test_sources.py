"""Importers on inputs built at test time: FIT (hand-assembled with struct + CRC), GPX, TCX, gz, zip.

Nothing here reads the corpus: every file is made by the helpers below, so
each test says exactly which bytes it feeds and what must come out.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import time
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError, RejectedFile, SkippedFile
from pipeline.normalise import read_activities, sniff_format
from pipeline.schema import ACTIVITY_SCHEMA, LAP_SCHEMA, PAUSE_SCHEMA, SAMPLE_SCHEMA
from pipeline.sources.archive import ArchiveLimits, iter_archive

# --------------------------------------------------------------------------- a tiny FIT writer

FIT_EPOCH = datetime(1989, 12, 31, tzinfo=timezone.utc)
T0 = datetime(2024, 5, 4, 7, 30, 0, tzinfo=timezone.utc)
_CRC_TABLE = (0x0000, 0xCC01, 0xD801, 0x1400, 0xF001, 0x3C00, 0x2800, 0xE401,
              0xA001, 0x6C00, 0x7800, 0xB401, 0x5000, 0x9C01, 0x8801, 0x4400)
# base types: (id, struct code)
ENUM, UINT8, SINT32, UINT16, UINT32, STRING = (0x00, "B"), (0x02, "B"), (0x85, "i"), (0x84, "H"), (0x86, "I"), (0x07, "s")


def fit_crc(data: bytes, crc: int = 0) -> int:
    """The FIT SDK's CRC-16 (written independently of fitparse)."""
    for byte in data:
        for nibble in (byte & 0xF, byte >> 4):
            tmp = _CRC_TABLE[crc & 0xF]
            crc = (crc >> 4) & 0x0FFF
            crc = crc ^ tmp ^ _CRC_TABLE[nibble]
    return crc


def fit_ts(t: datetime) -> int:
    return int((t - FIT_EPOCH).total_seconds())


class FitWriter:
    """Definition + data messages, one local type per global message."""

    GLOBAL = {"file_id": 0, "session": 18, "lap": 19, "record": 20, "event": 21, "activity": 34,
              "developer_data_id": 207, "field_description": 206}

    def __init__(self) -> None:
        self.body = bytearray()
        self.defined: dict[tuple, int] = {}
        self.current: dict[int, tuple] = {}

    def message(self, name: str, fields: list[tuple[int, tuple[int, str], object]], dev: list[tuple[int, int, int]] | None = None) -> None:
        """fields: (field number, base type, value); dev: (field number, size, dev index) with value appended."""
        key = (name, tuple((n, bt, len(v) if isinstance(v, bytes) else 0) for n, bt, v in fields), tuple(dev or []))
        if key not in self.defined:
            self.defined[key] = len(self.defined) % 16
        local = self.defined[key]
        if self.current.get(local) != key:  # (re)define the local type
            self.current[local] = key
            header = 0x40 | local | (0x20 if dev else 0)
            out = struct.pack("<BBBHB", header, 0, 0, self.GLOBAL[name], len(fields))
            for num, (bt, code), value in fields:
                size = len(value) if code == "s" else struct.calcsize(code)
                out += struct.pack("<BBB", num, size, bt)
            if dev:
                out += struct.pack("<B", len(dev))
                for num, size, index in dev:
                    out += struct.pack("<BBB", num, size, index)
            self.body += out
        data = struct.pack("<B", local)
        for _num, (_bt, code), value in fields:
            data += value if code == "s" else struct.pack("<" + code, value)
        self.body += data

    def dev_values(self, name: str, fields, dev_fields, dev_values: bytes) -> None:
        self.message(name, fields, dev_fields)
        self.body += dev_values

    def bytes(self) -> bytes:
        header = struct.pack("<BBHI4s", 14, 0x20, 2132, len(self.body), b".FIT")
        header += struct.pack("<H", fit_crc(header))
        data = header + bytes(self.body)
        return data + struct.pack("<H", fit_crc(data))


def build_fit(
    *,
    n: int = 60,
    sport: int = 1,  # running
    file_type: int = 4,  # activity
    hr=lambda i: 140 + i % 10,
    cadence=lambda i: 85,  # strides/min
    lat=lambda i: int((51.5 + i * 1e-5) / 180 * 2**31),
    lon=lambda i: int((-0.12) / 180 * 2**31),
    times=lambda i: T0 + timedelta(seconds=i),
    pause: tuple[int, int] | None = None,  # (stop after record i, restart seconds later)
    local_offset_s: int | None = 3600,
    sessions: list[tuple[int, int, int]] | None = None,  # (first record, last record, sport)
    stryd_power: bool = False,
) -> bytes:
    """A small but complete activity FIT file: file_id, events, records, laps, sessions, activity."""
    w = FitWriter()
    w.message("file_id", [(0, ENUM, file_type), (1, UINT16, 1), (2, UINT16, 1623), (4, UINT32, fit_ts(times(0)))])
    if stryd_power:
        w.message("developer_data_id", [(3, UINT8, 0), (1, (0x0D, "s"), bytes(range(16)))])
        w.message("field_description", [(0, UINT8, 0), (1, UINT8, 0), (2, UINT8, 0x84), (3, STRING, b"Power\x00"), (8, STRING, b"Watts\x00")])
        w.message("field_description", [(0, UINT8, 0), (1, UINT8, 1), (2, UINT8, 0x84), (3, STRING, b"Form Power\x00"), (8, STRING, b"Watts\x00")])
    w.message("event", [(253, UINT32, fit_ts(times(0))), (0, ENUM, 0), (1, ENUM, 0)])
    for i in range(n):
        t = times(i)
        fields = [(253, UINT32, fit_ts(t)), (0, SINT32, lat(i)), (1, SINT32, lon(i)),
                  (2, UINT16, int((30 + 500) * 5)), (3, UINT8, hr(i)), (4, UINT8, cadence(i)),
                  (53, UINT8, 64), (5, UINT32, i * 300), (6, UINT16, 3000)]
        if stryd_power:
            w.dev_values("record", fields, [(0, 2, 0), (1, 2, 0)], struct.pack("<HH", 250 + i % 5, 60))
        else:
            w.message("record", fields)
        if pause and i == pause[0]:
            w.message("event", [(253, UINT32, fit_ts(t)), (0, ENUM, 0), (1, ENUM, 4)])
            w.message("event", [(253, UINT32, fit_ts(t) + pause[1]), (0, ENUM, 0), (1, ENUM, 0)])
    last = times(n - 1)
    w.message("event", [(253, UINT32, fit_ts(last)), (0, ENUM, 0), (1, ENUM, 4)])
    groups = sessions or [(0, n - 1, sport)]
    for a, b, sp in groups:
        start, end = times(a), times(b)
        elapsed = int((end - start).total_seconds() * 1000)
        timer = elapsed - (pause[1] * 1000 if pause and a <= pause[0] < b else 0)
        common = [(253, UINT32, fit_ts(end)), (2, UINT32, fit_ts(start)), (7, UINT32, elapsed), (8, UINT32, timer),
                  (9, UINT32, (b - a) * 300)]
        w.message("lap", common + [(25, ENUM, sp)])
    for k, (a, b, sp) in enumerate(groups):
        start, end = times(a), times(b)
        elapsed = int((end - start).total_seconds() * 1000)
        timer = elapsed - (pause[1] * 1000 if pause and a <= pause[0] < b else 0)
        w.message("session", [(253, UINT32, fit_ts(end)), (2, UINT32, fit_ts(start)), (7, UINT32, elapsed),
                              (8, UINT32, timer), (9, UINT32, (b - a) * 300), (5, ENUM, sp), (25, UINT16, k), (26, UINT16, 1)])
    act = [(253, UINT32, fit_ts(last)), (1, UINT16, len(groups)), (2, ENUM, 0)]
    if local_offset_s is not None:
        act.append((5, UINT32, fit_ts(last) + local_offset_s))
    w.message("activity", act)
    return w.bytes()


def load(data: bytes, name: str = "a/run.fit", tz: str | None = None):
    return read_activities(Path(name), rel_path=name, athlete_id="a", athlete_tz=tz, data=data)


# --------------------------------------------------------------------------- FIT


def test_hand_built_fit_loads_with_converted_units() -> None:
    acts = load(build_fit())
    assert len(acts) == 1
    a = acts[0]
    row = a.activity
    assert set(row) == set(ACTIVITY_SCHEMA)
    assert row["sport"] == "running"
    assert row["start_utc"] == T0
    assert row["n_samples"] == 60 == a.samples.height
    assert row["distance_source"] == "device"
    assert row["distance_m"] == pytest.approx(59 * 3.0)
    assert row["utc_offset_s"] == 3600 and row["tz_source"] == "fit_local_timestamp"
    assert row["timezone"] == "Europe/London"  # GPS zone agrees with the FIT offset (BST)
    assert row["device_manufacturer"] == "garmin"
    assert a.samples.schema == pl.Schema(SAMPLE_SCHEMA)
    assert a.laps.schema == pl.Schema(LAP_SCHEMA) and a.pauses.schema == pl.Schema(PAUSE_SCHEMA)
    s = a.samples
    assert s["lat_deg"][0] == pytest.approx(51.5, abs=1e-6)
    assert s["lon_deg"][0] == pytest.approx(-0.12, abs=1e-6)
    assert s["cadence_spm"][0] == pytest.approx(2 * (85 + 0.5))  # strides + fractional, doubled
    assert s["altitude_m"][0] == pytest.approx(30.0)
    assert s["speed_mps"][0] == pytest.approx(3.0)
    assert s["t_utc"].dtype == pl.Datetime("us", "UTC")
    assert s["elapsed_s"].to_list() == [float(i) for i in range(60)]


def test_cycling_cadence_stays_rpm() -> None:
    a = load(build_fit(sport=2))[0]
    assert a.activity["sport"] == "cycling"
    assert a.samples["cadence_spm"][0] == pytest.approx(85.5)


def test_timer_stop_start_becomes_a_pause_and_moving_time() -> None:
    # the device restarts the timer 120 s after record 19; records resume at that time
    a = load(build_fit(n=40, pause=(19, 120), times=lambda i: T0 + timedelta(seconds=i + (120 if i > 19 else 0))))[0]
    assert a.pauses.height == 1
    assert a.pauses["duration_s"][0] == pytest.approx(120.0)
    assert a.activity["elapsed_s"] - a.activity["moving_s"] == pytest.approx(120.0)
    s = a.samples
    assert s["elapsed_s"][20] - s["moving_s"][20] == pytest.approx(120.0)
    assert s["elapsed_s"][19] == s["moving_s"][19]


def test_multisport_fit_is_split_per_session() -> None:
    data = build_fit(n=60, sessions=[(0, 29, 1), (30, 59, 2)])
    acts = load(data)
    assert [a.activity["sport"] for a in acts] == ["running", "cycling"]
    assert [a.activity["n_samples"] for a in acts] == [30, 30]
    sha = hashlib.sha256(data).hexdigest()
    assert [a.activity_id for a in acts] == [f"{sha[:16]}-0", f"{sha[:16]}-1"]
    assert acts[0].samples["cadence_spm"][0] == pytest.approx(171.0)  # running: steps
    assert acts[1].samples["cadence_spm"][0] == pytest.approx(85.5)  # cycling: rpm
    assert acts[1].activity["start_utc"] == T0 + timedelta(seconds=30)


def test_stryd_developer_power_is_read_and_form_power_is_not() -> None:
    a = load(build_fit(stryd_power=True))[0]
    assert a.samples["power_w"].to_list()[:5] == [250.0, 251.0, 252.0, 253.0, 254.0]


def test_no_local_timestamp_falls_back_to_gps_zone_then_athlete() -> None:
    a = load(build_fit(local_offset_s=None))[0]
    assert (a.activity["tz_source"], a.activity["timezone"], a.activity["utc_offset_s"]) == ("gps", "Europe/London", 3600)
    no_gps = build_fit(local_offset_s=None, lat=lambda i: 0x7FFFFFFF, lon=lambda i: 0x7FFFFFFF)
    b = load(no_gps, tz="America/New_York")[0]
    assert not b.activity["has_gps"]
    assert (b.activity["tz_source"], b.activity["timezone"], b.activity["utc_offset_s"]) == ("athlete", "America/New_York", -4 * 3600)
    c = load(no_gps)[0]
    assert (c.activity["tz_source"], c.activity["utc_offset_s"]) == ("none", None)


def test_compressed_timestamp_records_and_no_session() -> None:
    """Records with compressed-timestamp headers, no lap/session/activity: one activity from the records."""
    w = FitWriter()
    w.message("file_id", [(0, ENUM, 4), (1, UINT16, 1), (2, UINT16, 1623), (4, UINT32, fit_ts(T0))])
    full = [(253, UINT32, fit_ts(T0)), (3, UINT8, 120), (4, UINT8, 80)]
    w.message("record", full)  # defines local type 1 (file_id took 0) and sets the time base
    w.message("record", [(3, UINT8, 121), (4, UINT8, 81)])  # defines local type 2 without a timestamp
    del w.body[-3:]  # drop that data message: only its definition stays
    base = fit_ts(T0)
    for k in range(1, 40):  # every 3 s; the 5-bit offset rolls over every 32 s
        offset = (base + 3 * k) & 0x1F
        w.body += struct.pack("<BBB", 0x80 | (2 << 5) | offset, 121, 81)
    acts = load(w.bytes())
    assert len(acts) == 1
    a = acts[0]
    assert a.activity["n_samples"] == 40
    assert a.samples["t_utc"].to_list() == [T0 + timedelta(seconds=3 * k) for k in range(40)]
    assert a.activity["sport"] == "generic"  # no session, no sport message
    assert a.activity["elapsed_s"] == 117.0 and a.laps.height == 0


def test_chained_fit_files_give_one_activity_each() -> None:
    first = build_fit(n=20)
    second = build_fit(n=20, sport=2, times=lambda i: T0 + timedelta(hours=1, seconds=i))
    acts = load(first + second)
    assert [a.activity["sport"] for a in acts] == ["running", "cycling"]
    assert [a.samples.height for a in acts] == [20, 20]
    assert acts[1].activity["start_utc"] == T0 + timedelta(hours=1)


def test_fit_settings_file_is_skipped() -> None:
    with pytest.raises(SkippedFile, match="settings|not an activity"):
        load(build_fit(file_type=2))


DEVICE_T0 = FIT_EPOCH + timedelta(seconds=17_000_000)  # a FIT date_time below 0x10000000: seconds since power-on


def test_device_relative_timestamps_load_without_any_date() -> None:
    """Durations, pauses and laps from the device's own clock; no instant, offset or zone invented."""
    times = lambda i: DEVICE_T0 + timedelta(seconds=i + (120 if i > 19 else 0))  # noqa: E731
    # GPS positions, an athlete zone and an activity.local_timestamp are all there: none may date the run
    a = load(build_fit(n=40, pause=(19, 120), times=times), tz="Europe/London")[0]
    row = a.activity
    assert row["device_time_s"] == 17_000_000
    assert row["start_utc"] is None and row["end_utc"] is None
    assert (row["tz_source"], row["utc_offset_s"], row["timezone"]) == ("none", None, None)
    assert row["elapsed_s"] == pytest.approx(39 + 120) and row["moving_s"] == pytest.approx(39)
    assert row["distance_m"] == pytest.approx(39 * 3.0) and row["n_samples"] == 40
    s = a.samples
    assert s["t_utc"].null_count() == 40
    assert s["elapsed_s"].to_list() == [float(i + (120 if i > 19 else 0)) for i in range(40)]
    assert s["moving_s"].to_list() == [float(i) for i in range(40)]
    assert s["cadence_spm"].to_list() == [171.0] * 40  # 85 strides/min + 64/128
    assert a.pauses["duration_s"].to_list() == [120.0]
    assert a.pauses["start_utc"].null_count() == a.pauses["end_utc"].null_count() == 1
    assert a.laps.height == 1 and a.laps["start_utc"][0] is None and a.laps["elapsed_s"][0] == pytest.approx(159.0)


def test_dated_fit_has_no_device_time() -> None:
    assert load(build_fit())[0].activity["device_time_s"] is None


def test_device_relative_record_in_a_file_with_absolute_times_is_rejected() -> None:
    mixed = build_fit(times=lambda i: DEVICE_T0 + timedelta(seconds=i) if i == 30 else T0 + timedelta(seconds=i))
    with pytest.raises(RejectedFile, match=r"device-relative FIT timestamps \(record 30 timestamp = 17000030 s"):
        load(mixed)


def test_absolute_record_in_a_file_on_the_device_clock_is_rejected() -> None:
    mixed = build_fit(times=lambda i: T0 + timedelta(seconds=i) if i == 30 else DEVICE_T0 + timedelta(seconds=i))
    with pytest.raises(RejectedFile, match=r"absolute FIT timestamp \(record 30 timestamp = 2024-05-04T07:30:30"):
        load(mixed)


def test_device_relative_values_are_still_screened() -> None:
    """No calendar check on the device clock, but the value and monotonicity checks stay."""
    with pytest.raises(RejectedFile, match="implausible hr_bpm"):
        load(build_fit(times=lambda i: DEVICE_T0 + timedelta(seconds=i), hr=lambda i: 251))
    backwards = lambda i: DEVICE_T0 + timedelta(seconds=i if i != 30 else 10)  # noqa: E731
    with pytest.raises(RejectedFile, match="timestamps go backwards"):
        load(build_fit(times=backwards))


def test_empty_file_rejected() -> None:
    with pytest.raises(RejectedFile, match="empty") as info:
        load(b"", "x/empty.fit")
    assert "x/empty.fit" in str(info.value)


def test_non_fit_bytes_named_fit_rejected() -> None:
    with pytest.raises(RejectedFile, match="not a FIT, GPX or TCX") as info:
        load(b"PK\x03\x04 this is not a fit file at all" * 4, "x/fake.fit")
    assert info.value.path == "x/fake.fit"


def test_truncated_fit_rejected_with_offset() -> None:
    data = build_fit()
    with pytest.raises(RejectedFile, match="truncated") as info:
        load(data[: len(data) // 2])
    assert info.value.offset is not None and 0 < info.value.offset <= len(data) // 2


def test_bad_crc_rejected() -> None:
    data = bytearray(build_fit())
    data[-1] ^= 0xFF
    with pytest.raises(RejectedFile, match="CRC"):
        load(bytes(data))
    flipped = bytearray(build_fit())
    flipped[200] ^= 0x01  # a data byte: the file CRC no longer matches
    with pytest.raises(RejectedFile, match="CRC|decode"):
        load(bytes(flipped))


def test_crc_valid_garbage_latitudes_rejected_naming_value_and_record() -> None:
    data = build_fit(lat=lambda i: int(1.5 * 2**30))  # 135 degrees north
    with pytest.raises(RejectedFile, match=r"latitude=135 at record 0 \(60 of 60"):
        load(data)


def test_crc_valid_garbage_heart_rate_rejected() -> None:
    with pytest.raises(RejectedFile, match=r"hr_bpm=254 at record 0"):
        load(build_fit(hr=lambda i: 254))


def test_crc_valid_garbage_cadence_rejected() -> None:
    with pytest.raises(RejectedFile, match="cadence_spm"):
        load(build_fit(cadence=lambda i: 200))  # 400 steps/min


def test_timestamps_going_backwards_rejected() -> None:
    times = lambda i: T0 + timedelta(seconds=i if i < 30 else i - 20)  # noqa: E731
    with pytest.raises(RejectedFile, match="backwards: record 30"):
        load(build_fit(times=times))


def test_timestamps_in_the_future_rejected() -> None:
    future = datetime.now(timezone.utc) + timedelta(days=30)
    with pytest.raises(RejectedFile, match="implausible"):
        load(build_fit(times=lambda i: future + timedelta(seconds=i)))


def test_isolated_glitches_become_null_not_rejection() -> None:
    data = build_fit(hr=lambda i: 0 if i == 3 else (254 if i == 7 else 150), lat=lambda i: int(1.5 * 2**30) if i == 11 else int(51.5 / 180 * 2**31))
    a = load(data)[0]
    s = a.samples
    assert s["hr_bpm"][3] is None and s["hr_bpm"][7] is None and s["hr_bpm"][8] == 150
    assert s["lat_deg"][11] is None and s["lon_deg"][11] is None
    assert s["lat_deg"][12] == pytest.approx(51.5, abs=1e-6)
    assert a.activity["n_samples"] == 60


# --------------------------------------------------------------------------- GPX

GPX_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="StravaGPX" xmlns="http://www.topografix.com/GPX/1/1"
 xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v1"
 xmlns:gpxtpx2="http://www.garmin.com/xmlschemas/TrackPointExtension/v2"
 xmlns:gpxdata="http://www.cluetrust.com/XML/GPXDATA/1/0">
"""


def gpx_points(n: int, *, ext: str = "v1", time_fmt: str = "Z", type_: str = "9", segments: int = 1) -> str:
    body = [f"<trk><type>{type_}</type>"]
    per = n // segments
    for s in range(segments):
        body.append("<trkseg>")
        for i in range(s * per, (s + 1) * per):
            t = T0 + timedelta(seconds=i + 60 * s)
            stamp = {"Z": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "naive": t.strftime("%Y-%m-%dT%H:%M:%S"),
                     "+02": (t + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")}[time_fmt]
            extension = {
                "v1": f"<gpxtpx:TrackPointExtension><gpxtpx:hr>{150 + i % 3}</gpxtpx:hr><gpxtpx:cad>86</gpxtpx:cad></gpxtpx:TrackPointExtension>",
                "v2": "<gpxtpx2:TrackPointExtension><gpxtpx2:hr>151</gpxtpx2:hr><gpxtpx2:cad>87</gpxtpx2:cad></gpxtpx2:TrackPointExtension>",
                "gpxdata": "<gpxdata:hr>152</gpxdata:hr><gpxdata:cadence>88</gpxdata:cadence>",
                "plain": "<heartrate>153</heartrate><power>240</power>",
            }[ext]
            body.append(f'<trkpt lat="{46.0 + i * 1e-4:.6f}" lon="7.0"><ele>500</ele><time>{stamp}</time><extensions>{extension}</extensions></trkpt>')
        body.append("</trkseg>")
    body.append("</trk>")
    return GPX_HEAD + "\n".join(body) + "\n</gpx>\n"


@pytest.mark.parametrize(("ext", "hr", "cad"), [("v1", 150, 172), ("v2", 151, 174), ("gpxdata", 152, 176), ("plain", 153, None)])
def test_gpx_extension_flavours(ext: str, hr: int, cad: float | None) -> None:
    a = load(gpx_points(30, ext=ext).encode(), "a/run.gpx")[0]
    assert a.activity["sport"] == "running"  # Strava type 9
    assert a.activity["source_format"] == "gpx"
    assert a.samples["hr_bpm"][0] == hr
    assert a.samples["cadence_spm"][0] == cad
    if ext == "plain":
        assert a.samples["power_w"][0] == 240
    assert a.activity["distance_source"] == "gps"
    # 29 steps of 1e-4 degree of latitude = 29 * 11.119 m
    assert a.activity["distance_m"] == pytest.approx(29 * 11.1195, rel=1e-3)


def test_gpx_naive_times_are_utc_and_offsets_give_the_zone() -> None:
    naive = load(gpx_points(10, time_fmt="naive").encode(), "a/n.gpx")[0]
    assert naive.activity["start_utc"] == T0
    off = load(gpx_points(10, time_fmt="+02").encode(), "a/o.gpx")[0]
    assert off.activity["start_utc"] == T0
    assert (off.activity["utc_offset_s"], off.activity["tz_source"]) == (7200, "file_offset")
    assert off.activity["timezone"] == "Europe/Zurich"  # GPS zone agrees with the +02:00


def test_gpx_segments_are_pauses_and_not_bridged() -> None:
    a = load(gpx_points(40, segments=2).encode(), "a/s.gpx")[0]
    assert a.pauses.height == 1 and a.pauses["duration_s"][0] == pytest.approx(61.0)
    assert a.activity["moving_s"] == pytest.approx(a.activity["elapsed_s"] - 61.0)
    assert a.activity["distance_m"] == pytest.approx(38 * 11.1195, rel=1e-3)


def test_gpx_doctype_and_entities_rejected_before_gpxpy() -> None:
    bomb = ('<?xml version="1.0"?><!DOCTYPE gpx [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            '<gpx version="1.1"><trk><name>&b;</name></trk></gpx>')
    with pytest.raises(RejectedFile, match="DOCTYPE/entity"):
        load(bomb.encode(), "a/bomb.gpx")
    external = '<?xml version="1.0"?><!DOCTYPE gpx SYSTEM "file:///etc/passwd"><gpx version="1.1"/>'
    with pytest.raises(RejectedFile, match="DOCTYPE/entity"):
        load(external.encode(), "a/ext.gpx")


def test_gpx_without_times_rejected_naming_it() -> None:
    text = gpx_points(10).replace("<time>", "<!--").replace("</time>", "-->")
    with pytest.raises(RejectedFile, match="without <time>: 10 of 10"):
        load(text.encode(), "a/notime.gpx")


def test_gpx_waypoints_only_is_skipped() -> None:
    text = GPX_HEAD + '<wpt lat="1" lon="2"><name>x</name></wpt><rte><rtept lat="1" lon="2"/></rte></gpx>'
    with pytest.raises(SkippedFile, match="1 waypoints and 1 routes"):
        load(text.encode(), "a/wpt.gpx")


def test_gpx_not_well_formed_names_the_line() -> None:
    text = gpx_points(5).replace("<gpxtpx:hr>150", "<undeclared:hr>150", 1)
    with pytest.raises(RejectedFile, match="not well-formed") as info:
        load(text.encode(), "a/bad.gpx")
    assert info.value.line is not None and info.value.line > 1


def test_huge_xmlns_gpx_rejected_quickly() -> None:
    # gpxpy's namespace regex scans from each " xmlns" to the next "=": with no "=" after them
    # 40k words took gpxpy 11 s here (quadratic); 400k would take ~20 minutes
    text = gpx_points(3).replace("</gpx>", "<desc>" + " xmlns" * 400_000 + "</desc></gpx>")
    start = time.perf_counter()
    with pytest.raises(RejectedFile, match="xmlns"):
        load(text.encode(), "a/ns.gpx")
    assert time.perf_counter() - start < 2.0


def test_many_well_formed_namespace_declarations_are_fine() -> None:
    # Suunto/Garmin exports declare a namespace on every extension element
    text = gpx_points(200).replace("<gpxtpx:TrackPointExtension>", '<gpxtpx:TrackPointExtension xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v1">')
    assert load(text.encode(), "a/ns-ok.gpx")[0].activity["n_samples"] == 200


# --------------------------------------------------------------------------- TCX


def tcx(activities: list[tuple[str, int]], *, course: bool = False) -> bytes:
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<TrainingCenterDatabase xmlns="http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2" '
             'xmlns:ns3="http://www.garmin.com/xmlschemas/ActivityExtension/v2">']
    if course:
        parts.append("<Courses><Course><Name>loop</Name><Track><Trackpoint><Time>2024-05-04T07:30:00Z</Time></Trackpoint></Track></Course></Courses>")
    else:
        parts.append("<Activities>")
        offset = 0
        for sport, n in activities:
            start = T0 + timedelta(hours=offset)
            parts.append(f'<Activity Sport="{sport}"><Id>{start.isoformat().replace("+00:00", "Z")}</Id>'
                         f'<Lap StartTime="{start.isoformat()}"><TotalTimeSeconds>{n - 1}</TotalTimeSeconds>'
                         f"<DistanceMeters>{(n - 1) * 3.0}</DistanceMeters><TriggerMethod>Manual</TriggerMethod><Track>")
            for i in range(n):
                t = (start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
                parts.append(f"<Trackpoint><Time>{t}</Time><Position><LatitudeDegrees>{46 + i * 1e-4}</LatitudeDegrees>"
                             f"<LongitudeDegrees>7.0</LongitudeDegrees></Position><AltitudeMeters>500</AltitudeMeters>"
                             f"<DistanceMeters>{i * 3.0}</DistanceMeters><HeartRateBpm><Value>{140 + i % 5}</Value></HeartRateBpm>"
                             f"<Extensions><ns3:TPX><ns3:Speed>3.0</ns3:Speed><ns3:RunCadence>88</ns3:RunCadence>"
                             f"<ns3:Watts>260</ns3:Watts></ns3:TPX></Extensions></Trackpoint>")
            parts.append("</Track></Lap><Creator><Name>Forerunner 255</Name><ProductID>3992</ProductID></Creator></Activity>")
            offset += 2
        parts.append("</Activities>")
    parts.append("</TrainingCenterDatabase>")
    return "".join(parts).encode()


def test_tcx_activities_laps_and_extensions() -> None:
    acts = load(tcx([("Running", 30), ("Biking", 20)]), "a/two.tcx")
    assert [a.activity["sport"] for a in acts] == ["running", "cycling"]
    run, bike = acts
    assert run.activity["distance_m"] == pytest.approx(87.0) and run.activity["distance_source"] == "device"
    assert run.activity["moving_s"] == pytest.approx(29.0)
    assert run.samples["cadence_spm"][0] == 176.0  # RunCadence strides/min doubled
    assert bike.samples["cadence_spm"][0] == 88.0
    assert run.samples["power_w"][0] == 260 and run.samples["speed_mps"][0] == 3.0
    assert run.samples["distance_m"][10] == 30.0
    assert run.laps.height == 1 and run.laps["trigger"][0] == "manual"
    assert run.activity["device_manufacturer"] == "garmin"
    assert bike.activity["start_utc"] == T0 + timedelta(hours=2)
    assert [a.activity["session_index"] for a in acts] == [0, 1]


def test_tcx_course_is_skipped() -> None:
    with pytest.raises(SkippedFile, match="course"):
        load(tcx([], course=True), "a/course.tcx")


def test_tcx_with_doctype_rejected() -> None:
    data = tcx([("Running", 5)]).replace(b"<TrainingCenterDatabase", b'<!DOCTYPE x [<!ENTITY e "e">]><TrainingCenterDatabase', 1)
    with pytest.raises(RejectedFile, match="DOCTYPE"):
        load(data, "a/dtd.tcx")


# --------------------------------------------------------------------------- gzip and sniffing


@pytest.mark.parametrize(("name", "data"), [("r.fit", build_fit(n=20)), ("r.gpx", gpx_points(20).encode()), ("r.tcx", tcx([("Running", 20)]))])
def test_gz_round_trip(name: str, data: bytes) -> None:
    plain = load(data, f"a/{name}")
    packed_bytes = gzip.compress(data)
    packed = load(packed_bytes, f"a/{name}.gz")
    assert len(plain) == len(packed) == 1
    assert packed[0].samples.drop("activity_id").equals(plain[0].samples.drop("activity_id"))
    assert packed[0].activity["source_sha256"] == hashlib.sha256(packed_bytes).hexdigest()
    assert packed[0].activity["source_format"] == plain[0].activity["source_format"]
    assert sniff_format(Path(f"{name}.gz"), packed_bytes) == name.split(".")[1]


def test_gzip_bomb_and_corrupt_gzip_rejected() -> None:
    bomb = gzip.compress(b"\0" * (4 * 1024**2))
    with pytest.raises(RejectedFile, match="inflates to more than"):
        read_activities(Path("b.fit.gz"), rel_path="b.fit.gz", athlete_id="a", athlete_tz=None, data=bomb, max_bytes=1024**2)
    with pytest.raises(RejectedFile, match="gzip"):
        load(gzip.compress(build_fit())[:-20], "a/cut.fit.gz")


def test_sniff_by_content_not_extension() -> None:
    assert sniff_format(Path("x.fit"), gpx_points(2).encode()) == "gpx"
    assert sniff_format(Path("x.gpx"), build_fit(n=3)) == "fit"
    assert sniff_format(Path("x.txt"), tcx([("Running", 2)])) == "tcx"
    assert sniff_format(Path("x.fit"), b"hello") is None
    assert sniff_format(Path("x.fit"), b"") is None


# --------------------------------------------------------------------------- zip archives


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_strava_style_export_zip() -> None:
    fit_gz = gzip.compress(build_fit(n=30))
    gpx = gpx_points(30).encode()
    tcx_gz = gzip.compress(tcx([("Running", 30)]))
    archive = make_zip({
        "activities.csv": b"Activity ID,Activity Date,Activity Type,Filename\n1,x,Run,activities/1.fit.gz\n",
        "activities/1.fit.gz": fit_gz,
        "activities/2.gpx": gpx,
        "activities/3.tcx.gz": tcx_gz,
        "media/photo.jpg": b"\xff\xd8\xff",
    })
    members = dict(iter_archive(Path("export_1.zip"), data=archive))
    assert sorted(members) == ["activities/1.fit.gz", "activities/2.gpx", "activities/3.tcx.gz"]
    assert members["activities/1.fit.gz"] == fit_gz
    loaded = [load(data, f"export_1.zip!{name}") for name, data in sorted(members.items())]
    assert [acts[0].activity["source_format"] for acts in loaded] == ["fit", "gpx", "tcx"]
    assert all(acts[0].activity["sport"] == "running" for acts in loaded)


def test_garmin_style_nested_zip_and_depth_limit() -> None:
    inner = make_zip({"123_ACTIVITY.fit": build_fit(n=10)})
    outer = make_zip({"DI_CONNECT/DI-Connect-Uploaded-Files/UploadedFiles_0-_Part1.zip": inner})
    names = [name for name, _ in iter_archive(Path("garmin.zip"), data=outer)]
    assert names == ["DI_CONNECT/DI-Connect-Uploaded-Files/UploadedFiles_0-_Part1.zip!123_ACTIVITY.fit"]
    too_deep = make_zip({"a.zip": make_zip({"b.zip": inner})})
    with pytest.raises(RejectedFile, match="nested deeper") as info:
        list(iter_archive(Path("deep.zip"), data=too_deep))
    assert info.value.path == "deep.zip!a.zip!b.zip"


@pytest.mark.parametrize("bad", ["../evil.fit", "/etc/evil.fit", "C:/evil.fit", "ok/../../evil.gpx", "..\\evil.tcx"])
def test_zip_member_escaping_the_archive_rejected(bad: str) -> None:
    archive = make_zip({"activities/good.fit": build_fit(n=5), bad: b"x"})
    it = iter_archive(Path("export.zip"), data=archive)
    with pytest.raises(RejectedFile) as info:
        next(it)  # nothing is yielded before the directory is checked
    assert info.value.path == f"export.zip!{bad}"
    assert "escape" in info.value.reason or "absolute" in info.value.reason


def test_zip_bomb_ratio_rejected() -> None:
    archive = make_zip({"activities/bomb.gpx": b"\0" * (8 * 1024**2)})
    with pytest.raises(RejectedFile, match="compression ratio") as info:
        list(iter_archive(Path("bomb.zip"), data=archive))
    assert "bomb.zip!activities/bomb.gpx" in str(info.value)


def test_zip_member_count_and_size_limits() -> None:
    archive = make_zip({f"activities/{i}.gpx": b"<gpx/>" for i in range(20)})
    with pytest.raises(RejectedFile, match="20 members"):
        list(iter_archive(Path("many.zip"), data=archive, limits=ArchiveLimits(max_members=10)))
    with pytest.raises(RejectedFile, match="byte limit"):
        list(iter_archive(Path("big.zip"), data=archive, limits=ArchiveLimits(max_member_bytes=3)))


def test_not_a_zip_rejected() -> None:
    with pytest.raises(RejectedFile, match="not a readable zip") as info:
        list(iter_archive(Path("x.zip"), rel_path="raw/x.zip", data=b"no zip here"))
    assert info.value.path == "raw/x.zip"


# --------------------------------------------------------------------------- fuzzing: only our errors escape

_FUZZ_BASE = build_fit(n=12, pause=(5, 30), times=lambda i: T0 + timedelta(seconds=i + (30 if i > 5 else 0)))


def _recrc(data: bytearray) -> bytes:
    """Re-seal a mutated FIT file: CRC-valid garbage."""
    data[12:14] = struct.pack("<H", fit_crc(bytes(data[:12])))
    body = bytes(data[:-2])
    return body + struct.pack("<H", fit_crc(body))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(14, len(_FUZZ_BASE) - 3), st.integers(0, 255)), min_size=1, max_size=6))
def test_crc_valid_garbage_raises_only_input_errors(mutations: list[tuple[int, int]]) -> None:
    data = bytearray(_FUZZ_BASE)
    for pos, value in mutations:
        data[pos] = value
    try:
        acts = load(_recrc(data))
    except InputError as exc:
        assert exc.path == "a/run.fit" and exc.reason
        return
    for a in acts:  # whatever loads is within the schema's ranges
        s = a.samples
        assert s["t_utc"].is_sorted()
        assert ((s["hr_bpm"].drop_nulls() >= 20) & (s["hr_bpm"].drop_nulls() <= 250)).all()
        assert (s["lat_deg"].drop_nulls().abs() <= 90).all()


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["x.fit", "x.gpx", "x.tcx", "x.fit.gz"]))
def test_random_bytes_raise_only_input_errors(blob: bytes, name: str) -> None:
    for data in (blob, b"<?xml version='1.0'?><gpx>" + blob, gzip.compress(blob)):
        try:
            load(data, name)
        except InputError:
            pass


_ZIP_BASE = make_zip({"activities/1.fit.gz": gzip.compress(build_fit(n=5)), "activities/2.gpx": gpx_points(4).encode(),
                      "nested.zip": make_zip({"a.tcx": tcx([("Running", 3)])})})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_ZIP_BASE) - 1), st.integers(0, 255)), min_size=1, max_size=6))
@example(mutations=[(1497, 0)])  # a central-directory name length of 0: a member without a name
def test_corrupt_archives_raise_only_rejected_file(mutations: list[tuple[int, int]]) -> None:
    data = bytearray(_ZIP_BASE)
    for pos, value in mutations:
        data[pos] = value
    try:
        members = list(iter_archive(Path("fuzz.zip"), data=bytes(data)))
    except RejectedFile as exc:
        assert exc.path is not None and exc.path.startswith("fuzz.zip")
        return
    assert len(members) <= 3
