"""Training load: weekly distance, long-run spikes, weekly ramps and ACWR.

Pure functions of polars frames (rows of :data:`pipeline.schema.ACTIVITY_SCHEMA`);
nothing here reads a file or a database. Only running activities
(:data:`pipeline.schema.RUNNING_SPORTS`) with a date count as load (a run on a
device clock, ``start_utc`` null and ``device_time_s`` set, has no place on the
calendar: :func:`running_only` leaves it out of every analysis); an activity
whose ``distance_m`` is null counts as a run of 0 m (it is still counted in ``runs``).

The flags follow two published definitions:

* **long-run spike** -- a run more than 10 % longer than the longest run of the
  previous 30 days (Garmin-RUNSAFE Running Health Study, "How much running is
  too much? Identifying high-risk running sessions in a 5200-person cohort
  study", Br J Sports Med 2025);
* **ramp** -- weekly distance more than 30 % above the week before, i.e. the
  progression over a 2-week period of Nielsen et al., "Excessive progression
  in weekly running distance and risk of running-related injuries", J Orthop
  Sports Phys Ther 2014;44(10):739-747.

The acute:chronic workload ratio is computed as an *uncoupled* exponentially
weighted moving average (EWMA) ratio, see :func:`acwr_ewma`; it is reported as
a descriptive line, never as a risk zone.
"""

from __future__ import annotations

import logging
from datetime import date

import polars as pl

from pipeline.schema import RUNNING_SPORTS

__all__ = [
    "running_only",
    "dated",
    "weekly_load",
    "daily_distance",
    "long_run_spikes",
    "ramp_flags",
    "acwr_ewma",
    "run_ramp",
    "MIN_WINDOW_M",
]

logger = logging.getLogger(__name__)


