"""Pure helpers of pipeline.normalise, and normalise_session on hand-made RawSessions."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipeline.errors import RejectedFile
from pipeline.normalise import (
    EARTH_RADIUS_M,
    FOOT_SPORTS,
    TIME_JITTER_S,
    ascent_descent_m,
    cadence_to_spm,
    cumulative_distance_m,
    first_backward_step,
    haversine_m,
    moving_seconds,
    normalise_session,
    screen_range,
    semicircles_to_deg,
)
from pipeline.sources import RawSession, parse_iso_time, sport_from_text

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc)
lat_st = st.floats(-89.9, 89.9, allow_nan=False)
lon_st = st.floats(-179.9, 179.9, allow_nan=False)


# --------------------------------------------------------------------------- units


@given(st.integers(-(2**31), 2**31 - 1))
def test_semicircles_to_degrees_range_and_inverse(sc: int) -> None:
    deg = semicircles_to_deg(sc)
    assert deg is not None and -180.0 <= deg < 180.0
    assert round(deg / 180.0 * 2**31) == sc


def test_semicircles_known_values() -> None:
    assert semicircles_to_deg(2**30) == 90.0
    assert semicircles_to_deg(-(2**31)) == -180.0
    assert semicircles_to_deg(None) is None
    # fitparse's record of garmin-fenix-5-run: 456099128 semicircles
    assert semicircles_to_deg(456099128) == pytest.approx(38.2297, abs=1e-4)


@given(st.floats(0, 130, allow_nan=False), st.sampled_from([*sorted(FOOT_SPORTS), "cycling", "rowing", "generic", None]))
def test_cadence_doubled_only_for_foot_sports(cpm: float, sport: str | None) -> None:
    out = cadence_to_spm(cpm, sport)
    assert out == (2 * cpm if sport in FOOT_SPORTS else cpm)
    assert cadence_to_spm(None, sport) is None


# --------------------------------------------------------------------------- distance


@given(lat_st, lon_st, lat_st, lon_st)
def test_haversine_symmetric_bounded_nonnegative(a: float, b: float, c: float, d: float) -> None:
    ab = haversine_m(a, b, c, d)
    assert ab == pytest.approx(haversine_m(c, d, a, b), abs=1e-6)
    assert 0.0 <= ab <= math.pi * EARTH_RADIUS_M + 1e-6
    assert haversine_m(a, b, a, b) == 0.0


@given(lat_st, lon_st, lat_st, lon_st, lat_st, lon_st)
def test_haversine_triangle_inequality(a, b, c, d, e, f) -> None:  # type: ignore[no-untyped-def]
    assert haversine_m(a, b, e, f) <= haversine_m(a, b, c, d) + haversine_m(c, d, e, f) + 1e-6


def test_haversine_known_distances() -> None:
    assert haversine_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(111_195.0, rel=1e-4)  # one degree of a meridian
    assert haversine_m(0.0, 0.0, 0.0, 180.0) == pytest.approx(math.pi * EARTH_RADIUS_M)
    # London -> Paris, ~343.5 km
    assert haversine_m(51.5074, -0.1278, 48.8566, 2.3522) == pytest.approx(343_500, rel=0.005)


@given(st.lists(st.one_of(st.none(), st.tuples(st.floats(45, 46), st.floats(7, 8))), max_size=40))
def test_cumulative_distance_non_decreasing_and_null_without_fix(points) -> None:  # type: ignore[no-untyped-def]
    lats = [p[0] if p else None for p in points]
    lons = [p[1] if p else None for p in points]
    out = cumulative_distance_m(lats, lons)
    assert len(out) == len(points)
    assert all((o is None) == (p is None) for o, p in zip(out, points))
    known = [o for o in out if o is not None]
    assert known == sorted(known)
    if known:
        assert known[0] == 0.0


@given(st.lists(st.tuples(st.floats(45, 46), st.floats(7, 8)), min_size=2, max_size=30), st.data())
def test_segment_breaks_are_not_bridged(points, data) -> None:  # type: ignore[no-untyped-def]
    lats, lons = [p[0] for p in points], [p[1] for p in points]
    cut = data.draw(st.integers(1, len(points) - 1))
    segments = [0 if i < cut else 1 for i in range(len(points))]
    whole = cumulative_distance_m(lats, lons)[-1]
    split = cumulative_distance_m(lats, lons, segments)[-1]
    gap = haversine_m(lats[cut - 1], lons[cut - 1], lats[cut], lons[cut])
    assert split == pytest.approx(whole - gap, abs=1e-6)


# --------------------------------------------------------------------------- time


@given(st.lists(st.integers(0, 10_000), max_size=50))
def test_sorted_times_have_no_backward_step(offsets: list[int]) -> None:
    times = [T0 + timedelta(seconds=s) for s in sorted(offsets)]
    assert first_backward_step(times) is None


@given(st.lists(st.integers(0, 1000), min_size=2, max_size=50), st.data())
def test_backward_step_beyond_jitter_is_found(offsets: list[int], data) -> None:  # type: ignore[no-untyped-def]
    offsets = sorted(offsets)
    i = data.draw(st.integers(1, len(offsets) - 1))
    back = data.draw(st.floats(TIME_JITTER_S + 0.5, 5000))
    times = [T0 + timedelta(seconds=s) for s in offsets]
    times[i] = max(times[:i]) - timedelta(seconds=back)
    assert first_backward_step(times) == i


def test_jitter_within_tolerance_is_accepted() -> None:
    times = [T0, T0 + timedelta(seconds=3), T0 + timedelta(seconds=1.5), T0 + timedelta(seconds=4)]
    assert first_backward_step(times) is None
    times[2] = T0 + timedelta(seconds=0.5)
    assert first_backward_step(times) == 2


@given(st.lists(st.integers(0, 3600), min_size=1, max_size=40), st.lists(st.tuples(st.integers(0, 3600), st.integers(1, 300)), max_size=4))
def test_moving_time_is_elapsed_minus_pauses(offsets: list[int], raw_pauses: list[tuple[int, int]]) -> None:
    times = [T0 + timedelta(seconds=s) for s in sorted(offsets)]
    # non-overlapping pauses
    pauses, end = [], -1
    for a, d in sorted(raw_pauses):
        if a > end:
            pauses.append((T0 + timedelta(seconds=a), T0 + timedelta(seconds=a + d)))
            end = a + d
    moving = moving_seconds(times, T0, pauses)
    elapsed = [(t - T0).total_seconds() for t in times]
    assert all(0.0 <= m <= e for m, e in zip(moving, elapsed))
    assert moving == sorted(moving)
    total_pause = sum((b - a).total_seconds() for a, b in pauses)
    late = T0 + timedelta(seconds=10_000)
    assert moving_seconds([late], T0, pauses) == [10_000 - total_pause]


# --------------------------------------------------------------------------- climbing and screening


@given(st.lists(st.floats(0, 50), min_size=2, max_size=30))
def test_ascent_of_a_monotonic_climb(steps: list[float]) -> None:
    alts = [100.0]
    for s in steps:
        alts.append(alts[-1] + s)
    climb = ascent_descent_m(alts, threshold_m=0.0)
    assert climb is not None
    assert climb[0] == pytest.approx(alts[-1] - alts[0]) and climb[1] == 0.0


def test_ascent_hysteresis_ignores_noise() -> None:
    assert ascent_descent_m([100, 101, 100, 101, 100, 101], threshold_m=2.0) == (0.0, 0.0)
    assert ascent_descent_m([100, 105, 100], threshold_m=2.0) == (5.0, 5.0)
    assert ascent_descent_m([None, 3.0]) is None


def test_screen_range_isolated_values_are_nulled() -> None:
    values = [150.0] * 30
    values[4] = 0.5
    cleaned, reason = screen_range(values, 20, 250, what="hr_bpm", indices=list(range(30)))
    assert reason is None and cleaned[4] is None and cleaned[5] == 150.0


def test_screen_range_systemic_values_give_a_reason() -> None:
    values = [300.0] * 10 + [150.0] * 10
    cleaned, reason = screen_range(values, 20, 250, what="hr_bpm", indices=list(range(100, 120)), point_name="record")
    assert reason == "implausible hr_bpm=300 at record 100 (10 of 20 values outside 20-250)"
    _, no_reason = screen_range(values, 20, 250, what="x", indices=list(range(20)), reject=False)
    assert no_reason is None


@given(st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), max_size=60))
def test_screen_range_output_always_within_range(values) -> None:  # type: ignore[no-untyped-def]
    cleaned, _ = screen_range(values, 0.0, 260.0, what="c", indices=list(range(len(values))))
    assert len(cleaned) == len(values)
    assert all(v is None or 0.0 <= v <= 260.0 for v in cleaned)


# --------------------------------------------------------------------------- vocabularies and times


def test_sport_words_and_strava_codes() -> None:
    assert sport_from_text("9") == ("running", None)
    assert sport_from_text("16") == ("swimming", None)
    assert sport_from_text("Running") == ("running", None)
    assert sport_from_text("trail_running") == ("running", "trail")
    assert sport_from_text("Biking") == ("cycling", None)
    assert sport_from_text("mountain biking") == ("cycling", "mountain")
    assert sport_from_text(None) == ("generic", None)
    assert sport_from_text("Other") == ("generic", None)
    assert sport_from_text("Stand Up Paddling") == ("stand_up_paddling", None)


def test_parse_iso_time_offsets() -> None:
    assert parse_iso_time("2021-04-16T13:37:53.000Z") == (datetime(2021, 4, 16, 13, 37, 53, tzinfo=timezone.utc), None)
    assert parse_iso_time("2020-02-02T03:02:03+01:00") == (datetime(2020, 2, 2, 2, 2, 3, tzinfo=timezone.utc), 3600)
    assert parse_iso_time("2013-01-01T12:00:00") == (datetime(2013, 1, 1, 12, tzinfo=timezone.utc), None)
    assert parse_iso_time("yesterday") is None


# --------------------------------------------------------------------------- normalise_session


def raw_run(n: int = 30, **overrides) -> RawSession:  # type: ignore[no-untyped-def]
    samples = [
        {"index": i, "t_utc": T0 + timedelta(seconds=i), "lat_deg": 46.0 + i * 1e-4, "lon_deg": 7.0,
         "hr_bpm": 150.0, "cadence_cpm": 85.0, "speed_mps": 3.0, "altitude_m": 500.0 + i}
        for i in range(n)
    ]
    kwargs = {"source_format": "gpx", "session_index": 0, "sport": "running", "samples": samples}
    kwargs.update(overrides)
    return RawSession(**kwargs)


def norm(raw: RawSession, tz: str | None = None):  # type: ignore[no-untyped-def]
    return normalise_session(raw, rel_path="r/x.gpx", athlete_id="ann", athlete_tz=tz, sha256="ab" * 32)


def test_session_row_from_samples_only() -> None:
    a = norm(raw_run())
    row = a.activity
    assert row["activity_id"] == "abababababababab-0"
    assert row["distance_source"] == "gps" and row["distance_m"] == pytest.approx(29 * 11.1195, rel=1e-3)
    assert row["elapsed_s"] == 29.0 and row["moving_s"] == 29.0
    assert row["avg_cadence_spm"] == 170.0 and row["avg_hr_bpm"] == 150.0
    assert row["total_ascent_m"] == pytest.approx(29.0, abs=2.0) and row["total_descent_m"] == 0.0
    assert (row["tz_source"], row["timezone"], row["utc_offset_s"]) == ("gps", "Europe/Zurich", 3600)


def test_small_jitter_is_sorted_large_rejected() -> None:
    raw = raw_run()
    raw.samples[5]["t_utc"], raw.samples[6]["t_utc"] = raw.samples[6]["t_utc"], raw.samples[5]["t_utc"]
    a = norm(raw)
    assert a.samples["t_utc"].is_sorted()
    raw.samples[20]["t_utc"] = T0 - timedelta(minutes=5)
    with pytest.raises(RejectedFile, match="backwards: record 20"):
        norm(raw)


def test_sustained_running_speed_rejected_isolated_nulled() -> None:
    raw = raw_run()
    raw.samples[3]["speed_mps"] = 45.0
    assert norm(raw).samples["speed_mps"][3] is None
    for i in range(10, 16):
        raw.samples[i]["speed_mps"] = 45.0
    with pytest.raises(RejectedFile, match=r"speed_mps=45 at record 10 \(above 30 m/s"):
        norm(raw)
    raw.sport = "cycling"  # 45 m/s is fast but not absurd on a bike descent... it stays
    assert norm(raw).samples["speed_mps"][12] == 45.0


def test_null_island_is_no_fix_and_zone_falls_back_to_athlete() -> None:
    raw = raw_run()
    for s in raw.samples:
        s["lat_deg"] = s["lon_deg"] = 0.0
    a = norm(raw, tz="Australia/Sydney")
    assert not a.activity["has_gps"] and a.activity["distance_source"] == "none"
    assert (a.activity["tz_source"], a.activity["utc_offset_s"]) == ("athlete", 11 * 3600)


@settings(max_examples=25)
@given(st.integers(2, 80), st.sampled_from(["running", "cycling", "walking"]))
def test_normalised_frames_keep_every_sample(n: int, sport: str) -> None:
    a = norm(raw_run(n, sport=sport))
    assume(a.samples.height)
    assert a.samples.height == n == a.activity["n_samples"]
    assert a.samples["elapsed_s"].to_list() == [float(i) for i in range(n)]
    factor = 2.0 if sport in FOOT_SPORTS else 1.0
    assert a.samples["cadence_spm"].to_list() == [85.0 * factor] * n
