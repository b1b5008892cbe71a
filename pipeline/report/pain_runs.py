"""Each run with pain: the recent ones on the athlete's page, older ones on a page per year.

A per-run chart embeds up to ``MAX_CHART_ROWS`` rows, so an athlete with
years of pain runs would get a page of tens of megabytes that no browser
opens comfortably, rebuilt every night. The athlete page therefore charts
the :data:`RECENT_PAIN_RUNS` most recent runs with pain; every older one
is charted on ``runs-<year>.html`` beside it (the year of the run's local
start), linked from the page and from the pain-report table.

A year page carries a key of what it shows (the runs, their sample counts
and their joined reports, the athlete's unit and zone) in a ``<meta>`` tag:
:func:`write_year_pages` leaves a page whose key has not changed as it is,
so the nightly job renders only the current year's page again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.report.charts import onset_marks, run_chart, run_profile
from pipeline.report.data import JOINED_STATUS, AthleteReport
from pipeline.report.fmt import clock, dist, local_time, run_anchor
from pipeline.report.html import esc, link, page, table

__all__ = ["RECENT_PAIN_RUNS", "PainRuns", "pain_runs", "run_sections", "year_page_name", "write_year_pages"]

logger = logging.getLogger(__name__)

#: Runs with pain charted on the athlete's own page (the most recent ones).
RECENT_PAIN_RUNS = 12

_KEY_META = "pipeline-content-key"
_KEY_RE = re.compile(rb'<meta name="' + _KEY_META.encode() + rb'" content="([0-9a-f]{64})">')

RUN_NOTE = (
    '<p class="note">Per run: pace (min/{unit}, axis reversed so faster is up), cadence (steps/min), '
    "heart rate (bpm) and elevation along the run (grade in the tooltip), averaged over short distance bins. "
    "The red rule is the onset at its sample; the orange band is the 5 minutes before it; a faint red band "
    "spans the distances a <code>~</code> or range onset allows (the pipeline places such an onset at one "
    "sample inside it).</p>"
)


def year_page_name(year: int) -> str:
    """File name of the page charting the runs with pain of ``year`` (beside the athlete's index.html)."""
    return f"runs-{year}.html"


@dataclass(frozen=True)
class PainRuns:
    """The athlete's runs with a joined pain report, oldest first, and where each is charted."""

    #: (activity_id, local year of its start), oldest first.
    runs: list[tuple[str, int]]
    #: How many of the newest are charted on the athlete page.
    recent: int

    @cached_property
    def ids(self) -> frozenset[str]:
        return frozenset(run for run, _ in self.runs)

    @cached_property
    def on_page(self) -> list[str]:
        return [run for run, _ in self.runs[len(self.runs) - self.recent:]] if self.recent else []

    @cached_property
    def by_year(self) -> dict[int, list[str]]:
        """The older runs by year (those not on the athlete page)."""
        out: dict[int, list[str]] = {}
        for run, year in self.runs[: len(self.runs) - self.recent]:
            out.setdefault(year, []).append(run)
        return out

    @cached_property
    def _pages(self) -> dict[str, str]:
        """Run -> the page its chart is on, relative to the athlete page ("" for that page itself)."""
        pages = {run: year_page_name(year) for run, year in self.runs}
        pages.update(dict.fromkeys(self.on_page, ""))
        return pages

    def href(self, run_id: str) -> str:
        """Where ``run_id``'s chart is, relative to the athlete page."""
        return self._pages[run_id] + f"#{run_anchor(run_id)}"


def _matched(rep: AthleteReport) -> pl.DataFrame:
    return rep.pain.filter(
        (pl.col("status") == JOINED_STATUS) & pl.col("activity_id").is_in(rep.activities["activity_id"].implode())
    )


def pain_runs(rep: AthleteReport, *, recent: int = RECENT_PAIN_RUNS) -> PainRuns:
    """The runs with pain of ``rep``, the ``recent`` newest to be charted on the athlete page."""
    starts = (
        _matched(rep)
        .join(rep.activities.select("activity_id", "start_utc"), on="activity_id")
        .filter(pl.col("start_utc").is_not_null())
        .sort("start_utc")
        .unique("activity_id", keep="first", maintain_order=True)
    )
    tz = rep.athlete.timezone or "UTC"
    years = starts.select(pl.col("start_utc").dt.convert_time_zone(tz).dt.year())["start_utc"].to_list()
    runs = list(zip(starts["activity_id"].to_list(), years, strict=True))
    return PainRuns(runs=runs, recent=min(max(recent, 0), len(runs)))


def run_sections(rep: AthleteReport, run_ids: list[str], specs: dict[str, dict[str, Any]]) -> tuple[list[str], set[str]]:
    """HTML sections for ``run_ids`` (chart specs added to ``specs``) and the ids that got a chart."""
    ath = rep.athlete
    matched = _matched(rep)
    wanted = set(run_ids)
    by_run = {
        k[0]: v
        for k, v in rep.samples.filter(pl.col("activity_id").is_in(list(wanted)))
        .partition_by("activity_id", as_dict=True)
        .items()
    }
    acts = {r["activity_id"]: r for r in rep.activities.iter_rows(named=True) if r["activity_id"] in wanted}
    parts: list[str] = []
    charted: set[str] = set()
    for i, run_id in enumerate(run_ids):
        act = acts[run_id]
        reports = matched.filter(pl.col("activity_id") == run_id)
        parts.append(f'<section class="run" id="{esc(run_anchor(run_id))}">')
        parts.append(
            f"<h3>Run {esc(local_time(act.get('start_utc'), ath.timezone))} (local) · "
            f"{esc(dist(act.get('distance_m'), ath.unit, 2))} {esc(ath.unit)} · "
            f"{esc(clock(act.get('moving_s')))} moving · <code>{esc(run_id)}</code></h3>"
        )
        samples = by_run.get(run_id)
        if samples is None or samples.is_empty():
            parts.append('<p class="empty">No samples stored for this run.</p>')
        else:
            profile, x_title = run_profile(samples, unit=ath.unit)
            marks = onset_marks(samples, reports, unit=ath.unit, x_title=x_title)
            chart_id = f"chart-run-{i}"
            specs[chart_id] = run_chart(profile, marks, unit=ath.unit, x_title=x_title)
            charted.add(run_id)
            parts.append(f'<div id="{chart_id}" class="chart"></div>')
        onsets = [
            [
                r.get("body_part"),
                r.get("side"),
                r.get("severity"),
                r.get("onset_raw"),
                dist(r.get("onset_distance_m"), ath.unit, 2),
                clock(r.get("onset_moving_s")),
                r.get("notes"),
            ]
            for r in reports.iter_rows(named=True)
        ]
        parts.append(
            table(
                ["Body part", "Side", "Severity (0-10)", "Onset as written", f"Onset distance ({ath.unit})",
                 "Onset timer time (h:mm:ss)", "Notes"],
                onsets,
                numeric=(2, 4, 5),
            )
        )
        parts.append("</section>")
    return parts, charted


def _year_key(rep: AthleteReport, run_ids: list[str]) -> str:
    """What a year page shows, as a hash: its runs, their sample counts and joined reports."""
    ath = rep.athlete
    counts = dict(
        rep.samples.filter(pl.col("activity_id").is_in(run_ids)).group_by("activity_id").len().iter_rows()
    )
    reports = (
        _matched(rep).filter(pl.col("activity_id").is_in(run_ids)).sort("report_id").drop("first_seen_utc", "_run_id", strict=False)
    )
    text = json.dumps(
        {
            "version": 1,
            "athlete": [ath.athlete_id, ath.name, ath.unit, ath.timezone],
            "runs": [[r, counts.get(r, 0)] for r in run_ids],
            "reports": reports.rows(),
        },
        default=str,
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _existing_key(path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    found = _KEY_RE.search(head)
    return found.group(1).decode() if found else None


def year_page(rep: AthleteReport, year: int, run_ids: list[str], *, key: str, generated_utc: datetime) -> str:
    """The HTML of the page charting ``run_ids`` (the athlete's runs with pain of ``year``)."""
    ath = rep.athlete
    specs: dict[str, dict[str, Any]] = {}
    parts, _ = run_sections(rep, run_ids, specs)
    body = [
        f'<nav>{link("index.html", f"← {ath.name}")} · {link("../index.html", "Club overview")}</nav>',
        f"<h1>{esc(ath.name)}: runs with pain in {year}</h1>",
        f'<p class="meta">{len(run_ids)} runs · distances in {esc(ath.unit)} · time zone {esc(ath.timezone)}</p>',
        RUN_NOTE.format(unit=esc(ath.unit)),
        *parts,
    ]
    return page(
        title=f"{ath.name} · runs with pain {year}",
        body=body,
        generated_utc=generated_utc,
        specs=specs,
        meta={_KEY_META: key},
    )


def write_year_pages(
    rep: AthleteReport,
    runs: PainRuns,
    folder: Path,
    *,
    generated_utc: datetime,
    write: Callable[[Path, str], None],
) -> list[Path]:
    """Write (or keep, when unchanged) the year pages of ``runs`` in ``folder``; remove stale ones.

    Returns the pages written this time.
    """
    wanted = {year_page_name(year): (year, ids) for year, ids in runs.by_year.items()}
    for old in folder.glob("runs-*.html") if folder.is_dir() else ():
        if old.name not in wanted:
            old.unlink()
            logger.info("removed %s (no runs with pain charted there any more)", old)
    written = []
    for name, (year, ids) in sorted(wanted.items()):
        path = folder / name
        key = _year_key(rep, ids)
        if _existing_key(path) == key:
            logger.info("kept %s (unchanged)", path)
            continue
        write(path, year_page(rep, year, ids, key=key, generated_utc=generated_utc))
        written.append(path)
        logger.info("wrote %s", path)
    return written
