"""What changed just before pain started: cadence, pace, heart-rate drift and HR-to-pace decoupling.

For each pain report joined to a sample of a run, the 5 minutes before the
onset (the *pre-onset window*) are compared with two references:

* **the same run's baseline**: its first 10 minutes after a 2-minute warm-up;
* **the same distance on the athlete's pain-free runs**: on every pain-free
  run that went at least as far, the stretch of distance the pre-onset window
  covered (``[distance at its start, onset distance)``), averaged per run.

Metrics: cadence (steps/min), pace (s/km; + is slower), heart rate (bpm),
HR-to-pace *decoupling* (% change in heartbeats per metre, ``HR / speed``; +
means more beats for the same speed, the Pa:HR decoupling of endurance
coaching) and **cadence at matched speed**: cadence rises with speed, so a
runner who slows down also steps more slowly. The slope of cadence on speed
is fitted on the athlete's pain-free runs (30 s bins, ordinary least squares,
:class:`statsmodels.regression.linear_model.OLS`), and the cadence change is corrected by it:
``d_cadence - slope * d_speed``, the change speed does not explain.

Across onsets each change is summarised by its mean (an effect size in the
metric's own unit) with a t-based 95 % confidence interval
(:class:`statsmodels.stats.weightstats.DescrStatsW`), given from
:data:`MIN_ONSETS` onsets on. Onsets known only as a wide range (``~6 mi``,
``5-6 mi``: more than :data:`MAX_ONSET_SPREAD_M` between its ends) are shown
but left out of the summary: the pipeline places them at one sample of the
range, and the 5 minutes before that sample may not be the 5 minutes before
the pain.

Time basis: the timer clock (``moving_s``, pauses excluded) when the run's
samples carry it and the onset is known on it, else the wall clock
(``elapsed_s``). Windows are half-open, ``[start, end)`` seconds. Pace is taken
from the window's mean speed (``1000 / mean(speed_mps)`` s/km, or the distance
covered over the time taken when the samples carry no speed), so a few slow
samples do not dominate it as they would a mean of per-sample paces. Cadence
and heart-rate readings of 0 are "no reading" and are left out of the means.
Pure functions of polars frames (rows of :data:`pipeline.schema.SAMPLE_SCHEMA`
and ``pain_reports``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from statsmodels.regression.linear_model import OLS
from statsmodels.stats.weightstats import DescrStatsW
from statsmodels.tools.tools import add_constant

__all__ = [
    "WARMUP_S",
    "BASELINE_S",
    "PRE_ONSET_S",
    "MIN_ONSETS",
    "MAX_ONSET_SPREAD_M",
    "METRICS",
    "COMPARISONS",
    "CadenceSpeed",
    "onset_windows",
    "cadence_speed_fit",
    "onset_drift",
    "drift_summary",
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
#: An onset whose distance range is wider than this is too uncertain for the summary, m.
MAX_ONSET_SPREAD_M = 400.0
#: Bins of the cadence-speed fit, seconds of timer time.
SPEED_BIN_S = 30.0
#: Fewest bins for the cadence-speed fit, and the slowest running bin (walking is left out), m/s.
MIN_SPEED_BINS = 20
MIN_RUNNING_SPEED_MPS = 1.5
#: Metrics compared: name -> unit (columns ``d_<name>`` vs baseline and ``r_<name>`` vs pain-free runs).
METRICS: dict[str, str] = {
    "cadence_spm": "spm",
    "cadence_matched_spm": "spm",
    "pace_s_per_km": "s/km",
    "hr_bpm": "bpm",
    "decoupling_pct": "%",
}
#: Comparisons: name -> column prefix of :func:`onset_drift`.
COMPARISONS: dict[str, str] = {"baseline": "d", "pain_free": "r"}

_SAMPLE_COLUMNS = ("activity_id", "t_utc", "elapsed_s", "moving_s", "distance_m", "speed_mps", "cadence_spm", "hr_bpm")


@dataclass(frozen=True)
class CadenceSpeed:
    """Cadence against speed on the athlete's pain-free running: ``cadence = a + slope * speed``."""

    intercept_spm: float
    slope_spm_per_mps: float
    slope_se: float
    n_bins: int
    n_runs: int


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


