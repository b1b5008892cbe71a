"""The statistics sections of an athlete's page (pain-free distance, drift, links) and the links table.

Each function returns HTML fragments and adds its chart specs to ``specs``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import polars as pl

from pipeline.analysis.drift import COMPARISONS, MAX_ONSET_SPREAD_M, METRICS, PRE_ONSET_S
from pipeline.analysis.links import ALPHA
from pipeline.analysis.survival import MIN_EVENTS, PainFree, Quantile
from pipeline.report.charts import M_PER_UNIT
from pipeline.report.data import AthleteReport
from pipeline.report.fmt import clock, dist, pace, signed
from pipeline.report.html import Markup, esc, table
from pipeline.report.stats_charts import FOREST_LIMITS, forest_chart, km_chart

__all__ = ["pain_free_section", "drift_section", "links_section", "links_table", "ratio"]

logger = logging.getLogger(__name__)


def ratio(value: float | None) -> str | None:
    """An odds ratio for a table cell (2-3 significant digits, ∞ and extremes as bounds)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if math.isinf(value):
        return "∞"
    if value > 1000:
        return "> 1000"
    if value < 0.001:
        return "< 0.001"
    return f"{value:.3g}"


# --------------------------------------------------------------------------- pain-free distance


def _quantile_cells(q: Quantile | None, result: PainFree, unit: str) -> tuple[Any, Any]:
    longest = dist(result.longest_m, unit, 1)
    if q is None:
        return result.note, None
    value = dist(q.value_m, unit, 2) if q.value_m is not None else f"not reached (longest run {longest})"
    lo = dist(q.lo_m, unit, 2) if q.lo_m is not None else "—"
    hi = dist(q.hi_m, unit, 2) if q.hi_m is not None else f"beyond {longest}"
    return value, f"{lo} to {hi}"


def pain_free_section(rep: AthleteReport, specs: dict[str, dict[str, Any]]) -> list[str]:
    """Kaplan-Meier (or Turnbull) pain-free distance per body part: table, cap and curves."""
    ath = rep.athlete
    unit = ath.unit
    cap = ath.distance_cap_m
    out = [
        "<h2>Pain-free distance</h2>",
        '<p class="note">How far into a run this athlete gets before each body part starts to hurt. Every run is '
        "followed along its distance: a run whose pain began during it ends at the onset distance; every other "
        "run counts as pain-free <em>as far as it went</em> (censored at its length), so short pain-free runs say "
        "nothing about later kilometres. Curve: Kaplan-Meier estimate (lifelines); shaded: 95 % pointwise band. "
        "Onsets written as a range (<code>~6 mi</code>, <code>5-6 mi</code>) are interval-censored (Turnbull "
        "estimator), and the band is widened to cover both ends of each range. Pain reported only after the run "
        "or the next day counts as pain-free during the run. With fewer than "
        f"{MIN_EVENTS} onsets the page gives no distances.</p>",
    ]
    if cap:
        out.append(f'<p class="note">Distance cap from <code>athlete.toml</code>: {esc(dist(cap, unit, 1))} '
                   f"{esc(unit)} (the dashed red line).</p>")
    if not rep.pain_free:
        out.append('<p class="empty">No pain report is linked to a run.</p>')
        return out
    rows = []
    for result in rep.pain_free:
        median, q80 = _quantile_cells(result.quantile(0.5), result, unit), _quantile_cells(result.quantile(0.8),
                                                                                           result, unit)
        at_cap = None
        if cap:
            share = result.survival_at(cap)
            if share is not None and share[0] == 0.0:
                at_cap = "0 % (every run that went this far had pain before it)"
            elif share is not None:
                at_cap = f"{share[0] * 100:.0f} % ({share[1] * 100:.0f} to {share[2] * 100:.0f} %)"
            elif result.enough:
                at_cap = "no run went that far"
        rows.append([
            result.body_part, result.n_runs, result.n_events, result.n_interval, result.n_after_run,
            median[0], median[1], q80[0], q80[1], at_cap,
            result.note if result.enough else None,
        ])
    out.append(table(
        ["Body part", "Runs followed (n)", "Onsets during a run (n)", "… known only as a range (n)",
         "Pain only after the run (n)", f"Median pain-free distance ({unit})", f"95 % CI ({unit})",
         f"80 % of runs pain-free up to ({unit})", f"95 % CI ({unit})",
         "Still pain-free at the cap (95 % CI)", "Method"],
        rows,
        numeric=(1, 2, 3, 4, 5, 6, 7, 8),
    ))
    for i, result in enumerate(rep.pain_free):
        if result.curve.is_empty():
            continue
        chart_id = f"chart-km-{i}"
        specs[chart_id] = km_chart(result, unit=unit, cap_m=cap)
        out.append(f"<h3>{esc(result.body_part)}: share of runs still pain-free along the run</h3>")
        out.append(f'<div id="{chart_id}" class="chart"></div>')
    return out


