"""Versioned schema migrations of the warehouse.

:data:`MIGRATIONS` is an append-only list of ``(version, name, sql)``. Each
pending migration runs in its own transaction together with its row in
``_migrations(version, name, applied_utc)``, so a crash leaves the database
at the previous version, never half-way. **Never edit a migration that has
shipped**: add a new one (``CREATE OR REPLACE VIEW`` for a view change,
``ALTER TABLE`` for a table change). ``docs/warehouse.md`` documents the
result and ``tests/test_warehouse.py`` checks that every column is documented
and that the tables match :mod:`pipeline.schema`.

Type mapping from :mod:`pipeline.schema`: ``pl.String`` -> ``VARCHAR``,
``pl.Datetime("us", "UTC")`` -> ``TIMESTAMPTZ``, ``pl.Int32`` -> ``INTEGER``,
``pl.Int64`` -> ``BIGINT``, ``pl.Float64`` -> ``DOUBLE``, ``pl.Boolean`` ->
``BOOLEAN``, ``pl.Date`` -> ``DATE``.

Views never depend on the session ``TimeZone``: local times are computed from
``utc_offset_s`` with epoch arithmetic (or, when the offset is unknown, from
the activity's or athlete's IANA zone with ``timezone(zone, instant)``), so a
coach's CLI in any zone sees the same numbers.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import duckdb

from pipeline.errors import WarehouseError

__all__ = ["MIGRATIONS", "apply_migrations", "current_version"]

log = logging.getLogger(__name__)

_TABLES_V1 = """
CREATE TABLE _ingest_runs (
    run_id        VARCHAR PRIMARY KEY,
    command       VARCHAR NOT NULL,
    started_utc   TIMESTAMPTZ NOT NULL,
    finished_utc  TIMESTAMPTZ,
    status        VARCHAR NOT NULL,
    summary       VARCHAR,
    pid           INTEGER
);

CREATE TABLE files (
    path            VARCHAR NOT NULL,
    sha256          VARCHAR NOT NULL,
    size_bytes      BIGINT,
    format          VARCHAR,
    status          VARCHAR NOT NULL CHECK (status IN ('loaded', 'duplicate', 'skipped', 'rejected')),
    reason          VARCHAR,
    activity_ids    VARCHAR[],
    duplicate_of    VARCHAR,
    athlete_id      VARCHAR,
    first_seen_utc  TIMESTAMPTZ NOT NULL,
    updated_utc     TIMESTAMPTZ NOT NULL,
    run_id          VARCHAR,
    PRIMARY KEY (sha256, path)
);

CREATE TABLE activities (
    activity_id          VARCHAR PRIMARY KEY,
    athlete_id           VARCHAR NOT NULL,
    sport                VARCHAR,
    sub_sport            VARCHAR,
    start_utc            TIMESTAMPTZ NOT NULL,
    end_utc              TIMESTAMPTZ,
    utc_offset_s         INTEGER,
    timezone             VARCHAR,
    tz_source            VARCHAR,
    elapsed_s            DOUBLE,
    moving_s             DOUBLE,
    distance_m           DOUBLE,
    distance_source      VARCHAR,
    avg_speed_mps        DOUBLE,
    avg_hr_bpm           DOUBLE,
    max_hr_bpm           DOUBLE,
    avg_cadence_spm      DOUBLE,
    avg_power_w          DOUBLE,
    total_ascent_m       DOUBLE,
    total_descent_m      DOUBLE,
    has_gps              BOOLEAN,
    n_samples            BIGINT,
    device_manufacturer  VARCHAR,
    device_product       VARCHAR,
    source_file          VARCHAR,
    source_format        VARCHAR,
    source_sha256        VARCHAR,
    session_index        INTEGER,
    _run_id              VARCHAR NOT NULL
);

CREATE TABLE samples (
    activity_id              VARCHAR NOT NULL,
    t_utc                    TIMESTAMPTZ NOT NULL,
    elapsed_s                DOUBLE,
    moving_s                 DOUBLE,
    distance_m               DOUBLE,
    lat_deg                  DOUBLE,
    lon_deg                  DOUBLE,
    altitude_m               DOUBLE,
    speed_mps                DOUBLE,
    cadence_spm              DOUBLE,
    hr_bpm                   DOUBLE,
    power_w                  DOUBLE,
    temperature_c            DOUBLE,
    vertical_oscillation_mm  DOUBLE,
    stance_time_ms           DOUBLE,
    step_length_mm           DOUBLE,
    _run_id                  VARCHAR NOT NULL
);

