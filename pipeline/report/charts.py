"""Frames -> Vega-Lite specs (through Altair): weekly load, ACWR and per-run profiles.

Charts are declared with Altair over *named* datasets and the rows are put in
the spec's top-level ``datasets`` here, already converted to plain JSON values
(dates as ``YYYY-MM-DD`` strings on UTC scales, so a chart shows the same days
in every browser's time zone). No chart carries more than
:data:`MAX_CHART_ROWS` rows: run profiles are averaged over distance bins
(10 m, wider for long runs) and the onset is drawn at its exact position from
a separate one-row-per-onset dataset; any other oversized chart is thinned to
every n-th row (with a warning in the log).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from datetime import timedelta
from typing import Any, Literal

import altair as alt
import polars as pl

from pipeline.analysis.drift import onset_windows

__all__ = [
    "MAX_CHART_ROWS",
    "M_PER_UNIT",
    "weekly_chart",
    "acwr_chart",
    "run_profile",
    "onset_marks",
    "run_chart",
    "rows_for_json",
]

logger = logging.getLogger(__name__)

Unit = Literal["km", "mi"]

#: Most rows any chart dataset may hold.
MAX_CHART_ROWS = 2000
#: Metres per distance unit.
M_PER_UNIT: dict[str, float] = {"km": 1000.0, "mi": 1609.344}
#: Elevation unit per distance unit, and metres per elevation unit.
ELEVATION_UNIT: dict[str, tuple[str, float]] = {"km": ("m", 1.0), "mi": ("ft", 0.3048)}
#: Slower than this (or 60 % of the run's median speed) the pace line breaks: standing, walking.
MIN_PACE_SPEED_MPS = 0.5

_WIDTH = 760
_COLORS = {
    "week": "#7aa6c2",
    "week, ramp > 30 %": "#e08a1e",
    "long-run spike (single run)": "#6a3d9a",
    "pain report": "#c0392b",
}


def rows_for_json(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: dates and instants as ISO 8601 strings, NaN and inf as None.

    Converted column by column in polars (a chart embeds up to 5,000 rows and
    a report hundreds of charts), then turned into dicts once.
    """
    exprs = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if dtype == pl.Date():
            col = col.dt.to_string("%Y-%m-%d")
        elif isinstance(dtype, pl.Datetime):
            col = col.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f" + ("%:z" if dtype.time_zone else ""))
        elif dtype.is_float():
            col = pl.when(col.is_finite()).then(col)
        exprs.append(col.alias(name))
    return frame.select(exprs).to_dicts()


def _spec_dict(chart: alt.TopLevelMixin) -> dict[str, Any]:
    spec = chart.to_dict(validate=True)
    spec.pop("$schema", None)  # the page embeds in vega-lite mode; no URL in the spec
    return spec


def _spec(chart: alt.TopLevelMixin, datasets: dict[str, pl.DataFrame]) -> dict[str, Any]:
    return _attach(_spec_dict(chart), datasets)