# --------------------------------------------------------------------------- drift


def _metric_labels(unit: str) -> dict[str, tuple[str, str, float]]:
    per_unit = M_PER_UNIT[unit] / 1000.0  # s/km -> s/unit
    return {
        "cadence_spm": ("Cadence", "spm", 1.0),
        "cadence_matched_spm": ("Cadence at matched speed", "spm", 1.0),
        "pace_s_per_km": ("Pace (+ slower)", f"s/{unit}", per_unit),
        "hr_bpm": ("Heart rate", "bpm", 1.0),
        "decoupling_pct": ("HR-to-pace decoupling (+ more beats per metre)", "%", 1.0),
    }


def drift_section(rep: AthleteReport) -> list[str]:
    """Per-onset changes before the pain and their means across onsets."""
    unit = rep.athlete.unit
    per_unit = M_PER_UNIT[unit] / 1000.0
    minutes = PRE_ONSET_S / 60
    fit = rep.cadence_speed
    fit_note = (
        f"On this athlete's pain-free running cadence rises by {fit.slope_spm_per_mps:.1f} steps/min per 1 m/s of "
        f"speed ({fit.n_bins} half-minute stretches of {fit.n_runs} runs); <em>cadence at matched speed</em> is the "
        "change that this speed change does not explain."
        if fit is not None
        else "Too little pain-free running with cadence and speed to fit how cadence follows speed, so cadence "
             "at matched speed is not given."
    )
    out = [
        "<h2>What came before the pain</h2>",
        f'<p class="note">Cadence, pace and heart rate in the {minutes:.0f} minutes before each onset, compared '
        "with (1) the same run's first 10 minutes after a 2-minute warm-up (timer time, pauses excluded when the "
        "watch records them) and (2) the same stretch of distance on this athlete's recent pain-free runs that "
        f"went that far ({rep.n_reference_runs} pain-free runs read). HR-to-pace decoupling is the % change in "
        f"heartbeats per metre. {fit_note} Onsets less than 17 minutes into a run are not compared with their "
        f"baseline (the windows overlap); onsets known only as a range wider than {MAX_ONSET_SPREAD_M:.0f} m are "
        "shown but left out of the means, because the 5 minutes before them are uncertain. The intervals are "
        "t-based 95 % confidence intervals of the mean change, given from 3 onsets on; they describe this "
        "athlete's runs and say nothing about cause.</p>",
    ]
    rows, ref_rows = [], []
    for r in rep.drift.iter_rows(named=True):
        rows.append([
            r["date_local"], r["body_part"], dist(r["onset_distance_m"], unit, 2), clock(r["onset_s"]),
            r["status"],
            None if r["base_cadence_spm"] is None else f"{r['base_cadence_spm']:.1f}",
            None if r["pre_cadence_spm"] is None else f"{r['pre_cadence_spm']:.1f}",
            signed(r["d_cadence_spm"]), signed(r["d_cadence_matched_spm"]),
            pace(r["base_pace_s_per_km"], unit), pace(r["pre_pace_s_per_km"], unit),
            signed(None if r["d_pace_s_per_km"] is None else r["d_pace_s_per_km"] * per_unit, 0),
            None if r["base_hr_bpm"] is None else f"{r['base_hr_bpm']:.1f}",
            None if r["pre_hr_bpm"] is None else f"{r['pre_hr_bpm']:.1f}",
            signed(r["d_hr_bpm"]), signed(r["d_decoupling_pct"]),
        ])
        ref_rows.append([
            r["date_local"], r["body_part"], dist(r["onset_distance_m"], unit, 2), r["status"], r["ref_runs"],
            signed(r["r_cadence_spm"]), signed(r["r_cadence_matched_spm"]),
            signed(None if r["r_pace_s_per_km"] is None else r["r_pace_s_per_km"] * per_unit, 0),
            signed(r["r_hr_bpm"]), signed(r["r_decoupling_pct"]),
        ])
    out.append("<h3>Against the same run's first minutes</h3>")
    out.append(table(
        ["Date (local)", "Body part", f"Onset distance ({unit})", "Onset, time into the run (h:mm:ss)", "Status",
         "Cadence, baseline (spm)", f"Cadence, {minutes:.0f} min before (spm)", "Change in cadence (spm)",
         "… at matched speed (spm)", f"Pace, baseline (min/{unit})", f"Pace, {minutes:.0f} min before (min/{unit})",
         f"Change in pace (s/{unit}; + slower)", "HR, baseline (bpm)", f"HR, {minutes:.0f} min before (bpm)",
         "Change in HR (bpm)", "Decoupling (%)"],
        rows,
        numeric=(2, 3, *range(5, 16)),
        empty="No pain report is joined to a sample of a run.",
    ))
    out.append("<h3>Against the same distance on pain-free runs</h3>")
    if not rep.drift.is_empty() and not (rep.drift["ref_runs"].fill_null(0) > 0).any():
        out.append('<p class="empty">None of this athlete\'s recent pain-free runs went as far as any onset: '
                   "there is nothing to compare with at the same distance (itself a finding: the pain-free runs "
                   "are the shorter ones).</p>")
    else:
        out.append(table(
            ["Date (local)", "Body part", f"Onset distance ({unit})", "Status",
             "Pain-free runs that went this far (n)", "Cadence vs them (spm)", "… at matched speed (spm)",
             f"Pace vs them (s/{unit}; + slower)", "HR vs them (bpm)", "Decoupling vs them (%)"],
            ref_rows,
            numeric=(2, 4, 5, 6, 7, 8, 9),
            empty="No pain report is joined to a sample of a run.",
        ))
    labels = _metric_labels(unit)
    compared = {"baseline": "the same run's first minutes", "pain_free": "pain-free runs, same distance"}
    summary_rows = []
    for r in rep.drift_summary.iter_rows(named=True):
        name, shown_unit, factor = labels[r["metric"]]
        if r["mean"] is None:
            summary_rows.append([compared[r["comparison"]], name, shown_unit, r["n"], None, None, r["note"]])
        else:
            ci = f"{r['ci_lo'] * factor:+.1f} to {r['ci_hi'] * factor:+.1f}"
            excludes = r["ci_lo"] > 0 or r["ci_hi"] < 0
            note = r["note"] + ("; the interval excludes 0" if excludes else "")
            summary_rows.append([compared[r["comparison"]], name, shown_unit, r["n"], f"{r['mean'] * factor:+.1f}",
                                 ci, note])
    assert set(labels) == set(METRICS) and set(compared) == set(COMPARISONS)
    out.append("<h3>Across this athlete's onsets</h3>")
    out.append(table(
        ["Compared with", "Metric", "Unit", "Onsets (n)", "Mean change (unit)", "95 % CI (unit)", "Note"],
        summary_rows,
        numeric=(3, 4, 5),
    ))
    return out


