"""The coach's ``pipeline sql``: read-only queries against the published snapshot.

Two independent guards:

1. **Statement types.** DuckDB parses the text (``extract_statements``);
   only ``SELECT`` statements (which include ``WITH ... SELECT``, ``FROM``,
   ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``) and ``EXPLAIN
   [ANALYZE] <select>`` pass. COPY, EXPORT, ATTACH/DETACH, INSTALL/LOAD,
   SET/RESET, PRAGMA, CALL, DDL and DML are refused before anything runs.
2. **A locked, sealed connection.** The snapshot opens ``read_only`` with
   ``enable_external_access = false`` (no file or network access at all, so
   ``read_csv('/etc/passwd')``, ``glob`` or ``COPY ... TO`` fail inside a
   SELECT too), extension autoload/autoinstall off, no Python replacement
   scans, ``memory_limit`` and ``threads`` set, then ``lock_configuration``
   so no statement can loosen any of it.

The query runs in a thread of its own, so Ctrl-C reaches the caller's thread;
a watchdog thread interrupts the connection after ``timeout_s`` (or on Ctrl-C),
and again every quarter second until the query ends (an interrupt that lands
before DuckDB has started the query is lost).

Result columns whose DuckDB type polars cannot hold (``INTERVAL``,
``UNION``, also nested in lists and structs) come back as DuckDB's text
rendering of the value.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from pipeline.errors import QueryRefused, WarehouseError

__all__ = ["run_readonly_query", "open_readonly", "check_statements", "ALLOWED", "DEFAULT_MAX_ROWS"]

log = logging.getLogger(__name__)

#: Statement types that may run.
ALLOWED = frozenset({duckdb.StatementType.SELECT})

#: Largest result returned to the caller, rows.
DEFAULT_MAX_ROWS = 1_000_000
#: Past the time limit, the watchdog interrupts the query again this often (seconds).
_INTERRUPT_AGAIN_S = 0.25

_REFUSAL_HINT = {
    duckdb.StatementType.COPY: "COPY reads or writes files",
    duckdb.StatementType.COPY_DATABASE: "COPY DATABASE writes a database",
    duckdb.StatementType.EXPORT: "EXPORT DATABASE writes files",
    duckdb.StatementType.ATTACH: "ATTACH opens other databases",
    duckdb.StatementType.DETACH: "DETACH changes the attached databases",
    duckdb.StatementType.LOAD: "INSTALL/LOAD add extensions",
    duckdb.StatementType.EXTENSION: "extensions are disabled",
    duckdb.StatementType.SET: "SET/RESET/USE change the session",
    duckdb.StatementType.VARIABLE_SET: "SET VARIABLE changes the session",
    duckdb.StatementType.PRAGMA: "PRAGMA changes or inspects settings",
    duckdb.StatementType.CALL: "CALL runs table functions and procedures",
    duckdb.StatementType.CREATE: "the snapshot is read-only (CREATE)",
    duckdb.StatementType.INSERT: "the snapshot is read-only (INSERT)",
    duckdb.StatementType.UPDATE: "the snapshot is read-only (UPDATE)",
    duckdb.StatementType.DELETE: "the snapshot is read-only (DELETE)",
    duckdb.StatementType.DROP: "the snapshot is read-only (DROP)",
    duckdb.StatementType.ALTER: "the snapshot is read-only (ALTER)",
    duckdb.StatementType.MERGE_INTO: "the snapshot is read-only (MERGE)",
    duckdb.StatementType.VACUUM: "the snapshot is read-only (VACUUM)",
    duckdb.StatementType.TRANSACTION: "transactions are not needed for reading",
}

# EXPLAIN [ANALYZE|ANALYSE] <statement>, after leading comments/whitespace
_LEADING = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)
_EXPLAIN = re.compile(r"explain(?:\s+analy[sz]e)?\s+(?P<inner>.+)\Z", re.S | re.I)


def _statement_name(stmt: Any) -> str:
    return str(stmt.type).rsplit(".", 1)[-1]


def _refuse(stmt: Any, why: str) -> QueryRefused:
    text = " ".join(stmt.query.split())
    if len(text) > 80:
        text = text[:77] + "..."
    return QueryRefused(f"refused {_statement_name(stmt)} statement ({why}): {text}; only SELECT queries may run")


def check_statements(con: Any, sql: str) -> list[Any]:
    """Parse ``sql`` and return its statements if every one may run, else raise.

    Parameters
    ----------
    con
        Any DuckDB connection (used only to parse).
    sql
        One or more statements separated by ``;``.

    Raises
    ------
    QueryRefused
        A statement is not a SELECT (or EXPLAIN of one), or there is none.
    WarehouseError
        The text does not parse.
    """
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise WarehouseError(f"SQL does not parse: {exc}") from exc
    if not statements:
        raise QueryRefused("no SQL statement given")
    for stmt in statements:
        if stmt.type in ALLOWED:
            continue
        if stmt.type == duckdb.StatementType.EXPLAIN:
            body = stmt.query[_LEADING.match(stmt.query).end() :].rstrip().rstrip(";")
            match = _EXPLAIN.match(body)
            if match is None:
                raise _refuse(stmt, "EXPLAIN of an unrecognised form")
            try:
                inner = con.extract_statements(match.group("inner"))
            except duckdb.Error as exc:
                raise _refuse(stmt, f"EXPLAIN body does not parse: {exc}") from exc
            if len(inner) != 1 or inner[0].type not in ALLOWED:
                kinds = ", ".join(_statement_name(s) for s in inner)
                raise _refuse(stmt, f"EXPLAIN may only wrap a SELECT (got {kinds})")
            continue
        raise _refuse(stmt, _REFUSAL_HINT.get(stmt.type, "not a read-only query"))
    return statements


def open_readonly(snapshot: Path, *, memory_limit: str = "1GB", threads: int = 2) -> Any:
    """The sealed read-only DuckDB session :func:`run_readonly_query` uses.

    Read-only, no external access, no extension loading, no Python
    replacement scans, session TimeZone UTC, resource limits, and the
    configuration locked. The caller must ``close()`` it. Statement types are
    *not* checked here: pass SQL through :func:`check_statements` first.

    Raises
    ------
    WarehouseError
        The snapshot cannot be opened.
    """
    config = {
        "enable_external_access": False,
        "autoload_known_extensions": False,
        "autoinstall_known_extensions": False,
        "allow_community_extensions": False,
        "allow_unsigned_extensions": False,
        "memory_limit": memory_limit,
        "threads": int(threads),
        "temp_directory": "",
    }
    try:
        con = duckdb.connect(str(snapshot), read_only=True, config=config)
    except duckdb.Error as exc:
        raise WarehouseError(f"{snapshot}: cannot open the snapshot: {exc}") from exc
    try:
        # Settings from extensions (ICU's TimeZone) cannot be given to connect();
        # set them, then lock every setting for the rest of the session.
        for statement in (
            "SET TimeZone = 'UTC'",
            "SET python_enable_replacements = false",
            "SET lock_configuration = true",
        ):
            con.execute(statement)
            con.complete()
    except duckdb.Error as exc:
        con.close()
        raise WarehouseError(f"{snapshot}: cannot seal the query session: {exc}") from exc
    return con


_NOT_FOR_POLARS = re.compile(r"\b(INTERVAL|UNION)\b")


def _portable(rel: Any) -> Any:
    """``rel`` with the columns polars cannot import cast to DuckDB's text rendering."""
    exprs = []
    changed = False
    for name, kind in zip(rel.columns, rel.types):
        quoted = '"' + name.replace('"', '""') + '"'
        if _NOT_FOR_POLARS.search(str(kind)):
            exprs.append(f"CAST({quoted} AS VARCHAR) AS {quoted}")
            changed = True
        else:
            exprs.append(quoted)
    return rel.project(", ".join(exprs)) if changed else rel