def running_only(activities: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``activities`` whose ``sport`` is a running sport and that have a date.

    Parameters
    ----------
    activities
        Rows of ``ACTIVITY_SCHEMA`` (at least ``sport``).

    Returns
    -------
    pl.DataFrame
        The running rows with a ``start_utc`` (see :func:`dated`), same columns.
    """
    return dated(activities.filter(pl.col("sport").is_in(sorted(RUNNING_SPORTS))))


def dated(activities: pl.DataFrame) -> pl.DataFrame:
    """The rows with a ``start_utc``: activities on a device clock (no date) are left out.

    Such an activity (``device_time_s`` set, every instant null) joins no pain
    report and has no day, week or order among the others, so every
    date-based analysis leaves it out. A frame without ``start_utc`` is
    returned as it is.
    """
    if "start_utc" not in activities.columns:
        return activities
    return activities.filter(pl.col("start_utc").is_not_null())


def _local_date(tz: str) -> pl.Expr:
    return pl.col("start_utc").dt.convert_time_zone(tz).dt.date()


def weekly_load(activities: pl.DataFrame, *, tz: str) -> pl.DataFrame:
    """Running distance per local calendar week (Monday to Sunday).

    Every week from the first run's week to the last run's week appears, with
    zeros for weeks without a run, so consecutive rows are consecutive weeks.

    Parameters
    ----------
    activities
        Rows of ``ACTIVITY_SCHEMA`` (``sport``, ``start_utc``, ``distance_m``,
        ``moving_s``); non-running rows are ignored.
    tz
        IANA zone the weeks are counted in (the athlete's zone).

    Returns
    -------
    pl.DataFrame
        ``week_start_local`` (Date, a Monday), ``distance_m``, ``moving_s``,
        ``runs`` (Int64), ``longest_run_m``; empty when there is no run.
    """
    schema = {
        "week_start_local": pl.Date(),
        "distance_m": pl.Float64(),
        "moving_s": pl.Float64(),
        "runs": pl.Int64(),
        "longest_run_m": pl.Float64(),
    }
    runs = running_only(activities)
    if runs.is_empty():
        return pl.DataFrame(schema=schema)
    per_week = (
        runs.with_columns(week_start_local=_local_date(tz).dt.truncate("1w"))
        .group_by("week_start_local")
        .agg(
            distance_m=pl.col("distance_m").fill_null(0.0).sum(),
            moving_s=pl.col("moving_s").fill_null(0.0).sum(),
            runs=pl.len().cast(pl.Int64),
            longest_run_m=pl.col("distance_m").fill_null(0.0).max(),
        )
    )
    first, last = per_week["week_start_local"].min(), per_week["week_start_local"].max()
    assert isinstance(first, date) and isinstance(last, date)
    weeks = pl.DataFrame(
        {"week_start_local": pl.date_range(first, last, "1w", eager=True)},
        schema={"week_start_local": pl.Date()},
    )
    return (
        weeks.join(per_week, on="week_start_local", how="left")
        .with_columns(
            pl.col("distance_m", "moving_s", "longest_run_m").fill_null(0.0),
            pl.col("runs").fill_null(0),
        )
        .select(list(schema))
        .cast(schema)  # type: ignore[arg-type]
        .sort("week_start_local")
    )


def daily_distance(activities: pl.DataFrame, *, tz: str, until: date | None = None) -> pl.DataFrame:
    """Running distance per local day, every day from the first run on.

    Parameters
    ----------
    activities
        Rows of ``ACTIVITY_SCHEMA``; non-running rows are ignored.
    tz
        IANA zone the days are counted in.
    until
        Last day of the series (default: the day of the last run). Days after
        the last run get 0 m.

    Returns
    -------
    pl.DataFrame
        ``date_local`` (Date, consecutive days) and ``distance_m``; empty when
        there is no run.
    """
    schema = {"date_local": pl.Date(), "distance_m": pl.Float64()}
    runs = running_only(activities)
    if runs.is_empty():
        return pl.DataFrame(schema=schema)
    per_day = (
        runs.with_columns(date_local=_local_date(tz))
        .group_by("date_local")
        .agg(distance_m=pl.col("distance_m").fill_null(0.0).sum())
    )
    first = per_day["date_local"].min()
    last = per_day["date_local"].max()
    assert isinstance(first, date) and isinstance(last, date)
    if until is not None and until > last:
        last = until
    days = pl.DataFrame(
        {"date_local": pl.date_range(first, last, "1d", eager=True)}, schema={"date_local": pl.Date()}
    )
    return (
        days.join(per_day, on="date_local", how="left")
        .with_columns(pl.col("distance_m").fill_null(0.0))
        .cast(schema)  # type: ignore[arg-type]
        .sort("date_local")
    )


def long_run_spikes(
    activities: pl.DataFrame, *, window_days: int = 30, threshold: float = 0.10
) -> pl.DataFrame:
    """Runs longer than the longest run of the previous ``window_days`` by more than ``threshold``.

    The reference for a run starting at ``t`` is the longest run that started
    in ``[t - window_days, t)`` (runs starting at the same instant are not
    each other's reference). A run with no earlier run in the window has no
    reference and is never flagged (``prev_longest_m`` null).

    Parameters
    ----------
    activities
        Rows of ``ACTIVITY_SCHEMA`` (``activity_id``, ``athlete_id``, ``sport``,
        ``start_utc``, ``distance_m``); non-running rows are ignored. Several
        athletes may be present; each is compared with their own runs.
    window_days
        Length of the look-back window, days (Garmin-RUNSAFE: 30).
    threshold
        Relative excess over the reference that flags a run (0.10 = 10 %).

    Returns
    -------
    pl.DataFrame
        One row per run, sorted by ``start_utc``: ``activity_id``, ``athlete_id``,
        ``start_utc``, ``distance_m``, ``prev_longest_m``, ``excess_ratio``
        (``distance_m / prev_longest_m - 1``, null without a reference or when
        it is 0 m) and ``spike`` (Boolean, never null).
    """
    runs = running_only(activities).sort("start_utc")
    runs = runs.with_columns(pl.col("distance_m").fill_null(0.0))
    prev = pl.col("distance_m").rolling_max_by("start_utc", window_size=f"{window_days}d", closed="left")
    out = runs.with_columns(prev_longest_m=prev.over("athlete_id")).with_columns(
        excess_ratio=pl.when(pl.col("prev_longest_m") > 0)
        .then(pl.col("distance_m") / pl.col("prev_longest_m") - 1.0)
        .otherwise(None)
    )
    out = out.with_columns(
        spike=(pl.col("distance_m") > (1.0 + threshold) * pl.col("prev_longest_m")).fill_null(False)
    )
    return out.select(
        "activity_id", "athlete_id", "start_utc", "distance_m", "prev_longest_m", "excess_ratio", "spike"
    )


def ramp_flags(weekly: pl.DataFrame, *, threshold: float = 0.30) -> pl.DataFrame:
    """Weeks whose distance rose by more than ``threshold`` over the week before.

    This is the progression over a 2-week period of Nielsen et al. (JOSPT
    2014): ``ramp = distance(week) / distance(previous week) - 1``. After a
    week with no running the ratio is undefined (null) and the week is not
    flagged.

    Parameters
    ----------
    weekly
        The output of :func:`weekly_load` (consecutive weeks,
        ``week_start_local`` and ``distance_m``).
    threshold
        Relative increase that flags a week (0.30 = 30 %).

    Returns
    -------
    pl.DataFrame
        ``weekly`` plus ``prev_distance_m`` (null on the first week),
        ``ramp`` (ratio minus one, or null) and ``ramp_flag`` (Boolean).
    """
    out = weekly.sort("week_start_local").with_columns(prev_distance_m=pl.col("distance_m").shift(1))
    return out.with_columns(
        ramp=pl.when(pl.col("prev_distance_m") > 0)
        .then(pl.col("distance_m") / pl.col("prev_distance_m") - 1.0)
        .otherwise(None)
    ).with_columns(
        ramp_flag=(
            (pl.col("prev_distance_m") > 0) & (pl.col("distance_m") > (1.0 + threshold) * pl.col("prev_distance_m"))
        ).fill_null(False)
    )


def acwr_ewma(
    daily_distance: pl.DataFrame, *, acute_days: int = 7, chronic_days: int = 28
) -> pl.DataFrame:
    """Uncoupled EWMA acute:chronic workload ratio of daily running distance.

    Both loads are exponentially weighted moving averages with decay
    ``lambda = 2 / (N + 1)`` (Williams et al., Br J Sports Med 2017), seeded
    with the first day's distance::

        acute[t]   = lambda_a * d[t] + (1 - lambda_a) * acute[t-1]     (N = acute_days)
        chronic[t] = lambda_c * d[t] + (1 - lambda_c) * chronic[t-1]   (N = chronic_days)
        acwr[t]    = acute[t] / chronic[t - acute_days]

    *Uncoupled* means the chronic load compared with today's acute load stops
    the day before the acute window begins, so the same days are never on
    both sides of the ratio (Windt & Gabbett, Br J Sports Med 2019). The
    ratio is null during the first ``acute_days + chronic_days`` days (not
    enough history) and when the chronic load is 0.

    Parameters
    ----------
    daily_distance
        Consecutive days: ``date_local`` and ``distance_m`` (see
        :func:`daily_distance`).
    acute_days, chronic_days
        Spans of the acute and chronic averages, days.

    Returns
    -------
    pl.DataFrame
        ``date_local``, ``distance_m``, ``acute_m`` (acute EWMA of daily
        distance, m/day), ``chronic_m`` (chronic EWMA ending ``acute_days``
        before, m/day) and ``acwr`` (ratio, null as above).
    """
    lam_a = 2.0 / (acute_days + 1)
    lam_c = 2.0 / (chronic_days + 1)
    out = daily_distance.sort("date_local").with_columns(
        acute_m=pl.col("distance_m").ewm_mean(alpha=lam_a, adjust=False),
        chronic_m=pl.col("distance_m").ewm_mean(alpha=lam_c, adjust=False).shift(acute_days),
    )
    enough = pl.int_range(pl.len()) >= acute_days + chronic_days
    return out.with_columns(
        acwr=pl.when(enough & (pl.col("chronic_m") > 0))
        .then(pl.col("acute_m") / pl.col("chronic_m"))
        .otherwise(None)
    ).select("date_local", "distance_m", "acute_m", "chronic_m", "acwr")


#: A window with less running than this (metres) counts as no running: the
#: ramp against it is undefined rather than a huge ratio over rounding noise.
MIN_WINDOW_M = 1.0


def run_ramp(activities: pl.DataFrame, *, days: int = 7, threshold: float = 0.30) -> pl.DataFrame:
    """Per run: distance of the ``days`` up to and including it vs the ``days`` before that.

    A rolling version of the 2-week progression of Nielsen et al. (JOSPT 2014)
    that uses only what happened up to the run (a calendar week would also
    count the runs later that week). Each athlete is compared with their own
    runs.

    Parameters
    ----------
    activities
        Rows of ``ACTIVITY_SCHEMA`` (``activity_id``, ``athlete_id``, ``sport``,
        ``start_utc``, ``distance_m``); non-running rows are ignored.
    days
        Length of each window, days.
    threshold
        Relative increase that sets ``ramp_flag`` (0.30 = 30 %).

    Returns
    -------
    pl.DataFrame
        One row per run, sorted by ``start_utc``: ``activity_id``,
        ``recent_m`` (running distance in ``(t - days, t]``, this run
        included), ``before_m`` (in ``(t - 2 days, t - days]``), ``ramp``
        (``recent_m / before_m - 1``, null when ``before_m`` is under
        ``MIN_WINDOW_M``, i.e. no running) and
        ``ramp_flag`` (null when ``ramp`` is).
    """
    runs = running_only(activities).sort("start_utc").with_columns(pl.col("distance_m").fill_null(0.0))
    recent = pl.col("distance_m").rolling_sum_by("start_utc", window_size=f"{days}d", closed="right")
    both = pl.col("distance_m").rolling_sum_by("start_utc", window_size=f"{2 * days}d", closed="right")
    out = runs.with_columns(recent_m=recent.over("athlete_id"), both_m=both.over("athlete_id")).with_columns(
        before_m=pl.col("both_m") - pl.col("recent_m")
    )
    # before_m is a difference of float sums, so an empty window may come out
    # as 1e-12 rather than 0: under a metre of running counts as none.
    ramp = pl.when(pl.col("before_m") >= MIN_WINDOW_M).then(pl.col("recent_m") / pl.col("before_m") - 1.0).otherwise(None)
    return out.with_columns(ramp=ramp).with_columns(ramp_flag=pl.col("ramp") > threshold).select(
        "activity_id", "recent_m", pl.col("before_m").clip(lower_bound=0.0), "ramp", "ramp_flag"
    )