CREATE TABLE laps (
    activity_id      VARCHAR NOT NULL,
    lap_index        INTEGER,
    start_utc        TIMESTAMPTZ,
    end_utc          TIMESTAMPTZ,
    elapsed_s        DOUBLE,
    moving_s         DOUBLE,
    distance_m       DOUBLE,
    avg_speed_mps    DOUBLE,
    avg_hr_bpm       DOUBLE,
    avg_cadence_spm  DOUBLE,
    "trigger"        VARCHAR,
    _run_id          VARCHAR NOT NULL
);

CREATE TABLE pauses (
    activity_id  VARCHAR NOT NULL,
    pause_index  INTEGER,
    start_utc    TIMESTAMPTZ,
    end_utc      TIMESTAMPTZ,
    duration_s   DOUBLE,
    _run_id      VARCHAR NOT NULL
);

CREATE TABLE activity_duplicates (
    activity_id          VARCHAR PRIMARY KEY,
    duplicate_of         VARCHAR NOT NULL,
    athlete_id           VARCHAR NOT NULL,
    sport                VARCHAR,
    start_utc            TIMESTAMPTZ NOT NULL,
    end_utc              TIMESTAMPTZ,
    distance_m           DOUBLE,
    n_samples            BIGINT,
    device_manufacturer  VARCHAR,
    device_product       VARCHAR,
    source_file          VARCHAR,
    source_sha256        VARCHAR,
    _run_id              VARCHAR NOT NULL
);

CREATE TABLE athletes (
    athlete_id      VARCHAR PRIMARY KEY,
    name            VARCHAR,
    timezone        VARCHAR,
    unit            VARCHAR,
    distance_cap_m  DOUBLE,
    updated_utc     TIMESTAMPTZ NOT NULL,
    _run_id         VARCHAR
);

CREATE TABLE pain_reports (
    report_id            VARCHAR PRIMARY KEY,
    athlete_id           VARCHAR,
    source_file          VARCHAR,
    line                 INTEGER,
    date_local           DATE,
    onset_raw            VARCHAR,
    onset_kind           VARCHAR,
    onset_approx         BOOLEAN,
    body_part            VARCHAR,
    body_part_raw        VARCHAR,
    side                 VARCHAR,
    severity             INTEGER,
    notes                VARCHAR,
    run_hint             VARCHAR,
    status               VARCHAR,
    status_detail        VARCHAR,
    activity_id          VARCHAR,
    sample_t_utc         TIMESTAMPTZ,
    onset_utc            TIMESTAMPTZ,
    onset_elapsed_s      DOUBLE,
    onset_moving_s       DOUBLE,
    onset_distance_m     DOUBLE,
    onset_distance_lo_m  DOUBLE,
    onset_distance_hi_m  DOUBLE,
    first_seen_utc       TIMESTAMPTZ NOT NULL,
    superseded_utc       TIMESTAMPTZ,
    _run_id              VARCHAR
);

CREATE TABLE pain_rows_rejected (
    source_file  VARCHAR,
    line         INTEGER,
    reason       VARCHAR NOT NULL,
    _run_id      VARCHAR
);
"""

#: Local wall-clock start of activity ``a`` (TIMESTAMP, no zone). Epoch arithmetic on the
#: recorded offset; only when it is unknown, the activity's or else the athlete's IANA zone,
#: each used only if ICU knows it (``tz_a``/``tz_ath`` from :data:`_ZONE_JOINS`), else UTC.
_LOCAL_START = """CASE
        WHEN a.utc_offset_s IS NOT NULL
            THEN make_timestamp(epoch_us(a.start_utc) + CAST(a.utc_offset_s AS BIGINT) * 1000000)
        ELSE timezone(coalesce(tz_a.name, tz_ath.name, 'UTC'), a.start_utc)
    END"""

#: Joins that go with :data:`_LOCAL_START` (``a`` = activities): an unknown zone name would
#: otherwise make ``timezone()`` fail the whole view.
_ZONE_JOINS = """LEFT JOIN athletes ath ON ath.athlete_id = a.athlete_id
    LEFT JOIN pg_timezone_names() tz_a ON tz_a.name = a.timezone
    LEFT JOIN pg_timezone_names() tz_ath ON tz_ath.name = ath.timezone"""

_VIEWS_V2 = f"""
CREATE VIEW pain_reports_current AS
SELECT *
FROM pain_reports
WHERE superseded_utc IS NULL;

