"""What a warehouse *says*, apart from when and by which run it was written.

Re-running an ingest on the same raw files must not change what the
warehouse says; it does change its bookkeeping: run ids, load timestamps and
``_ingest_runs``. :data:`BOOKKEEPING_COLUMNS` names those columns, table by
table (``docs/warehouse.md``, "Content and bookkeeping", explains each), and
:func:`content_fingerprint` hashes everything else. The nightly job compares
fingerprints to rebuild the reports only when the content changed; the crash
tests compare content digests of a killed-and-resumed run with a clean one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import polars as pl

__all__ = ["BOOKKEEPING_TABLES", "BOOKKEEPING_COLUMNS", "COUNTED_TABLES", "content_fingerprint"]

#: Tables that are bookkeeping through and through (one row per run / per migration).
BOOKKEEPING_TABLES = ("_ingest_runs", "_migrations")

#: ``{table: columns}`` recording when or by which run a row was (re)written.
BOOKKEEPING_COLUMNS: dict[str, tuple[str, ...]] = {
    "activities": ("_run_id",),
    "laps": ("_run_id",),
    "pauses": ("_run_id",),
    "activity_duplicates": ("_run_id",),
    "athletes": ("updated_utc", "_run_id"),
    "pain_reports": ("first_seen_utc", "_run_id"),
    "pain_rows_rejected": ("_run_id",),
    "files": ("first_seen_utc", "updated_utc", "run_id", "mtime_ns"),
}


#: Tables whose rows are counted, not hashed: a file's samples, laps and pauses are written
#: only with its ``activities`` row (one transaction, ``Warehouse.load_files``), are a function
#: of the file's bytes (``activities.source_sha256``, hashed with the activity) and the pipeline
#: version (a new version rebuilds the reports anyway), and are never edited in place. Hashing
#: the samples cost ~0.1 s per million rows on every nightly run.
COUNTED_TABLES = ("samples", "laps", "pauses")


def content_fingerprint(query: Callable[[str], pl.DataFrame]) -> str:
    """A hex digest of every content table without its bookkeeping columns.

    Parameters
    ----------
    query
        Runs trusted SQL on the warehouse (``Warehouse.query``).

    Notes
    -----
    Order-independent (a sum of DuckDB row hashes per table, with the row
    count) and cheap: the per-activity tables of :data:`COUNTED_TABLES`
    (hundreds of millions of samples after years of history) are counted,
    not hashed.
    It includes the schema version, so a migration that changes a view
    changes the fingerprint. DuckDB's ``hash`` may change between DuckDB
    versions: a fingerprint is only compared with one made by the same build.
    """
    tables = query(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'main' AND table_type = 'BASE TABLE' ORDER BY table_name"
    )["table_name"].to_list()
    parts: dict[str, Any] = {}
    for table in tables:
        if table in BOOKKEEPING_TABLES:
            continue
        if table in COUNTED_TABLES:
            parts[table] = [int(query(f"SELECT count(*) AS n FROM {_quote(table)}")["n"][0]), None]
            continue
        skip = BOOKKEEPING_COLUMNS.get(table, ())
        cols = f"* EXCLUDE ({', '.join(_quote(c) for c in skip)})" if skip else "*"
        row = query(
            f"SELECT count(*) AS n, CAST(coalesce(sum(CAST(hash(*COLUMNS({cols})) AS HUGEINT)), 0) AS VARCHAR) AS h "
            f"FROM {_quote(table)}"
        ).row(0)
        parts[table] = [int(row[0]), row[1]]
    parts["_schema_version"] = query("SELECT max(version) AS v FROM _migrations")["v"][0]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
