"""Fetch one athlete's rows from the warehouse and run the analysis on them.

SQL here only selects rows (``WHERE athlete_id = $a``); the analysis is done
by the pure functions of :mod:`pipeline.analysis` on those frames, so a page
is built from its athlete's rows only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from pipeline.analysis.drift import CadenceSpeed, cadence_speed_fit, drift_summary, onset_drift
from pipeline.analysis.links import athlete_links, run_factors
from pipeline.analysis.load import acwr_ewma, daily_distance, long_run_spikes, ramp_flags, running_only, weekly_load
from pipeline.analysis.survival import PainFree, pain_free_by_body_part
from pipeline.report.charts import M_PER_UNIT, Unit
from pipeline.schema import RUNNING_SPORTS

__all__ = [
    "Reader", "Athlete", "AthleteReport", "JOINED_STATUS", "REFERENCE_RUNS", "load_athletes", "table_names",
    "analyse_athlete",
    "analyse_club",
]

logger = logging.getLogger(__name__)

#: Pain-report statuses shown as joined (every other status is listed on the overview).
JOINED_STATUS = "matched"

_SAMPLE_COLUMNS = "activity_id, t_utc, elapsed_s, moving_s, distance_m, altitude_m, speed_mps, cadence_spm, hr_bpm"
_REFERENCE_COLUMNS = "activity_id, t_utc, elapsed_s, moving_s, distance_m, speed_mps, cadence_spm, hr_bpm"

#: Most recent pain-free runs whose samples are the drift analysis' reference.
REFERENCE_RUNS = 60


class Reader(Protocol):
    """Anything that runs DuckDB SQL on the warehouse and returns a polars frame."""

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame: ...


@dataclass(frozen=True)
class Athlete:
    """An athlete as the pages show them (defaults when the ``athletes`` row is missing)."""

    athlete_id: str
    name: str
    timezone: str
    unit: Unit
    distance_cap_m: float | None


@dataclass
class AthleteReport:
    """One athlete's frames and what the analysis made of them."""

    athlete: Athlete
    activities: pl.DataFrame
    pain: pl.DataFrame
    samples: pl.DataFrame
    weekly: pl.DataFrame
    spikes: pl.DataFrame
    acwr: pl.DataFrame
    drift: pl.DataFrame
    drift_summary: pl.DataFrame
    #: Pain-free distance per body part.
    pain_free: list[PainFree]
    #: One row per run with the candidate factors (:func:`pipeline.analysis.links.run_factors`).
    factors: pl.DataFrame
    #: One row per factor (:func:`pipeline.analysis.links.athlete_links`).
    links: pl.DataFrame
    #: Cadence against speed on the pain-free reference runs (None: too few).
    cadence_speed: CadenceSpeed | None
    #: Pain-free runs whose samples were the drift reference.
    n_reference_runs: int

    @property
    def runs(self) -> pl.DataFrame:
        """The runs with a date: every analysis is on these."""
        return running_only(self.activities)

    @property
    def undated_runs(self) -> pl.DataFrame:
        """Runs on a device clock (no date, ``device_time_s`` set): listed on the page, never analysed."""
        return self.activities.filter(
            pl.col("sport").is_in(sorted(RUNNING_SPORTS)) & pl.col("start_utc").is_null()
        )


