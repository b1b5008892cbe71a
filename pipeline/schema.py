"""The one normalised schema every importer produces and the warehouse stores.

All instants are timezone-aware UTC (``*_utc``), all quantities SI with the
unit in the column name. Running cadence is steps per minute (FIT stores
strides per minute; importers double it). Frames are always built with these
explicit schemas: polars would otherwise infer a datetime column's zone from
its first value.

This module holds data shapes only (no I/O) so every stage may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import polars as pl

__all__ = [
    "UTC_DT",
    "ACTIVITY_SCHEMA",
    "SAMPLE_SCHEMA",
    "LAP_SCHEMA",
    "PAUSE_SCHEMA",
    "PAIN_REPORT_SCHEMA",
    "RUNNING_SPORTS",
    "NormalisedActivity",
    "empty_frame",
    "frame_from_rows",
    "as_utc",
]

#: The type of every instant column.
UTC_DT = pl.Datetime("us", "UTC")

#: Sports the analysis treats as running (``activities.sport``).
RUNNING_SPORTS = frozenset({"running", "trail_running", "treadmill_running"})

ACTIVITY_SCHEMA: dict[str, pl.DataType] = {
    "activity_id": pl.String(),  # "<sha256 of source file, first 16 hex>-<session index>"
    "athlete_id": pl.String(),  # folder name under data/raw (or the pain log's athlete column)
    "sport": pl.String(),  # lower-case FIT sport names: running, cycling, walking, swimming, ...
    "sub_sport": pl.String(),  # FIT sub_sport (trail, treadmill, road, ...) or null
    "start_utc": UTC_DT,  # null only for an activity on a device's clock (device_time_s set)
    "end_utc": UTC_DT,
    # seconds since device power-on at the start, for a FIT file on the device's own clock
    # (start_utc/end_utc and every other instant are then null); null for every dated activity
    "device_time_s": pl.Int64(),
    "utc_offset_s": pl.Int32(),  # local time = UTC + offset, seconds, at the start
    "timezone": pl.String(),  # IANA name when known (from GPS or athlete.toml), else null
    "tz_source": pl.String(),  # fit_local_timestamp | gps | athlete | file_offset | none
    "elapsed_s": pl.Float64(),  # wall-clock duration, start to end, pauses included
    "moving_s": pl.Float64(),  # timer time: pauses excluded
    "distance_m": pl.Float64(),
    "distance_source": pl.String(),  # device | gps | none
    "avg_speed_mps": pl.Float64(),  # distance_m / moving_s
    "avg_hr_bpm": pl.Float64(),
    "max_hr_bpm": pl.Float64(),
    "avg_cadence_spm": pl.Float64(),  # steps/min for running, rpm for cycling
    "avg_power_w": pl.Float64(),
    "total_ascent_m": pl.Float64(),
    "total_descent_m": pl.Float64(),
    "has_gps": pl.Boolean(),
    "n_samples": pl.Int64(),
    "device_manufacturer": pl.String(),
    "device_product": pl.String(),
    "source_file": pl.String(),  # path relative to the raw folder
    "source_format": pl.String(),  # fit | gpx | tcx (the inner format for .gz / zip members)
    "source_sha256": pl.String(),  # of the file's bytes as stored (before decompression)
    "session_index": pl.Int32(),  # 0-based session within the file (multisport files)
}

SAMPLE_SCHEMA: dict[str, pl.DataType] = {
    "activity_id": pl.String(),
    "t_utc": UTC_DT,  # null when the activity is on a device's clock (activities.device_time_s)
    "elapsed_s": pl.Float64(),  # since start_utc, wall clock (pauses included)
    "moving_s": pl.Float64(),  # timer time since start (pauses excluded)
    "distance_m": pl.Float64(),  # cumulative, device or GPS
    "lat_deg": pl.Float64(),
    "lon_deg": pl.Float64(),
    "altitude_m": pl.Float64(),  # enhanced_altitude over altitude
    "speed_mps": pl.Float64(),  # enhanced_speed over speed
    "cadence_spm": pl.Float64(),  # running: steps/min; cycling: rpm
    "hr_bpm": pl.Float64(),
    "power_w": pl.Float64(),  # native power or a developer field (Stryd)
    "temperature_c": pl.Float64(),
    "vertical_oscillation_mm": pl.Float64(),
    "stance_time_ms": pl.Float64(),
    "step_length_mm": pl.Float64(),
}

LAP_SCHEMA: dict[str, pl.DataType] = {
    "activity_id": pl.String(),
    "lap_index": pl.Int32(),
    "start_utc": UTC_DT,
    "end_utc": UTC_DT,
    "elapsed_s": pl.Float64(),
    "moving_s": pl.Float64(),
    "distance_m": pl.Float64(),
    "avg_speed_mps": pl.Float64(),
    "avg_hr_bpm": pl.Float64(),
    "avg_cadence_spm": pl.Float64(),
    "trigger": pl.String(),  # manual | distance | time | session_end | ...
}

PAUSE_SCHEMA: dict[str, pl.DataType] = {
    "activity_id": pl.String(),
    "pause_index": pl.Int32(),
    "start_utc": UTC_DT,  # timer stop
    "end_utc": UTC_DT,  # timer start (or the end of the activity)
    "duration_s": pl.Float64(),
}

PAIN_REPORT_SCHEMA: dict[str, pl.DataType] = {
    # where the row came from
    "report_id": pl.String(),  # sha256 of athlete + file + normalised row content, first 16 hex
    "athlete_id": pl.String(),
    "source_file": pl.String(),
    "line": pl.Int32(),  # 1-based line in the CSV (header is line 1)
    # what the runner wrote
    "date_local": pl.Date(),
    "onset_raw": pl.String(),
    "onset_kind": pl.String(),  # clock | instant | elapsed | distance | after | next_day
    "onset_approx": pl.Boolean(),  # "~6 mi"
    "body_part": pl.String(),  # vocabulary term (docs/pain-log.md) or the word as written
    "body_part_raw": pl.String(),
    "side": pl.String(),  # left | right | both | null
    "severity": pl.Int32(),  # 0-10
    "notes": pl.String(),
    "run_hint": pl.String(),  # the optional `run` column
    # the join
    "status": pl.String(),  # matched | unmatched | ambiguous | beyond_run | nonexistent_local_time | after_run | ...
    "status_detail": pl.String(),
    "activity_id": pl.String(),
    "sample_t_utc": UTC_DT,  # the sample where pain started
    "onset_utc": UTC_DT,
    "onset_elapsed_s": pl.Float64(),
    "onset_moving_s": pl.Float64(),
    "onset_distance_m": pl.Float64(),
    "onset_distance_lo_m": pl.Float64(),  # uncertainty interval ("~", ranges); equal to onset when exact
    "onset_distance_hi_m": pl.Float64(),
}


@dataclass(frozen=True)
class NormalisedActivity:
    """One activity (one FIT session) in the normalised schema.

    ``activity`` is one row of :data:`ACTIVITY_SCHEMA` as a dict; the frames
    follow :data:`SAMPLE_SCHEMA`, :data:`LAP_SCHEMA` and :data:`PAUSE_SCHEMA`.
    """

    activity: dict[str, Any]
    samples: pl.DataFrame
    laps: pl.DataFrame
    pauses: pl.DataFrame

    @property
    def activity_id(self) -> str:
        return str(self.activity["activity_id"])

    def activity_frame(self) -> pl.DataFrame:
        return frame_from_rows([self.activity], ACTIVITY_SCHEMA)


def empty_frame(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """An empty frame with exactly ``schema``."""
    return pl.DataFrame(schema=schema)


def frame_from_rows(rows: list[dict[str, Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Build a frame from dict rows with the exact schema (missing keys become null).

    Naive datetimes are taken as UTC; aware ones are converted to UTC.
    """
    instants = {name for name, dtype in schema.items() if isinstance(dtype, pl.Datetime)}
    clean = [
        {
            name: as_utc(value) if name in instants and isinstance(value, datetime) else value
            for name in schema
            for value in (row.get(name),)
        }
        for row in rows
    ]
    try:
        # ~10x faster than building columns for the few-row frames of laps, pauses and activities
        return pl.from_dicts(clean, schema=schema, strict=False)
    except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError):
        pass  # a value from_dicts cannot place: the column path nulls it (callers check for that)
    columns: dict[str, list[Any]] = {name: [r[name] for r in clean] for name in schema}
    return pl.DataFrame(columns, schema=schema, strict=False)


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)