def _attach(
    spec: dict[str, Any], datasets: dict[str, pl.DataFrame], *, exact: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Put the rows in ``spec["datasets"]``, thinning all but ``exact`` so the chart holds <= MAX_CHART_ROWS."""
    budget = MAX_CHART_ROWS - sum(datasets[name].height for name in exact)
    thin = {name: frame for name, frame in datasets.items() if name not in exact}
    total = sum(frame.height for frame in thin.values())
    if total > budget and thin:
        # every n-th row of each thinned dataset; + len(thin) absorbs each one's rounding up
        step = math.ceil(total / max(budget - len(thin), 1))
        logger.warning("chart data thinned to every %d. row (%d rows over %d)", step, total, budget)
        datasets = {name: frame if name in exact else frame.gather_every(step) for name, frame in datasets.items()}
    spec["datasets"] = {name: rows_for_json(frame) for name, frame in datasets.items()}
    return spec


def _color(title: str) -> alt.Color:
    return alt.Color(
        "kind:N",
        title=title,
        scale=alt.Scale(domain=list(_COLORS), range=list(_COLORS.values())),
        legend=alt.Legend(orient="bottom"),
    )


def weekly_chart(
    weekly: pl.DataFrame, pain: pl.DataFrame, spikes: pl.DataFrame, *, unit: Unit
) -> dict[str, Any]:
    """Weekly running distance, ramp weeks highlighted, pain reports and spike runs overlaid.

    Parameters
    ----------
    weekly
        :func:`pipeline.analysis.load.ramp_flags` output (``week_start_local``,
        ``distance_m``, ``runs``, ``prev_distance_m``, ``ramp``, ``ramp_flag``).
    pain
        Pain reports to mark: ``date_local``, ``body_part``, ``side``,
        ``severity``, ``status``.
    spikes
        Flagged runs: ``date_local``, ``distance_m``, ``prev_longest_m``, ``excess_ratio``.
    unit
        The athlete's distance unit.
    """
    per = M_PER_UNIT[unit]
    weeks = weekly.select(
        pl.col("week_start_local").alias("week_start"),
        (pl.col("week_start_local") + timedelta(days=7)).alias("week_end"),
        (pl.col("distance_m") / per).round(2).alias("distance"),
        pl.col("runs"),
        (pl.col("ramp") * 100).round(0).alias("ramp_pct"),
        pl.when(pl.col("ramp_flag")).then(pl.lit("week, ramp > 30 %")).otherwise(pl.lit("week")).alias("kind"),
    )
    pains = pain.select(
        pl.col("date_local").alias("date"),
        pl.col("body_part"),
        pl.col("side"),
        pl.col("severity"),
        pl.col("status"),
        pl.lit("pain report").alias("kind"),
    )
    spike_rows = spikes.select(
        pl.col("date_local").alias("date"),
        (pl.col("distance_m") / per).round(2).alias("distance"),
        (pl.col("prev_longest_m") / per).round(2).alias("prev_longest"),
        (pl.col("excess_ratio") * 100).round(0).alias("excess_pct"),
        pl.lit("long-run spike (single run)").alias("kind"),
    )
    x_title = "Week (athlete's local calendar, Monday start)"
    utc = alt.Scale(type="utc")
    bars = (
        alt.Chart(alt.NamedData("weeks"))
        .mark_bar(stroke="white", strokeWidth=0.5)
        .encode(
            x=alt.X("week_start:T", title=x_title, scale=utc, axis=alt.Axis(format="%d %b %Y", labelAngle=0)),
            x2="week_end:T",
            y=alt.Y("distance:Q", title=f"Distance ({unit}): bars per week, ▲ single run"),
            y2=alt.datum(0),
            color=_color("Marks"),
            tooltip=[
                alt.Tooltip("week_start:N", title="Week starting"),
                alt.Tooltip("distance:Q", title=f"Distance ({unit})"),
                alt.Tooltip("runs:Q", title="Runs"),
                alt.Tooltip("ramp_pct:Q", title="Change vs previous week (%)"),
            ],
        )
    )
    rules = (
        alt.Chart(alt.NamedData("pain"))
        .mark_rule(strokeWidth=2, opacity=0.6)
        .encode(
            x=alt.X("date:T", scale=utc),
            color=_color("Marks"),
            tooltip=[
                alt.Tooltip("date:N", title="Pain date (local)"),
                alt.Tooltip("body_part:N", title="Body part"),
                alt.Tooltip("side:N", title="Side"),
                alt.Tooltip("severity:Q", title="Severity (0-10)"),
                alt.Tooltip("status:N", title="Join status"),
            ],
        )
    )
    points = (
        alt.Chart(alt.NamedData("spikes"))
        .mark_point(shape="triangle-up", filled=True, size=90)
        .encode(
            x=alt.X("date:T", scale=utc),
            y="distance:Q",
            color=_color("Marks"),
            tooltip=[
                alt.Tooltip("date:N", title="Run date (local)"),
                alt.Tooltip("distance:Q", title=f"Run distance ({unit})"),
                alt.Tooltip("prev_longest:Q", title=f"Longest run, previous 30 days ({unit})"),
                alt.Tooltip("excess_pct:Q", title="Longer by (%)"),
            ],
        )
    )
    # an empty layer makes Vega warn ("Infinite extent"): leave it out
    layers, datasets = [bars], {"weeks": weeks}
    if pains.height:
        layers.append(rules)
        datasets["pain"] = pains
    if spike_rows.height:
        layers.append(points)
        datasets["spikes"] = spike_rows
    chart = alt.layer(*layers).properties(width=_WIDTH, height=260)
    return _spec(chart, datasets)


def acwr_chart(acwr: pl.DataFrame, *, unit: Unit) -> dict[str, Any]:
    """The uncoupled EWMA acute:chronic ratio as a plain line (no risk zones).

    Parameters
    ----------
    acwr
        :func:`pipeline.analysis.load.acwr_ewma` output.
    unit
        The athlete's distance unit (for the tooltip loads).
    """
    per = M_PER_UNIT[unit]
    rows = acwr.select(
        pl.col("date_local").alias("date"),
        pl.col("acwr").round(3),
        (pl.col("acute_m") / per).round(3).alias("acute"),
        (pl.col("chronic_m") / per).round(3).alias("chronic"),
    )
    utc = alt.Scale(type="utc")
    line = (
        alt.Chart(alt.NamedData("acwr"))
        .mark_line(color="#34495e", strokeWidth=1.5)
        .encode(
            x=alt.X("date:T", title="Date (athlete's local calendar)", scale=utc, axis=alt.Axis(format="%d %b %Y")),
            y=alt.Y("acwr:Q", title="ACWR (acute ÷ chronic EWMA; ratio, no unit)"),
            tooltip=[
                alt.Tooltip("date:N", title="Date"),
                alt.Tooltip("acwr:Q", title="ACWR (ratio)", format=".2f"),
                alt.Tooltip("acute:Q", title=f"Acute load ({unit}/day)", format=".2f"),
                alt.Tooltip("chronic:Q", title=f"Chronic load ({unit}/day)", format=".2f"),
            ],
        )
    )
    return _spec(line.properties(width=_WIDTH, height=180), {"acwr": rows})


def run_profile(
    samples: pl.DataFrame, *, unit: Unit, bin_m: float = 10.0, max_rows: int = MAX_CHART_ROWS - 100
) -> tuple[pl.DataFrame, str]:
    """One run's samples averaged into distance bins for plotting.

    Bins are ``bin_m`` wide, widened in steps of ``bin_m`` until the run fits
    in ``max_rows`` bins. A run without distance falls back to 5 s bins of
    timer (or wall-clock) time. Without recorded speed, speed is distance
    over time across about 10 samples. Pace is left out (a gap in the line)
    where the bin is slower than 60 % of the run's median speed or 0.5 m/s.

    Parameters
    ----------
    samples
        One activity's samples (``SAMPLE_SCHEMA``).
    unit
        The athlete's distance unit.
    bin_m, max_rows
        Narrowest bin, metres; most bins (leaving room in the chart for the onset rows).

    Returns
    -------
    tuple
        The frame (``x`` in the athlete's unit or minutes, ``pace`` in
        min/unit, ``pace_label`` m:ss, ``cadence_spm``, ``hr_bpm``,
        ``elevation`` in m or ft, ``grade_pct`` over about 200 m, null
        without distance) and the x axis title.
    """
    per = M_PER_UNIT[unit]
    elev_unit, m_per_elev = ELEVATION_UNIT[unit]
    s = samples.sort("elapsed_s")
    if s["distance_m"].drop_nulls().len() >= 2:
        key, width, scale, x_title = "distance_m", bin_m, per, f"Distance into the run ({unit})"
    else:
        key = "moving_s" if s["moving_s"].null_count() < s.height else "elapsed_s"
        width, scale, x_title = 5.0, 60.0, "Time into the run (min; no distance recorded)"
    s = s.filter(pl.col(key).is_not_null())
    if s.is_empty():
        return pl.DataFrame(schema={"x": pl.Float64()}), x_title
    lo, hi = float(s[key].min()), float(s[key].max())  # type: ignore[arg-type]
    span = hi - lo
    base = width
    if span / width > max_rows - 1:
        width = math.ceil(span / (max_rows - 1) / base) * base
    if s["speed_mps"].drop_nulls().drop_nans().is_empty():
        # no speed recorded (many GPX files): distance over time across ~10 samples
        clock = "moving_s" if s["moving_s"].null_count() < s.height else "elapsed_s"
        dd = pl.col("distance_m").shift(-5) - pl.col("distance_m").shift(5)
        dt = pl.col(clock).shift(-5) - pl.col(clock).shift(5)
        s = s.with_columns(speed_mps=pl.when(dt > 0).then(dd / dt).otherwise(None))
    speed = pl.col("speed_mps")
    profile = (
        s.with_columns(bin=((pl.col(key) - lo) / width).floor().cast(pl.Int64))
        .group_by("bin")
        .agg(
            x=pl.col(key).mean() / scale,
            speed=speed.filter(speed.is_not_nan()).mean(),
            cadence_spm=pl.col("cadence_spm").filter(pl.col("cadence_spm") > 0).mean(),
            hr_bpm=pl.col("hr_bpm").filter(pl.col("hr_bpm") > 0).mean(),
            elevation=pl.col("altitude_m").mean() / m_per_elev,
            alt_m=pl.col("altitude_m").mean(),
            at_m=pl.col(key).mean(),
        )
        .sort("bin")
    )
    # grade over about 200 m (bins are short and altitude is noisy): rise over run, %
    if key == "distance_m":
        k = max(1, round(100.0 / width))
        rise = pl.col("alt_m").shift(-k) - pl.col("alt_m").shift(k)
        run = pl.col("at_m").shift(-k) - pl.col("at_m").shift(k)
        profile = profile.with_columns(grade_pct=pl.when(run > 0).then(rise / run * 100.0).otherwise(None))
    else:
        profile = profile.with_columns(grade_pct=pl.lit(None, pl.Float64))
    # Standing and walking (slower than 60 % of the run's median speed) would squash the pace axis.
    median = profile["speed"].median()
    slowest = max(MIN_PACE_SPEED_MPS, 0.6 * float(median)) if isinstance(median, float) else MIN_PACE_SPEED_MPS
    profile = profile.with_columns(
        pace=pl.when(pl.col("speed") >= slowest).then(per / pl.col("speed") / 60.0).otherwise(None)
    )
    whole = pl.col("pace").floor()
    secs = ((pl.col("pace") - whole) * 60).round(0).cast(pl.Int64)
    profile = profile.with_columns(
        pace_label=pl.when(pl.col("pace").is_not_null()).then(
            pl.format(
                "{}:{}",
                whole.cast(pl.Int64) + (secs == 60).cast(pl.Int64),
                (secs % 60).cast(pl.String).str.zfill(2),
            )
        )
    )
    return (
        profile.select(
            pl.col("x").round(4),
            pl.col("pace").round(3),
            "pace_label",
            pl.col("cadence_spm").round(1),
            pl.col("hr_bpm").round(1),
            pl.col("elevation").round(1),
            pl.col("grade_pct").round(1),
        ),
        x_title,
    )


def onset_marks(samples: pl.DataFrame, reports: pl.DataFrame, *, unit: Unit, x_title: str) -> pl.DataFrame:
    """Exact onset positions and the 5 min before each, on the profile's x axis.

    Parameters
    ----------
    samples
        The run's samples.
    reports
        The matched pain reports of this run.
    unit
        The athlete's distance unit.
    x_title
        The title :func:`run_profile` returned (tells distance from time).

    Returns
    -------
    pl.DataFrame
        ``onset``, ``pre_start``, ``lo`` and ``hi`` (x values; ``lo``/``hi``
        bound where a ``~`` or range onset may lie, equal to ``onset`` when it
        is exact), ``label`` (body part, side, severity) and ``range_label``
        per report that could be placed.
    """
    by_distance = x_title.startswith("Distance")
    per = M_PER_UNIT[unit]
    rows = []
    for report in reports.iter_rows(named=True):
        win = onset_windows(samples, report)
        if win is None:
            continue
        basis = win["basis"]
        if by_distance:
            if win["onset_distance_m"] is None:
                continue
            pre = samples.filter(
                (pl.col(basis) >= win["pre"][0]) & (pl.col(basis) < win["pre"][1]) & pl.col("distance_m").is_not_null()
            )
            onset_x = float(win["onset_distance_m"]) / per
            start_m = pre["distance_m"].min()
            pre_x = float(start_m) / per if start_m is not None else onset_x  # type: ignore[arg-type]
        else:
            onset_x = win["onset_s"] / 60.0
            pre_x = max(win["pre"][0], 0.0) / 60.0
        side = f" ({report['side']})" if report.get("side") else ""
        lo_x = hi_x = onset_x
        lo_m, hi_m = report.get("onset_distance_lo_m"), report.get("onset_distance_hi_m")
        if by_distance and lo_m is not None and hi_m is not None and hi_m > lo_m:
            lo_x, hi_x = float(lo_m) / per, float(hi_m) / per
        written = report.get("onset_raw")
        rows.append(
            {
                "onset": round(onset_x, 4),
                "pre_start": round(pre_x, 4),
                "lo": round(lo_x, 4),
                "hi": round(hi_x, 4),
                "label": f"{report.get('body_part') or 'pain'}{side}, severity {report.get('severity')}",
                "range_label": (
                    f"written as {written!r}: the onset lies somewhere in {lo_x:.2f}-{hi_x:.2f} {unit}"
                    if hi_x > lo_x
                    else f"written as {written!r}"
                ),
            }
        )
    schema = {"onset": pl.Float64(), "pre_start": pl.Float64(), "lo": pl.Float64(), "hi": pl.Float64(),
              "label": pl.String(), "range_label": pl.String()}
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def run_chart(profile: pl.DataFrame, marks: pl.DataFrame, *, unit: Unit, x_title: str) -> dict[str, Any]:
    """Pace, cadence, heart rate and elevation along one run, onsets marked.

    Each panel shades the 5 minutes before each onset, draws the onset as a
    rule at its sample and, for a ``~`` or range onset, a faint red band over
    the distances the written onset allows.

    Parameters
    ----------
    profile, x_title
        :func:`run_profile` output.
    marks
        :func:`onset_marks` output.
    unit
        The athlete's distance unit.
    """
    spec = json.loads(_run_template(unit, x_title))  # a fresh copy: Altair takes ~0.3 s per build
    return _attach(spec, {"profile": profile, "onsets": marks}, exact=("onsets",))


@functools.lru_cache(maxsize=8)
def _run_template(unit: Unit, x_title: str) -> str:
    elev_unit = ELEVATION_UNIT[unit][0]
    panels = [
        ("pace", f"Pace (min/{unit}; faster is up)", True),
        ("cadence_spm", "Cadence (steps/min)", False),
        ("hr_bpm", "Heart rate (bpm)", False),
        ("elevation", f"Elevation ({elev_unit})", False),
    ]
    x = alt.X("x:Q", title=x_title, scale=alt.Scale(zero=False, nice=False))
    charts = []
    for column, title, reverse in panels:
        shade = (
            alt.Chart(alt.NamedData("onsets"))
            .mark_rect(color="#f5b041", opacity=0.35)
            .encode(
                x=alt.X("pre_start:Q", title=x_title),
                x2="onset:Q",
                tooltip=[alt.Tooltip("label:N", title="5 min before")],
            )
        )
        uncertain = (
            alt.Chart(alt.NamedData("onsets"))
            .mark_rect(color="#c0392b", opacity=0.13)
            .encode(
                x=alt.X("lo:Q", title=x_title),
                x2="hi:Q",
                tooltip=[alt.Tooltip("range_label:N", title="Onset range")],
            )
        )
        tooltip = [alt.Tooltip("x:Q", title=x_title, format=".2f")]
        tooltip.append(
            alt.Tooltip("pace_label:N", title=f"Pace (min/{unit})")
            if column == "pace"
            else alt.Tooltip(f"{column}:Q", title=title, format=".0f")
        )
        if column == "elevation":
            tooltip.append(alt.Tooltip("grade_pct:Q", title="Grade (%, over ~200 m)", format=".1f"))
        line = (
            alt.Chart(alt.NamedData("profile"))
            .mark_line(strokeWidth=1.2, color="#2c3e50")
            .encode(
                x=x,
                y=alt.Y(f"{column}:Q", title=title, scale=alt.Scale(zero=False, reverse=reverse)),
                tooltip=tooltip,
            )
        )
        rule = (
            alt.Chart(alt.NamedData("onsets"))
            .mark_rule(color="#c0392b", strokeWidth=2)
            .encode(x="onset:Q", tooltip=[alt.Tooltip("label:N", title="Pain onset")])
        )
        charts.append(alt.layer(uncertain, shade, line, rule).properties(width=_WIDTH, height=110))
    chart = alt.vconcat(*charts, spacing=8).resolve_scale(x="shared")
    return json.dumps(_spec_dict(chart))