CREATE VIEW runs AS
WITH pain AS (
    SELECT activity_id, count(*) AS n, max(severity) AS max_severity
    FROM pain_reports
    WHERE superseded_utc IS NULL AND status = 'matched' AND activity_id IS NOT NULL
    GROUP BY activity_id
),
base AS (
    SELECT a.*, {_LOCAL_START} AS start_local
    FROM activities a
    {_ZONE_JOINS}
    WHERE a.sport IN ('running', 'trail_running', 'treadmill_running')
)
SELECT
    b.activity_id,
    b.athlete_id,
    b.sport,
    b.sub_sport,
    b.start_utc,
    b.start_local,
    CAST(b.start_local AS DATE) AS date_local,
    b.distance_m / 1000.0 AS distance_km,
    b.moving_s / 60.0 AS moving_min,
    b.elapsed_s / 60.0 AS elapsed_min,
    1000.0 * b.moving_s / nullif(b.distance_m, 0) AS pace_s_per_km,
    b.avg_hr_bpm,
    b.max_hr_bpm,
    b.avg_cadence_spm,
    b.avg_power_w,
    b.total_ascent_m,
    b.has_gps,
    coalesce(p.n, 0) AS pain_reports,
    p.max_severity AS max_pain_severity,
    b.source_file
FROM base b
LEFT JOIN pain p ON p.activity_id = b.activity_id;

CREATE VIEW weekly_load AS
SELECT
    athlete_id,
    CAST(date_trunc('week', date_local) AS DATE) AS week_start_local,
    count(*) AS runs,
    sum(distance_km) AS distance_km,
    sum(moving_min) / 60.0 AS moving_h,
    max(distance_km) AS longest_run_km,
    CAST(sum(pain_reports) AS BIGINT) AS pain_reports,
    max(max_pain_severity) AS max_pain_severity
FROM runs
GROUP BY athlete_id, CAST(date_trunc('week', date_local) AS DATE);

CREATE VIEW pain_onsets AS
WITH onsets AS (
    SELECT p.*, coalesce(p.sample_t_utc, p.onset_utc) AS ref_utc
    FROM pain_reports p
    WHERE p.superseded_utc IS NULL
      AND p.status = 'matched'
      AND p.activity_id IS NOT NULL
      AND coalesce(p.sample_t_utc, p.onset_utc) IS NOT NULL
),
-- range join: the samples of the 5 minutes up to and including the onset sample
before_onset AS (
    SELECT
        o.report_id,
        count(*) AS n,
        max(coalesce(s.moving_s, s.elapsed_s)) - min(coalesce(s.moving_s, s.elapsed_s)) AS dt_s,
        max(s.distance_m) - min(s.distance_m) AS dd_m,
        avg(s.speed_mps) FILTER (WHERE s.speed_mps > 0) AS speed_mps,
        avg(s.cadence_spm) FILTER (WHERE s.cadence_spm > 0) AS cadence_spm,
        avg(s.hr_bpm) FILTER (WHERE s.hr_bpm > 0) AS hr_bpm
    FROM onsets o
    JOIN samples s
      ON s.activity_id = o.activity_id
     AND s.t_utc >= o.ref_utc - INTERVAL 5 MINUTE
     AND s.t_utc <= o.ref_utc
    GROUP BY o.report_id
),
-- range join: the samples of the run's first 10 minutes (wall clock from start_utc)
first_ten AS (
    SELECT
        a.activity_id,
        count(*) AS n,
        max(coalesce(s.moving_s, s.elapsed_s)) - min(coalesce(s.moving_s, s.elapsed_s)) AS dt_s,
        max(s.distance_m) - min(s.distance_m) AS dd_m,
        avg(s.speed_mps) FILTER (WHERE s.speed_mps > 0) AS speed_mps,
        avg(s.cadence_spm) FILTER (WHERE s.cadence_spm > 0) AS cadence_spm,
        avg(s.hr_bpm) FILTER (WHERE s.hr_bpm > 0) AS hr_bpm
    FROM activities a
    JOIN samples s
      ON s.activity_id = a.activity_id
     AND s.t_utc >= a.start_utc
     AND s.t_utc <= a.start_utc + INTERVAL 10 MINUTE
    WHERE a.activity_id IN (SELECT activity_id FROM onsets)
    GROUP BY a.activity_id
),
paced AS (
    SELECT
        o.report_id,
        coalesce(1000.0 * b.dt_s / nullif(b.dd_m, 0), 1000.0 / nullif(b.speed_mps, 0)) AS pre5_pace,
        b.cadence_spm AS pre5_cadence,
        b.hr_bpm AS pre5_hr,
        coalesce(b.n, 0) AS pre5_n,
        coalesce(1000.0 * f.dt_s / nullif(f.dd_m, 0), 1000.0 / nullif(f.speed_mps, 0)) AS first10_pace,
        f.cadence_spm AS first10_cadence,
        f.hr_bpm AS first10_hr,
        coalesce(f.n, 0) AS first10_n
    FROM onsets o
    LEFT JOIN before_onset b ON b.report_id = o.report_id
    LEFT JOIN first_ten f ON f.activity_id = o.activity_id
)
SELECT
    o.report_id,
    o.athlete_id,
    o.activity_id,
    a.sport,
    a.start_utc AS run_start_utc,
    {_LOCAL_START} AS run_start_local,
    o.date_local AS reported_date_local,
    o.body_part,
    o.body_part_raw,
    o.side,
    o.severity,
    o.onset_kind,
    o.onset_raw,
    o.onset_approx,
    o.onset_utc,
    o.sample_t_utc,
    {_LOCAL_START} + to_microseconds(epoch_us(o.ref_utc) - epoch_us(a.start_utc)) AS onset_local,
    o.onset_elapsed_s,
    o.onset_moving_s,
    o.onset_elapsed_s / 60.0 AS onset_elapsed_min,
    o.onset_distance_m / 1000.0 AS onset_distance_km,
    o.onset_distance_lo_m / 1000.0 AS onset_distance_lo_km,
    o.onset_distance_hi_m / 1000.0 AS onset_distance_hi_km,
    a.distance_m / 1000.0 AS run_distance_km,
    o.onset_distance_m / nullif(a.distance_m, 0) AS onset_fraction_of_run,
    x.pre5_pace AS pre5_pace_s_per_km,
    x.pre5_cadence AS pre5_cadence_spm,
    x.pre5_hr AS pre5_hr_bpm,
    x.pre5_n AS pre5_samples,
    x.first10_pace AS first10_pace_s_per_km,
    x.first10_cadence AS first10_cadence_spm,
    x.first10_hr AS first10_hr_bpm,
    x.first10_n AS first10_samples,
    x.pre5_pace - x.first10_pace AS pace_change_s_per_km,
    x.pre5_cadence - x.first10_cadence AS cadence_change_spm,
    x.pre5_hr - x.first10_hr AS hr_change_bpm,
    o.notes
