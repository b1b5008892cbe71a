"""Pain-free distance: how far into a run an athlete gets before a body part starts to hurt.

Each running activity is one subject, followed along the distance it covered.
A run whose pain report (for the body part) is joined to a sample is an
*event* at the onset distance; every other run is *right-censored* at its
length: it stayed pain-free as far as it went. Reports written as ``after``
or ``next day`` say nothing about where in the run the pain began and count
as pain-free during the run (the page says how many).

Estimators (lifelines, never hand-written):

* every onset known to the sample (clock, timer, exact distance): the
  Kaplan-Meier estimator, :class:`lifelines.KaplanMeierFitter`, with its
  pointwise 95 % band (Greenwood's variance on the log(-log S) scale, the
  ``conf.type = "log-log"`` of R's ``survfit``);
* some onsets known only as a range (``~6 mi``, ``5-6 mi``): the Turnbull
  non-parametric MLE for interval-censored data,
  :meth:`lifelines.KaplanMeierFitter.fit_interval_censoring`. lifelines gives
  no confidence band for it, so the band is *bounded* instead: its lower edge
  is the Kaplan-Meier lower limit with every uncertain onset at the start of
  its range, its upper edge the Kaplan-Meier upper limit with every one at
  the end. That interval covers both the sampling error and the unknown
  position inside each range, so it is wider (more cautious) than a 95 % band.

Distances at which a share ``q`` of runs is still pain-free (``q = 0.5``: the
median pain-free distance; ``q = 0.8``) come from
:func:`lifelines.utils.qth_survival_times` on the curve, and their 95 %
intervals from the same function on the band's edges (the method R's
``quantile.survfit`` uses: where the pointwise limits cross ``q``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from lifelines import KaplanMeierFitter
from lifelines.utils import qth_survival_times

from pipeline.analysis.load import dated

__all__ = [
    "MIN_EVENTS",
    "LEVEL",
    "PAIN_FREE_SHARES",
    "Quantile",
    "PainFree",
    "pain_free_subjects",
    "fit_pain_free",
    "pain_free_by_body_part",
    "DURING_RUN_STATUS",
]

logger = logging.getLogger(__name__)

#: Fewest onsets for a pain-free distance to be given as a number.
MIN_EVENTS = 5
#: Confidence level of every interval.
LEVEL = 0.95
#: Shares of runs still pain-free whose distances are reported (median, 80 %).
PAIN_FREE_SHARES = (0.5, 0.8)
#: The report status whose onset is placed on a sample of the run.
DURING_RUN_STATUS = "matched"
#: Statuses of reports linked to a run whose onset is not in the run (pain-free during it).
AFTER_RUN_STATUSES = frozenset({"after_run", "next_day"})

_SUBJECT_SCHEMA: dict[str, pl.DataType] = {
    "activity_id": pl.String(),
    "length_m": pl.Float64(),
    "event": pl.Boolean(),
    "lo_m": pl.Float64(),
    "hi_m": pl.Float64(),
    "after_run": pl.Boolean(),
}

_CURVE_SCHEMA: dict[str, pl.DataType] = {
    "distance_m": pl.Float64(),
    "survival": pl.Float64(),
    "ci_lo": pl.Float64(),
    "ci_hi": pl.Float64(),
}


@dataclass(frozen=True)
class Quantile:
    """The distance at which a share ``q`` of runs is still pain-free, with its interval.

    ``None`` for ``value_m`` / ``hi_m`` means "not reached": the curve (or its
    upper limit) never falls to ``q`` within the longest run.
    """

    q: float
    value_m: float | None
    lo_m: float | None
    hi_m: float | None


@dataclass(frozen=True)
class PainFree:
    """One athlete's pain-free distance for one body part."""

    body_part: str
    #: Runs followed (running activities with a distance).
    n_runs: int
    #: Runs whose pain began during the run (events).
    n_events: int
    #: Events known only as a distance range (``~``, ``a-b``).
    n_interval: int
    #: Runs with this pain reported only after the run or the next day (counted pain-free during the run).
    n_after_run: int
    #: Running activities left out because they have no distance.
    n_no_distance: int
    #: ``kaplan-meier``, ``turnbull`` or ``none`` (no event).
    method: str
    #: ``distance_m``, ``survival`` and the band ``ci_lo``/``ci_hi`` (step function, starts at 0 m).
    curve: pl.DataFrame
    #: Median (q = 0.5) and 80 % (q = 0.8) pain-free distances; None below :data:`MIN_EVENTS`.
    quantiles: tuple[Quantile, ...] | None
    #: The longest run, m.
    longest_m: float
    #: Why there are no numbers, or how the band was made.
    note: str

    @property
    def enough(self) -> bool:
        """True when the numbers may be shown (at least :data:`MIN_EVENTS` events)."""
        return self.quantiles is not None

    def quantile(self, q: float) -> Quantile | None:
        """The :class:`Quantile` for share ``q``, or None."""
        for item in self.quantiles or ():
            if math.isclose(item.q, q):
                return item
        return None

    def survival_at(self, distance_m: float) -> tuple[float, float, float] | None:
        """Share of runs still pain-free at ``distance_m`` and its band, or None.

        None when there are not enough events or the distance lies beyond the
        longest run (the curve says nothing there).
        """
        if not self.enough or self.curve.is_empty() or distance_m > self.longest_m:
            return None
        upto = self.curve.filter(pl.col("distance_m") <= distance_m)
        row = upto.row(upto.height - 1, named=True)
        return float(row["survival"]), float(row["ci_lo"]), float(row["ci_hi"])


