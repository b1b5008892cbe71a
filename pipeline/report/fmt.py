"""Cells and small tables shared by the overview and the athlete pages."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from pipeline.report.charts import M_PER_UNIT
from pipeline.report.data import JOINED_STATUS, AthleteReport
from pipeline.report.html import Markup, esc, table

__all__ = [
    "RUNSAFE", "NIELSEN", "athlete_dir_name", "dist", "clock", "pace", "signed", "local_time", "pct",
    "status_cell", "run_anchor", "files_table", "spike_rows", "ramp_rows",
]

#: ``files.status`` values that mean the file was loaded; every other file is listed.
LOADED_FILE_STATUSES = frozenset({"loaded"})

RUNSAFE = (
    "Garmin-RUNSAFE Running Health Study: \u201cHow much running is too much? Identifying high-risk running "
    "sessions in a 5200-person cohort study\u201d, Br J Sports Med 2025"
)

NIELSEN = (
    "Nielsen RO et al., \u201cExcessive progression in weekly running distance and risk of running-related "
    "injuries\u201d, J Orthop Sports Phys Ther 2014;44(10):739\u2013747"
)


def athlete_dir_name(athlete_id: str) -> str:
    """The folder of an athlete's page under the reports folder (never escapes it)."""
    if re.fullmatch(r"[a-z0-9][a-z0-9_-]*", athlete_id):
        return athlete_id
    digest = hashlib.sha256(athlete_id.encode()).hexdigest()[:12]
    slug = re.sub(r"[^a-z0-9_-]+", "-", athlete_id.lower()).strip("-_")[:40]
    return f"{slug or 'athlete'}-{digest}"


def dist(metres: float | None, unit: str, digits: int = 1) -> str | None:
    """Metres in the athlete's unit (the number only), or None."""
    return None if metres is None else f"{metres / M_PER_UNIT[unit]:.{digits}f}"


def clock(seconds: float | None) -> str | None:
    """Seconds as ``m:ss`` or ``h:mm:ss``, or None."""
    if seconds is None:
        return None
    total = round(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def pace(s_per_km: float | None, unit: str) -> str | None:
    """A pace in s/km as ``m:ss`` per the athlete's unit, or None."""
    if s_per_km is None:
        return None
    return clock(s_per_km * M_PER_UNIT[unit] / 1000.0)


def signed(value: float | None, digits: int = 1) -> str | None:
    """A change with its sign (``+1.5``), or None."""
    return None if value is None else f"{value:+.{digits}f}"


def local_time(ts: datetime | None, tz: str) -> str | None:
    """An instant as ``YYYY-MM-DD HH:MM`` in zone ``tz``, or None."""
    return None if ts is None else ts.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def pct(ratio: float | None) -> str | None:
    """A ratio minus one as a signed whole percentage (``+36``), or None."""
    return None if ratio is None else f"{ratio * 100:+.0f}"


def status_cell(status: str | None) -> Markup:
    """A pain-report status, coloured: matched green, anything else red."""
    klass = "status-matched" if status == JOINED_STATUS else "status-problem"
    return Markup(f'<span class="{klass}">{esc(status)}</span>')


def run_anchor(activity_id: str) -> str:
    """The ``id`` of a run's section on its athlete page."""
    return "run-" + re.sub(r"[^A-Za-z0-9_-]", "_", activity_id)


def files_table(files: pl.DataFrame, *, empty: str) -> Markup:
    """Every file whose status is not ``loaded`` (rejected, skipped, duplicate), with its reason."""
    bad = files.filter(~pl.col("status").is_in(sorted(LOADED_FILE_STATUSES)) | pl.col("status").is_null())
    rows = [[r["path"], status_cell(r["status"]), r["reason"]] for r in bad.sort("path").iter_rows(named=True)]
    headers = ["File (under the raw folder)", "Status", "Reason"]
    return table(headers, rows, row_classes=["flag"] * len(rows), empty=empty)


def spike_rows(rep: AthleteReport) -> list[list[Any]]:
    """Long-run spikes, newest first: date, run, previous 30-day longest (athlete's unit), % longer."""
    unit = rep.athlete.unit
    flagged = rep.spikes.filter(pl.col("spike")).sort("start_utc", descending=True)
    return [
        [r["date_local"], dist(r["distance_m"], unit, 2), dist(r["prev_longest_m"], unit, 2), pct(r["excess_ratio"])]
        for r in flagged.iter_rows(named=True)
    ]


def ramp_rows(rep: AthleteReport) -> list[list[Any]]:
    """Ramp weeks, newest first: week, distance, previous week (athlete's unit), % change."""
    unit = rep.athlete.unit
    flagged = rep.weekly.filter(pl.col("ramp_flag")).sort("week_start_local", descending=True)
    return [
        [r["week_start_local"], dist(r["distance_m"], unit), dist(r["prev_distance_m"], unit), pct(r["ramp"])]
        for r in flagged.iter_rows(named=True)
    ]
