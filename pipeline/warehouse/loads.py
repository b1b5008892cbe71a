"""Checking a batch of source files before :meth:`Warehouse.load_files` writes it.

Nothing here touches the database: each file's activities are checked
against the normalised schema and conformed, so a batch is either wholly
valid or refused (naming the file) before its transaction begins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from pipeline.errors import WarehouseError
from pipeline.schema import ACTIVITY_SCHEMA, LAP_SCHEMA, PAUSE_SCHEMA, SAMPLE_SCHEMA, NormalisedActivity, frame_from_rows
from pipeline.warehouse.frames import conform

__all__ = ["FileLoad", "PreparedFile", "activity_frames", "prepare_file", "CHILD_TABLES", "DUPLICATE_COLUMNS"]

#: Per-activity tables and the column each activity's rows are stored in order of (rows are
#: appended activity by activity, so a run's samples lie together, in time order).
CHILD_TABLES = (
    ("samples", SAMPLE_SCHEMA, "t_utc"),
    ("laps", LAP_SCHEMA, "lap_index"),
    ("pauses", PAUSE_SCHEMA, "pause_index"),
)

#: What ``activity_duplicates`` keeps of a duplicate's activity row (plus duplicate_of, _run_id).
DUPLICATE_COLUMNS = [
    "activity_id",
    "athlete_id",
    "sport",
    "start_utc",
    "end_utc",
    "distance_m",
    "n_samples",
    "device_manufacturer",
    "device_product",
    "source_file",
    "source_sha256",
]


@dataclass(frozen=True)
class FileLoad:
    """One source file for :meth:`Warehouse.load_files` (the arguments of :meth:`Warehouse.load_file`)."""

    ledger: dict[str, Any]
    activities: list[NormalisedActivity]
    duplicates: dict[str, str] = field(default_factory=dict)


@dataclass
class PreparedFile:
    row: dict[str, Any]
    activities: list[tuple[str, pl.DataFrame, list[tuple[str, pl.DataFrame]]]]
    duplicates: dict[str, str]



def activity_frames(rows: list[tuple[dict[str, Any], str]]) -> list[pl.DataFrame]:
    """One-row ``ACTIVITY_SCHEMA`` frames of ``(activity row, where)`` pairs, built as one frame.

    A key outside the schema, a value that does not fit or one that would
    become null (a wrong type) is an error naming its ``where``.
    """
    for row, where in rows:
        unknown = sorted(set(row) - set(ACTIVITY_SCHEMA))
        if unknown:
            raise WarehouseError(f"{where}: activity has keys outside ACTIVITY_SCHEMA: {unknown}")
    try:
        frame = frame_from_rows([row for row, _ in rows], ACTIVITY_SCHEMA)
    except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:
        for row, where in rows:  # which one
            try:
                frame_from_rows([row], ACTIVITY_SCHEMA)
            except (pl.exceptions.PolarsError, TypeError, ValueError) as one:
                raise WarehouseError(f"{where}: activity row does not fit ACTIVITY_SCHEMA: {one}") from one
        raise WarehouseError(f"{rows[0][1]}: activity rows do not fit ACTIVITY_SCHEMA: {exc}") from exc
    names = list(ACTIVITY_SCHEMA)
    nulls = frame.select(pl.all().is_null()).rows()
    for (row, where), is_null in zip(rows, nulls, strict=True):
        lost = [
            name
            for name, null in zip(names, is_null, strict=True)
            if null
            and row.get(name) is not None
            and not (isinstance(row[name], float) and math.isnan(row[name]))
        ]
        if lost:
            raise WarehouseError(f"{where}: activity values of the wrong type for {lost}")
    return [frame.slice(i, 1) for i in range(frame.height)]



def prepare_file(
    row: dict[str, Any], pairs: list[tuple[NormalisedActivity, pl.DataFrame]], duplicates: dict[str, str]
) -> PreparedFile:
    """Check one file of a load (its activities with their row frames); nothing is written."""
    where = row["path"]
    activities = [act for act, _ in pairs]
    if not activities:
        raise WarehouseError(f"{where}: load_file without activities; use record_file (skipped/rejected)")
    ids = [a.activity_id for a in activities]
    if len(set(ids)) != len(ids):
        raise WarehouseError(f"{where}: activity ids repeat within the file: {ids}")
    stray = sorted(set(duplicates) - set(ids))
    if stray:
        raise WarehouseError(f"{where}: duplicates name activities not in this file: {stray}")
    circular = sorted(k for k, v in duplicates.items() if v in duplicates or v == k)
    if circular:
        raise WarehouseError(f"{where}: duplicates point at other duplicates: {circular}")

    prepared = []
    for act, frame in pairs:
        aid = act.activity_id
        what = f"{where} activity {aid}"
        sha = frame["source_sha256"][0]
        if sha is not None and sha != row["sha256"]:
            raise WarehouseError(f"{what}: source_sha256 {sha} differs from the ledger's {row['sha256']}")
        children = []
        if aid not in duplicates:
            for table, schema, order in CHILD_TABLES:
                df = conform(getattr(act, table), schema, f"{what} {table}")
                if not df[order].is_sorted(nulls_last=True):
                    df = df.sort(order, nulls_last=True, maintain_order=True)
                ids_col = df["activity_id"]
                foreign = ids_col.null_count() + (ids_col != aid).sum()
                if foreign:
                    raise WarehouseError(f"{what} {table}: {foreign} rows carry another activity_id")
                untimed = df["t_utc"].null_count() if table == "samples" else 0
                if untimed and act.activity.get("start_utc") is not None:  # only a device-clock run has none
                    raise WarehouseError(f"{what} samples: {untimed} rows without t_utc in a dated activity")
                if df.height:
                    children.append((table, df))
        prepared.append((aid, frame, children))

    if row["status"] is None:
        row["status"] = "duplicate" if all(aid in duplicates for aid in ids) else "loaded"
    if row["status"] not in ("loaded", "duplicate"):
        raise WarehouseError(f"{where}: load_file status must be loaded or duplicate (got {row['status']!r})")
    if row["activity_ids"] is None:
        row["activity_ids"] = ids
    if row["duplicate_of"] is None and row["status"] == "duplicate":
        row["duplicate_of"] = ",".join(dict.fromkeys(duplicates.values()))
    if row["athlete_id"] is None:
        row["athlete_id"] = activities[0].activity.get("athlete_id")
    return PreparedFile(row=row, activities=prepared, duplicates=duplicates)