def _means(part: pl.DataFrame, basis: str | None) -> dict[str, Any]:
    """Mean cadence, heart rate and speed of the samples in ``part`` (one window of one run)."""
    out: dict[str, Any] = {"n": part.height}
    for column in ("cadence_spm", "hr_bpm"):
        values = part[column].drop_nulls().drop_nans()
        values = values.filter(values > 0)  # 0 = no reading (standing, strap lost)
        out[column] = float(values.mean()) if values.len() >= MIN_SAMPLES else None  # type: ignore[arg-type]
    speed = part["speed_mps"].drop_nulls().drop_nans()
    mean_speed: float | None = None
    if speed.len() >= MIN_SAMPLES:
        mean_speed = float(speed.mean())  # type: ignore[arg-type]
    elif basis is not None:
        moved = part.select(basis, "distance_m").drop_nulls()
        if moved.height >= MIN_SAMPLES:
            dt = float(moved[basis].max() - moved[basis].min())  # type: ignore[operator]
            dd = float(moved["distance_m"].max() - moved["distance_m"].min())  # type: ignore[operator]
            mean_speed = dd / dt if dt > 0 else None
    out["speed_mps"] = mean_speed if mean_speed and mean_speed > 0 else None
    out["pace_s_per_km"] = 1000.0 / out["speed_mps"] if out["speed_mps"] else None
    hr, v = out["hr_bpm"], out["speed_mps"]
    out["beats_per_m"] = hr / 60.0 / v if hr is not None and v else None
    return out


def _window_means(samples: pl.DataFrame, basis: str, window: tuple[float, float]) -> dict[str, Any]:
    part = samples.filter((pl.col(basis) >= window[0]) & (pl.col(basis) < window[1]))
    return _means(part, basis)


def _clock(samples: pl.DataFrame) -> str:
    return "moving_s" if samples["moving_s"].null_count() < samples.height else "elapsed_s"


