"""Pain-free distance: Kaplan-Meier against R's published ``aml`` example and lifelines, censoring, ranges.

The fixed example is the acute myelogenous leukaemia data of R's ``survival``
package (``aml``, Miller 1981, *Survival Analysis*, Wiley): 23 patients, 18
relapses. ``print(survfit(Surv(time, status) ~ 1, data = aml))`` prints

    n  events  median 0.95LCL 0.95UCL
   23      18      27      18      45

(reproduced, e.g., in the UCLA OARC seminar "Survival analysis in R"). R's
default interval is ``conf.type = "log"``; lifelines (and this project) use the
log(-log) interval, so the test checks R's published numbers with the
Greenwood variance on R's scale, and our wrapper against lifelines itself.
Here "time" plays the part of distance: each patient is a run.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from lifelines import KaplanMeierFitter
from lifelines.utils import qth_survival_times

from pipeline.analysis.survival import (
    MIN_EVENTS,
    fit_pain_free,
    pain_free_by_body_part,
    pain_free_subjects,
)

# R survival::aml: time (weeks) and status (1 = relapse), both arms
AML_TIME = [9, 13, 13, 18, 23, 28, 31, 34, 45, 48, 161, 5, 5, 8, 8, 12, 16, 23, 27, 30, 33, 43, 45]
AML_STATUS = [1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1]
Z = 1.959963984540054  # standard normal 0.975 quantile


def _runs_and_pain(
    times: list[float], status: list[int], *, body_part: str = "knee"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Runs of the given lengths; an event is a matched onset at the run's length."""
    runs = pl.DataFrame({"activity_id": [f"r{i}" for i in range(len(times))],
                         "distance_m": [float(t) for t in times]})
    rows = [
        {"activity_id": f"r{i}", "body_part": body_part, "status": "matched", "onset_distance_m": float(t),
         "onset_distance_lo_m": float(t), "onset_distance_hi_m": float(t)}
        for i, (t, e) in enumerate(zip(times, status, strict=True)) if e
    ]
    schema = {"activity_id": pl.String, "body_part": pl.String, "status": pl.String,
              "onset_distance_m": pl.Float64, "onset_distance_lo_m": pl.Float64, "onset_distance_hi_m": pl.Float64}
    return runs, pl.DataFrame(rows, schema=schema)


def _greenwood_band(
    times: list[float], status: list[int], conf_type: str
) -> list[tuple[float, float, float, float]]:
    """(time, S, lower, upper) at each event time, from the formulas (an oracle independent of lifelines).

    S(t) = prod(1 - d/n); var(log S) = sum d / (n (n - d)) (Greenwood); R's ``conf.type = "log"``:
    S exp(-+ z se); ``"log-log"``: S ** exp(-+ z se / log S).
    """
    t = np.asarray(times, float)
    e = np.asarray(status, int)
    s, acc, points = 1.0, 0.0, []
    for u in np.unique(t[e == 1]):
        n = float((t >= u).sum())
        d = float(((t == u) & (e == 1)).sum())
        s *= 1.0 - d / n
        acc += d / (n * (n - d)) if n > d else math.inf
        se = math.sqrt(acc)
        if conf_type == "log":
            lo, hi = s * math.exp(-Z * se), min(1.0, s * math.exp(Z * se))
        else:  # log-log
            if 0 < s < 1:
                theta = Z * se / math.log(s)
                lo, hi = s ** math.exp(-theta), s ** math.exp(theta)
            else:
                lo = hi = s
        points.append((float(u), s, lo, hi))
    return points


def _greenwood_median_ci(times: list[float], status: list[int], conf_type: str) -> tuple[float, float, float]:
    """Median and its CI as R's quantile.survfit: where the curve and its pointwise band cross 0.5."""
    points = _greenwood_band(times, status, conf_type)

    def first(column: int) -> float:
        return next((p[0] for p in points if p[column] <= 0.5), math.inf)

    return first(1), first(2), first(3)


def test_lifelines_kaplan_meier_reproduces_r_published_aml() -> None:
    kmf = KaplanMeierFitter().fit(AML_TIME, AML_STATUS)
    assert kmf.event_observed.sum() == 18 and len(AML_TIME) == 23
    assert kmf.median_survival_time_ == 27.0  # R: median 27
    # R's published interval (conf.type = "log"), from the same Greenwood variance
    assert _greenwood_median_ci(AML_TIME, AML_STATUS, "log") == (27.0, 18.0, 45.0)
    # lifelines' band is R's conf.type = "log-log": our oracle and lifelines agree point by point
    ci = kmf.confidence_interval_survival_function_
    for u, s_hat, lo, hi in _greenwood_band(AML_TIME, AML_STATUS, "log-log"):
        assert kmf.survival_function_.loc[u].iloc[0] == pytest.approx(s_hat)
        assert tuple(ci.loc[u]) == pytest.approx((lo, hi))
    median, lo, hi = _greenwood_median_ci(AML_TIME, AML_STATUS, "log-log")
    lifelines_ci = qth_survival_times(0.5, ci)
    assert (median, lo, hi) == (27.0, float(lifelines_ci.iloc[0, 0]), float(lifelines_ci.iloc[0, 1]))


