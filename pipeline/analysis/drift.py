"""What changed just before pain started: cadence, pace and heart-rate drift.

For each pain report joined to a sample of a run, the 5 minutes before the
onset are compared with the run's own baseline, its first 10 minutes after a
2-minute warm-up. Pure functions of polars frames (rows of
:data:`pipeline.schema.SAMPLE_SCHEMA` and ``pain_reports``).

Time basis: the timer clock (``moving_s``, pauses excluded) when the run's
samples carry it and the onset is known on it, else the wall clock
(``elapsed_s``). Windows are half-open, ``[start, end)`` seconds.

Pace is taken from the window's mean speed (``1000 / mean(speed_mps)`` s/km,
or the distance covered over the time taken when the samples carry no
speed), so a few slow samples do not dominate it as they would a mean of
per-sample paces. Cadence and heart-rate readings of 0 are "no reading" and
are left out of the means.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import polars as pl

__all__ = [
    "WARMUP_S",
    "BASELINE_S",
    "PRE_ONSET_S",
    "MIN_ONSETS",
    "METRICS",
    "onset_windows",
    "onset_drift",
    "drift_summary",
    "t_quantile",
]

logger = logging.getLogger(__name__)

#: Seconds skipped at the start of a run before the baseline begins.
WARMUP_S = 120.0
#: Length of the baseline window, seconds.
BASELINE_S = 600.0
#: Length of the window before the onset, seconds.
PRE_ONSET_S = 300.0
#: Onsets needed before a confidence interval is given.
MIN_ONSETS = 3
#: Fewest samples with a value for a window mean to be used.
MIN_SAMPLES = 3
#: Metrics compared: name -> unit (the ``d_<name>`` column of :func:`onset_drift`).
METRICS: dict[str, str] = {"cadence_spm": "spm", "pace_s_per_km": "s/km", "hr_bpm": "bpm"}

_SAMPLE_COLUMNS = ("activity_id", "t_utc", "elapsed_s", "moving_s", "distance_m", "speed_mps", "cadence_spm", "hr_bpm")


def onset_windows(samples: pl.DataFrame, report: dict[str, Any]) -> dict[str, Any] | None:
    """Locate a pain onset in its run's samples and the two comparison windows.

    Parameters
    ----------
    samples
        The samples of the report's run (``SAMPLE_SCHEMA`` columns; any order).
    report
        One ``pain_reports`` row as a dict (``sample_t_utc``,
        ``onset_moving_s``, ``onset_elapsed_s``, ``onset_distance_m``).

    Returns
    -------
    dict or None
        ``basis`` (``"moving_s"`` or ``"elapsed_s"``), ``onset_s`` (on that
        clock), ``onset_distance_m`` (or None), ``pre`` and ``baseline`` as
        ``(start_s, end_s)``, and ``overlap`` (True when the pre-onset window
        starts before the baseline ends); None when the onset cannot be placed
        on the samples' clock.
    """
    if samples.is_empty():
        return None
    at_sample = None
    if report.get("sample_t_utc") is not None:
        hit = samples.filter(pl.col("t_utc") == report["sample_t_utc"])
        if not hit.is_empty():
            at_sample = hit.row(0, named=True)
    basis = None
    onset_s = None
    for column, key in (("moving_s", "onset_moving_s"), ("elapsed_s", "onset_elapsed_s")):
        if samples[column].null_count() == samples.height:
            continue
        value = at_sample[column] if at_sample is not None else None
        if value is None:
            value = report.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            basis, onset_s = column, float(value)
            break
    if basis is None or onset_s is None:
        return None
    onset_distance = report.get("onset_distance_m")
    if onset_distance is None and at_sample is not None:
        onset_distance = at_sample.get("distance_m")
    pre = (onset_s - PRE_ONSET_S, onset_s)
    baseline = (WARMUP_S, WARMUP_S + BASELINE_S)
    return {
        "basis": basis,
        "onset_s": onset_s,
        "onset_distance_m": onset_distance,
        "pre": pre,
        "baseline": baseline,
        "overlap": pre[0] < baseline[1],
    }


def _window_means(samples: pl.DataFrame, basis: str, window: tuple[float, float]) -> dict[str, Any]:
    part = samples.filter((pl.col(basis) >= window[0]) & (pl.col(basis) < window[1]))
    out: dict[str, Any] = {"n": part.height}
    for column in ("cadence_spm", "hr_bpm"):
        values = part[column].drop_nulls().drop_nans()
        values = values.filter(values > 0)  # 0 = no reading (standing, strap lost)
        out[column] = float(values.mean()) if values.len() >= MIN_SAMPLES else None  # type: ignore[arg-type]
    speed = part["speed_mps"].drop_nulls().drop_nans()
    mean_speed: float | None = None
    if speed.len() >= MIN_SAMPLES:
        mean_speed = float(speed.mean())  # type: ignore[arg-type]
    else:
        moved = part.select(basis, "distance_m").drop_nulls()
        if moved.height >= MIN_SAMPLES:
            dt = float(moved[basis].max() - moved[basis].min())  # type: ignore[operator]
            dd = float(moved["distance_m"].max() - moved["distance_m"].min())  # type: ignore[operator]
            mean_speed = dd / dt if dt > 0 else None
    out["speed_mps"] = mean_speed
    out["pace_s_per_km"] = 1000.0 / mean_speed if mean_speed else None
    return out


def onset_drift(samples: pl.DataFrame, pain_reports: pl.DataFrame) -> pl.DataFrame:
    """Cadence, pace and heart rate in the 5 min before each onset vs the run's baseline.

    Parameters
    ----------
    samples
        Samples of (at least) the runs the reports are joined to
        (``SAMPLE_SCHEMA``).
    pain_reports
        ``pain_reports`` rows; only ``status == "matched"`` rows with an
        ``activity_id`` are used.

    Returns
    -------
    pl.DataFrame
        One row per matched report, sorted by onset instant: ``report_id``,
        ``activity_id``, ``date_local``, ``body_part``, ``side``, ``severity``,
        ``basis``, ``onset_s``, ``onset_distance_m``, ``status`` (``ok``,
        ``onset_in_baseline`` when the onset is less than 17 min into the run
        so the windows would overlap, or ``no_samples``), ``base_n`` and
        ``pre_n`` (samples in each window), and for each metric ``m`` in
        :data:`METRICS`: ``base_<m>``, ``pre_<m>`` and ``d_<m>`` (pre minus
        base; positive pace drift = slower). Values are null when a window
        holds fewer than 3 samples with the metric or the status is not ``ok``.
    """
    schema: dict[str, pl.DataType] = {
        "report_id": pl.String(),
        "activity_id": pl.String(),
        "date_local": pl.Date(),
        "body_part": pl.String(),
        "side": pl.String(),
        "severity": pl.Int32(),
        "basis": pl.String(),
        "onset_s": pl.Float64(),
        "onset_distance_m": pl.Float64(),
        "status": pl.String(),
        "base_n": pl.Int64(),
        "pre_n": pl.Int64(),
    }
    for metric in METRICS:
        schema |= {f"base_{metric}": pl.Float64(), f"pre_{metric}": pl.Float64(), f"d_{metric}": pl.Float64()}
    matched = pain_reports.filter((pl.col("status") == "matched") & pl.col("activity_id").is_not_null())
    if "onset_utc" in matched.columns:
        matched = matched.sort("onset_utc", nulls_last=True)
    columns = [c for c in _SAMPLE_COLUMNS if c in samples.columns]
    by_run = {
        key[0]: frame.sort("elapsed_s")
        for key, frame in samples.select(columns).partition_by("activity_id", as_dict=True).items()
    }
    rows = []
    for report in matched.iter_rows(named=True):
        keys = ("report_id", "activity_id", "date_local", "body_part", "side", "severity")
        row: dict[str, Any] = {k: report.get(k) for k in keys}
        run = by_run.get(report["activity_id"])
        windows = onset_windows(run, report) if run is not None else None
        if windows is None or run is None:
            row["status"] = "no_samples"
            rows.append(row)
            continue
        row |= {k: windows[k] for k in ("basis", "onset_s", "onset_distance_m")}
        base = _window_means(run, windows["basis"], windows["baseline"])
        pre = _window_means(run, windows["basis"], windows["pre"])
        row |= {"base_n": base["n"], "pre_n": pre["n"]}
        if windows["overlap"]:
            row["status"] = "onset_in_baseline"
            rows.append(row)
            continue
        row["status"] = "ok"
        for metric in METRICS:
            b, p = base[metric], pre[metric]
            delta = p - b if b is not None and p is not None else None
            row |= {f"base_{metric}": b, f"pre_{metric}": p, f"d_{metric}": delta}
        rows.append(row)
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def t_quantile(p: float, df: int) -> float:
    """Quantile ``p`` (0.5 < p < 1) of Student's t with ``df`` degrees of freedom.

    Uses the closed forms of the t distribution function for integer degrees
    of freedom (Abramowitz & Stegun 26.7.3-4) and bisection; exact to 1e-10.

    Parameters
    ----------
    p
        Probability, e.g. 0.975 for a two-sided 95 % interval.
    df
        Degrees of freedom (>= 1).

    Returns
    -------
    float
        ``t`` with ``P(T <= t) = p``.
    """
    if not 0.5 < p < 1.0 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1 (got p={p}, df={df})")

    def two_sided(t: float) -> float:  # P(|T| <= t)
        theta = math.atan(t / math.sqrt(df))
        s, c = math.sin(theta), math.cos(theta)
        if df == 1:
            return 2.0 * theta / math.pi
        if df % 2 == 1:
            term, total = c, c
            for k in range(3, df - 1, 2):
                term *= c * c * (k - 1) / k
                total += term
            return 2.0 / math.pi * (theta + s * total)
        term, total = 1.0, 1.0
        for k in range(2, df - 1, 2):
            term *= c * c * (k - 1) / k
            total += term
        return s * total

    target = 2.0 * p - 1.0
    lo, hi = 0.0, 1.0
    while two_sided(hi) < target:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if two_sided(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2.0


def drift_summary(drift: pl.DataFrame, *, min_n: int = MIN_ONSETS, level: float = 0.95) -> pl.DataFrame:
    """Mean drift across an athlete's onsets with a t-based confidence interval.

    Parameters
    ----------
    drift
        The output of :func:`onset_drift` (rows with ``status == "ok"`` are used).
    min_n
        Fewest onsets with a value for an interval; below it ``note`` says
        "not enough data" and the mean and interval are null.
    level
        Confidence level of the two-sided interval.

    Returns
    -------
    pl.DataFrame
        One row per metric of :data:`METRICS`: ``metric``, ``unit``, ``n``,
        ``mean``, ``sd``, ``ci_lo``, ``ci_hi`` and ``note``.
    """
    ok = drift.filter(pl.col("status") == "ok")
    rows = []
    for metric, unit in METRICS.items():
        values = np.asarray(ok[f"d_{metric}"].drop_nulls().drop_nans().to_list(), dtype=float)
        n = int(values.size)
        row: dict[str, Any] = {"metric": metric, "unit": unit, "n": n}
        row |= dict.fromkeys(("mean", "sd", "ci_lo", "ci_hi"))
        if n < min_n:
            row["note"] = f"not enough data (n={n}; needs at least {min_n} onsets)"
        else:
            mean = float(values.mean())
            sd = float(values.std(ddof=1))
            half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
            row |= {"mean": mean, "sd": sd, "ci_lo": mean - half, "ci_hi": mean + half}
            row["note"] = f"mean of {n} onsets, {level:.0%} CI (t, {n - 1} df)"
        rows.append(row)
    schema = {
        "metric": pl.String(), "unit": pl.String(), "n": pl.Int64(), "mean": pl.Float64(), "sd": pl.Float64(),
        "ci_lo": pl.Float64(), "ci_hi": pl.Float64(), "note": pl.String(),
    }
    return pl.DataFrame(rows, schema=schema, orient="row")
