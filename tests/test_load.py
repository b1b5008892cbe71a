"""Training-load analysis: weekly totals, long-run spikes, weekly ramps, uncoupled EWMA ACWR."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.analysis.load import (
    MIN_WINDOW_M,
    acwr_ewma,
    daily_distance,
    long_run_spikes,
    ramp_flags,
    run_ramp,
    running_only,
    weekly_load,
)
from pipeline.schema import ACTIVITY_SCHEMA, frame_from_rows

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday


def _activities(
    rows: list[tuple[datetime, float | None]], *, sport: str = "running", athlete: str = "ann"
) -> pl.DataFrame:
    return frame_from_rows(
        [
            {
                "activity_id": f"{athlete}-{i:04d}",
                "athlete_id": athlete,
                "sport": sport,
                "start_utc": start,
                "distance_m": dist,
                "moving_s": None if dist is None else dist / 3.0,
            }
            for i, (start, dist) in enumerate(rows)
        ],
        ACTIVITY_SCHEMA,
    )


# starts within ~120 days, distances 0-45 km (a few nulls)
runs_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=120 * 24 * 3600),
        st.one_of(st.none(), st.floats(min_value=0.0, max_value=45_000.0, allow_nan=False)),
    ),
    min_size=1,
    max_size=40,
)


def _rows(raw: list[tuple[int, float | None]]) -> list[tuple[datetime, float | None]]:
    return [(T0 + timedelta(seconds=s), d) for s, d in raw]


# --------------------------------------------------------------------------- weekly_load


@settings(max_examples=60, deadline=None)
@given(raw=runs_strategy, tz=st.sampled_from(["UTC", "Europe/London", "America/Los_Angeles", "Asia/Tokyo"]))
def test_weekly_totals_sum_to_total_distance(raw: list[tuple[int, float | None]], tz: str) -> None:
    acts = _activities(_rows(raw))
    weekly = weekly_load(acts, tz=tz)
    total = sum(d for _, d in raw if d is not None)
    assert weekly["distance_m"].sum() == pytest.approx(total, rel=1e-9, abs=1e-6)
    assert weekly["runs"].sum() == len(raw)
    # consecutive Mondays, no gaps
    weeks = weekly["week_start_local"].to_list()
    assert all(w.weekday() == 0 for w in weeks)
    assert all((b - a).days == 7 for a, b in zip(weeks, weeks[1:], strict=False))


def test_weekly_counts_weeks_in_the_athletes_zone() -> None:
    # Monday 00:30 BST is Sunday 23:30 UTC: the run belongs to the local Monday's week.
    start = datetime(2026, 6, 7, 23, 30, tzinfo=UTC)
    acts = _activities([(start, 10_000.0)])
    london = weekly_load(acts, tz="Europe/London")
    utc = weekly_load(acts, tz="UTC")
    assert london["week_start_local"].to_list() == [date(2026, 6, 8)]
    assert utc["week_start_local"].to_list() == [date(2026, 6, 1)]


def test_weekly_fills_empty_weeks_and_ignores_other_sports() -> None:
    acts = pl.concat(
        [
            _activities([(T0, 5000.0), (T0 + timedelta(days=21), 8000.0)]),
            _activities([(T0 + timedelta(days=8), 40_000.0)], sport="cycling", athlete="ann"),
        ]
    )
    weekly = weekly_load(acts, tz="UTC")
    assert weekly["distance_m"].to_list() == [5000.0, 0.0, 0.0, 8000.0]
    assert weekly["runs"].to_list() == [1, 0, 0, 1]
    assert running_only(acts).height == 2


def test_weekly_of_no_runs_is_empty() -> None:
    assert weekly_load(_activities([]), tz="UTC").is_empty()
    assert daily_distance(_activities([]), tz="UTC").is_empty()


# --------------------------------------------------------------------------- long_run_spikes


def _brute_force_spike(rows: list[tuple[datetime, float | None]], i: int, window: timedelta, threshold: float) -> bool:
    start, dist = rows[i]
    prev = [d or 0.0 for t, d in rows if start - window <= t < start]
    return bool(prev) and (dist or 0.0) > (1 + threshold) * max(prev)


@settings(max_examples=80, deadline=None)
@given(raw=runs_strategy)
def test_spike_iff_longer_than_110_percent_of_previous_30_days(raw: list[tuple[int, float | None]]) -> None:
    rows = _rows(raw)
    out = long_run_spikes(_activities(rows))
    flags = dict(zip(out["activity_id"].to_list(), out["spike"].to_list(), strict=True))
    assert len(flags) == len(rows)
    for i in range(len(rows)):
        assert flags[f"ann-{i:04d}"] == _brute_force_spike(rows, i, timedelta(days=30), 0.10), rows[i]


def test_spike_window_boundaries() -> None:
    rows = [
        (T0, 20_000.0),
        (T0 + timedelta(days=30), 21_000.0),  # 30 days exactly after a 20 km run: 5 % longer, no spike
        (T0 + timedelta(days=59), 23_200.0),  # the 20 km run is out of the window; 21 km + 10.5 %
        (T0 + timedelta(days=61), 25_519.0),  # just under 1.1 x 23.2 km
    ]
    out = long_run_spikes(_activities(rows))
    assert out["spike"].to_list() == [False, False, True, False]
    assert out["prev_longest_m"].to_list() == [None, 20_000.0, 21_000.0, 23_200.0]
    assert out["excess_ratio"][2] == pytest.approx(23_200 / 21_000 - 1)


def test_spikes_compare_each_athlete_with_their_own_runs() -> None:
    acts = pl.concat(
        [
            _activities([(T0, 30_000.0)], athlete="ann"),
            _activities([(T0 + timedelta(days=1), 10_000.0), (T0 + timedelta(days=2), 12_000.0)], athlete="bob"),
        ]
    )
    out = long_run_spikes(acts).sort("start_utc")
    assert out["spike"].to_list() == [False, False, True]


# --------------------------------------------------------------------------- ramp_flags


@settings(max_examples=60, deadline=None)
@given(distances=st.lists(st.floats(min_value=0, max_value=150_000, allow_nan=False), min_size=1, max_size=30))
def test_ramp_flag_iff_week_over_week_increase_above_30_percent(distances: list[float]) -> None:
    weeks = [date(2026, 1, 5) + timedelta(weeks=i) for i in range(len(distances))]
    weekly = pl.DataFrame({"week_start_local": weeks, "distance_m": distances})
    out = ramp_flags(weekly)
    expected = [False] + [prev > 0 and cur > 1.3 * prev for prev, cur in zip(distances, distances[1:], strict=False)]
    assert out["ramp_flag"].to_list() == expected


def test_ramp_example() -> None:
    weekly = pl.DataFrame(
        {"week_start_local": [date(2026, 1, 5) + timedelta(weeks=i) for i in range(5)],
         "distance_m": [20_000.0, 26_000.0, 34_000.0, 0.0, 30_000.0]}
    )
    out = ramp_flags(weekly)
    assert out["ramp_flag"].to_list() == [False, False, True, False, False]  # +30 % exactly is not above
    assert out["ramp"][2] == pytest.approx(34 / 26 - 1)
    assert out["ramp"][4] is None  # after a week without running


# --------------------------------------------------------------------------- acwr_ewma


def _naive_ewma(values: list[float], n: int) -> list[float]:
    lam = 2 / (n + 1)
    out, prev = [], values[0]
    for v in values:
        prev = lam * v + (1 - lam) * prev
        out.append(prev)
    return out


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(min_value=0, max_value=40_000, allow_nan=False), min_size=1, max_size=120))
def test_acwr_matches_a_plain_loop_and_is_uncoupled(values: list[float]) -> None:
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(len(values))]
    out = acwr_ewma(pl.DataFrame({"date_local": days, "distance_m": values}))
    acute = _naive_ewma(values, 7)
    chronic = _naive_ewma(values, 28)
    for t in range(len(values)):
        assert out["acute_m"][t] == pytest.approx(acute[t], rel=1e-9, abs=1e-9)
        expected_chronic = chronic[t - 7] if t >= 7 else None
        if expected_chronic is None:
            assert out["chronic_m"][t] is None
        else:
            assert out["chronic_m"][t] == pytest.approx(expected_chronic, rel=1e-9, abs=1e-9)
        if t < 35 or not expected_chronic:
            assert out["acwr"][t] is None
        else:
            assert out["acwr"][t] == pytest.approx(acute[t] / expected_chronic, rel=1e-9)


def test_acwr_chronic_ignores_the_acute_window() -> None:
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(60)]
    base = [8000.0 if i % 2 else 0.0 for i in range(60)]
    spiked = base[:53] + [30_000.0] * 7  # only the last 7 days differ
    a = acwr_ewma(pl.DataFrame({"date_local": days, "distance_m": base}))
    b = acwr_ewma(pl.DataFrame({"date_local": days, "distance_m": spiked}))
    assert b["chronic_m"][59] == a["chronic_m"][59]
    assert b["acwr"][59] > a["acwr"][59]


def test_acwr_of_steady_running_is_one() -> None:
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(80)]
    out = acwr_ewma(pl.DataFrame({"date_local": days, "distance_m": [10_000.0] * 80}))
    assert out["acwr"][:35].null_count() == 35
    assert out["acwr"][35:].to_list() == pytest.approx([1.0] * 45)


def test_daily_distance_is_consecutive_and_sums() -> None:
    rows = [(T0, 5000.0), (T0 + timedelta(hours=5), 3000.0), (T0 + timedelta(days=3), None)]
    daily = daily_distance(_activities(rows), tz="UTC", until=date(2026, 3, 10))
    assert daily["date_local"].to_list() == [date(2026, 3, 2) + timedelta(days=i) for i in range(9)]
    assert daily["distance_m"].to_list()[:4] == [8000.0, 0.0, 0.0, 0.0]
    assert daily["distance_m"].sum() == 8000.0


# --------------------------------------------------------------------------- run_ramp


@settings(max_examples=60, deadline=None)
@given(raw=runs_strategy)
def test_run_ramp_sums_the_two_windows_before_each_run(raw: list[tuple[int, float | None]]) -> None:
    rows = _rows(raw)
    out = {r["activity_id"]: r for r in run_ramp(_activities(rows)).iter_rows(named=True)}
    week = timedelta(days=7)
    for i, (start, _) in enumerate(rows):
        recent = sum(d or 0.0 for s, d in rows if start - week < s <= start)
        before = sum(d or 0.0 for s, d in rows if start - 2 * week < s <= start - week)
        row = out[f"ann-{i:04d}"]
        assert row["recent_m"] == pytest.approx(recent, abs=1e-6)
        assert row["before_m"] == pytest.approx(before, abs=1e-6)
        if abs(before - MIN_WINDOW_M) < 1e-6:
            continue  # on the boundary float rounding may fall either way
        if before >= MIN_WINDOW_M:
            expected = recent / before - 1.0
            assert row["ramp"] == pytest.approx(expected, rel=1e-9, abs=1e-9)
            if abs(expected - 0.30) > 1e-9:
                assert row["ramp_flag"] == (expected > 0.30)
        else:
            assert row["ramp"] is None and row["ramp_flag"] is None


def test_run_ramp_compares_each_athlete_with_their_own_runs() -> None:
    ann = _activities([(T0, 10_000.0), (T0 + timedelta(days=8), 20_000.0)])
    bob = _activities([(T0 + timedelta(days=1), 50_000.0), (T0 + timedelta(days=8, hours=1), 1_000.0)], athlete="bob")
    out = {r["activity_id"]: r for r in run_ramp(pl.concat([ann, bob])).iter_rows(named=True)}
    assert out["ann-0001"]["ramp"] == pytest.approx(1.0) and out["ann-0001"]["ramp_flag"]
    assert out["bob-0001"]["ramp"] == pytest.approx(1_000 / 50_000 - 1) and not out["bob-0001"]["ramp_flag"]
