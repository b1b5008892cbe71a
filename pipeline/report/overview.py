"""The club overview: athletes, recent pain, flags, and everything that did not load or join."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from pipeline.report.data import JOINED_STATUS, AthleteReport
from pipeline.report.fmt import (
    NIELSEN,
    RUNSAFE,
    athlete_dir_name,
    dist,
    files_table,
    local_time,
    ramp_rows,
    spike_rows,
    status_cell,
)
from pipeline.report.pain_runs import PainRuns, pain_runs
from pipeline.report.html import esc, link, page, table
from pipeline.report.sections import links_table
from pipeline.report.stats_charts import club_timeline_chart, forest_chart

__all__ = ["index_page"]

logger = logging.getLogger(__name__)

#: Flags per athlete on the overview (all of them are on the athlete page).
OVERVIEW_FLAGS = 10

#: Pain episodes on the overview.
OVERVIEW_PAIN = 20


def _timeline(reports: list[AthleteReport], generated_utc: datetime) -> dict[str, Any] | None:
    runs = [rep.spikes.select("athlete_id", "start_utc", "spike") for rep in reports if not rep.spikes.is_empty()]
    pains = []
    for rep in reports:
        if rep.pain.is_empty():
            continue
        noon = pl.col("date_local").cast(pl.Datetime("us")).dt.replace_time_zone("UTC") + pl.duration(hours=12)
        pains.append(
            rep.pain.select(
                pl.lit(rep.athlete.athlete_id).alias("athlete_id"),
                pl.coalesce(pl.col("onset_utc"), noon).alias("at_utc"),
                "body_part",
                "status",
            ).drop_nulls("at_utc")
        )
    run_frame = pl.concat(runs) if runs else pl.DataFrame(
        schema={"athlete_id": pl.String(), "start_utc": pl.Datetime("us", "UTC"), "spike": pl.Boolean()}
    )
    pain_frame = pl.concat(pains) if pains else pl.DataFrame(
        schema={"athlete_id": pl.String(), "at_utc": pl.Datetime("us", "UTC"), "body_part": pl.String(),
                "status": pl.String()}
    )
    names = {rep.athlete.athlete_id: rep.athlete.name for rep in reports}
    return club_timeline_chart(run_frame, pain_frame, names=names, end_utc=generated_utc)


def _links_part(reports: list[AthleteReport], club: pl.DataFrame | None, specs: dict[str, Any]) -> list[str]:
    names = {rep.athlete.athlete_id: rep.athlete.name for rep in reports}
    found = [rep.links.filter(pl.col("link_found")) for rep in reports if not rep.links.is_empty()]
    found_frame = pl.concat(found) if found else None
    out = [
        "<h2>Links found</h2>",
        '<p class="note">Factors whose link with pain survives Holm\'s correction, per athlete (each athlete\'s '
        "page has every factor, with the reasons where there is not enough data).</p>",
        links_table(found_frame, with_scope=True, names=names)
        if found_frame is not None
        else '<p class="empty">No links found.</p>',
        "<h3>Across the club</h3>",
        '<p class="note">The same factors across athletes. Measured factors: a GEE logistic model (statsmodels) '
        "clustered by athlete, each factor centred on the athlete's own mean so that runs are compared within "
        "athletes, with bias-reduced sandwich errors and a t reference with (athletes - 1) degrees of freedom. "
        "Flags: a Mantel-Haenszel odds ratio stratified by athlete (Robins-Breslow-Greenland CI, CMH test). Only "
        "athletes with runs both with and without pain take part. With a handful of athletes the intervals are "
        "wide (a club of four is four clusters) and may be useless; the athlete pages are the better guide. "
        f"A link is claimed only when it survives Holm's correction for the {len(club) if club is not None else 0} "
        "factors tested. These are associations in training data, not causes.</p>",
    ]
    if club is None:
        out.append('<p class="empty">No runs.</p>')
        return out
    spec = forest_chart(club)
    if spec is not None:
        specs["chart-club-links"] = spec
        out.append('<div id="chart-club-links" class="chart"></div>')
    out.append(links_table(club))
    return out


def index_page(
    reports: list[AthleteReport],
    files: pl.DataFrame,
    bad_rows: pl.DataFrame,
    club: pl.DataFrame | None = None,
    *,
    generated_utc: datetime,
    runs: dict[str, PainRuns] | None = None,
) -> str:
    """The HTML of the club overview.

    Parameters
    ----------
    reports
        Every athlete's analysis.
    files
        The ``files`` table (every file not loaded is listed).
    bad_rows
        ``pain_rows_rejected`` (every row is listed).
    club
        :func:`pipeline.analysis.links.club_links` over every athlete (None: no runs).
    generated_utc
        Printed on the page; "last 4 weeks" is the 28 days before it.
    runs
        Where each athlete's runs with pain are charted, by athlete id
        (default: :func:`pipeline.report.pain_runs.pain_runs` of each report).
    """
    since = generated_utc - timedelta(days=28)
    charted_by_athlete = runs or {}
    athlete_rows = []
    pain_rows: list[tuple[Any, list[Any]]] = []
    flag_rows: list[list[Any]] = []
    unjoined_rows: list[list[Any]] = []
    for rep in reports:
        ath = rep.athlete
        folder = athlete_dir_name(ath.athlete_id)
        href = f"{folder}/index.html"
        charted = charted_by_athlete.get(ath.athlete_id) or pain_runs(rep)
        runs = rep.runs
        recent = runs.filter(pl.col("start_utc") > since)["distance_m"].fill_null(0.0).sum()
        last = runs["start_utc"].max()
        n_joined = rep.pain.filter(pl.col("status") == JOINED_STATUS).height
        spikes = spike_rows(rep)
        ramps = ramp_rows(rep)
        athlete_rows.append(
            [
                link(href, ath.name),
                f"{dist(float(recent), ath.unit)} {ath.unit}",
                runs.height,
                local_time(last, ath.timezone) if isinstance(last, datetime) else None,
                rep.pain.height,
                n_joined,
                rep.pain.height - n_joined,
                len(spikes),
                len(ramps),
            ]
        )
        for r in rep.pain.iter_rows(named=True):
            run = r.get("activity_id")
            where = None
            if run in charted.ids and r.get("status") == JOINED_STATUS:
                to = charted.href(run)
                where = link(href + to if to.startswith("#") else f"{folder}/{to}", "run")
            cells = [
                link(href, ath.name),
                r.get("date_local"),
                r.get("body_part"),
                r.get("side"),
                r.get("severity"),
                r.get("onset_raw"),
                dist(r.get("onset_distance_m"), ath.unit, 2),
                status_cell(r.get("status")),
                where,
            ]
            pain_rows.append((r.get("date_local"), cells))
            if r.get("status") != JOINED_STATUS:
                unjoined_rows.append(
                    [link(href, ath.name), r.get("date_local"), r.get("onset_raw"), r.get("body_part"),
                     status_cell(r.get("status")), r.get("status_detail"), f"{r.get('source_file')}:{r.get('line')}"]
                )
        for kind, rows in (("long-run spike", spikes), ("weekly ramp > 30 %", ramps)):
            for row in rows[:OVERVIEW_FLAGS]:
                detail = f"{row[1]} {ath.unit} vs {row[2]} {ath.unit} ({row[3]} %)"
                flag_rows.append([link(href, ath.name), row[0], kind, detail])
            if len(rows) > OVERVIEW_FLAGS:
                more = f"{len(rows) - OVERVIEW_FLAGS} older flags on the athlete page"
                flag_rows.append([link(href, ath.name), None, kind, more])

    dated = sorted((p for p in pain_rows if p[0] is not None), key=lambda p: p[0], reverse=True)
    recent_pain = [cells for _, cells in dated[:OVERVIEW_PAIN]]
    status_counts = (
        files.group_by("status").len().sort("status", nulls_last=True).iter_rows() if not files.is_empty() else []
    )
    specs: dict[str, Any] = {}
    timeline = _timeline(reports, generated_utc)
    body: list[str] = [
        "<h1>Club overview: running and pain</h1>",
        f'<p class="meta">{len(reports)} athletes · distances in each athlete\'s own unit · '
        f"“last 4 weeks” is the 28 days before {esc(generated_utc.strftime('%Y-%m-%d %H:%M'))} UTC.</p>",
        "<h2>Athletes</h2>",
        table(
            ["Athlete", "Distance, last 4 weeks (athlete's unit)", "Runs (all time)", "Last run (local)",
             "Pain reports", "Joined to a sample", "Not joined", "Long-run spikes", "Weekly ramps > 30 %"],
            athlete_rows,
            numeric=(1, 2, 4, 5, 6, 7, 8),
            empty="No athletes in the warehouse.",
        ),
        *(
            [
                "<h2>Club timeline</h2>",
                '<p class="note">Every run (grey tick; purple: long-run spike) and every pain report (red diamond, '
                "at its onset, or noon of its date when it has none) of the last 26 weeks, per athlete, in UTC "
                "days.</p>",
                '<div id="chart-timeline" class="chart"></div>',
            ]
            if timeline is not None
            else []
        ),
        *_links_part(reports, club, specs),
        "<h2>Recent pain episodes</h2>",
        f'<p class="note">The {OVERVIEW_PAIN} most recent reports across the club; '
        "all reports are on the athlete pages.</p>",
        table(
            ["Athlete", "Date (local)", "Body part", "Side", "Severity (0-10)", "Onset as written",
             "Onset distance (athlete's unit)", "Status", "Run view"],
            recent_pain,
            numeric=(4, 6),
            empty="No pain reports.",
        ),
        "<h2>Flags</h2>",
        '<p class="note">Long-run spike: a run more than 10 % longer than the longest run of the previous 30 days '
        f"({esc(RUNSAFE)}). Weekly ramp: a week more than 30 % above the week before ({esc(NIELSEN)}). "
        f"Newest first, up to {OVERVIEW_FLAGS} of each per athlete.</p>",
        table(["Athlete", "Date or week (local)", "Flag", "Detail (athlete's unit)"], flag_rows, empty="No flags."),
        "<h2>Pain reports not joined to a sample</h2>",
        '<p class="note">Every report whose status is not <code>matched</code> (unmatched, ambiguous, beyond the '
        "run, after the run, ...). Fix the pain log or the files and ingest again.</p>",
        table(
            ["Athlete", "Date (local)", "Onset as written", "Body part", "Status", "Detail", "Source (file:line)"],
            unjoined_rows,
            row_classes=["flag"] * len(unjoined_rows),
            empty="Every pain report is joined to a sample.",
        ),
        "<h2>Files not loaded</h2>",
        '<p class="note">Files by status: '
        + (", ".join(f"{esc(s)}: {n}" for s, n in status_counts) or "no files recorded")
        + ".</p>",
        files_table(files, empty="Every file was loaded."),
        "<h2>Pain-log rows that could not be read</h2>",
        table(
            ["Source (file:line)", "Reason"],
            [[f"{r.get('source_file')}:{r.get('line')}", r.get("reason")] for r in bad_rows.iter_rows(named=True)],
            row_classes=["flag"] * bad_rows.height,
            empty="None.",
        ),
    ]
    if timeline is not None:
        specs["chart-timeline"] = timeline
    return page(title="Club overview · running and pain", body=body, generated_utc=generated_utc, specs=specs)