# --------------------------------------------------------------------------- links


def links_table(links: pl.DataFrame, *, with_scope: bool = False, names: dict[str, str] | None = None) -> Markup:
    """Every factor's result: counts, odds ratio, interval, whether a link is claimed, in words."""
    rows, classes = [], []
    for r in links.iter_rows(named=True):
        found = "yes" if r["link_found"] else ("no" if r["status"] == "ok" else "—")
        ci = None
        if r["status"] == "ok":
            ci = f"{ratio(r['ci_lo'])} to {ratio(r['ci_hi'])}"
        cells = [r["label"], r["n_runs"], r["n_events"], ratio(r["odds_ratio"]), ci, r["method"], found,
                 r["sentence"]]
        if with_scope:
            scope = r["scope"]
            cells.insert(0, "club" if scope == "club" else (names or {}).get(scope, scope))
        rows.append(cells)
        classes.append("flag" if r["link_found"] else "")
    headers = ["Factor", "Runs (n)", "With pain (n)", "Odds ratio", "95 % CI", "Method",
               "Link found (Holm)", "In words"]
    if with_scope:
        headers.insert(0, "Athlete")
    numeric = (1, 2, 3, 4) if not with_scope else (2, 3, 4, 5)
    return table(headers, rows, numeric=numeric, row_classes=classes, empty="No links found.")


LINKS_NOTE = (
    "Each row is one model of the odds that a run comes with pain (any pain report linked to the run: during "
    "it, after it or the next day), one factor at a time. Measured factors: logistic regression (statsmodels), "
    "odds ratio per step with a Wald 95 % CI. Yes/no flags: the exact conditional odds ratio and its exact CI "
    "(scipy; as R's fisher.test). A link is claimed only when it survives Holm's correction for testing "
    f"{{k}} factors at a family-wise {ALPHA:.0%}. Below 5 runs with pain: not enough data. Separation (every run "
    "with pain on one side of every run without) or a fit that warns or does not converge is reported as not "
    "estimable / unreliable. These are associations in training data, not causes: long runs are also slower "
    f"and hillier. The chart clips intervals to {FOREST_LIMITS[0]:g}-{FOREST_LIMITS[1]:g}."
)


def links_section(rep: AthleteReport, specs: dict[str, dict[str, Any]]) -> list[str]:
    """The athlete's links: the forest chart and the table."""
    out = ["<h2>What pain is linked to</h2>",
           f'<p class="note">{esc(LINKS_NOTE.format(k=rep.links.height))}</p>']
    spec = forest_chart(rep.links)
    if spec is not None:
        specs["chart-links"] = spec
        out.append('<div id="chart-links" class="chart"></div>')
    out.append(links_table(rep.links))
    return out