def utc_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Every datetime column of ``frame`` as ``Datetime("us", "UTC")``.

    The reader may hand back the DuckDB session zone (``Etc/UTC``, or a
    coach's local zone); naive columns are taken to be UTC.
    """
    fixes = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime):
            col = pl.col(name)
            fixes.append(
                (col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC"))
                .dt.cast_time_unit("us")
                .alias(name)
            )
    return frame.with_columns(fixes) if fixes else frame


def _zone(name: str | None, athlete_id: str) -> str:
    if name:
        try:
            ZoneInfo(name)
            return name
        except (ZoneInfoNotFoundError, ValueError):
            logger.warning("athlete %s: unknown time zone %r, using UTC", athlete_id, name)
    return "UTC"


def load_athletes(reader: Reader) -> list[Athlete]:
    """Every athlete with an ``athletes`` row, activities or current pain reports, sorted by id.

    An athlete without an ``athletes`` row (a pain log naming an unknown
    athlete, say) still gets a page, named by id, in km and UTC: nothing is
    hidden. An unknown time zone falls back to UTC with a warning.
    """
    table_rows = {r["athlete_id"]: r for r in reader.query("SELECT * FROM athletes").iter_rows(named=True)}
    # Rows whose athlete has no athletes row still get a page: nothing is hidden.
    ids = reader.query(
        "SELECT athlete_id FROM activities UNION "
        "SELECT athlete_id FROM pain_reports WHERE superseded_utc IS NULL"
    )["athlete_id"].to_list()
    out = []
    for athlete_id in sorted(set(table_rows) | {i for i in ids if i is not None}):
        row = table_rows.get(athlete_id, {})
        unit = row.get("unit") if row.get("unit") in M_PER_UNIT else "km"
        out.append(
            Athlete(
                athlete_id=athlete_id,
                name=row.get("name") or athlete_id,
                timezone=_zone(row.get("timezone"), athlete_id),
                unit=unit,  # type: ignore[arg-type]
                distance_cap_m=row.get("distance_cap_m"),
            )
        )
    return out


def table_names(reader: Reader) -> set[str]:
    """Names of the tables and views the reader can see."""
    names = reader.query("SELECT table_name FROM information_schema.tables")["table_name"].to_list()
    return {str(n) for n in names}


def _unique_clause(tables: set[str]) -> str:
    # The same run recorded twice (a FIT and a GPX export, say) counts once.
    return (
        " AND activity_id NOT IN (SELECT activity_id FROM activity_duplicates)"
        if "activity_duplicates" in tables
        else ""
    )


def _athlete_rows(reader: Reader, athlete: Athlete, tables: set[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The athlete's activities (device-clock runs last) and current pain reports."""
    a = {"a": athlete.athlete_id}
    unique = _unique_clause(tables)
    activities = utc_frame(
        reader.query(
            f"SELECT * FROM activities WHERE athlete_id = $a{unique} ORDER BY start_utc NULLS LAST, device_time_s", a
        )
    )
    pain = utc_frame(
        reader.query(
            "SELECT * FROM pain_reports WHERE athlete_id = $a AND superseded_utc IS NULL "
            "ORDER BY date_local NULLS LAST, source_file, line",
            a,
        )
    )
    return activities, pain


def _reference_ids(activities: pl.DataFrame, pain: pl.DataFrame) -> list[str]:
    """The drift reference: the most recent runs with no pain report of any kind linked to them."""
    runs = running_only(activities)
    hurt = pain.filter(pl.col("activity_id").is_not_null())["activity_id"].implode()
    return (
        runs.filter(~pl.col("activity_id").is_in(hurt)).sort("start_utc", descending=True)
        .head(REFERENCE_RUNS)["activity_id"].to_list()
    )


def _pain_samples(reader: Reader, athlete_id: str | None) -> pl.DataFrame:
    """Samples of the runs with a joined, current pain report (of one athlete, or of all)."""
    who = "p.athlete_id = $a AND x.athlete_id = $a" if athlete_id is not None else "p.athlete_id = x.athlete_id"
    return utc_frame(
        reader.query(
            f"SELECT {_SAMPLE_COLUMNS} FROM samples WHERE activity_id IN ("
            f" SELECT p.activity_id FROM pain_reports p JOIN activities x USING (activity_id)"
            f" WHERE {who} AND p.superseded_utc IS NULL"
            f" AND p.status = '{JOINED_STATUS}') ORDER BY activity_id, elapsed_s",
            {"a": athlete_id} if athlete_id is not None else None,
        )
    )


def _reference_samples(reader: Reader, ids: list[str]) -> pl.DataFrame:
    return utc_frame(
        reader.query(
            f"SELECT {_REFERENCE_COLUMNS} FROM samples WHERE activity_id IN (SELECT unnest($ids::VARCHAR[])) "
            "ORDER BY activity_id, elapsed_s",
            {"ids": ids},
        )
    )


def analyse_club(reader: Reader, athletes: list[Athlete], *, tables: set[str]) -> list[AthleteReport]:
    """:func:`analyse_athlete` for every athlete, reading the samples in two scans in all.

    Each query of the samples table scans it; after years of history that is
    hundreds of millions of rows, so the samples of every athlete's runs with
    pain, and of every athlete's reference runs, are read at once and split.
    """
    rows = {a.athlete_id: _athlete_rows(reader, a, tables) for a in athletes}
    refs = {aid: _reference_ids(acts, pain) for aid, (acts, pain) in rows.items()}
    all_pain = _pain_samples(reader, None)
    wanted = [i for ids in refs.values() for i in ids]
    all_ref = _reference_samples(reader, wanted) if wanted else None
    out = []
    for athlete in athletes:
        activities, pain = rows[athlete.athlete_id]
        own = activities["activity_id"].implode()
        samples = all_pain.filter(pl.col("activity_id").is_in(own))
        ids = refs[athlete.athlete_id]
        reference = all_ref.filter(pl.col("activity_id").is_in(ids)) if all_ref is not None and ids else None
        out.append(_analyse(athlete, activities, pain, samples, reference))
    return out


def analyse_athlete(reader: Reader, athlete: Athlete, *, tables: set[str]) -> AthleteReport:
    """Fetch one athlete's rows and compute load, flags, ACWR, drift, pain-free distance and links.

    Parameters
    ----------
    reader
        The warehouse.
    athlete
        Whose rows to fetch (every query filters on ``athlete_id``).
    tables
        :func:`table_names`; activities listed in ``activity_duplicates``
        (when present) are left out so a run recorded twice counts once.

    Returns
    -------
    AthleteReport
        The frames (activities, current pain reports, samples of the runs
        with a matched report) and the analysis results. The samples of the
        athlete's :data:`REFERENCE_RUNS` most recent pain-free runs are read
        for the drift reference and not kept.
    """
    activities, pain = _athlete_rows(reader, athlete, tables)
    samples = _pain_samples(reader, athlete.athlete_id)
    own = activities["activity_id"].implode()
    samples = samples.filter(pl.col("activity_id").is_in(own))
    ids = _reference_ids(activities, pain)
    reference = _reference_samples(reader, ids) if ids else None
    return _analyse(athlete, activities, pain, samples, reference)


def _analyse(
    athlete: Athlete,
    activities: pl.DataFrame,
    pain: pl.DataFrame,
    samples: pl.DataFrame,
    reference: pl.DataFrame | None,
) -> AthleteReport:
    runs = running_only(activities)
    tz = athlete.timezone
    weekly = ramp_flags(weekly_load(activities, tz=tz))
    spikes = long_run_spikes(activities).with_columns(
        date_local=pl.col("start_utc").dt.convert_time_zone(tz).dt.date()
    )
    acwr = acwr_ewma(daily_distance(activities, tz=tz))
    joined = pain.filter(pl.col("activity_id").is_in(activities["activity_id"].implode()))
    cadence_speed = cadence_speed_fit(reference) if reference is not None else None
    drift = onset_drift(samples, joined, reference=reference, cadence_speed=cadence_speed)
    factors = run_factors(activities, joined)
    return AthleteReport(
        athlete=athlete,
        activities=activities,
        pain=pain,
        samples=samples,
        weekly=weekly,
        spikes=spikes,
        acwr=acwr,
        drift=drift,
        drift_summary=drift_summary(drift),
        pain_free=pain_free_by_body_part(runs, joined),
        factors=factors,
        links=athlete_links(factors, unit=athlete.unit),
        cadence_speed=cadence_speed,
        n_reference_runs=0 if reference is None else reference["activity_id"].n_unique(),
    )
