"""Charts of the statistics: pain-free distance curves, link forest plots and the club timeline.

Same conventions as :mod:`pipeline.report.charts`: Altair over named datasets,
rows attached as plain JSON, no chart over :data:`~pipeline.report.charts.MAX_CHART_ROWS` rows.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Any

import altair as alt
import polars as pl

from pipeline.analysis.survival import PainFree
from pipeline.report.charts import _WIDTH, M_PER_UNIT, MAX_CHART_ROWS, Unit, _spec

__all__ = ["km_chart", "forest_chart", "club_timeline_chart", "FOREST_LIMITS", "TIMELINE_WEEKS"]

logger = logging.getLogger(__name__)

#: Odds ratios are drawn on a log axis clipped to this range (the tables hold the numbers).
FOREST_LIMITS = (0.01, 100.0)
#: Weeks shown by the club timeline.
TIMELINE_WEEKS = 26


def _steps(curve: pl.DataFrame) -> pl.DataFrame:
    """Only the rows where the curve or its band changes, plus the last (censored runs add no step)."""
    changed = (
        (pl.col("survival") != pl.col("survival").shift(1))
        | (pl.col("ci_lo") != pl.col("ci_lo").shift(1))
        | (pl.col("ci_hi") != pl.col("ci_hi").shift(1))
    ).fill_null(True)
    last = pl.int_range(pl.len()) == pl.len() - 1
    return curve.filter(changed | last)


def km_chart(result: PainFree, *, unit: Unit, cap_m: float | None) -> dict[str, Any]:
    """The share of runs still pain-free along the distance, with its band, the cap and the 50/80 % lines.

    Parameters
    ----------
    result
        One body part's :class:`~pipeline.analysis.survival.PainFree`.
    unit
        The athlete's distance unit.
    cap_m
        The athlete's distance cap (``athlete.toml``), metres, or None.
    """
    per = M_PER_UNIT[unit]
    curve = _steps(result.curve)
    if curve.height > MAX_CHART_ROWS - 10:
        curve = curve.gather_every(math.ceil(curve.height / (MAX_CHART_ROWS - 10)))
        logger.warning("pain-free curve thinned to %d rows", curve.height)
    rows = curve.select(
        (pl.col("distance_m") / per).round(3).alias("distance"),
        (pl.col("survival") * 100).round(1).alias("pain_free_pct"),
        (pl.col("ci_lo") * 100).round(1).alias("lo_pct"),
        (pl.col("ci_hi") * 100).round(1).alias("hi_pct"),
    )
    marks = [{"distance": round(cap_m / per, 3), "label": f"distance cap {cap_m / per:.1f} {unit}"}] if cap_m else []
    lines = pl.DataFrame({"share": [50.0, 80.0], "label": ["half of runs", "80 % of runs"]})
    x = alt.X("distance:Q", title=f"Distance into the run ({unit})", scale=alt.Scale(zero=True, nice=False))
    y_title = "Runs still pain-free (%)"
    band = (
        alt.Chart(alt.NamedData("curve"))
        .mark_area(interpolate="step-after", color="#7aa6c2", opacity=0.3)
        .encode(x=x, y=alt.Y("lo_pct:Q", title=y_title, scale=alt.Scale(domain=[0, 100])), y2="hi_pct:Q")
    )
    step = (
        alt.Chart(alt.NamedData("curve"))
        .mark_line(interpolate="step-after", color="#1f4e79", strokeWidth=2)
        .encode(
            x=x,
            y=alt.Y("pain_free_pct:Q", title=y_title),
            tooltip=[
                alt.Tooltip("distance:Q", title=f"Distance ({unit})", format=".2f"),
                alt.Tooltip("pain_free_pct:Q", title="Still pain-free (%)"),
                alt.Tooltip("lo_pct:Q", title="Band, lower (%)"),
                alt.Tooltip("hi_pct:Q", title="Band, upper (%)"),
            ],
        )
    )
    shares = (
        alt.Chart(alt.NamedData("lines"))
        .mark_rule(strokeDash=[3, 3], color="#777")
        .encode(y="share:Q", tooltip=[alt.Tooltip("label:N", title="Share")])
    )
    cap = (
        alt.Chart(alt.NamedData("marks"))
        .mark_rule(color="#c0392b", strokeWidth=2, strokeDash=[6, 3])
        .encode(x="distance:Q", tooltip=[alt.Tooltip("label:N", title="Cap")])
    )
    # an empty layer makes Vega warn ("Infinite extent"): the cap only when there is one
    layers, datasets = [band, step, shares], {"curve": rows, "lines": lines}
    if marks:
        layers.append(cap)
        datasets["marks"] = pl.DataFrame(marks, schema={"distance": pl.Float64(), "label": pl.String()})
    chart = alt.layer(*layers).properties(width=_WIDTH, height=220)
    return _spec(chart, datasets)


def forest_chart(links: pl.DataFrame) -> dict[str, Any] | None:
    """Odds ratios with their 95 % intervals on a log axis, one row per factor with a result.

    Parameters
    ----------
    links
        :data:`pipeline.analysis.links.LINK_SCHEMA` rows (``status == "ok"`` are drawn).

    Returns
    -------
    dict or None
        The spec; None when no factor has an estimate.
    """
    lo_lim, hi_lim = FOREST_LIMITS
    ok = links.filter(pl.col("status") == "ok")
    if ok.is_empty():
        return None

    def clip(name: str) -> pl.Expr:
        return pl.col(name).fill_nan(None).clip(lo_lim, hi_lim)

    rows = ok.select(
        pl.col("label"),
        clip("odds_ratio").alias("ratio"),
        clip("ci_lo").alias("lo"),
        clip("ci_hi").alias("hi"),
        pl.when(pl.col("link_found")).then(pl.lit("link found (Holm)")).otherwise(pl.lit("no link claimed"))
        .alias("claim"),
        pl.col("sentence"),
    )
    scale = alt.Scale(type="log", domain=[lo_lim, hi_lim])
    y = alt.Y("label:N", title=None, sort=None, axis=alt.Axis(labelLimit=360))
    color = alt.Color(
        "claim:N", title=None,
        scale=alt.Scale(domain=["link found (Holm)", "no link claimed"], range=["#c0392b", "#555"]),
        legend=alt.Legend(orient="bottom"),
    )
    bars = (
        alt.Chart(alt.NamedData("links"))
        .mark_rule(strokeWidth=2)
        .encode(x=alt.X("lo:Q", scale=scale, title="Odds ratio of pain (log scale; 1 = no difference)"),
                x2="hi:Q", y=y, color=color)
    )
    points = (
        alt.Chart(alt.NamedData("links"))
        .mark_point(filled=True, size=70)
        .encode(x=alt.X("ratio:Q", scale=scale), y=y, color=color,
                tooltip=[alt.Tooltip("sentence:N", title="Result")])
    )
    one = alt.Chart(alt.NamedData("one")).mark_rule(color="#999").encode(x=alt.X("x:Q", scale=scale))
    height = 26 * ok.height + 20
    chart = alt.layer(one, bars, points).properties(width=_WIDTH - 260, height=height)
    return _spec(chart, {"links": rows, "one": pl.DataFrame({"x": [1.0]})})


def club_timeline_chart(
    runs: pl.DataFrame, pain: pl.DataFrame, *, names: dict[str, str], end_utc: datetime
) -> dict[str, Any] | None:
    """Runs (grey ticks), pain reports (red) and long-run spikes (purple) per athlete, last weeks.

    Parameters
    ----------
    runs
        ``athlete_id``, ``start_utc``, ``spike`` for every athlete's runs.
    pain
        ``athlete_id``, ``onset_utc`` (or the report's date at noon UTC), ``body_part``, ``status``.
    names
        Athlete id -> display name.
    end_utc
        The right end of the timeline (the report time).

    Returns
    -------
    dict or None
        The spec; None when no run falls in the window. Dates are UTC days
        (the athletes live in different zones).
    """
    weeks = TIMELINE_WEEKS
    while True:
        start = end_utc - timedelta(weeks=weeks)
        shown = runs.filter(pl.col("start_utc") >= start)
        hurt = pain.filter(pl.col("at_utc") >= start)
        if shown.height + hurt.height <= MAX_CHART_ROWS or weeks <= 1:
            break
        weeks = max(1, weeks // 2)
    if shown.is_empty() and hurt.is_empty():
        return None

    who = pl.col("athlete_id").replace_strict(names, default=pl.col("athlete_id"), return_dtype=pl.String)
    run_rows = shown.select(
        who.alias("athlete"),
        pl.col("start_utc").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("t"),
        pl.when(pl.col("spike")).then(pl.lit("long-run spike")).otherwise(pl.lit("run")).alias("kind"),
    )
    pain_rows = hurt.select(
        who.alias("athlete"),
        pl.col("at_utc").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("t"),
        pl.lit("pain report").alias("kind"),
        pl.col("body_part").fill_null("pain"),
        pl.col("status"),
    )
    color = alt.Color(
        "kind:N", title=None,
        scale=alt.Scale(domain=["run", "long-run spike", "pain report"], range=["#9aa5ad", "#6a3d9a", "#c0392b"]),
        legend=alt.Legend(orient="bottom"),
    )
    x = alt.X("t:T", title="Date (UTC)", scale=alt.Scale(type="utc"),
              axis=alt.Axis(format="%d %b %Y"))
    y = alt.Y("athlete:N", title=None, axis=alt.Axis(labelLimit=200))
    ticks = (
        alt.Chart(alt.NamedData("runs"))
        .mark_tick(thickness=1.5, size=14)
        .encode(x=x, y=y, color=color, tooltip=[alt.Tooltip("t:T", title="Run start (UTC)", format="%d %b %Y %H:%M"),
                                                alt.Tooltip("kind:N", title="Kind")])
    )
    dots = (
        alt.Chart(alt.NamedData("pain"))
        .mark_point(shape="diamond", filled=True, size=80)
        .encode(x=x, y=y, color=color,
                tooltip=[alt.Tooltip("t:T", title="Onset (UTC)", format="%d %b %Y %H:%M"),
                         alt.Tooltip("body_part:N", title="Body part"), alt.Tooltip("status:N", title="Status")])
    )
    n_athletes = len(set(run_rows["athlete"].to_list()) | set(pain_rows["athlete"].to_list()))
    layers, datasets = [], {}
    for layer, name, rows in ((ticks, "runs", run_rows), (dots, "pain", pain_rows)):
        if rows.height:  # an empty layer makes Vega warn ("Infinite extent")
            layers.append(layer)
            datasets[name] = rows
    chart = alt.layer(*layers).properties(width=_WIDTH, height=max(60, 28 * n_athletes))
    return _spec(chart, datasets)
