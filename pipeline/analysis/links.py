"""What pain is linked to: one model per candidate factor, per athlete and for the club.

The unit is the **run**: each running activity either has pain linked to it
(any current report joined to it: during the run, after it or the next day)
or not. For each candidate factor (:data:`FACTORS`) the odds of pain are
modelled one factor at a time:

* **one athlete, a measured factor** (distance, pace, cadence, hills, rest):
  logistic regression, :class:`statsmodels.discrete.discrete_model.Logit`, odds ratio per step of
  the factor with a Wald 95 % interval;
* **one athlete, a yes/no flag** (long-run spike, ramp): the 2x2 table's
  conditional maximum-likelihood odds ratio with its exact interval
  (:func:`scipy.stats.contingency.odds_ratio`, as R's ``fisher.test``) and
  Fisher's exact p-value. It stays valid with few runs and when every flagged
  run hurt (where logistic regression has no finite estimate);
* **the club**: a GEE logistic model (:class:`statsmodels.genmod.generalized_estimating_equations.GEE`,
  independence working correlation) clustered by athlete, with each factor
  centred on the athlete's own mean so the estimate compares runs *within*
  athletes; the bias-reduced (Mancl-DeRouen) sandwich covariance and a t
  reference with (athletes - 1) degrees of freedom, because a handful of
  athletes is a handful of clusters. Athletes without any pain, or without a
  pain-free run, carry no within-athlete contrast and are left out.

Guards: below :data:`MIN_EVENTS` runs with pain the result is "not enough
data" and no number. Separation (every run with pain lies on one side of
every run without), a model that does not converge, or any warning from the
fit (statsmodels' ``ConvergenceWarning``, ``PerfectSeparationWarning``, ...
are caught here on purpose) make the result "unreliable", never an error.

A link is *claimed* (``link_found``) only when its p-value stays below 0.05
after Holm's correction for the number of factors tested
(:func:`statsmodels.stats.multitest.multipletests`); the 95 % intervals shown
are the unadjusted ones. Associations in observational training data are not
causes: a long run is both longer and usually slower and hillier.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy import stats
from scipy.stats.contingency import odds_ratio
from statsmodels.discrete.discrete_model import Logit
from statsmodels.genmod.cov_struct import Independence
from statsmodels.genmod.families import Binomial
from statsmodels.genmod.generalized_estimating_equations import GEE
from statsmodels.stats.contingency_tables import StratifiedTable
from statsmodels.stats.multitest import multipletests
from statsmodels.tools.sm_exceptions import PerfectSeparationError
from statsmodels.tools.tools import add_constant

from pipeline.analysis.load import long_run_spikes, run_ramp, running_only

__all__ = [
    "MIN_EVENTS",
    "ALPHA",
    "Factor",
    "FACTORS",
    "LINK_SCHEMA",
    "run_factors",
    "athlete_links",
    "club_links",
]

logger = logging.getLogger(__name__)

#: Fewest runs with pain for a model to be fitted.
MIN_EVENTS = 5
#: Family-wise error rate of the "link found" claims (Holm).
ALPHA = 0.05
#: Confidence level of the intervals.
LEVEL = 0.95
#: A run with a factor beyond this many standard errors is "separated" (odds ratio near 0 or infinite).
_MAX_ABS_Z_COEF = 25.0


@dataclass(frozen=True)
class Factor:
    """A candidate factor: its column in :func:`run_factors` and how to say it."""

    name: str
    column: str
    kind: Literal["measured", "flag"]
    #: Shown in tables: what the factor is, with its unit.
    label: str
    #: For measured factors: the step the odds ratio is given per, in the column's unit.
    step: float = 1.0
    #: "each extra <step_text>" (measured) / the flagged runs (flag).
    step_text: str = ""
    #: Column values are divided by this to be shown in ``shown_unit``.
    shown_per: float = 1.0
    shown_unit: str = ""


def _factors(unit_m: float, unit: str) -> tuple[Factor, ...]:
    return (
        Factor("distance", "distance_m", "measured", f"Run distance ({unit})", unit_m, f"1 {unit} of run distance",
               unit_m, unit),
        Factor("pace", "faster_than_usual_pct", "measured", "Pace: % faster than the athlete's usual (median) pace",
               5.0, "5 % faster than your usual pace", 1.0, "% faster"),
        Factor("cadence", "cadence_spm", "measured", "Average cadence (steps/min)", 5.0, "5 steps/min of cadence",
               1.0, "steps/min"),
        Factor("hills", "climb_m_per_km", "measured", "Hilliness: climb per km (m/km)", 10.0,
               "10 m of climb per km", 1.0, "m/km"),
        Factor("spike", "spike", "flag", "Long-run spike (> 10 % over the 30-day longest run)",
               step_text="runs more than 10 % longer than your longest run of the previous 30 days"),
        Factor("ramp", "ramp_flag", "flag", "2-week ramp (last 7 days > 30 % over the 7 before)",
               step_text="runs that ended a 7-day block with more than 30 % more distance than the 7 days before"),
        Factor("rest", "days_since_last_run", "measured", "Days since the previous run (days)", 1.0,
               "rest day before the run", 1.0, "days"),
    )


#: The candidate factors with distances in km (the club's unit).
FACTORS: tuple[Factor, ...] = _factors(1000.0, "km")

LINK_SCHEMA: dict[str, pl.DataType] = {
    "scope": pl.String(),  # athlete id, or "club"
    "factor": pl.String(),
    "label": pl.String(),
    "method": pl.String(),  # logistic | exact | gee | mantel-haenszel | none
    "status": pl.String(),  # ok | not_enough_data | no_variation | unreliable
    "n_runs": pl.Int64(),
    "n_events": pl.Int64(),
    "n_athletes": pl.Int64(),
    "odds_ratio": pl.Float64(),  # per step (measured) or flagged vs not (flag)
    "ci_lo": pl.Float64(),
    "ci_hi": pl.Float64(),
    "p_value": pl.Float64(),
    "p_holm": pl.Float64(),
    "link_found": pl.Boolean(),
    "detail": pl.String(),
    "sentence": pl.String(),
}


def run_factors(activities: pl.DataFrame, pain: pl.DataFrame) -> pl.DataFrame:
    """One row per run: whether pain is linked to it and every candidate factor.

    Parameters
    ----------
    activities
        Rows of ``ACTIVITY_SCHEMA`` (one or more athletes; duplicates already
        removed); non-running rows are ignored, except that no row is needed.
    pain
        Current pain reports (``activity_id``); any report joined to a run
        counts, whatever its body part or status.

    Returns
    -------
    pl.DataFrame
        ``activity_id``, ``athlete_id``, ``start_utc``, ``pain`` (Boolean),
        ``distance_m``, ``faster_than_usual_pct`` (average speed vs the
        athlete's median run speed, %), ``cadence_spm``, ``climb_m_per_km``
        (total ascent per km; null under 0.5 km), ``spike``, ``ramp``,
        ``ramp_flag`` (null without running in the 7 days before the window),
        ``days_since_last_run`` (from the end of the athlete's previous run;
        null for the first).
    """
    runs = running_only(activities).sort("start_utc")
    hurt = pain.filter(pl.col("activity_id").is_not_null()).select("activity_id").unique()
    spikes = long_run_spikes(runs).select("activity_id", "spike")
    ramps = run_ramp(runs).select("activity_id", "ramp", "ramp_flag")
    speed = pl.when(pl.col("avg_speed_mps") > 0).then(pl.col("avg_speed_mps"))
    out = (
        runs.join(spikes, on="activity_id", how="left")
        .join(ramps, on="activity_id", how="left")
        .with_columns(
            pain=pl.col("activity_id").is_in(hurt["activity_id"].implode()),
            faster_than_usual_pct=(speed / speed.median().over("athlete_id") - 1.0) * 100.0,
            cadence_spm=pl.when(pl.col("avg_cadence_spm") > 0).then(pl.col("avg_cadence_spm")),
            climb_m_per_km=pl.when(pl.col("distance_m") >= 500.0).then(
                pl.col("total_ascent_m") / (pl.col("distance_m") / 1000.0)
            ),
            days_since_last_run=(
                (pl.col("start_utc") - pl.col("end_utc").shift(1).over("athlete_id")).dt.total_microseconds() / 86400e6
            ).clip(lower_bound=0.0),
        )
    )
    return out.select(
        "activity_id", "athlete_id", "start_utc", "pain", "distance_m", "faster_than_usual_pct", "cadence_spm",
        "climb_m_per_km", "spike", "ramp", "ramp_flag", "days_since_last_run",
    )


# --------------------------------------------------------------------------- fitting


class _Unreliable(Exception):
    """The fit failed or warned; the message says why (shown on the page)."""


def _fit_quietly(fit: Any) -> Any:
    """Run ``fit()``; any warning or numerical failure becomes :class:`_Unreliable`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fit()
        except (PerfectSeparationError, np.linalg.LinAlgError, ValueError, OverflowError,
                ZeroDivisionError) as exc:
            raise _Unreliable(f"the model could not be fitted ({type(exc).__name__}: {exc})") from exc
    # statsmodels ConvergenceWarning, PerfectSeparationWarning, HessianInversionWarning, numpy overflow ...
    relevant = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    if relevant:
        first = relevant[0]
        raise _Unreliable(f"the fit warned ({first.category.__name__}: {str(first.message).splitlines()[0]})")
    return result


def _separation(x: np.ndarray, y: np.ndarray, factor: Factor) -> str | None:
    """A sentence when every run with pain lies on one side of every run without (or touches it)."""
    pain, free = x[y == 1] / factor.shown_per, x[y == 0] / factor.shown_per
    if pain.size == 0 or free.size == 0:
        return None
    unit = f" {factor.shown_unit}" if factor.shown_unit else ""
    if pain.min() >= free.max():
        return (f"every run with pain had {pain.min():.3g}{unit} or more and every run without "
                f"{free.max():.3g}{unit} or less")
    if pain.max() <= free.min():
        return (f"every run with pain had {pain.max():.3g}{unit} or less and every run without "
                f"{free.min():.3g}{unit} or more")
    return None


def _logistic(x: np.ndarray, y: np.ndarray, level: float) -> tuple[float, float, float, float]:
    """(log OR, lo, hi, p) of a one-factor logistic regression; raises :class:`_Unreliable`."""
    model = Logit(y, add_constant(x, has_constant="add"))
    result = _fit_quietly(lambda: model.fit(disp=0, maxiter=100))
    if not result.mle_retvals.get("converged", False):
        raise _Unreliable("the model did not converge")
    b, se = float(result.params[1]), float(result.bse[1])
    if not (math.isfinite(b) and math.isfinite(se)) or abs(b) > _MAX_ABS_Z_COEF:
        raise _Unreliable("the estimate is not finite (near-separation)")
    lo, hi = result.conf_int(alpha=1.0 - level)[1]
    return b, float(lo), float(hi), float(result.pvalues[1])


def _exact(exposed: np.ndarray, y: np.ndarray, level: float) -> tuple[float, float, float, float]:
    """(OR, lo, hi, p) of the 2x2 table exposed x pain: conditional MLE, exact interval, Fisher's p."""
    a = int(((exposed == 1) & (y == 1)).sum())
    b = int(((exposed == 1) & (y == 0)).sum())
    c = int(((exposed == 0) & (y == 1)).sum())
    d = int(((exposed == 0) & (y == 0)).sum())
    table = [[a, b], [c, d]]
    result = odds_ratio(table, kind="conditional")
    ci = result.confidence_interval(confidence_level=level)
    p = float(stats.fisher_exact(table).pvalue)
    return float(result.statistic), float(ci.low), float(ci.high), p


def _ratio_text(value: float) -> str:
    """An odds ratio for a sentence: 2 significant digits, extremes as bounds."""
    if math.isinf(value):
        return "∞"
    if value > 1000:
        return "over 1000"
    if value < 0.001:
        return "under 0.001"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _sentence(factor: Factor, row: dict[str, Any], counts: str, *, who: str = "your") -> str:
    """The plain-language sentence for one result (``who``: "your" or "the athlete's")."""
    if row["status"] != "ok":
        return f"{factor.label}: {row['detail']}."
    ratio, lo, hi = row["odds_ratio"], row["ci_lo"], row["ci_hi"]
    ci = f"95 % CI {_ratio_text(lo)} to {_ratio_text(hi)}"
    step = factor.step_text.replace("your", who)
    if factor.kind == "flag":
        lead = f"{counts[:1].upper()}{counts[1:]}"
        if math.isinf(ratio):
            return f"{lead}: the odds of pain were at least {_ratio_text(lo)} times those of other runs ({ci})."
        return f"{lead}: {_ratio_text(ratio)} times the odds of pain ({ci})."
    return f"Each extra {step} went with {_ratio_text(ratio)} times the odds of pain ({ci}; {counts})."


def _empty_row(scope: str, factor: Factor, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(LINK_SCHEMA)
    row |= {"scope": scope, "factor": factor.name, "label": factor.label, "method": "none", "link_found": False}
    row |= values
    return row


def _one_athlete(scope: str, factor: Factor, runs: pl.DataFrame, min_events: int, level: float) -> dict[str, Any]:
    data = runs.select(pl.col(factor.column).cast(pl.Float64).alias("x"), pl.col("pain").cast(pl.Float64).alias("y"))
    data = data.drop_nulls().filter(pl.col("x").is_finite())
    x, y = data["x"].to_numpy(), data["y"].to_numpy()
    n, events = int(y.size), int(y.sum())
    row = _empty_row(scope, factor, n_runs=n, n_events=events, n_athletes=1)
    counts = f"{n} runs, {events} with pain"
    if events < min_events:
        row |= {"status": "not_enough_data",
                "detail": f"not enough data ({_runs(events)} with pain; needs at least {min_events})"}
    elif events == n:
        row |= {"status": "no_variation", "detail": "every run had pain: nothing to compare"}
    elif factor.kind == "flag":
        exposed = x >= 0.5
        n_exp, e_exp = int(exposed.sum()), int(y[exposed].sum())
        counts = (f"{e_exp} of {n_exp} {factor.step_text.replace('your', 'the')} had pain, "
                  f"{events - e_exp} of {n - n_exp} other runs")
        if n_exp == 0 or n_exp == n:
            row |= {"status": "no_variation", "detail": f"{'no' if n_exp == 0 else 'every'} run flagged"}
        else:
            ratio, lo, hi, p = _exact(exposed.astype(int), y, level)
            row |= {"status": "ok", "method": "exact", "odds_ratio": ratio, "ci_lo": lo, "ci_hi": hi, "p_value": p,
                    "detail": counts}
    elif np.unique(x).size < 2:
        row |= {"status": "no_variation", "detail": "the factor does not vary between runs"}
    else:
        split = _separation(x, y, factor)
        if split is not None:
            row |= {"status": "unreliable", "method": "logistic",
                    "detail": f"not estimable: {split} (complete separation: as clear a pattern as these runs can "
                              "show, but no odds ratio can be computed from it)"}
        else:
            try:
                b, lo, hi, p = _logistic(x / factor.step, y, level)
                row |= {"status": "ok", "method": "logistic", "odds_ratio": math.exp(b), "ci_lo": math.exp(lo),
                        "ci_hi": math.exp(hi), "p_value": p, "detail": counts}
            except _Unreliable as exc:
                row |= {"status": "unreliable", "method": "logistic", "detail": f"unreliable: {exc}"}
    row["sentence"] = _sentence(factor, row, counts)
    return row


def _holm(rows: list[dict[str, Any]], alpha: float) -> None:
    tested = [r for r in rows if r["status"] == "ok" and r["p_value"] is not None]
    if not tested:
        return
    reject, adjusted, _, _ = multipletests([r["p_value"] for r in tested], alpha=alpha, method="holm")
    for r, rej, adj in zip(tested, reject, adjusted, strict=True):
        excludes_one = r["ci_lo"] > 1.0 or r["ci_hi"] < 1.0
        r["p_holm"] = float(adj)
        r["link_found"] = bool(rej) and excludes_one


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=LINK_SCHEMA, orient="row") if rows else pl.DataFrame(schema=LINK_SCHEMA)


def athlete_links(
    factors: pl.DataFrame,
    *,
    unit: Literal["km", "mi"] = "km",
    min_events: int = MIN_EVENTS,
    level: float = LEVEL,
    alpha: float = ALPHA,
) -> pl.DataFrame:
    """One athlete's links: a model per candidate factor.

    Parameters
    ----------
    factors
        :func:`run_factors` rows of one athlete.
    unit
        The athlete's distance unit (the distance step: 1 km or 1 mi).
    min_events
        Fewest runs with pain for a model.
    level, alpha
        Interval level; family-wise error rate of the Holm-corrected claims.

    Returns
    -------
    pl.DataFrame
        One row per factor (:data:`LINK_SCHEMA`), ``scope`` = the athlete id.
    """
    scope = str(factors["athlete_id"][0]) if factors.height else ""
    specs = _factors(1609.344 if unit == "mi" else 1000.0, unit)
    rows = [_one_athlete(scope, factor, factors, min_events, level) for factor in specs]
    _holm(rows, alpha)
    return _frame(rows)


def _gee(xc: np.ndarray, y: np.ndarray, groups: np.ndarray, level: float) -> tuple[float, float, float, float]:
    """(log OR, lo, hi, p): GEE logistic, independence, bias-reduced sandwich, t with (clusters - 1) df."""
    model = GEE(y, add_constant(xc, has_constant="add"), groups=groups,
                   family=Binomial(), cov_struct=Independence())
    result = _fit_quietly(lambda: model.fit(cov_type="bias_reduced", maxiter=100))
    b, se = float(result.params[1]), float(result.bse[1])
    if not (math.isfinite(b) and math.isfinite(se) and se > 0) or abs(b) > _MAX_ABS_Z_COEF:
        raise _Unreliable("the estimate is not finite (near-separation)")
    df = int(np.unique(groups).size) - 1
    half = float(stats.t.ppf(0.5 + level / 2.0, df)) * se
    return b, b - half, b + half, float(2.0 * stats.t.sf(abs(b / se), df))


def _mantel_haenszel(data: pl.DataFrame, level: float) -> dict[str, Any]:
    """Flag x pain stratified by athlete: Mantel-Haenszel OR, Robins-Breslow-Greenland CI, CMH p."""
    tables = []
    for _, part in sorted(data.partition_by("athlete_id", as_dict=True).items()):
        exposed, y = part["x"].to_numpy() >= 0.5, part["y"].to_numpy() == 1
        tables.append(np.array([[(exposed & y).sum(), (exposed & ~y).sum()],
                                [(~exposed & y).sum(), (~exposed & ~y).sum()]], dtype=float))
    try:
        table = _fit_quietly(lambda: StratifiedTable(tables))
        ratio = float(table.oddsratio_pooled)
        lo, hi = (float(v) for v in _fit_quietly(lambda: table.oddsratio_pooled_confint(alpha=1.0 - level)))
        p = float(_fit_quietly(lambda: table.test_null_odds(correction=True)).pvalue)
    except _Unreliable as exc:
        return {"status": "unreliable", "method": "mantel-haenszel", "why": f"unreliable: {exc}"}
    if not all(math.isfinite(v) for v in (ratio, lo, hi, p)) or ratio <= 0:
        why = "not estimable: within every athlete the flag and pain do not overlap the other way (zero cells)"
        return {"status": "unreliable", "method": "mantel-haenszel", "why": why}
    return {"status": "ok", "method": "mantel-haenszel", "odds_ratio": ratio, "ci_lo": lo, "ci_hi": hi,
            "p_value": p}


def _club_one(factor: Factor, runs: pl.DataFrame, min_events: int, level: float) -> dict[str, Any]:
    col = pl.col(factor.column).cast(pl.Float64)
    data = runs.select("athlete_id", col.alias("x"), pl.col("pain").cast(pl.Float64).alias("y")).drop_nulls()
    data = data.filter(pl.col("x").is_finite())
    # only athletes with both outcomes carry a within-athlete contrast
    data = data.filter((pl.col("y").max().over("athlete_id") == 1) & (pl.col("y").min().over("athlete_id") == 0))
    data = data.with_columns(xc=pl.col("x") - pl.col("x").mean().over("athlete_id"))
    y, xc = data["y"].to_numpy(), data["xc"].to_numpy() / (factor.step if factor.kind == "measured" else 1.0)
    groups = data["athlete_id"].to_numpy()
    n, events, n_ath = int(y.size), int(y.sum()), int(np.unique(groups).size)
    row = _empty_row("club", factor, n_runs=n, n_events=events, n_athletes=n_ath)
    counts = f"{n} runs of {n_ath} athletes, {events} with pain"
    if events < min_events:
        row |= {"status": "not_enough_data", "detail": (
            f"not enough data ({_runs(events)} with pain among athletes with runs with and without pain; "
            f"needs at least {min_events})")}
    elif n_ath < 2:
        row |= {"status": "not_enough_data",
                "detail": "only one athlete has runs with and without pain: see the athlete's page"}
    elif np.allclose(xc, 0.0):
        row |= {"status": "no_variation", "detail": "the factor does not vary within athletes"}
    elif factor.kind == "flag":
        row |= _mantel_haenszel(data, level) | {"detail": counts}
        if row["status"] != "ok":
            row["detail"] = row.pop("why")
        row.pop("why", None)
    else:
        split = _separation(xc * factor.step, y, factor)
        if split is not None:
            row |= {"status": "unreliable", "method": "gee",
                    "detail": f"not estimable: relative to each athlete's mean, {split} (complete separation)"}
        else:
            try:
                b, lo, hi, p = _gee(xc, y, groups, level)
                row |= {"status": "ok", "method": "gee", "odds_ratio": math.exp(b), "ci_lo": math.exp(lo),
                        "ci_hi": math.exp(hi), "p_value": p, "detail": counts}
            except _Unreliable as exc:
                row |= {"status": "unreliable", "method": "gee", "detail": f"unreliable: {exc}"}
    if row["status"] == "ok":
        what = (f"{factor.step_text.replace('your', 'the athlete’s')} (vs the same athletes’ other runs)"
                if factor.kind == "flag"
                else f"each extra {factor.step_text.replace('your', 'the athlete’s')} (within each athlete)")
        row["sentence"] = (
            f"Across the club, {what} went with {_ratio_text(row['odds_ratio'])} times the odds of pain "
            f"(95 % CI {_ratio_text(row['ci_lo'])} to {_ratio_text(row['ci_hi'])}; {counts})."
        )
    else:
        row["sentence"] = f"{factor.label}: {row['detail']}."
    return row


def club_links(
    factors: pl.DataFrame, *, min_events: int = MIN_EVENTS, level: float = LEVEL, alpha: float = ALPHA
) -> pl.DataFrame:
    """The club's links: a GEE model per factor, clustered by athlete (distances in km).

    Parameters
    ----------
    factors
        :func:`run_factors` rows of every athlete.
    min_events, level, alpha
        As :func:`athlete_links`.

    Returns
    -------
    pl.DataFrame
        One row per factor (:data:`LINK_SCHEMA`), ``scope`` = ``"club"``.
    """
    rows = [_club_one(factor, factors, min_events, level) for factor in FACTORS]
    _holm(rows, alpha)
    return _frame(rows)