FROM onsets o
JOIN activities a ON a.activity_id = o.activity_id
{_ZONE_JOINS}
JOIN paced x ON x.report_id = o.report_id;
"""

#: Activities on a device's own clock (FIT seconds since power-on, no date): ``start_utc`` and
#: ``samples.t_utc`` may be null, ``activities.device_time_s`` holds the device's start. The
#: activities table is rebuilt (it is small) so that its columns keep the order of
#: ``ACTIVITY_SCHEMA`` (+ ``_run_id``); ``runs`` (and so ``weekly_load`` and every stored query on
#: it) holds only runs with a date.
_DEVICE_CLOCK_V3 = f"""
CREATE TABLE _activities_v3 (
    activity_id          VARCHAR PRIMARY KEY,
    athlete_id           VARCHAR NOT NULL,
    sport                VARCHAR,
    sub_sport            VARCHAR,
    start_utc            TIMESTAMPTZ,
    end_utc              TIMESTAMPTZ,
    device_time_s        BIGINT,
    utc_offset_s         INTEGER,
    timezone             VARCHAR,
    tz_source            VARCHAR,
    elapsed_s            DOUBLE,
    moving_s             DOUBLE,
    distance_m           DOUBLE,
    distance_source      VARCHAR,
    avg_speed_mps        DOUBLE,
    avg_hr_bpm           DOUBLE,
    max_hr_bpm           DOUBLE,
    avg_cadence_spm      DOUBLE,
    avg_power_w          DOUBLE,
    total_ascent_m       DOUBLE,
    total_descent_m      DOUBLE,
    has_gps              BOOLEAN,
    n_samples            BIGINT,
    device_manufacturer  VARCHAR,
    device_product       VARCHAR,
    source_file          VARCHAR,
    source_format        VARCHAR,
    source_sha256        VARCHAR,
    session_index        INTEGER,
    _run_id              VARCHAR NOT NULL,
    CHECK (start_utc IS NOT NULL OR device_time_s IS NOT NULL)
);
INSERT INTO _activities_v3 BY NAME SELECT * FROM activities;
DROP TABLE activities;
ALTER TABLE _activities_v3 RENAME TO activities;

