"""The DuckDB warehouse the ingest writes and the reports read.

One writer at a time: :meth:`Warehouse.open` takes an exclusive OS lock on
``<path>.lock`` before DuckDB opens the file, then applies pending
migrations (:mod:`pipeline.warehouse.migrations`). Every write that belongs
together (one source file, one pain recomputation) is one transaction;
frames go in through Arrow (``con.register``), never row by row.

The connection's ``TimeZone`` is ``UTC`` and every instant column is
``TIMESTAMPTZ``, so an instant read back is the instant written whatever the
machine's zone. Frames read back are cast to the exact :mod:`pipeline.schema`
dtypes (datetimes converted to UTC).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import polars as pl

from pipeline.errors import WarehouseError
from pipeline.schema import (
    ACTIVITY_SCHEMA,
    PAIN_REPORT_SCHEMA,
    RUNNING_SPORTS,
    SAMPLE_SCHEMA,
    NormalisedActivity,
    as_utc,
)
from pipeline.warehouse._lock import WriteLock, lock_path_for
from pipeline.warehouse.content import content_fingerprint
from pipeline.warehouse.frames import ATHLETE_SCHEMA, REJECTED_PAIN_SCHEMA, conform
from pipeline.warehouse.loads import CHILD_TABLES, DUPLICATE_COLUMNS, FileLoad, activity_frames, prepare_file
from pipeline.warehouse.migrations import apply_migrations
from pipeline.warehouse.overlap import OverlapIndex, best_overlap

__all__ = ["Warehouse", "FileLoad", "LEDGER_KEYS", "FILE_STATUSES"]

log = logging.getLogger(__name__)

#: Ledger statuses, in the order :meth:`Warehouse.file_known` prefers them.
FILE_STATUSES = ("loaded", "duplicate", "skipped", "rejected")

#: Keys a ledger dict may carry (``path`` and ``sha256`` are required).
LEDGER_KEYS = frozenset(
    {
        "path",
        "sha256",
        "size_bytes",
        "format",
        "status",
        "reason",
        "activity_ids",
        "duplicate_of",
        "athlete_id",
        "run_id",
        "first_seen_utc",
        "mtime_ns",
    }
)

_PAIN_JOIN_COLUMNS = [c for c in PAIN_REPORT_SCHEMA if c != "report_id"]

#: The ``files`` table as a frame (the ledger rows of a batch go in through Arrow).
_LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "path": pl.String(),
    "sha256": pl.String(),
    "size_bytes": pl.Int64(),
    "format": pl.String(),
    "status": pl.String(),
    "reason": pl.String(),
    "activity_ids": pl.List(pl.String()),
    "duplicate_of": pl.String(),
    "athlete_id": pl.String(),
    "first_seen_utc": pl.Datetime("us", "UTC"),
    "updated_utc": pl.Datetime("us", "UTC"),
    "run_id": pl.String(),
    "mtime_ns": pl.Int64(),
}


#: DuckDB buffer pool of the writer (see :meth:`Warehouse.open`): with two decoder
#: processes the ingest's process tree stays under 1.5 GB (docs/performance.md).
WRITER_MEMORY_LIMIT = "384MB"
#: DuckDB threads while the ingest loads (:meth:`Warehouse.loading`).
LOAD_THREADS = 1
#: Tables without a ``_run_id`` column: a sample's run is its activity's (migration 5). The
#: same string on every sample row cost DuckDB ~0.2 us of the ~0.7 us it spends per appended row.
_RUN_VIA_ACTIVITY = frozenset({"samples"})


def _copy_file(src: Any, out: Any) -> None:
    """Copy ``src`` to ``out`` (binary files) in the kernel when it can (``copy_file_range``:
    no round trip through Python, and a reflink on file systems that share blocks)."""
    size = os.fstat(src.fileno()).st_size
    copied = 0
    try:
        while copied < size:
            n = os.copy_file_range(src.fileno(), out.fileno(), size - copied)
            if n == 0:
                break
            copied += n
    except OSError:  # not supported here (other file system, old kernel): copy in Python
        pass
    src.seek(copied)
    out.seek(copied)
    while chunk := src.read(1 << 20):
        out.write(chunk)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _cols(schema: dict[str, pl.DataType]) -> str:
    return ", ".join(f'"{name}"' for name in schema)


class Warehouse:
    """The read-write warehouse, held by one process at a time.

    Use :meth:`open` (not the constructor), preferably as a context manager::

        with Warehouse.open(settings.warehouse_path) as wh:
            run_id = wh.begin_run(command="ingest")
            ...
            wh.finish_run(run_id, status="ok", summary={...})
            wh.publish_snapshot(settings.snapshot_path)
    """

    def __init__(self, path: Path, con: Any, lock: WriteLock) -> None:
        self.path = path
        self._con = con
        self._lock = lock
        self._active_run: str | None = None

    # ------------------------------------------------------------------ open/close

    @classmethod
    def open(
        cls, path: Path, *, wait: bool = False, timeout_s: float | None = None, memory_limit: str = WRITER_MEMORY_LIMIT
    ) -> Warehouse:
        """Lock, open (creating it and its folder) and migrate the warehouse at ``path``.

        Parameters
        ----------
        path
            The DuckDB file; the lock is ``<path>.lock`` beside it.
        wait
            False: fail at once if another process holds the lock. True:
            retry until it is free, for up to ``timeout_s`` seconds.
        timeout_s
            How long ``wait=True`` waits; None (the default): for ever.
        memory_limit
            DuckDB's ``memory_limit`` for this connection (its buffer pool; beyond
            it DuckDB evicts written blocks and spills to ``<path>.tmp``). DuckDB's
            own default is 80 % of the machine's memory, which a long backfill
            fills with blocks it no longer needs.

        Raises
        ------
        WarehouseLocked
            Another process holds the lock (the message names its pid).
        WarehouseError
            The file cannot be opened or migrated.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WarehouseError(f"{path.parent}: cannot create the warehouse folder: {exc}") from exc
        lock = WriteLock(lock_path_for(path))
        lock.acquire(wait=wait, timeout_s=timeout_s)
        try:
            try:
                con = duckdb.connect(str(path), config={"memory_limit": memory_limit})
            except duckdb.Error as exc:
                raise WarehouseError(
                    f"{path}: cannot open the warehouse (is another program, e.g. a duckdb CLI, "
                    f"holding it open?): {exc}"
                ) from exc
            try:
                con.execute("SET TimeZone = 'UTC'")
                con.complete()
                apply_migrations(con, where=str(path))
                wh = cls(path, con, lock)
                wh._close_stale_runs()
            except duckdb.Error as exc:
                con.close()
                raise WarehouseError(f"{path}: cannot prepare the warehouse: {exc}") from exc
            except BaseException:
                con.close()
                raise
        except BaseException:
            lock.release()
            raise
        log.info("opened warehouse %s", path)
        return wh

    def close(self) -> None:
        """Close the connection and release the lock (idempotent)."""
        con, self._con = self._con, None
        if con is not None:
            try:
                con.close()
            finally:
                self._lock.release()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and self._active_run is not None and self._con is not None:
            try:
                self.finish_run(self._active_run, status="failed", summary={"error": repr(exc)})
            except Exception:  # the original exception matters more
                log.exception("could not record the failed run %s", self._active_run)
        self.close()

    # ------------------------------------------------------------------ helpers

    @property
    def _db(self) -> Any:
        if self._con is None:
            raise WarehouseError(f"{self.path}: warehouse is closed")
        return self._con

    def _exec(self, sql: str, params: dict[str, Any] | None = None) -> None:
        """Run a statement to its end (no result)."""
        if params:
            self._db.execute(sql, params)
        else:
            self._db.execute(sql)
        self._db.complete()

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        # through Arrow/polars: DuckDB's own fetchall needs pytz for TIMESTAMPTZ
        return self._frame(sql, params).rows()

    def _frame(self, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
        try:
            rel = self._db.sql(sql, params=params) if params else self._db.sql(sql)
            return rel.pl() if rel is not None else pl.DataFrame()
        except duckdb.Error as exc:
            raise WarehouseError(f"{self.path}: {exc}") from exc

    @contextmanager
    def _transaction(self, what: str) -> Iterator[None]:
        """One transaction; any error rolls everything back and becomes a WarehouseError."""
        con = self._db
        con.begin()
        try:
            yield
        except BaseException as exc:
            try:
                con.rollback()
            except duckdb.Error:  # pragma: no cover - rollback after a fatal error
                log.exception("%s: rollback failed", what)
            if isinstance(exc, duckdb.Error):
                raise WarehouseError(f"{what}: {exc}") from exc
            raise
        else:
            try:
                con.commit()
            except duckdb.Error as exc:
                raise WarehouseError(f"{what}: commit failed: {exc}") from exc

    def _insert(self, table: str, df: pl.DataFrame, *, run_id: str | None, order_by: str | None) -> None:
        """Append ``df`` (already conformed) to ``table`` through Arrow, adding ``_run_id``
        (except to ``samples``, whose rows carry their run through their activity)."""
        if df.height == 0:
            return
        view = f"_in_{table}_{uuid.uuid4().hex[:8]}"
        # string views: no copy of the strings (activity_id on every sample row), and DuckDB reads them faster
        self._db.register(view, df.to_arrow(compat_level=pl.CompatLevel.newest()))
        try:
            order = f" ORDER BY {order_by}" if order_by else ""
            if table in _RUN_VIA_ACTIVITY:
                self._exec(f"INSERT INTO {table} BY NAME SELECT * FROM {view}{order}")
            else:
                self._exec(
                    f"INSERT INTO {table} BY NAME SELECT *, CAST($run_id AS VARCHAR) AS _run_id FROM {view}{order}",
                    {"run_id": run_id},
                )
        finally:
            self._db.unregister(view)

    @contextmanager
    def loading(self) -> Iterator[None]:
        """A long run of :meth:`load_files` calls (the ingest): DuckDB works on one thread.

        Its appends need ~0.7 us of CPU per sample row on one thread and ~1.2 us on
        two; the ingest's decoder processes have the other cores.
        """
        self._exec(f"SET threads = {LOAD_THREADS}")
        try:
            yield
        finally:
            if self._con is not None:
                self._exec("RESET threads")

    def _run_for(self, ledger: dict[str, Any] | None = None) -> str:
        run_id = (ledger or {}).get("run_id") or self._active_run
        if not run_id:
            raise WarehouseError(f"{self.path}: no ingest run: call begin_run() first")
        return str(run_id)

    def _close_stale_runs(self) -> None:
        """Runs left 'running' by a process that died: we hold the lock, so they are over."""
        stale = self._rows(
            "UPDATE _ingest_runs SET status = 'interrupted', finished_utc = $t "
            "WHERE status = 'running' RETURNING run_id",
            {"t": _now()},
        )
        for (run_id,) in stale:
            log.warning("%s: ingest run %s never finished; marked interrupted", self.path, run_id)

    # ------------------------------------------------------------------ runs

    def begin_run(self, *, command: str) -> str:
        """Record the start of an ingest run; later writes carry its id.

        Returns
        -------
        str
            The new run id (uuid4 hex).
        """
        if self._active_run is not None:
            raise WarehouseError(f"{self.path}: run {self._active_run} is still open; finish it first")
        run_id = uuid.uuid4().hex
        try:
            self._exec(
                "INSERT INTO _ingest_runs (run_id, command, started_utc, status, pid) "
                "VALUES ($r, $c, $t, 'running', $p)",
                {"r": run_id, "c": command, "t": _now(), "p": os.getpid()},
            )
        except duckdb.Error as exc:
            raise WarehouseError(f"{self.path}: cannot record the run: {exc}") from exc
        self._active_run = run_id
        return run_id

    def finish_run(self, run_id: str, *, status: str, summary: dict[str, Any]) -> None:
        """Close run ``run_id`` with ``status`` (e.g. ok, failed) and a JSON ``summary``."""
        text = json.dumps(summary, default=str, sort_keys=True)
        try:
            done = self._rows(
                "UPDATE _ingest_runs SET finished_utc = $t, status = $s, summary = $j "
                "WHERE run_id = $r RETURNING run_id",
                {"t": _now(), "s": status, "j": text, "r": run_id},
            )
        except duckdb.Error as exc:
            raise WarehouseError(f"{self.path}: cannot finish run {run_id}: {exc}") from exc
        if not done:
            raise WarehouseError(f"{self.path}: unknown run {run_id}")
        if self._active_run == run_id:
            self._active_run = None

    # ------------------------------------------------------------------ ledger

    def ledger(self) -> pl.DataFrame:
        """The ``files`` table (one row per path and content hash), oldest first."""
        return self._frame("SELECT * FROM files ORDER BY first_seen_utc, path, sha256")

    def file_known(self, sha256: str) -> str | None:
        """Status of a ledgered file with this content hash, or None if never seen.

        When several paths share the hash the most final status wins:
        loaded > duplicate > skipped > rejected.
        """
        statuses = {s for (s,) in self._rows("SELECT DISTINCT status FROM files WHERE sha256 = $s", {"s": sha256})}
        for status in FILE_STATUSES:
            if status in statuses:
                return status
        return None

    def missing_files(self, present_paths: set[str]) -> list[str]:
        """Ledgered paths not in ``present_paths`` (files deleted from disk); rows are kept."""
        paths = [p for (p,) in self._rows("SELECT DISTINCT path FROM files ORDER BY path")]
        return [p for p in paths if p not in present_paths]

    def _ledger_row(self, ledger: dict[str, Any], *, run_id: str) -> dict[str, Any]:
        unknown = sorted(set(ledger) - LEDGER_KEYS)
        if unknown:
            raise WarehouseError(f"ledger row for {ledger.get('path')!r}: unknown keys {unknown}")
        for key in ("path", "sha256"):
            if not ledger.get(key):
                raise WarehouseError(f"ledger row {ledger!r}: {key} is required")
        row = {key: ledger.get(key) for key in LEDGER_KEYS}
        row["path"] = str(row["path"])
        row["run_id"] = run_id
        ids = row["activity_ids"]
        if isinstance(ids, str):
            ids = [part for part in ids.split(",") if part]
        row["activity_ids"] = list(ids) if ids is not None else None
        first = row["first_seen_utc"]
        row["first_seen_utc"] = as_utc(first) if isinstance(first, datetime) else _now()
        for key in ("size_bytes", "mtime_ns"):
            if row[key] is not None:
                row[key] = int(row[key])
        return row

    def _upsert_ledger(self, row: dict[str, Any]) -> None:
        """Insert or update the ``files`` row keyed by (sha256, path); first_seen_utc is kept."""
        existing = self._rows(
            "SELECT status FROM files WHERE sha256 = $s AND path = $p", {"s": row["sha256"], "p": row["path"]}
        )
        params = {
            "path": row["path"],
            "sha": row["sha256"],
            "size": row["size_bytes"],
            "fmt": row["format"],
            "status": row["status"],
            "reason": row["reason"],
            "ids": row["activity_ids"],
            "dup": row["duplicate_of"],
            "ath": row["athlete_id"],
            "now": _now(),
            "run": row["run_id"],
            "mtime": row["mtime_ns"],
        }
        if existing:
            self._exec(
                "UPDATE files SET size_bytes = $size, format = $fmt, status = $status, reason = $reason, "
                "activity_ids = CAST($ids AS VARCHAR[]), duplicate_of = $dup, athlete_id = $ath, "
                "updated_utc = $now, run_id = $run, mtime_ns = $mtime WHERE sha256 = $sha AND path = $path",
                params,
            )
        else:
            params["first"] = row["first_seen_utc"]
            self._exec(
                "INSERT INTO files (path, sha256, size_bytes, format, status, reason, activity_ids, "
                "duplicate_of, athlete_id, first_seen_utc, updated_utc, run_id, mtime_ns) VALUES ($path, $sha, $size, "
                "$fmt, $status, $reason, CAST($ids AS VARCHAR[]), $dup, $ath, $first, $now, $run, $mtime)",
                params,
            )

    def record_file(self, *, ledger: dict[str, Any]) -> None:
        """Ledger a file that loads nothing: ``status`` duplicate, skipped or rejected.

        Upserts by (sha256, path). ``reason`` is required for skipped and
        rejected files. A row already ``loaded`` is never downgraded.
        """
        run_id = self._run_for(ledger)
        row = self._ledger_row(ledger, run_id=run_id)
        if row["status"] not in ("duplicate", "skipped", "rejected"):
            raise WarehouseError(
                f"{row['path']}: record_file takes status duplicate, skipped or rejected "
                f"(got {row['status']!r}); loaded files go through load_file"
            )
        if row["status"] in ("skipped", "rejected") and not row["reason"]:
            raise WarehouseError(f"{row['path']}: a {row['status']} file needs a reason")
        with self._transaction(f"{row['path']}: ledger"):
            existing = self._rows(
                "SELECT status FROM files WHERE sha256 = $s AND path = $p", {"s": row["sha256"], "p": row["path"]}
            )
            if existing and existing[0][0] == "loaded":
                raise WarehouseError(
                    f"{row['path']}: already loaded with this content; refusing to mark it {row['status']}"
                )
            self._upsert_ledger(row)

    # ------------------------------------------------------------------ activities

    def load_file(
        self,
        *,
        ledger: dict[str, Any],
        activities: list[NormalisedActivity],
        duplicates: dict[str, str] | None = None,
    ) -> None:
        """Load one source file's activities and its ledger row in ONE transaction.

        Parameters
        ----------
        ledger
            The ``files`` row: ``path``, ``sha256`` required; ``size_bytes``,
            ``format``, ``status`` (default ``loaded``, or ``duplicate`` when
            every activity is a duplicate), ``reason``, ``activity_ids``
            (default: the ids loaded), ``duplicate_of``, ``athlete_id``,
            ``run_id`` (default: the run from :meth:`begin_run`),
            ``first_seen_utc`` optional. Other keys are an error.
        activities
            The file's activities in the normalised schema.
        duplicates
            ``{new activity_id: existing activity_id}``: these activities are
            recorded in ``activity_duplicates`` only (not in ``activities``,
            and without samples, laps or pauses), so no query counts a run twice.

        Notes
        -----
        Idempotent: if a file with this ``sha256`` is already ledgered as
        loaded or duplicate, nothing is written. On any error nothing is
        written (the transaction rolls back) and :class:`WarehouseError`
        names the file.
        """
        self.load_files([FileLoad(ledger=ledger, activities=activities, duplicates=duplicates or {})])

    def load_files(self, files: Sequence[FileLoad]) -> None:
        """Load several files as :meth:`load_file` does, all in ONE transaction.

        One Arrow append per table for the whole batch: the ingest's writer
        loads ~50 files at a time this way, at the speed of DuckDB's appender
        rather than of one transaction per file. Every file is checked before
        anything is written; any error rolls the whole batch back and names
        the file. A file whose content is already loaded or a duplicate (in
        the warehouse or earlier in the batch) is skipped, as in
        :meth:`load_file`. A duplicate may point at an activity of an earlier
        file of the same batch.
        """
        if not files:
            return
        run_id = self._run_for(files[0].ledger)
        rows = [self._ledger_row(f.ledger, run_id=self._run_for(f.ledger)) for f in files]
        shas = sorted({r["sha256"] for r in rows})
        known = {
            sha for (sha,) in self._rows(
                "SELECT DISTINCT sha256 FROM files WHERE list_contains($s, sha256) "
                "AND status IN ('loaded', 'duplicate')",
                {"s": shas},
            )
        }
        todo: list[tuple[FileLoad, dict[str, Any]]] = []
        for file, row in zip(files, rows, strict=True):
            if row["sha256"] in known:
                log.info("%s: content %s already loaded or a duplicate; not loaded again",
                         row["path"], row["sha256"][:16])
                continue
            known.add(row["sha256"])
            todo.append((file, row))
        frames = iter(activity_frames([
            (act.activity, f"{row['path']} activity {act.activity_id}") for file, row in todo for act in file.activities
        ]))
        prepared = [
            prepare_file(row, [(act, next(frames)) for act in file.activities], dict(file.duplicates))
            for file, row in todo
        ]
        if not prepared:
            return

        tables: dict[str, list[pl.DataFrame]] = {"activities": [], "activity_duplicates": []}
        tables.update({table: [] for table, _, _ in CHILD_TABLES})
        targets: set[str] = set()
        for p in prepared:
            for aid, frame, children in p.activities:
                if aid in p.duplicates:
                    tables["activity_duplicates"].append(frame.select(DUPLICATE_COLUMNS).with_columns(
                        duplicate_of=pl.lit(p.duplicates[aid], dtype=pl.String())
                    ))
                else:
                    tables["activities"].append(frame)
                for table, df in children:
                    tables[table].append(df)
            targets.update(p.duplicates.values())
        where = prepared[0].row["path"] if len(prepared) == 1 else f"{len(prepared)} files from {prepared[0].row['path']}"
        with self._transaction(f"{where}: load"):
            for table, frames in tables.items():
                if frames:
                    self._insert(table, pl.concat(frames, how="vertical"), run_id=run_id, order_by=None)
            if targets:
                found = {
                    a for (a,) in self._rows(
                        "SELECT activity_id FROM activities WHERE list_contains($t, activity_id)",
                        {"t": sorted(targets)},
                    )
                }
                for p in prepared:
                    absent = sorted(set(p.duplicates.values()) - found)
                    if absent:
                        raise WarehouseError(f"{p.row['path']}: duplicates point at unknown activities {absent}")
            self._insert_ledger([p.row for p in prepared])
        for p in prepared:
            n_samples = sum(df.height for _, _, ch in p.activities for t, df in ch if t == "samples")
            log.info("%s: loaded %d activities (%d duplicates recorded), %d samples",
                     p.row["path"], len(p.activities) - len(p.duplicates), len(p.duplicates), n_samples)

    def _insert_ledger(self, rows: list[dict[str, Any]]) -> None:
        """Ledger rows of loaded files: new (sha256, path) keys in one append, known ones updated."""
        keys = [f"{r['sha256']}\x1f{r['path']}" for r in rows]
        existing = {
            k for (k,) in self._rows(
                "SELECT sha256 || chr(31) || path FROM files WHERE list_contains($k, sha256 || chr(31) || path)",
                {"k": keys},
            )
        }
        fresh = []
        for key, row in zip(keys, rows, strict=True):
            if key in existing:
                self._upsert_ledger(row)
            else:
                fresh.append(row)
        if fresh:
            now = _now()
            frame = pl.DataFrame(
                {name: [now if name == "updated_utc" else r[name] for r in fresh] for name in _LEDGER_SCHEMA},
                schema=_LEDGER_SCHEMA,
            )
            view = f"_in_files_{uuid.uuid4().hex[:8]}"
            self._db.register(view, frame.to_arrow())
            try:
                self._exec(f"INSERT INTO files BY NAME SELECT * FROM {view}")
            finally:
                self._db.unregister(view)

    def find_overlapping(
        self,
        *,
        athlete_id: str,
        start_utc: datetime,
        end_utc: datetime | None,
        min_overlap: float = 0.5,
    ) -> str | None:
        """An activity of ``athlete_id`` overlapping ``[start_utc, end_utc]`` by at least
        ``min_overlap`` of the shorter of the two spans, or None.

        Duplicates are never returned (they are not in ``activities``). With several
        matches the largest overlap fraction wins, then the longer overlap,
        then the earlier start. A zero-length span overlaps fully when it
        lies inside the other; ``end_utc=None`` is such a span. Naive datetimes
        are taken as UTC.
        """
        start = as_utc(start_utc)
        end = as_utc(end_utc) if end_utc is not None else start
        rows = self._rows(
            "SELECT start_utc, coalesce(end_utc, start_utc) AS end_utc, activity_id FROM activities "
            "WHERE athlete_id = $a AND start_utc <= $e AND coalesce(end_utc, start_utc) >= $s",
            {"a": athlete_id, "s": start, "e": max(start, end)},
        )
        return best_overlap(rows, start, end, min_overlap=min_overlap)

    def overlap_index(self) -> OverlapIndex:
        """Every stored activity's span, for :meth:`OverlapIndex.find` without a query per file."""
        index = OverlapIndex()
        rows = self._rows(
            "SELECT athlete_id, activity_id, start_utc, coalesce(end_utc, start_utc) FROM activities "
            "WHERE start_utc IS NOT NULL ORDER BY athlete_id, start_utc, activity_id"
        )
        for athlete_id, activity_id, start, end in rows:
            index.add(athlete_id, activity_id, start, max(start, end))
        return index

    def activities(self, *, running_only: bool = False) -> pl.DataFrame:
        """Activities in :data:`ACTIVITY_SCHEMA` (duplicates are not among them), by athlete and start."""
        where = "true"
        params = None
        if running_only:
            where = "list_contains($sports, sport)"
            params = {"sports": sorted(RUNNING_SPORTS)}
        df = self._frame(
            f"SELECT {_cols(ACTIVITY_SCHEMA)} FROM activities WHERE {where} "
            "ORDER BY athlete_id, start_utc, activity_id",
            params,
        )
        return conform(df, ACTIVITY_SCHEMA, "activities")

    def samples_for(self, activity_ids: list[str], *, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """Samples of ``activity_ids`` in :data:`SAMPLE_SCHEMA`, by activity_id then t_utc.

        ``columns`` (a subset of the schema's, ``activity_id`` always included)
        keeps the frame small when a caller needs a few of them.
        """
        schema = SAMPLE_SCHEMA
        if columns is not None:
            unknown = sorted(set(columns) - set(SAMPLE_SCHEMA))
            if unknown:
                raise WarehouseError(f"samples_for: unknown columns {unknown}")
            wanted = {"activity_id", *columns}
            schema = {name: dtype for name, dtype in SAMPLE_SCHEMA.items() if name in wanted}
        ids = pl.DataFrame({"activity_id": list(dict.fromkeys(activity_ids))}, schema={"activity_id": pl.String()})
        view = f"_ids_{uuid.uuid4().hex[:8]}"
        self._db.register(view, ids.to_arrow())
        try:
            cols = ", ".join(f's."{c}"' for c in schema)
            df = self._frame(
                f"SELECT {cols} FROM samples s SEMI JOIN {view} i ON s.activity_id = i.activity_id "
                "ORDER BY s.activity_id, s.t_utc, s.elapsed_s"
            )
        finally:
            self._db.unregister(view)
        return conform(df, schema, "samples")

    # ------------------------------------------------------------------ athletes, pain

    def upsert_athletes(self, athletes: pl.DataFrame) -> None:
        """Insert or replace athletes by ``athlete_id`` (absent athletes are kept)."""
        df = conform(athletes, ATHLETE_SCHEMA, "athletes")
        dupes = df.filter(pl.col("athlete_id").is_duplicated())["athlete_id"].unique().to_list()
        if dupes or df["athlete_id"].null_count():
            raise WarehouseError(f"athletes: athlete_id must be unique and present (repeated: {dupes})")
        df = df.with_columns(updated_utc=pl.lit(_now(), dtype=pl.Datetime("us", "UTC")))
        with self._transaction("athletes"):
            view = f"_in_athletes_{uuid.uuid4().hex[:8]}"
            self._db.register(view, df.to_arrow())
            try:
                self._exec(
                    f"INSERT OR REPLACE INTO athletes BY NAME SELECT *, CAST($r AS VARCHAR) AS _run_id FROM {view}",
                    {"r": self._active_run},
                )
            finally:
                self._db.unregister(view)

    def replace_pain(self, *, reports: pl.DataFrame, rejected_rows: pl.DataFrame) -> None:
        """Replace the current pain reports, keeping history, in one transaction.

        Parameters
        ----------
        reports
            Every athlete's reports in :data:`PAIN_REPORT_SCHEMA` (recomputed each run).
            A stored report whose ``report_id`` is absent gets ``superseded_utc``
            (an edited CSV row has a new id, so its old version stays as history);
            a present one gets the new join columns (and is un-superseded);
            a new one is inserted with ``first_seen_utc``.
        rejected_rows
            ``source_file, line, reason`` of malformed rows; replaces
            ``pain_rows_rejected``.
        """
        df = conform(reports, PAIN_REPORT_SCHEMA, "pain reports")
        rejected = conform(rejected_rows, REJECTED_PAIN_SCHEMA, "rejected pain rows")
        repeated = df.filter(pl.col("report_id").is_duplicated())
        if repeated.height or df["report_id"].null_count():
            places = [f"{r['source_file']}:{r['line']}" for r in repeated.iter_rows(named=True)]
            raise WarehouseError(f"pain reports: report_id must be unique and present (repeated at {places})")
        now, run = _now(), self._active_run
        view = f"_in_pain_{uuid.uuid4().hex[:8]}"
        with self._transaction("pain reports"):
            self._db.register(view, df.to_arrow())
            try:
                self._exec(
                    f"UPDATE pain_reports SET superseded_utc = $now WHERE superseded_utc IS NULL "
                    f"AND report_id NOT IN (SELECT report_id FROM {view})",
                    {"now": now},
                )
                sets = ", ".join(f'"{c}" = i."{c}"' for c in _PAIN_JOIN_COLUMNS)
                self._exec(
                    f"UPDATE pain_reports SET {sets}, superseded_utc = NULL, _run_id = CAST($run AS VARCHAR) "
                    f"FROM {view} i WHERE pain_reports.report_id = i.report_id",
                    {"run": run},
                )
                self._exec(
                    f"INSERT INTO pain_reports BY NAME SELECT i.*, CAST($now AS TIMESTAMPTZ) AS first_seen_utc, "
                    f"CAST($run AS VARCHAR) AS _run_id FROM {view} i "
                    f"WHERE i.report_id NOT IN (SELECT report_id FROM pain_reports) "
                    "ORDER BY i.athlete_id, i.date_local",
                    {"now": now, "run": run},
                )
            finally:
                self._db.unregister(view)
            self._exec("DELETE FROM pain_rows_rejected")
            self._insert("pain_rows_rejected", rejected, run_id=run, order_by="source_file, line")

    # ------------------------------------------------------------------ reading, snapshot

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
        """Run a trusted internal SQL statement (reports); named params ``$name``.

        Returns the result as a polars frame (an empty frame for statements
        without a result).
        """
        return self._frame(sql, params)

    def content_fingerprint(self) -> str:
        """Hex digest of what the warehouse says, bookkeeping columns left out.

        Equal fingerprints mean equal content (see
        :mod:`pipeline.warehouse.content`); the nightly job rebuilds the
        reports only when it changes.
        """
        return content_fingerprint(self._frame)

    def publish_snapshot(self, dest: Path) -> None:
        """Publish a complete read-only copy of the warehouse at ``dest``, atomically.

        CHECKPOINT (so the file holds everything), copy to a temporary file in
        ``dest``'s folder, fsync, ``os.replace``: a reader sees the old or the
        new snapshot, never a torn one; readers holding the old file keep it.
        Temporary files left by a publisher that was killed half-way are
        removed first (only the lock holder publishes, so none is in use).
        """
        dest = Path(dest)
        log.info("publishing snapshot %s", dest)
        try:
            self._exec("FORCE CHECKPOINT")
        except duckdb.Error as exc:
            raise WarehouseError(f"{self.path}: checkpoint before snapshot failed: {exc}") from exc
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            for stale in dest.parent.glob(f".{dest.name}.*.tmp"):
                log.warning("removing %s, left by a snapshot publish that did not finish", stale)
                stale.unlink(missing_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        except OSError as exc:
            raise WarehouseError(f"{dest}: cannot create the snapshot: {exc}") from exc
        tmp = Path(tmp_name)
        try:
            with open(self.path, "rb") as src, os.fdopen(fd, "wb") as out:
                _copy_file(src, out)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
            dir_fd = os.open(dest.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise WarehouseError(f"{dest}: cannot publish the snapshot: {exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log.info("published snapshot %s", dest)