def pain_free_subjects(runs: pl.DataFrame, pain: pl.DataFrame, *, body_part: str) -> pl.DataFrame:
    """One row per run: how far it went and whether (and where) ``body_part`` began to hurt.

    Parameters
    ----------
    runs
        Running activities (``activity_id``, ``distance_m``); rows without a
        positive distance are left out.
    pain
        Current pain reports (``activity_id``, ``body_part``, ``status``,
        ``onset_distance_m``, ``onset_distance_lo_m``, ``onset_distance_hi_m``).
    body_part
        The body part followed.

    Returns
    -------
    pl.DataFrame
        ``activity_id``, ``length_m``, ``event`` (pain began during the run),
        ``lo_m``/``hi_m`` (where: equal when the onset is known to the sample;
        the range for ``~``/range onsets; for censored runs ``lo_m`` is the run's
        length and ``hi_m`` is infinite) and ``after_run`` (pain reported only
        after the run or the next day). With several onsets of the part in one
        run, the first counts: ``[min lo, min hi]``.
    """
    subjects = runs.select(
        "activity_id", pl.col("distance_m").cast(pl.Float64).alias("length_m")
    ).filter(pl.col("length_m") > 0)
    mine = pain.filter((pl.col("body_part") == body_part) & pl.col("activity_id").is_not_null())
    during = (
        mine.filter((pl.col("status") == DURING_RUN_STATUS) & pl.col("onset_distance_m").is_not_null())
        .group_by("activity_id")
        .agg(
            on_lo=pl.coalesce("onset_distance_lo_m", "onset_distance_m").min(),
            on_hi=pl.coalesce("onset_distance_hi_m", "onset_distance_m").min(),
        )
    )
    after = mine.filter(pl.col("status").is_in(sorted(AFTER_RUN_STATUSES))).select("activity_id").unique()
    out = (
        subjects.join(during, on="activity_id", how="left")
        .join(after.with_columns(after_run=pl.lit(True)), on="activity_id", how="left")
        .with_columns(event=pl.col("on_lo").is_not_null())
    )
    lo = pl.max_horizontal(pl.min_horizontal("on_lo", "length_m"), pl.lit(0.0))
    hi = pl.max_horizontal(pl.min_horizontal("on_hi", "length_m"), lo)
    return out.select(
        "activity_id",
        "length_m",
        "event",
        pl.when(pl.col("event")).then(lo).otherwise(pl.col("length_m")).alias("lo_m"),
        pl.when(pl.col("event")).then(hi).otherwise(pl.lit(math.inf)).alias("hi_m"),
        (pl.col("after_run").fill_null(False) & ~pl.col("event")).alias("after_run"),
    ).cast(_SUBJECT_SCHEMA)  # type: ignore[arg-type]