ALTER TABLE samples ALTER COLUMN t_utc DROP NOT NULL;

CREATE OR REPLACE VIEW runs AS
WITH pain AS (
    SELECT activity_id, count(*) AS n, max(severity) AS max_severity
    FROM pain_reports
    WHERE superseded_utc IS NULL AND status = 'matched' AND activity_id IS NOT NULL
    GROUP BY activity_id
),
base AS (
    SELECT a.*, {_LOCAL_START} AS start_local
    FROM activities a
    {_ZONE_JOINS}
    WHERE a.sport IN ('running', 'trail_running', 'treadmill_running')
      AND a.start_utc IS NOT NULL
)
SELECT
    b.activity_id,
    b.athlete_id,
    b.sport,
    b.sub_sport,
    b.start_utc,
    b.start_local,
    CAST(b.start_local AS DATE) AS date_local,
    b.distance_m / 1000.0 AS distance_km,
    b.moving_s / 60.0 AS moving_min,
    b.elapsed_s / 60.0 AS elapsed_min,
    1000.0 * b.moving_s / nullif(b.distance_m, 0) AS pace_s_per_km,
    b.avg_hr_bpm,
    b.max_hr_bpm,
    b.avg_cadence_spm,
    b.avg_power_w,
    b.total_ascent_m,
    b.has_gps,
    coalesce(p.n, 0) AS pain_reports,
    p.max_severity AS max_pain_severity,
    b.source_file
FROM base b
LEFT JOIN pain p ON p.activity_id = b.activity_id;
"""

#: ``(version, name, sql)``, applied in order. Append only.
# The nightly job skips reading and hashing a raw file whose path, size and modification time
# match its ledger row (pipeline.ingest): the ledger keeps the modification time it saw.
_FILE_MTIME_V4 = """
ALTER TABLE files ADD COLUMN mtime_ns BIGINT;
"""

# A sample's ingest run is its activity's (both are written in one transaction): the same
# string on every sample row cost the ingest's writer ~30 % of its append (docs/performance.md).
_SAMPLES_RUN_V5 = """
ALTER TABLE samples DROP COLUMN _run_id;
"""

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "tables", _TABLES_V1),
    (2, "coach views", _VIEWS_V2),
    (3, "activities on a device clock", _DEVICE_CLOCK_V3),
    (4, "file modification times", _FILE_MTIME_V4),
    (5, "samples take their run from their activity", _SAMPLES_RUN_V5),
]

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS _migrations (
    version      INTEGER PRIMARY KEY,
    name         VARCHAR NOT NULL,
    applied_utc  TIMESTAMPTZ NOT NULL
)
"""


def current_version(con: Any) -> int:
    """The highest applied migration version (0 for a new database)."""
    rows = con.sql("SELECT coalesce(max(version), 0) FROM _migrations").fetchall()
    return int(rows[0][0])


def apply_migrations(con: Any, *, where: str) -> list[int]:
    """Apply every pending migration, each in its own transaction.

    Parameters
    ----------
    con
        An open read-write DuckDB connection (session TimeZone already UTC).
    where
        The database path, for messages.

    Returns
    -------
    list[int]
        The versions applied now (empty when up to date).

    Raises
    ------
    WarehouseError
        The database is newer than this code, or a migration failed (rolled back).
    """
    try:
        con.execute(_BOOKKEEPING)
        con.complete()
        have = current_version(con)
    except duckdb.Error as exc:
        raise WarehouseError(f"{where}: cannot read the migration table: {exc}") from exc
    known = max(version for version, _, _ in MIGRATIONS)
    if have > known:
        raise WarehouseError(
            f"{where}: database schema is version {have} but this pipeline knows only up to "
            f"{known}; upgrade the pipeline or use another --warehouse"
        )
    applied: list[int] = []
    for version, name, sql in MIGRATIONS:
        if version <= have:
            continue
        try:
            con.begin()
            con.execute(sql)
            con.complete()
            con.execute(
                "INSERT INTO _migrations VALUES ($v, $n, $t)",
                {"v": version, "n": name, "t": datetime.now(timezone.utc)},
            )
            con.complete()
            con.commit()
        except duckdb.Error as exc:
            con.rollback()
            raise WarehouseError(f"{where}: migration {version} ({name}) failed: {exc}") from exc
        log.info("%s: applied migration %d (%s)", where, version, name)
        applied.append(version)
    return applied
