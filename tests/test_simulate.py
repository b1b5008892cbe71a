"""Tests of the seeded simulator (pipeline.simulate).

The files are read back with the third-party parsers (fitparse, gpxpy) and
compared with the planted truth; the truth itself is checked for coherence
with independent computations (30-day load ratios, time spans, the CSV as
written). fitparse is slow (~0.1 ms per record), so FIT round trips use a
two-week cohort and a chosen subset of its files.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import re
import tomllib
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import fitparse
import gpxpy
import numpy as np
import pytest
from fitparse.records import Crc
from fitparse.utils import FitCRCError, FitEOFError
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.simulate import GENERATOR, SimulationSummary, simulate
from pipeline.simulate.fitenc import Field, FitWriter, MessageDef, crc16

FIT_EPOCH = datetime(1989, 12, 31, tzinfo=timezone.utc)
MILE = 1609.344
TPX = "{http://www.garmin.com/xmlschemas/TrackPointExtension/v1}"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulationSummary, dict]:
    """Two weeks, four athletes: enough for a spike, onsets, every file variety."""
    out = tmp_path_factory.mktemp("small")
    summary = simulate(out, athletes=4, weeks=2, seed=7)
    truth = json.loads((out / "_truth" / "truth.json").read_text(encoding="utf-8"))
    return out, summary, truth


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulationSummary, dict]:
    """The default cohort (4 athletes x 8 weeks, seed 42): truth-level checks only."""
    out = tmp_path_factory.mktemp("default")
    summary = simulate(out)
    truth = json.loads((out / "_truth" / "truth.json").read_text(encoding="utf-8"))
    return out, summary, truth


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@functools.lru_cache(maxsize=16)
def _fit_messages(path: Path) -> tuple[fitparse.records.DataMessage, ...]:
    """All messages of a FIT file, CRC checked (cached: fitparse is slow)."""
    return tuple(fitparse.FitFile(path.read_bytes(), check_crc=True).get_messages())


def _fit_records(path: Path) -> list[dict]:
    return [m.get_values() for m in _fit_messages(path) if m.name == "record"]


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None)


# --------------------------------------------------------------------------- determinism and the output folder

def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    simulate(a, athletes=3, weeks=1, seed=11)
    simulate(b, athletes=3, weeks=1, seed=11)
    simulate(c, athletes=3, weeks=1, seed=12)
    da, db, dc = _tree_digest(a), _tree_digest(b), _tree_digest(c)
    assert len(da) > 10
    assert da == db
    shared = set(da) & set(dc)
    assert sum(da[k] != dc[k] for k in shared) >= len(shared) // 2 or set(da) != set(dc)


def test_an_athlete_does_not_depend_on_the_cohort_size(tmp_path: Path) -> None:
    simulate(tmp_path / "three", athletes=3, weeks=1, seed=5)
    simulate(tmp_path / "four", athletes=4, weeks=1, seed=5)
    three = {k: v for k, v in _tree_digest(tmp_path / "three").items() if k.startswith("knee/")}
    four = {k: v for k, v in _tree_digest(tmp_path / "four").items() if k.startswith("knee/")}
    assert three and three == four


def test_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ValueError, match="refusing"):
        simulate(tmp_path, athletes=3, weeks=1)
    assert (tmp_path / "precious.txt").read_text(encoding="utf-8") == "keep me"
    assert not (tmp_path / "knee").exists()


def test_refuses_a_folder_with_a_foreign_truth_file(tmp_path: Path) -> None:
    (tmp_path / "_truth").mkdir()
    (tmp_path / "_truth" / "truth.json").write_text('{"generator": "someone else"}', encoding="utf-8")
    with pytest.raises(ValueError):
        simulate(tmp_path, athletes=3, weeks=1)


def test_overwrites_a_previous_output_cleanly(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("raw data lives here\n", encoding="utf-8")
    simulate(tmp_path, athletes=4, weeks=1, seed=1)
    stray = tmp_path / "knee" / "activities" / "stray.fit"
    stray.write_bytes(b"old")
    simulate(tmp_path, athletes=3, weeks=1, seed=2)
    assert not stray.exists()
    assert not (tmp_path / "phone").exists()  # athlete 3 of the previous run is gone
    assert (tmp_path / "README.md").exists()
    fresh = tmp_path / "fresh"
    simulate(fresh, athletes=3, weeks=1, seed=2)
    rewritten = {k: v for k, v in _tree_digest(tmp_path).items() if k != "README.md" and not k.startswith("fresh/")}
    assert rewritten == _tree_digest(fresh)


@pytest.mark.parametrize("kwargs", [{"athletes": 2}, {"weeks": 0}])
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        simulate(tmp_path / "x", **kwargs)


# --------------------------------------------------------------------------- layout, athlete.toml, pain.csv

def test_layout_and_athlete_files(small: tuple[Path, SimulationSummary, dict]) -> None:
    out, summary, truth = small
    assert summary.athlete_ids == ("knee", "spike", "control", "phone")
    assert summary.truth_path == out / "_truth" / "truth.json"
    assert truth["generator"] == GENERATOR and truth["seed"] == 7
    for aid, info in truth["athletes"].items():
        meta = tomllib.loads((out / aid / "athlete.toml").read_text(encoding="utf-8"))
        assert meta["timezone"] == info["timezone"] and meta["unit"] in ("km", "mi")
        ZoneInfo(meta["timezone"])
        assert (out / aid / "pain.csv").exists()
        files = sorted(p.name for p in (out / aid / "activities").iterdir())
        assert files and all(re.fullmatch(r"\d{4}-\d\d-\d\d-\d{4}-[a-z]+\.(fit|gpx)", f) for f in files)
    assert tomllib.loads((out / "knee" / "athlete.toml").read_text(encoding="utf-8"))["distance_cap"] == "9 mi"
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and "activities" in p.parts}
    assert on_disk == {a["file"] for a in truth["activities"]}
    assert summary.n_activity_files == len(on_disk)
    assert summary.n_pain_rows == len(truth["pain_reports"])


def test_local_start_in_file_name_and_truth(small: tuple[Path, SimulationSummary, dict]) -> None:
    _, _, truth = small
    for a in truth["activities"]:
        tz = ZoneInfo(a["timezone"])
        local = _utc(a["start_utc"]).astimezone(tz)
        assert Path(a["file"]).name.startswith(local.strftime("%Y-%m-%d-%H%M-"))
        assert int(local.utcoffset().total_seconds()) == a["utc_offset_s"]


def test_pain_csv_rows_are_the_truth_rows(small: tuple[Path, SimulationSummary, dict]) -> None:
    out, _, truth = small
    for aid in truth["athletes"]:
        text = (out / aid / "pain.csv").read_text(encoding="utf-8")
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == ["date", "run", "onset", "body_part", "side", "severity", "notes"]
        reports = [r for r in truth["pain_reports"] if r["athlete_id"] == aid]
        assert len(rows) - 1 == len(reports)
        for r in reports:
            assert r["source_file"] == f"{aid}/pain.csv"
            row = rows[r["line"] - 1]
            assert row[0] == r["date"] and row[2] == r["onset_raw"] and row[3] == r["body_part_raw"]
            assert 0 <= int(row[5]) <= 10
    assert (out / "control" / "pain.csv").read_text(encoding="utf-8").count("\n") == 1


def test_knee_log_uses_every_onset_form(default: tuple[Path, SimulationSummary, dict]) -> None:
    _, _, truth = default
    raws = [r["onset_raw"] for r in truth["pain_reports"] if r["athlete_id"] == "knee"]
    patterns = {
        "km": r"\d+\.\d km", "approx": r"~\d+ mi", "range": r"\d+-\d+ mi", "clock": r"\d\d:\d\d:\d\d",
        "elapsed": r"\+\d+:\d\d(:\d\d)?", "instant": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d",
    }
    for name, pat in patterns.items():
        assert any(re.fullmatch(pat, raw) for raw in raws), name


# --------------------------------------------------------------------------- FIT round trip

def _chosen_fit(truth: dict) -> list[dict]:
    fit = [a for a in truth["activities"] if a["format"] == "fit" and a["broken"] is None]
    chosen: dict[str, dict] = {}
    def shortest(items: list[dict], k: int = 1) -> list[dict]:
        return sorted(items, key=lambda a: a["n_records"])[:k]

    picks = [
        shortest([a for a in fit if a["knee_onset"]]),
        [a for a in fit if a["sub_sport"] == "treadmill"],
        [a for a in fit if a["sport"] == "cycling"],
        shortest([a for a in fit if a["n_pauses"]], 2),
        [a for a in fit if any(d["duplicate_of"] == a["file"] for d in truth["activities"])],
    ]
    for group in picks:
        assert group, "a planted variety is missing"
        for a in group:
            chosen[a["file"]] = a
    return list(chosen.values())


def test_fit_files_read_back_with_crc_and_match_truth(small: tuple[Path, SimulationSummary, dict]) -> None:
    out, _, truth = small
    for a in _chosen_fit(truth):
        msgs = _fit_messages(out / a["file"])
        by = {}
        for m in msgs:
            by.setdefault(m.name, []).append(m)
        assert not [f.name for m in msgs for f in m.fields if f.name.startswith("unknown")]  # profile numbers right
        fid = by["file_id"][0].get_values()
        assert fid["type"] == "activity" and fid["manufacturer"] == "garmin"
        assert fid["time_created"] == _naive_utc(_utc(a["start_utc"]))
        session = by["session"][0].get_values()
        assert session["sport"] == a["sport"] and session["sub_sport"] == a["sub_sport"]
        assert session["start_time"] == _naive_utc(_utc(a["start_utc"]))
        assert session["total_elapsed_time"] == pytest.approx(a["elapsed_s"])
        assert session["total_timer_time"] == pytest.approx(a["moving_s"])
        assert session["total_distance"] == pytest.approx(a["distance_m"], abs=0.01)
        assert session["max_heart_rate"] == a["max_hr_bpm"]
        assert session["avg_heart_rate"] == pytest.approx(a["avg_hr_bpm"], abs=0.51)
        act = by["activity"][0].get_values()
        assert act["num_sessions"] == 1
        assert (act["local_timestamp"] - act["timestamp"]).total_seconds() == a["utc_offset_s"]

        recs = _fit_records(out / a["file"])
        assert len(recs) == a["n_records"]
        ts = np.array([(r["timestamp"] - recs[0]["timestamp"]).total_seconds() for r in recs])
        assert ts[0] == 0 and ts[-1] == a["elapsed_s"]
        gaps = np.diff(ts)
        assert sorted(gaps[gaps != 1].tolist()) == sorted(p["duration_s"] + 1 for p in a["pauses"])
        dist = np.array([r["distance"] for r in recs])
        assert np.all(np.diff(dist) >= 0) and dist[-1] == pytest.approx(a["distance_m"], abs=0.01)
        assert ("position_lat" in recs[0]) == a["has_gps"]
        if a["has_gps"]:
            lat = np.array([r["position_lat"] for r in recs]) * 180 / 2**31
            assert np.all(np.abs(lat - lat[0]) < 0.2)  # stays near home
        if a["sport"] == "running":
            spm = np.array([2 * (r["cadence"] + r["fractional_cadence"]) for r in recs])
            assert np.all((spm >= 140) & (spm <= 200))
            assert np.mean(spm) == pytest.approx(a["avg_cadence_spm"], abs=0.01)
        else:
            assert "fractional_cadence" not in recs[0]
            assert 60 <= np.mean([r["cadence"] for r in recs]) <= 110  # rpm
        hr = np.array([r["heart_rate"] for r in recs])
        assert 60 <= hr.min() and hr.max() <= 200 and hr.max() == a["max_hr_bpm"]

        events = [e.get_values() for e in by["event"]]
        stops = [e["timestamp"] for e in events if e["event_type"] == "stop_all"]
        assert [_naive_utc(_utc(p["start_utc"])) for p in a["pauses"]] == stops[:-1]
        laps = [m.get_values() for m in by["lap"]]
        assert sum(lap["total_distance"] for lap in laps) == pytest.approx(a["distance_m"], abs=0.05)
        assert session["num_laps"] == len(laps)


def test_knee_onset_sample_is_where_truth_says(small: tuple[Path, SimulationSummary, dict]) -> None:
    out, _, truth = small
    a = _chosen_fit(truth)[0]  # the shortest knee run with an onset (parsed once, cached)
    (r,) = [r for r in truth["pain_reports"] if r["activity_file"] == a["file"]]
    assert r["effect"] == "knee_onset" and r["expected_status"] == "matched"
    recs = _fit_records(out / a["file"])
    i = r["sample_index"]
    assert recs[i]["distance"] == pytest.approx(r["onset_distance_m"], abs=0.005)
    assert recs[i - 1]["distance"] < a["knee_onset"]["drawn_onset_m"] <= recs[i]["distance"]
    assert recs[i]["timestamp"] == _naive_utc(_utc(r["onset_utc"]))
    # the planted effect is visible in the file: cadence and speed lower after the onset
    spm = np.array([2 * (x["cadence"] + x["fractional_cadence"]) for x in recs])
    speed = np.array([x["enhanced_speed"] for x in recs])
    ramp = a["knee_onset"]["ramp_start_index"]
    before, after = slice(ramp - 600, ramp), slice(i, min(i + 600, len(recs)))
    assert spm[before].mean() - spm[after].mean() > 4.0
    assert speed[after].mean() < speed[before].mean()


def test_treadmill_has_a_footpod_and_no_positions(small: tuple[Path, SimulationSummary, dict]) -> None:
    out, _, truth = small
    (a,) = [a for a in truth["activities"] if a["sub_sport"] == "treadmill"]
    assert a["has_gps"] is False and a["athlete_id"] == "knee"
    msgs = _fit_messages(out / a["file"])
    devices = [m.get_values() for m in msgs if m.name == "device_info"]
    assert any(d.get("antplus_device_type") == "stride_speed_distance" for d in devices)
    assert not any(f.name.startswith("position") for m in msgs if m.name == "record" for f in m.fields)


def test_broken_files_fail_to_decode(small: tuple[Path, SimulationSummary, dict]) -> None:
    out, _, truth = small
    broken = {a["broken"]: a for a in truth["activities"] if a["broken"]}
    assert set(broken) == {"truncated", "corrupt"}
    for kind, a in broken.items():
        assert a["athlete_id"] in ("knee", "control")
        data = (out / a["file"]).read_bytes()
        assert data[8:12] == b".FIT" and 0 < a["broken_offset"] <= len(data)
        with pytest.raises(FitEOFError if kind == "truncated" else FitCRCError):
            list(fitparse.FitFile(data, check_crc=True).get_messages())
    truncated = (out / broken["truncated"]["file"]).read_bytes()
    assert len(truncated) == broken["truncated"]["broken_offset"]


# --------------------------------------------------------------------------- GPX round trip

def _gpx_points(path: Path) -> tuple[gpxpy.gpx.GPX, list]:
    gpx = gpxpy.parse(path.read_text(encoding="utf-8"))
    return gpx, [p for t in gpx.tracks for s in t.segments for p in s.points]


def _ext(point: gpxpy.gpx.GPXTrackPoint) -> dict[str, int]:
    return {c.tag.replace(TPX, ""): int(c.text) for e in point.extensions for c in e}


def test_phone_gpx_read_back(small: tuple[Path, SimulationSummary, dict]) -> None:
    out, _, truth = small
    phone = [a for a in truth["activities"] if a["athlete_id"] == "phone"]
    assert phone and all(a["format"] == "gpx" and a["gpx_cadence_unit"] == "strides_per_min" for a in phone)
    for a in phone[:3]:
        gpx, pts = _gpx_points(out / a["file"])
        assert gpx.version == "1.1" and gpx.creator.startswith("StravaGPX")
        assert gpx.tracks[0].type == "running"
        assert len(pts) == a["n_records"]
        assert all(p.time.utcoffset() == timedelta(0) for p in pts)
        assert pts[0].time == _utc(a["start_utc"]) and pts[-1].time == _utc(a["end_utc"])
        times = [p.time for p in pts]
        assert all(t1 > t0 for t0, t1 in zip(times, times[1:]))
        ext = [_ext(p) for p in pts]
        assert all(set(e) == {"hr", "cad"} for e in ext)
        cad = np.array([e["cad"] for e in ext])
        assert 70 <= cad.min() and cad.max() <= 100  # strides per minute
        assert np.mean(cad) * 2 == pytest.approx(a["avg_cadence_spm"], abs=1.0)
        assert np.mean([e["hr"] for e in ext]) == pytest.approx(a["avg_hr_bpm"], abs=1.0)
    for r in (r for r in truth["pain_reports"] if r["athlete_id"] == "phone"):
        _, pts = _gpx_points(out / r["activity_file"])
        assert pts[r["sample_index"]].time == _utc(r["onset_utc"])


def test_gpx_duplicate_matches_its_fit(small: tuple[Path, SimulationSummary, dict]) -> None:
    out, _, truth = small
    (dup,) = [a for a in truth["activities"] if a["duplicate_of"]]
    assert dup["format"] == "gpx" and dup["duplicate_of"].endswith(".fit")
    assert Path(dup["file"]).stem == Path(dup["duplicate_of"]).stem
    gpx, pts = _gpx_points(out / dup["file"])
    assert gpx.creator == "Garmin Connect"
    recs = _fit_records(out / dup["duplicate_of"])
    assert len(pts) == len(recs) == dup["n_records"]
    for p, r in zip(pts[::97], recs[::97]):
        assert p.time == r["timestamp"].replace(tzinfo=timezone.utc)
        assert p.latitude == pytest.approx(r["position_lat"] * 180 / 2**31, abs=1e-9)
        assert p.longitude == pytest.approx(r["position_long"] * 180 / 2**31, abs=1e-9)
        assert _ext(p) == {"hr": r["heart_rate"], "cad": r["cadence"]}


# --------------------------------------------------------------------------- truth coherence

def _runs_by_athlete(truth: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for a in truth["activities"]:
        if a["sport"] == "running" and a["duplicate_of"] is None and a["broken"] is None:
            out.setdefault(a["athlete_id"], []).append(a)
    return out


def test_truth_matched_reports_fall_inside_their_runs(default: tuple[Path, SimulationSummary, dict]) -> None:
    out, _, truth = default
    files = {a["file"]: a for a in truth["activities"]}
    statuses = {r["expected_status"] for r in truth["pain_reports"]}
    assert {"matched", "unmatched", "after_run", "next_day"} <= statuses
    for r in truth["pain_reports"]:
        if r["expected_status"] == "matched":
            a = files[r["activity_file"]]
            assert (out / a["file"]).exists() and a["broken"] is None
            assert _utc(a["start_utc"]) <= _utc(r["onset_utc"]) <= _utc(a["end_utc"])
            assert r["onset_elapsed_s"] == (_utc(r["onset_utc"]) - _utc(a["start_utc"])).total_seconds()
            assert 0 <= r["sample_index"] < a["n_records"]
            implied = r["implied"]
            if r["onset_kind"] == "distance":
                assert r["onset_distance_lo_m"] - 50.001 <= r["onset_distance_m"] <= r["onset_distance_hi_m"] + 50.001
                assert abs(implied["distance_m"] - r["onset_distance_m"]) <= implied["distance_precision_m"] + 5
            elif r["onset_kind"] == "elapsed":  # timer time, as the watch shows it
                assert implied["moving_s"] == r["onset_moving_s"] <= r["onset_elapsed_s"]
            else:
                assert r["onset_kind"] in ("clock", "instant") and implied["utc"] == r["onset_utc"]
            if r["date"]:
                local = _utc(r["onset_utc"]).astimezone(ZoneInfo(a["timezone"]))
                assert r["date"] == local.date().isoformat() == a["start_local"][:10]
            else:
                assert r["onset_kind"] == "instant"
        elif r["expected_status"] == "unmatched":
            assert r["activity_file"] is None and r["onset_utc"] is None
            days = {a["start_local"][:10] for a in truth["activities"] if a["athlete_id"] == r["athlete_id"]}
            assert r["date"] not in days
        else:  # after / next day: linked to the spike run, counted from its end, no sample
            a = files[r["activity_file"]]
            assert a["is_spike"] and r["sample_index"] is None
            assert r["onset_utc"] == a["end_utc"] and r["onset_distance_m"] == a["distance_m"]
            run_day = date.fromisoformat(a["start_local"][:10])
            shift = 1 if r["expected_status"] == "next_day" else 0
            assert r["onset_kind"] == r["expected_status"].replace("_run", "")
            assert r["date"] == (run_day + timedelta(days=shift)).isoformat()


def test_knee_onsets_planted_as_documented(default: tuple[Path, SimulationSummary, dict]) -> None:
    _, summary, truth = default
    runs = _runs_by_athlete(truth)["knee"]
    onsets = [a for a in runs if a["knee_onset"]]
    assert len(onsets) >= 8 and summary.n_knee_onsets == len(onsets)
    for a in onsets:
        k = a["knee_onset"]
        assert 8500 <= k["drawn_onset_m"] <= 11000
        assert a["distance_m"] > k["drawn_onset_m"]
        assert 6 <= k["cadence_drop_spm"] <= 8 and 0.04 <= k["pace_fade"] <= 0.06
    assert all(a["distance_m"] < 8700 for a in runs if not a["knee_onset"])
    reports = {r["activity_file"]: r for r in truth["pain_reports"] if r["effect"] == "knee_onset"}
    assert set(reports) == {a["file"] for a in onsets}
    for a in onsets:
        r = reports[a["file"]]
        assert r["sample_index"] == a["knee_onset"]["sample_index"]
        assert 8500 <= r["onset_distance_m"] <= 11000
        assert r["body_part"] == "knee" and r["side"] == "right"
    draws = np.array([a["knee_onset"]["drawn_onset_m"] for a in onsets])
    assert abs(draws.mean() - 9600) < 400
    # the London clock change (2026-10-25) falls in the period and its run has a wall-clock report
    (dst_run,) = [a for a in onsets if a["start_local"].startswith("2026-10-25")]
    assert reports[dst_run["file"]]["onset_kind"] == "clock"


def test_spikes_exceed_the_30_day_longest(default: tuple[Path, SimulationSummary, dict]) -> None:
    _, summary, truth = default
    for aid, runs in _runs_by_athlete(truth).items():
        for a in runs:
            t = _utc(a["start_utc"])
            prior = [b["distance_m"] for b in runs if timedelta(0) < t - _utc(b["start_utc"]) <= timedelta(days=30)]
            if not prior:
                assert not a["is_spike"]
                continue
            ratio = a["distance_m"] / max(prior)
            assert ratio == pytest.approx(a["ratio_to_30d_longest"], abs=1e-4)
            assert (ratio > 1.3) == a["is_spike"], (aid, a["file"], ratio)
    spikes = [a for a in truth["activities"] if a["is_spike"]]
    assert 2 <= len(spikes) <= 3 and {a["athlete_id"] for a in spikes} == {"spike"}
    assert summary.n_spikes == len(spikes)
    spike_files = {a["file"] for a in spikes}
    spike_reports = [r for r in truth["pain_reports"] if r["athlete_id"] == "spike"]
    assert spike_reports and all(r["activity_file"] in spike_files for r in spike_reports)
    assert {r["activity_file"] for r in spike_reports} == spike_files
    assert not [r for r in truth["pain_reports"] if r["athlete_id"] == "control"]


def test_cohort_variety_is_planted(default: tuple[Path, SimulationSummary, dict]) -> None:
    _, _, truth = default
    acts = truth["activities"]
    assert sum(a["sub_sport"] == "treadmill" for a in acts) == 1
    assert sum(a["sport"] == "cycling" for a in acts) == 1
    assert sum(a["duplicate_of"] is not None for a in acts) == 1
    assert any(a["hilly"] for a in acts) and any(not a["hilly"] for a in acts)
    paused = [a for a in acts if a["n_pauses"]]
    assert paused and all(a["elapsed_s"] > a["moving_s"] for a in paused)
    assert all(a["elapsed_s"] == a["moving_s"] for a in acts if not a["n_pauses"])
    assert {a["route_kind"] for a in acts if a["has_gps"]} == {"loop", "out_and_back"}
    # both DST changes fall in the period: London's offsets and New York's each take two values
    for aid in ("knee", "spike"):
        assert len({a["utc_offset_s"] for a in acts if a["athlete_id"] == aid}) == 2


# --------------------------------------------------------------------------- encoder properties

@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=6000))
def test_crc16_agrees_with_fitparse(data: bytes) -> None:
    assert crc16(data) == Crc.calculate(data)


_RECORD = MessageDef(20, (
    Field("timestamp", 253, "uint32"), Field("position_lat", 0, "sint32"), Field("position_long", 1, "sint32"),
    Field("distance", 5, "uint32"), Field("enhanced_speed", 73, "uint32"), Field("enhanced_altitude", 78, "uint32"),
    Field("heart_rate", 3, "uint8"), Field("cadence", 4, "uint8"), Field("fractional_cadence", 53, "uint8"),
))
_LIMITS = {
    "timestamp": (0x10000000, 0xFFFFFFFE), "position_lat": (-(2**31), 2**31 - 2),
    "position_long": (-(2**31), 2**31 - 2), "distance": (0, 2**32 - 2), "enhanced_speed": (0, 2**32 - 2),
    "enhanced_altitude": (0, 2**32 - 2), "heart_rate": (0, 254), "cadence": (0, 254), "fractional_cadence": (0, 254),
}
_ROW = st.fixed_dictionaries({k: st.integers(lo, hi) for k, (lo, hi) in _LIMITS.items()})


@settings(max_examples=40, deadline=None)
@given(st.lists(_ROW, min_size=1, max_size=40), st.booleans())
def test_encoded_records_round_trip_through_fitparse(rows: list[dict[str, int]], padding: bool) -> None:
    w = FitWriter()
    file_id = MessageDef(0, (Field("type", 0, "enum"), Field("manufacturer", 1, "uint16")))
    w.define(0, file_id)
    w.write(0, {"type": 4, "manufacturer": 1})
    w.define(3, _RECORD)
    cols = {k: np.array([r[k] for r in rows], dtype=np.int64) for k in _LIMITS}
    w.write(3, cols)
    if padding:  # a second definition of the same local number, then more data
        w.define(3, file_id)
        w.write(3, {"type": 4, "manufacturer": 255})
    data = w.to_bytes()
    msgs = list(fitparse.FitFile(data, check_crc=True).get_messages())
    records = [m for m in msgs if m.name == "record"]
    assert len(records) == len(rows)
    for m, row in zip(records, rows):
        raw = {f.name: f.raw_value for f in m.fields}
        assert raw == row
    assert len(msgs) == len(rows) + 1 + int(padding)


def test_encoder_rejects_out_of_range_values() -> None:
    with pytest.raises(ValueError):
        _RECORD.encode(0, {"heart_rate": 300})
    with pytest.raises(ValueError):
        _RECORD.encode(0, {"nonsense": 1})