def cadence_speed_fit(samples: pl.DataFrame, *, bin_s: float = SPEED_BIN_S) -> CadenceSpeed | None:
    """Fit cadence on speed over pain-free running, in ``bin_s`` bins of each run.

    Parameters
    ----------
    samples
        Samples of the athlete's pain-free runs (``activity_id``, ``elapsed_s``,
        ``moving_s``, ``speed_mps``, ``cadence_spm``).
    bin_s
        Bin length, seconds of the run's timer (or wall) clock.

    Returns
    -------
    CadenceSpeed or None
        The OLS line; None with fewer than :data:`MIN_SPEED_BINS` running bins
        (faster than :data:`MIN_RUNNING_SPEED_MPS`, cadence read) or speeds that
        barely vary (standard deviation under 0.1 m/s).
    """
    if samples.is_empty():
        return None
    parts = []
    for _, run in samples.partition_by("activity_id", as_dict=True).items():
        clock = _clock(run)
        parts.append(
            run.filter(pl.col(clock).is_not_null() & (pl.col("cadence_spm") > 0) & pl.col("speed_mps").is_not_nan())
            .group_by((pl.col(clock) // bin_s).alias("bin"))
            .agg(pl.col("speed_mps").mean(), pl.col("cadence_spm").mean(), pl.len().alias("n"))
            .filter((pl.col("n") >= bin_s / 3) & (pl.col("speed_mps") >= MIN_RUNNING_SPEED_MPS))
            .with_columns(pl.lit(run["activity_id"][0]).alias("activity_id"))
        )
    bins = pl.concat(parts).drop_nulls() if parts else pl.DataFrame()
    if bins.height < MIN_SPEED_BINS or float(bins["speed_mps"].std() or 0.0) < 0.1:
        return None
    x = add_constant(bins["speed_mps"].to_numpy(), has_constant="add")
    fit = OLS(bins["cadence_spm"].to_numpy(), x).fit()
    return CadenceSpeed(
        intercept_spm=float(fit.params[0]),
        slope_spm_per_mps=float(fit.params[1]),
        slope_se=float(fit.bse[1]),
        n_bins=bins.height,
        n_runs=bins["activity_id"].n_unique(),
    )


def _reference(reference: dict[str, pl.DataFrame], lo_m: float, hi_m: float) -> dict[str, Any]:
    """Means over ``[lo_m, hi_m)`` of distance on every reference run that went past ``hi_m``, run-weighted."""
    per_run = []
    for run in reference.values():
        top = run["distance_m"].max()
        if top is None or float(top) < hi_m:  # type: ignore[arg-type]
            continue
        part = run.filter((pl.col("distance_m") >= lo_m) & (pl.col("distance_m") < hi_m))
        means = _means(part, _clock(run))
        if means["speed_mps"] is not None or means["cadence_spm"] is not None:
            per_run.append(means)
    out: dict[str, Any] = {"n": len(per_run)}
    for key in ("cadence_spm", "hr_bpm", "speed_mps", "beats_per_m"):
        values = [m[key] for m in per_run if m[key] is not None]
        out[key] = float(np.mean(values)) if values else None
    out["pace_s_per_km"] = 1000.0 / out["speed_mps"] if out["speed_mps"] else None
    return out


def _changes(pre: dict[str, Any], ref: dict[str, Any], slope: float | None) -> dict[str, float | None]:
    """Pre-onset window minus a reference, per metric of :data:`METRICS`."""

    def diff(key: str) -> float | None:
        return pre[key] - ref[key] if pre[key] is not None and ref[key] is not None else None

    d_cad, d_speed = diff("cadence_spm"), diff("speed_mps")
    matched = d_cad - slope * d_speed if d_cad is not None and d_speed is not None and slope is not None else None
    decoupling = (
        (pre["beats_per_m"] / ref["beats_per_m"] - 1.0) * 100.0
        if pre["beats_per_m"] is not None and ref["beats_per_m"]
        else None
    )
    return {
        "cadence_spm": d_cad,
        "cadence_matched_spm": matched,
        "pace_s_per_km": diff("pace_s_per_km"),
        "hr_bpm": diff("hr_bpm"),
        "decoupling_pct": decoupling,
    }


def onset_drift(
    samples: pl.DataFrame,
    pain_reports: pl.DataFrame,
    *,
    reference: pl.DataFrame | None = None,
    cadence_speed: CadenceSpeed | None = None,
) -> pl.DataFrame:
    """Cadence, pace, heart rate and decoupling in the 5 min before each onset vs two references.

    Parameters
    ----------
    samples
        Samples of (at least) the runs the reports are joined to
        (``SAMPLE_SCHEMA``).
    pain_reports
        ``pain_reports`` rows; only ``status == "matched"`` rows with an
        ``activity_id`` are used.
    reference
        Samples of the athlete's pain-free runs (for the same-distance
        comparison); None or empty: that comparison is null.
    cadence_speed
        :func:`cadence_speed_fit` of the pain-free runs; None: cadence at
        matched speed is null.

    Returns
    -------
    pl.DataFrame
        One row per matched report, sorted by onset instant: ``report_id``,
        ``activity_id``, ``date_local``, ``body_part``, ``side``, ``severity``,
        ``basis``, ``onset_s``, ``onset_distance_m``, ``onset_spread_m`` (width
        of the onset's distance range), ``status`` (``ok``;
        ``onset_uncertain`` when the range is wider than
        :data:`MAX_ONSET_SPREAD_M`; ``onset_in_baseline`` when the onset is
        less than 17 min into the run so the windows would overlap; or
        ``no_samples``), ``base_n``, ``pre_n``, ``ref_runs`` (pain-free runs
        at that distance), window means ``base_<m>``/``pre_<m>``/``ref_<m>`` for
        cadence, pace, HR and speed, and the changes ``d_<m>`` (pre minus
        baseline) and ``r_<m>`` (pre minus pain-free runs) for every metric of
        :data:`METRICS`. Values are null when a window holds fewer than 3
        samples with the metric; the baseline changes are null unless the
        status is ``ok`` or ``onset_uncertain``.
    """
    schema: dict[str, pl.DataType] = {
        "report_id": pl.String(), "activity_id": pl.String(), "date_local": pl.Date(), "body_part": pl.String(),
        "side": pl.String(), "severity": pl.Int32(), "basis": pl.String(), "onset_s": pl.Float64(),
        "onset_distance_m": pl.Float64(), "onset_spread_m": pl.Float64(), "status": pl.String(),
        "base_n": pl.Int64(), "pre_n": pl.Int64(), "ref_runs": pl.Int64(),
    }
    for window in ("base", "pre", "ref"):
        for metric in ("cadence_spm", "pace_s_per_km", "hr_bpm", "speed_mps"):
            schema[f"{window}_{metric}"] = pl.Float64()
    for prefix in COMPARISONS.values():
        schema |= {f"{prefix}_{metric}": pl.Float64() for metric in METRICS}
    matched = pain_reports.filter((pl.col("status") == "matched") & pl.col("activity_id").is_not_null())
    if "onset_utc" in matched.columns:
        matched = matched.sort("onset_utc", nulls_last=True)
    columns = [c for c in _SAMPLE_COLUMNS if c in samples.columns]
    by_run = {
        key[0]: frame.sort("elapsed_s")
        for key, frame in samples.select(columns).partition_by("activity_id", as_dict=True).items()
    }
    ref_runs: dict[str, pl.DataFrame] = {}
    if reference is not None and not reference.is_empty():
        ref_cols = [c for c in _SAMPLE_COLUMNS if c in reference.columns]
        ref_runs = {
            key[0]: frame.sort("elapsed_s")
            for key, frame in reference.select(ref_cols).partition_by("activity_id", as_dict=True).items()
            if key[0] not in by_run
        }
    slope = cadence_speed.slope_spm_per_mps if cadence_speed is not None else None
    rows = []
    for report in matched.iter_rows(named=True):
        keys = ("report_id", "activity_id", "date_local", "body_part", "side", "severity")
        row: dict[str, Any] = {k: report.get(k) for k in keys}
        lo, hi = report.get("onset_distance_lo_m"), report.get("onset_distance_hi_m")
        spread = float(hi - lo) if lo is not None and hi is not None else 0.0
        row["onset_spread_m"] = spread
        run = by_run.get(report["activity_id"])
        windows = onset_windows(run, report) if run is not None else None
        if windows is None or run is None:
            row["status"] = "no_samples"
            rows.append(row)
            continue
        row |= {k: windows[k] for k in ("basis", "onset_s", "onset_distance_m")}
        base = _window_means(run, windows["basis"], windows["baseline"])
        clock, (start, end) = pl.col(windows["basis"]), windows["pre"]
        pre_part = run.filter((clock >= start) & (clock < end))
        pre = _means(pre_part, windows["basis"])
        row |= {"base_n": base["n"], "pre_n": pre["n"]}
        for metric in ("cadence_spm", "pace_s_per_km", "hr_bpm", "speed_mps"):
            row[f"pre_{metric}"] = pre[metric]
        # the same stretch of distance on pain-free runs
        covered = pre_part["distance_m"].drop_nulls()
        if ref_runs and covered.len() >= MIN_SAMPLES and windows["onset_distance_m"] is not None:
            first_m = float(covered.min())  # type: ignore[arg-type]
            ref = _reference(ref_runs, first_m, float(windows["onset_distance_m"]))
            row["ref_runs"] = ref["n"]
            for metric in ("cadence_spm", "pace_s_per_km", "hr_bpm", "speed_mps"):
                row[f"ref_{metric}"] = ref[metric]
            if ref["n"]:
                row |= {f"r_{m}": v for m, v in _changes(pre, ref, slope).items()}
        else:
            row["ref_runs"] = 0
        if windows["overlap"]:
            row["status"] = "onset_in_baseline"
            rows.append(row)
            continue
        row["status"] = "onset_uncertain" if spread > MAX_ONSET_SPREAD_M else "ok"
        for metric in ("cadence_spm", "pace_s_per_km", "hr_bpm", "speed_mps"):
            row[f"base_{metric}"] = base[metric]
        row |= {f"d_{m}": v for m, v in _changes(pre, base, slope).items()}
        rows.append(row)
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def drift_summary(drift: pl.DataFrame, *, min_n: int = MIN_ONSETS, level: float = 0.95) -> pl.DataFrame:
    """Mean change across an athlete's onsets with a t-based confidence interval.

    Parameters
    ----------
    drift
        The output of :func:`onset_drift`: rows with ``status == "ok"`` (and,
        for the pain-free comparison, ``onset_in_baseline``) are used.
    min_n
        Fewest onsets with a value for an interval; below it ``note`` says
        "not enough data" and the mean and interval are null.
    level
        Confidence level of the two-sided interval.

    Returns
    -------
    pl.DataFrame
        One row per comparison of :data:`COMPARISONS` and metric of
        :data:`METRICS`: ``comparison``, ``metric``, ``unit``, ``n``,
        ``mean``, ``sd``, ``ci_lo``, ``ci_hi`` and ``note``.
    """
    rows = []
    for comparison, prefix in COMPARISONS.items():
        # the pain-free comparison needs no baseline: early onsets count there
        usable = ("ok", "onset_in_baseline") if comparison == "pain_free" else ("ok",)
        ok = drift.filter(pl.col("status").is_in(usable))
        for metric, unit in METRICS.items():
            column = f"{prefix}_{metric}"
            values = np.asarray(
                ok[column].drop_nulls().drop_nans().to_list() if column in ok.columns else [], dtype=float
            )
            n = int(values.size)
            row: dict[str, Any] = {"comparison": comparison, "metric": metric, "unit": unit, "n": n}
            row |= dict.fromkeys(("mean", "sd", "ci_lo", "ci_hi"))
            if n < min_n:
                row["note"] = f"not enough data (n={n}; needs at least {min_n} onsets)"
            else:
                described = DescrStatsW(values)
                lo, hi = described.tconfint_mean(alpha=1.0 - level)
                row |= {"mean": float(described.mean), "sd": float(values.std(ddof=1)),
                        "ci_lo": float(lo), "ci_hi": float(hi)}
                row["note"] = f"mean of {n} onsets, {level:.0%} CI (t, {n - 1} df)"
            rows.append(row)
    schema = {
        "comparison": pl.String(), "metric": pl.String(), "unit": pl.String(), "n": pl.Int64(),
        "mean": pl.Float64(), "sd": pl.Float64(), "ci_lo": pl.Float64(), "ci_hi": pl.Float64(), "note": pl.String(),
    }
    return pl.DataFrame(rows, schema=schema, orient="row")