def test_wrapper_recovers_lifelines_median_and_ci_on_aml() -> None:
    runs, pain = _runs_and_pain(AML_TIME, AML_STATUS)
    (result,) = pain_free_by_body_part(runs, pain)
    assert (result.body_part, result.n_runs, result.n_events, result.method) == ("knee", 23, 18, "kaplan-meier")
    kmf = KaplanMeierFitter().fit(AML_TIME, AML_STATUS)
    ci = kmf.confidence_interval_survival_function_
    for q in (0.5, 0.8):
        expected = float(qth_survival_times(q, kmf.survival_function_))
        band = qth_survival_times(q, ci)
        got = result.quantile(q)
        assert got is not None
        assert got.value_m == expected
        assert (got.lo_m, got.hi_m) == (float(band.iloc[0, 0]), float(band.iloc[0, 1]))
    median = result.quantile(0.5)
    assert median is not None and median.value_m == 27.0  # and R's published median
    assert (median.lo_m, median.hi_m) == _greenwood_median_ci(AML_TIME, AML_STATUS, "log-log")[1:]
    # the curve is lifelines' step function, starting at (0, 1)
    curve = result.curve
    assert curve.row(0) == (0.0, 1.0, 1.0, 1.0)
    sf = kmf.survival_function_.iloc[:, 0]
    for u, s_hat in sf.items():
        row = curve.filter(pl.col("distance_m") == float(u))
        assert row.height == 1 and row["survival"][0] == pytest.approx(s_hat)


def test_runs_without_that_pain_are_censored_at_their_length() -> None:
    runs = pl.DataFrame({"activity_id": ["a", "b", "c", "d", "e"],
                         "distance_m": [5000.0, 12000.0, 8000.0, None, 0.0]})
    pain = pl.DataFrame(
        {"activity_id": ["b", "b", "c", "a", None], "body_part": ["knee", "knee", "calf", "knee", "knee"],
         "status": ["matched", "matched", "matched", "after_run", "unmatched"],
         "onset_distance_m": [9000.0, 7000.0, 4000.0, 5000.0, None],
         "onset_distance_lo_m": [9000.0, 7000.0, 4000.0, 5000.0, None],
         "onset_distance_hi_m": [9000.0, 7000.0, 4000.0, 5000.0, None]},
    )
    subjects = pain_free_subjects(runs, pain, body_part="knee").sort("activity_id")
    # the first of two knee onsets counts; calf pain and pain after the run leave the run pain-free for the knee
    assert subjects.rows() == [
        ("a", 5000.0, False, 5000.0, math.inf, True),
        ("b", 12000.0, True, 7000.0, 7000.0, False),
        ("c", 8000.0, False, 8000.0, math.inf, False),
    ]
    results = {r.body_part: r for r in pain_free_by_body_part(runs, pain)}
    assert set(results) == {"knee", "calf"}
    knee = results["knee"]
    assert (knee.n_runs, knee.n_events, knee.n_after_run, knee.n_no_distance) == (3, 1, 1, 2)


def test_below_five_onsets_there_is_no_number() -> None:
    runs, pain = _runs_and_pain([1000.0 * i for i in range(1, 11)], [1, 0, 1, 0, 1, 0, 1, 0, 0, 0])
    (result,) = pain_free_by_body_part(runs, pain)
    assert result.n_events == MIN_EVENTS - 1
    assert not result.enough and result.quantiles is None and "not enough data" in result.note
    assert result.survival_at(2500.0) is None
    assert not result.curve.is_empty()  # the curve may still be drawn
    runs, pain = _runs_and_pain([1000.0 * i for i in range(1, 11)], [1, 0, 1, 0, 1, 0, 1, 0, 1, 0])
    (result,) = pain_free_by_body_part(runs, pain)
    assert result.enough and result.quantile(0.5) is not None


def test_survival_at_the_cap_reads_the_curve() -> None:
    runs, pain = _runs_and_pain(AML_TIME, AML_STATUS)
    (result,) = pain_free_by_body_part(runs, pain)
    kmf = KaplanMeierFitter().fit(AML_TIME, AML_STATUS)
    at = result.survival_at(30.0)
    assert at is not None
    assert at[0] == pytest.approx(float(kmf.survival_function_at_times(30.0).iloc[0]))
    assert at[1] <= at[0] <= at[2]
    assert result.survival_at(1000.0) is None  # beyond the longest run: the data say nothing


