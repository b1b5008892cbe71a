"""One athlete's page: load, pain-free distance, drift, links, flags, pain reports and each run with pain."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import polars as pl

from pipeline.report.charts import acwr_chart, weekly_chart
from pipeline.report.data import JOINED_STATUS, AthleteReport
from pipeline.report.fmt import (
    NIELSEN,
    RUNSAFE,
    clock,
    dist,
    files_table,
    local_time,
    pace,
    ramp_rows,
    spike_rows,
    status_cell,
)
from pipeline.report.html import Markup, esc, link, page, table
from pipeline.report.pain_runs import RUN_NOTE, PainRuns, pain_runs, run_sections, year_page_name
from pipeline.report.sections import drift_section, links_section, pain_free_section

__all__ = ["athlete_page", "CHART_WEEKS"]

logger = logging.getLogger(__name__)

#: Weeks shown by the weekly-distance and ACWR charts (the tables keep everything).
CHART_WEEKS = 104


def _pain_table(rep: AthleteReport, runs: PainRuns) -> Markup:
    ath = rep.athlete
    rows, classes = [], []
    for r in rep.pain.iter_rows(named=True):
        run = r.get("activity_id")
        run_cell: Any = None
        if run is not None:
            run_cell = link(runs.href(run), run) if run in runs.ids else run
        rows.append(
            [
                r.get("date_local"),
                r.get("onset_raw"),
                local_time(r.get("onset_utc"), ath.timezone),
                dist(r.get("onset_distance_m"), ath.unit, 2),
                clock(r.get("onset_moving_s")),
                r.get("body_part"),
                r.get("side"),
                r.get("severity"),
                status_cell(r.get("status")),
                r.get("status_detail"),
                run_cell,
                r.get("notes"),
                f"{r.get('source_file')}:{r.get('line')}",
            ]
        )
        classes.append("" if r.get("status") == JOINED_STATUS else "flag")
    return table(
        [
            "Date (local)",
            "Onset as written",
            "Onset (local time)",
            f"Onset distance ({ath.unit})",
            "Onset timer time (h:mm:ss)",
            "Body part",
            "Side",
            "Severity (0-10)",
            "Status",
            "Detail",
            "Run (activity id)",
            "Notes",
            "Source (file:line)",
        ],
        rows,
        numeric=(3, 4, 7),
        row_classes=classes,
        empty="No pain reports.",
    )


def _runs_table(rep: AthleteReport) -> Markup:
    ath = rep.athlete
    spikes = {r["activity_id"]: r for r in rep.spikes.iter_rows(named=True)}
    rows, classes = [], []
    for r in rep.runs.sort("start_utc", descending=True).iter_rows(named=True):
        s = spikes.get(r["activity_id"], {})
        speed = r.get("avg_speed_mps")
        rows.append(
            [
                local_time(r.get("start_utc"), ath.timezone),
                r.get("sport"),
                dist(r.get("distance_m"), ath.unit, 2),
                clock(r.get("moving_s")),
                pace(1000.0 / speed if speed else None, ath.unit),
                None if r.get("avg_hr_bpm") is None else f"{r['avg_hr_bpm']:.0f}",
                None if r.get("avg_cadence_spm") is None else f"{r['avg_cadence_spm']:.0f}",
                dist(s.get("prev_longest_m"), ath.unit, 2),
                "spike" if s.get("spike") else "",
                r.get("activity_id"),
            ]
        )
        classes.append("flag" if s.get("spike") else "")
    return table(
        [
            "Start (local)",
            "Sport",
            f"Distance ({ath.unit})",
            "Moving time (h:mm:ss)",
            f"Avg pace (min/{ath.unit})",
            "Avg HR (bpm)",
            "Avg cadence (spm)",
            f"Longest run, previous 30 days ({ath.unit})",
            "Long-run spike",
            "Activity id",
        ],
        rows,
        numeric=(2, 3, 4, 5, 6, 7),
        row_classes=classes,
        empty="No runs.",
    )


def _undated_runs(rep: AthleteReport) -> list[str]:
    """Runs whose watch recorded no date (device clock): listed, left out of every chart and figure."""
    undated = rep.undated_runs
    if undated.is_empty():
        return []
    ath = rep.athlete
    rows = [
        [r.get("device_time_s"), dist(r.get("distance_m"), ath.unit, 2), clock(r.get("moving_s")),
         None if r.get("avg_hr_bpm") is None else f"{r['avg_hr_bpm']:.0f}", r.get("source_file"), r.get("activity_id")]
        for r in undated.sort("source_file", "session_index").iter_rows(named=True)
    ]
    return [
        "<h2>Runs without a date</h2>",
        '<p class="note">The watch recorded these runs on its own clock (seconds since it was switched on), '
        "not with a date, so they are not on the calendar: no pain report is joined to them and they count in "
        "no weekly distance, spike, ramp, ACWR, pain-free distance or drift figure above.</p>",
        table(
            ["Watch clock at start (s)", f"Distance ({ath.unit})", "Moving time (h:mm:ss)", "Avg HR (bpm)",
             "File", "Activity id"],
            rows,
            numeric=(0, 1, 2, 3),
        ),
    ]


def athlete_page(
    rep: AthleteReport, files: pl.DataFrame, *, generated_utc: datetime, runs: PainRuns | None = None
) -> str:
    """The HTML of one athlete's page.

    Parameters
    ----------
    rep
        The athlete's frames and analysis (:func:`pipeline.report.data.analyse_athlete`).
    files
        The ``files`` table; only this athlete's files are shown (by
        ``athlete_id``, or the path's first folder when that is null).
    generated_utc
        Printed on the page.
    runs
        The runs with pain and where each is charted (default:
        :func:`pipeline.report.pain_runs.pain_runs` of ``rep``); the older
        ones link to the year pages :func:`~pipeline.report.pain_runs.write_year_pages` writes.
    """
    ath = rep.athlete
    runs = runs if runs is not None else pain_runs(rep)
    specs: dict[str, dict[str, Any]] = {}
    body: list[str] = [
        f'<nav>{link("../index.html", "← Club overview")}</nav>',
        f"<h1>{esc(ath.name)}</h1>",
        f'<p class="meta">Athlete id <code>{esc(ath.athlete_id)}</code> · time zone {esc(ath.timezone)} · '
        f"distances in {esc(ath.unit)}"
        + (f" · distance cap {esc(dist(ath.distance_cap_m, ath.unit))} {esc(ath.unit)}" if ath.distance_cap_m else "")
        + f" · {rep.runs.height} runs"
        + (f" (+{rep.undated_runs.height} without a date)" if rep.undated_runs.height else "")
        + f" · {rep.pain.height} pain reports</p>",
    ]

    body.append("<h2>Weekly distance and pain</h2>")
    if rep.weekly.is_empty():
        body.append('<p class="empty">No runs.</p>')
    else:
        weeks = rep.weekly.tail(CHART_WEEKS)
        first = weeks["week_start_local"].min()
        specs["chart-weekly"] = weekly_chart(
            weeks,
            rep.pain.filter(pl.col("date_local") >= first),
            rep.spikes.filter(pl.col("spike") & (pl.col("date_local") >= first)),
            unit=ath.unit,
        )
        body.append('<div id="chart-weekly" class="chart"></div>')
        shown = f" The chart shows the last {CHART_WEEKS} weeks." if rep.weekly.height > CHART_WEEKS else ""
        body.append(
            '<p class="note">Bars: running distance per local calendar week; orange bars rose more than 30 % over '
            "the week before. Red rules: days with a pain report (any status). Purple triangles: single runs "
            f"flagged as long-run spikes.{shown}</p>"
        )

    body.extend(pain_free_section(rep, specs))
    body.extend(drift_section(rep))
    body.extend(links_section(rep, specs))
    body.append("<h2>Long-run spikes</h2>")
    body.append(
        f'<p class="note">A run more than 10 % longer than the longest run of the previous 30 days. Source: '
        f"{esc(RUNSAFE)}. In that cohort, single-session spikes were associated with a higher rate of overuse "
        "injury; a flag is a prompt to look, not a diagnosis.</p>"
    )
    body.append(
        table(
            ["Date (local)", f"Run ({ath.unit})", f"Longest, previous 30 days ({ath.unit})", "Longer by (%)"],
            spike_rows(rep),
            numeric=(1, 2, 3),
            empty="No long-run spikes.",
        )
    )
    body.append("<h2>Weekly ramp above 30 %</h2>")
    body.append(
        f'<p class="note">A week whose running distance is more than 30 % above the week before (the progression '
        f"over a 2-week period studied by {esc(NIELSEN)}; there, novice runners progressing more than 30 % had "
        "more distance-related injuries). Weeks after a week without running are not rated.</p>"
    )
    body.append(
        table(
            ["Week starting (local Monday)", f"Distance ({ath.unit})", f"Previous week ({ath.unit})", "Change (%)"],
            ramp_rows(rep),
            numeric=(1, 2, 3),
            empty="No week rose more than 30 %.",
        )
    )

    body.append("<h2>Acute:chronic workload ratio</h2>")
    if rep.acwr["acwr"].drop_nulls().is_empty():
        body.append('<p class="empty">Not enough history (needs more than 35 days of runs).</p>')
    else:
        specs["chart-acwr"] = acwr_chart(rep.acwr.tail(CHART_WEEKS * 7), unit=ath.unit)
        body.append('<div id="chart-acwr" class="chart"></div>')
    body.append(
        '<p class="note">ACWR here is the <em>uncoupled</em> exponentially weighted ratio of daily running '
        "distance: a 7-day EWMA divided by the 28-day EWMA that ends the day before the 7-day window starts "
        "(decay 2/(N+1)). Read it as a description of how this week compares with the athlete's recent past, "
        "not as a risk score: the ratio has known statistical problems (mathematical coupling and ratio "
        "artefacts; Lolli et al., Br J Sports Med 2019; Impellizzeri et al., Int J Sports Physiol Perform 2020), "
        "there is no validated safe zone, and in the Garmin-RUNSAFE cohort it did not predict running injury. "
        "It is undefined for the first 35 days of data.</p>"
    )

    run_parts, _ = run_sections(rep, runs.on_page, specs)
    body.append("<h2>Pain reports</h2>")
    body.append(
        '<p class="note">Every report of the pain log that is not superseded, with how it was joined to a run. '
        "Rows not joined to a sample are highlighted.</p>"
    )
    body.append(_pain_table(rep, runs))

    body.append("<h2>Runs with pain</h2>")
    older = runs.by_year
    if older:
        years = " · ".join(
            link(year_page_name(year), f"{year} ({len(ids)} run{'s' if len(ids) != 1 else ''})")
            for year, ids in sorted(older.items(), reverse=True)
        )
        body.append(
            f'<p class="note">The {len(runs.on_page)} most recent runs with pain are charted here; the '
            f"{sum(len(ids) for ids in older.values())} older ones on a page per year: {years}.</p>"
        )
    if run_parts:
        body.append(RUN_NOTE.format(unit=esc(ath.unit)))
        body.extend(run_parts)
    else:
        body.append('<p class="empty">No pain report is joined to a run.</p>')

    body.append("<h2>Runs</h2>")
    body.append(_runs_table(rep))
    body.extend(_undated_runs(rep))

    own = pl.col("path").str.starts_with(f"{ath.athlete_id}/")
    if "athlete_id" in files.columns:
        own = (pl.col("athlete_id") == ath.athlete_id) | (pl.col("athlete_id").is_null() & own)
    own_files = files.filter(own)
    body.append("<h2>Files not loaded</h2>")
    body.append(files_table(own_files, empty="Every file of this athlete was loaded."))
    return page(title=f"{ath.name} · running and pain", body=body, generated_utc=generated_utc, specs=specs)