def _to_polars(table: pa.Table) -> pl.DataFrame:
    try:
        return pl.from_arrow(table)  # type: ignore[return-value]
    except BaseException as exc:  # polars raises, or panics (PanicException is a BaseException)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        kinds = ", ".join(f"{f.name}: {f.type}" for f in table.schema)
        raise WarehouseError(
            f"cannot convert the result ({kinds}): {exc}; CAST the unusual column to VARCHAR"
        ) from exc


def run_readonly_query(
    snapshot: Path,
    sql: str,
    *,
    params: dict[str, Any] | None = None,
    timeout_s: float = 30.0,
    memory_limit: str = "1GB",
    threads: int = 2,
    max_rows: int | None = DEFAULT_MAX_ROWS,
) -> pl.DataFrame:
    """Run a coach's read-only SQL against the snapshot and return the last statement's rows.

    Parameters
    ----------
    snapshot
        The published snapshot (``data/warehouse/snapshot.duckdb``).
    sql
        One or more SELECT statements (``;``-separated); named parameters ``$name``.
    params
        Values of the named parameters; each statement gets the ones it uses.
        A missing or unused name is an error.
    timeout_s
        Wall-clock limit for the whole call (parsing, running, fetching).
    memory_limit, threads
        DuckDB resource limits for this session.
    max_rows
        A result with more rows is refused (add a LIMIT); None: no limit
        (internal readers such as the reports).

    Returns
    -------
    pl.DataFrame
        The last statement's result (instants as UTC).

    Raises
    ------
    QueryRefused
        A statement is not read-only, touches files or settings, exceeds the
        time limit or the row limit, or is refused by the locked session.
    WarehouseError
        The snapshot is missing or the SQL is wrong (syntax, unknown table, ...).
    """
    snapshot = Path(snapshot)
    if not snapshot.is_file():
        raise WarehouseError(f"{snapshot}: no snapshot; run `pipeline ingest` first")
    params = dict(params or {})
    con = open_readonly(snapshot, memory_limit=memory_limit, threads=threads)
    fired = threading.Event()  # the watchdog interrupted the query (time limit or Ctrl-C)
    done = threading.Event()  # the query is over
    wake = threading.Event()  # the query is over, or the caller pressed Ctrl-C
    guard = threading.Lock()  # the watchdog never interrupts a connection being closed
    closed = False

    def _watchdog() -> None:
        # at the limit (or on Ctrl-C), interrupt again and again until the query ends: DuckDB drops
        # an interrupt that lands before its query starts (a process paused or slow to get there)
        wake.wait(timeout_s)
        while not done.is_set():
            with guard:
                if closed:
                    return
                fired.set()
                con.interrupt()
            done.wait(_INTERRUPT_AGAIN_S)

    def _run() -> pl.DataFrame:
        try:
            statements = check_statements(con, sql)
            used: set[str] = set()
            for stmt in statements:
                names = set(stmt.named_parameters)
                positional = sorted(n for n in names if n.isdigit())
                if positional:
                    raise QueryRefused("positional parameters (? or $1) are not supported; use $name")
                missing = sorted(names - set(params))
                if missing:
                    raise QueryRefused(f"no value given for parameter(s) {', '.join('$' + m for m in missing)}")
                used |= names
            unused = sorted(set(params) - used)
            if unused:
                raise QueryRefused(f"parameter(s) {', '.join('$' + u for u in unused)} not used by the query")
            for stmt in statements[:-1]:
                con.execute(stmt.query, {k: params[k] for k in stmt.named_parameters} or None)
                con.complete()
            last = statements[-1]
            last_params = {k: params[k] for k in last.named_parameters}
            rel = con.sql(last.query, params=last_params) if last_params else con.sql(last.query)
            if rel is None:  # pragma: no cover - SELECTs always return a relation
                return pl.DataFrame()
            reader = _portable(rel).to_arrow_reader(65536)
            batches = []
            rows = 0
            for batch in reader:
                rows += batch.num_rows
                if max_rows is not None and rows > max_rows:
                    raise QueryRefused(f"result has more than {max_rows} rows; add a LIMIT or aggregate")
                batches.append(batch)
            table = pa.Table.from_batches(batches, schema=reader.schema)
            return _to_polars(table)
        except (QueryRefused, WarehouseError):
            raise
        except (duckdb.Error, OSError, RuntimeError) as exc:
            # the watchdog's interrupt surfaces as InterruptException, as an Arrow OSError mid-stream,
            # or as RuntimeError("Query interrupted") from the streaming reader
            if fired.is_set():
                raise QueryRefused(f"query exceeded {timeout_s:g} s and was interrupted") from exc
            if isinstance(exc, RuntimeError):
                raise
            if isinstance(exc, duckdb.OutOfMemoryException):
                raise QueryRefused(
                    f"query needs more than the {memory_limit} memory limit; aggregate more or add a LIMIT"
                ) from exc
            text = str(exc)
            if isinstance(exc, duckdb.PermissionException) and "disabled by configuration" in text:
                raise QueryRefused(
                    f"refused: pipeline sql reads the warehouse snapshot only, not files, folders or URLs ({exc})"
                ) from exc
            if (
                isinstance(exc, duckdb.PermissionException)
                or "read-only mode" in text
                or "configuration has been locked" in text
            ):
                raise QueryRefused(f"refused by the read-only session: {exc}") from exc
            raise WarehouseError(f"query failed: {exc}") from exc

    outcome: list[tuple[bool, Any]] = []
    finished = threading.Event()

    def _runner() -> None:
        try:
            outcome.append((True, _run()))
        except BaseException as exc:  # noqa: BLE001 - raised again by the caller's thread
            outcome.append((False, exc))
        finally:
            finished.set()

    # the query runs in a thread of its own: the caller's thread stays in Python, where Ctrl-C
    # (SIGINT) reaches it, while DuckDB works (a call into DuckDB would hold it until the end)
    timer = threading.Thread(target=_watchdog, name="pipeline-sql-timeout", daemon=True)
    runner = threading.Thread(target=_runner, name="pipeline-sql-query", daemon=True)
    interrupted = False

    def _wait_for_the_runner() -> None:
        # (Event.wait, not Thread.join: a join interrupted by Ctrl-C may return early next time)
        nonlocal interrupted
        while runner.ident is not None and not finished.is_set():
            try:
                finished.wait(0.1)
            except KeyboardInterrupt:
                interrupted = True
                wake.set()  # the watchdog interrupts DuckDB until the query ends

    try:
        timer.start()
        runner.start()
        _wait_for_the_runner()
        if interrupted:
            raise KeyboardInterrupt
        ok, value = outcome.pop()
        if ok:
            return value
        try:
            raise value
        finally:
            # no reference cycle through this frame: the error's traceback holds the query's
            # relation and reader, which keep the snapshot's DuckDB instance alive until freed
            del value
    finally:
        if not finished.is_set():  # Ctrl-C before the wait began: stop the query, then close
            wake.set()
            _wait_for_the_runner()
        done.set()
        wake.set()
        with guard:
            closed = True
            con.close()