def _quantile(q: float, curve: pd.Series, lower: pd.Series, upper: pd.Series) -> Quantile:
    def at(s: pd.Series) -> float | None:
        value = float(qth_survival_times(q, s))
        return value if math.isfinite(value) else None

    # the lower edge of the band falls to q first: it gives the interval's lower end
    return Quantile(q=q, value_m=at(curve), lo_m=at(lower), hi_m=at(upper))


def _km(durations: np.ndarray, events: np.ndarray, level: float) -> KaplanMeierFitter:
    return KaplanMeierFitter(alpha=1.0 - level).fit(durations, event_observed=events)


def _band(kmf: KaplanMeierFitter) -> tuple[pd.Series, pd.Series, pd.Series]:
    sf = kmf.survival_function_.iloc[:, 0]
    ci = kmf.confidence_interval_survival_function_
    lower, upper = ci.iloc[:, 0], ci.iloc[:, 1]
    # before the first event the band is undefined (NaN in lifelines): S = 1 there
    return sf, lower.fillna(1.0), upper.fillna(1.0)


#: Censored runs are pain-free *through* their length: their interval starts just after it, m.
_OPEN_EPS_M = 1e-6


def _turnbull(lo: np.ndarray, hi: np.ndarray, events: np.ndarray, level: float) -> pd.Series:
    """The Turnbull NPMLE of S(distance) as a right-continuous step function.

    lifelines' intervals are closed, so a censored run (pain-free through its
    whole length) starts at ``length + 1e-6 m`` (lifelines' own advice for open
    intervals); with no range onset the result then equals Kaplan-Meier.
    ``survival_function_`` holds, at each interval end ``t``, S just *before*
    ``t`` in two columns (the NPMLE is set only up to where inside each
    Turnbull interval the mass lies): the next row is S at ``t``, and the
    middle of the two columns spreads a range onset's share over its interval.
    """
    lower = np.where(events, lo, lo + _OPEN_EPS_M)
    # lifelines' EM takes log(0) for intervals whose mass is 0 (few runs): harmless, -inf is right there
    with np.errstate(divide="ignore", invalid="ignore"):
        fitted = KaplanMeierFitter(alpha=1.0 - level).fit_interval_censoring(lower, hi, tol=1e-8)
    both = fitted.survival_function_.astype(float)
    after = both.shift(-1)
    after.iloc[-1] = both.iloc[-1]
    finite = np.isfinite(after.index.to_numpy(float))
    after = after[finite]
    # beyond the last finite end only censored runs remain: S stays where the "upper" column has it
    after.iloc[-1] = after.iloc[-1].max()
    return after.mean(axis=1)


def _curve_frame(sf: pd.Series, lower: pd.Series, upper: pd.Series) -> pl.DataFrame:
    grid = np.unique(np.concatenate(([0.0], sf.index.to_numpy(float), lower.index.to_numpy(float))))
    grid = grid[np.isfinite(grid)]

    def step(s: pd.Series) -> np.ndarray:
        # value of a right-continuous step function at each grid point
        idx = np.searchsorted(s.index.to_numpy(float), grid, side="right") - 1
        values = s.to_numpy(float)
        return np.where(idx >= 0, values[np.clip(idx, 0, None)], 1.0)

    return pl.DataFrame(
        {"distance_m": grid, "survival": step(sf), "ci_lo": step(lower), "ci_hi": step(upper)},
        schema=_CURVE_SCHEMA,
    )