def test_exact_onsets_through_the_interval_estimator_equal_kaplan_meier() -> None:
    # one onset given as a tiny range sends the data through Turnbull's NPMLE
    runs, pain = _runs_and_pain(AML_TIME, AML_STATUS)
    exact = pain_free_by_body_part(runs, pain)[0]
    tiny = pain.with_columns(
        onset_distance_lo_m=pl.when(pl.col("activity_id") == "r0").then(8.9999).otherwise("onset_distance_lo_m"),
        onset_distance_hi_m=pl.when(pl.col("activity_id") == "r0").then(9.0001).otherwise("onset_distance_hi_m"),
    )
    npmle = pain_free_by_body_part(runs, tiny)[0]
    assert (npmle.method, npmle.n_interval) == ("turnbull", 1)
    grid = exact.curve["distance_m"].to_list()
    for d in grid:
        a = exact.curve.filter(pl.col("distance_m") <= d + 0.01)["survival"][-1]
        b = npmle.curve.filter(pl.col("distance_m") <= d + 0.01)["survival"][-1]
        assert b == pytest.approx(a, abs=1e-3), d
    for q in (0.5, 0.8):
        got, want = npmle.quantile(q), exact.quantile(q)
        assert got is not None and want is not None
        assert got.value_m == pytest.approx(want.value_m, abs=0.01)


def test_a_wide_range_widens_the_band_but_keeps_the_estimate_inside_it() -> None:
    # ten runs with onsets at 9.0-9.9 km, three of them only known as "somewhere in 8-11 km"
    lengths = [12000.0] * 10 + [6000.0] * 10
    runs = pl.DataFrame({"activity_id": [f"r{i}" for i in range(20)], "distance_m": lengths})
    onsets = [9000.0 + 100 * i for i in range(10)]
    lo = [8000.0 if i < 3 else d for i, d in enumerate(onsets)]
    hi = [11000.0 if i < 3 else d for i, d in enumerate(onsets)]
    pain = pl.DataFrame({"activity_id": [f"r{i}" for i in range(10)], "body_part": "knee", "status": "matched",
                         "onset_distance_m": onsets, "onset_distance_lo_m": lo, "onset_distance_hi_m": hi})
    wide = pain_free_by_body_part(runs, pain)[0]
    sharp = pain_free_by_body_part(runs, pain.with_columns(
        onset_distance_lo_m=pl.col("onset_distance_m"), onset_distance_hi_m=pl.col("onset_distance_m")))[0]
    assert (wide.method, wide.n_interval, sharp.method) == ("turnbull", 3, "kaplan-meier")
    w, s = wide.quantile(0.5), sharp.quantile(0.5)
    assert w is not None and s is not None and w.value_m is not None and w.lo_m is not None
    assert w.lo_m <= s.lo_m  # type: ignore[operator]
    assert w.hi_m is None or (s.hi_m is not None and w.hi_m >= s.hi_m)
    assert w.lo_m <= w.value_m and (w.hi_m is None or w.value_m <= w.hi_m)
    assert 8000.0 <= w.value_m <= 11000.0
    # the band always holds the curve
    c = wide.curve
    assert (c["ci_lo"] <= c["survival"] + 1e-9).all() and (c["survival"] <= c["ci_hi"] + 1e-9).all()


def test_no_onset_gives_no_curve() -> None:
    runs, pain = _runs_and_pain([5000.0, 6000.0], [0, 0])
    result = fit_pain_free(pain_free_subjects(runs, pain, body_part="knee"), body_part="knee")
    assert result.method == "none" and result.curve.is_empty() and not result.enough


@pytest.mark.parametrize("n_runs", [2, 3])
def test_range_onsets_on_very_few_runs_give_a_finite_curve(n_runs: int) -> None:
    """Regression: lifelines' interval EM took log(0) on two runs and returned NaN (a warning under cron)."""
    runs = pl.DataFrame({"activity_id": [f"r{i}" for i in range(n_runs)],
                         "distance_m": [16000.0 + 1000 * i for i in range(n_runs)]})
    pain = pl.DataFrame({
        "activity_id": [f"r{i}" for i in range(n_runs)], "body_part": ["knee"] * n_runs,
        "status": ["matched"] * n_runs, "onset_distance_m": [9600.0] * n_runs,
        "onset_distance_lo_m": [8800.0] * n_runs, "onset_distance_hi_m": [10400.0] * n_runs,
    })
    result = fit_pain_free(pain_free_subjects(runs, pain, body_part="knee"), body_part="knee")
    assert result.curve.height > 0
    assert result.curve.select(pl.all().is_finite().all()).row(0) == (True,) * 4
    assert result.quantiles is None  # below five onsets: no number