def fit_pain_free(
    subjects: pl.DataFrame,
    *,
    body_part: str,
    n_no_distance: int = 0,
    min_events: int = MIN_EVENTS,
    level: float = LEVEL,
) -> PainFree:
    """Pain-free distance curve, median and 80 % distances with their intervals.

    Parameters
    ----------
    subjects
        :func:`pain_free_subjects` output.
    body_part
        Named in the result.
    n_no_distance
        Running activities left out for want of a distance (reported only).
    min_events
        Fewest events for the distances to be given (below: "not enough data").
    level
        Confidence level.

    Returns
    -------
    PainFree
        See the class. With interval onsets the point estimates are the
        Turnbull NPMLE's and the band is bounded as the module docstring says.
    """
    n_runs = subjects.height
    n_events = int(subjects["event"].sum())
    exact = subjects["lo_m"] == subjects["hi_m"]
    n_interval = int((subjects["event"] & ~exact).sum())
    n_after = int(subjects["after_run"].sum())
    longest = float(subjects["length_m"].max()) if n_runs else 0.0  # type: ignore[arg-type]
    common: dict[str, Any] = {
        "body_part": body_part, "n_runs": n_runs, "n_events": n_events, "n_interval": n_interval,
        "n_after_run": n_after, "n_no_distance": n_no_distance, "longest_m": longest,
    }
    if n_events == 0:
        return PainFree(**common, method="none", curve=pl.DataFrame(schema=_CURVE_SCHEMA), quantiles=None,
                        note="no onset during a run")
    events = subjects["event"].to_numpy()
    lo = subjects["lo_m"].to_numpy()
    hi_event = np.where(events, subjects["hi_m"].to_numpy(), subjects["length_m"].to_numpy())
    if n_interval == 0:
        kmf = _km(lo, events, level)
        sf, lower, upper = _band(kmf)
        method = "kaplan-meier"
        note = f"Kaplan-Meier, {level:.0%} pointwise band (Greenwood, log-log)"
    else:
        sf = _turnbull(lo, subjects["hi_m"].to_numpy(), events, level)
        _, lower, _ = _band(_km(lo, events, level))  # every uncertain onset at the start of its range
        _, _, upper = _band(_km(hi_event, events, level))  # ... and at its end
        method = "turnbull"
        note = (
            f"Turnbull NPMLE ({n_interval} onsets known only as a range); the band is bounded: "
            f"{level:.0%} Kaplan-Meier limits with each range onset at its start (lower) and end (upper)"
        )
        if not np.isfinite(sf.to_numpy(float)).all():
            # the EM failed on too few runs: fall back to Kaplan-Meier at each range's midpoint, and say so
            mid = np.where(events, (lo + subjects["hi_m"].to_numpy()) / 2.0, lo)
            sf, _, _ = _band(_km(mid, events, level))
            method = "kaplan-meier-midpoint"
            note = (
                f"Kaplan-Meier with each of the {n_interval} range onsets at its midpoint (the interval-censored "
                f"estimate could not be computed on so few runs); the band is bounded as above"
            )
    curve = _curve_frame(sf, lower, upper)
    if n_events < min_events:
        return PainFree(**common, method=method, curve=curve, quantiles=None,
                        note=f"not enough data ({n_events} onset{'' if n_events == 1 else 's'} during a run; "
                             f"needs at least {min_events})")
    quantiles = tuple(_quantile(q, sf, lower, upper) for q in PAIN_FREE_SHARES)
    return PainFree(**common, method=method, curve=curve, quantiles=quantiles, note=note)


def pain_free_by_body_part(runs: pl.DataFrame, pain: pl.DataFrame, **options: Any) -> list[PainFree]:
    """:func:`fit_pain_free` for each body part with a report linked to one of ``runs``.

    Parameters
    ----------
    runs
        One athlete's running activities (duplicates already removed); runs
        on a device clock (no date, no pain report can join them) are left out.
    pain
        That athlete's current pain reports.
    **options
        Passed to :func:`fit_pain_free` (``min_events``, ``level``).

    Returns
    -------
    list of PainFree
        Sorted by body part.
    """
    runs = dated(runs)
    linked = pain.filter(
        pl.col("activity_id").is_in(runs["activity_id"].implode()) & pl.col("body_part").is_not_null()
    )
    no_distance = runs.filter(pl.col("distance_m").is_null() | (pl.col("distance_m") <= 0)).height
    out = []
    for part in sorted(set(linked["body_part"].to_list())):
        subjects = pain_free_subjects(runs, linked, body_part=part)
        out.append(fit_pain_free(subjects, body_part=part, n_no_distance=no_distance, **options))
    return out
