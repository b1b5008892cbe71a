"""``pipeline sql`` safety: run_readonly_query refuses anything but reading the snapshot.

Each refused form is tried for real against a published snapshot, and where
it would write a file the test checks that no file appeared. A negative
control shows that a plain read-only DuckDB connection would have allowed
COPY TO and read_csv, so the guards are what stop them.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import PipelineError, QueryRefused, WarehouseError
from pipeline.schema import LAP_SCHEMA, PAUSE_SCHEMA, SAMPLE_SCHEMA, NormalisedActivity
from pipeline.warehouse import Warehouse, run_readonly_query

T0 = datetime(2024, 5, 6, 6, 0, tzinfo=timezone.utc)
N_SAMPLES = 120


def _activity(aid: str, sha: str) -> NormalisedActivity:
    times = [T0 + timedelta(seconds=i) for i in range(N_SAMPLES)]
    cols = {c: [None] * N_SAMPLES for c in SAMPLE_SCHEMA}
    cols.update(activity_id=[aid] * N_SAMPLES, t_utc=times, hr_bpm=[140.0 + i % 7 for i in range(N_SAMPLES)])
    return NormalisedActivity(
        activity={
            "activity_id": aid,
            "athlete_id": "ann",
            "sport": "running",
            "start_utc": T0,
            "end_utc": times[-1],
            "source_file": "ann/activities/a.fit",
            "source_sha256": sha,
        },
        samples=pl.DataFrame(cols, schema=SAMPLE_SCHEMA),
        laps=pl.DataFrame(schema=LAP_SCHEMA),
        pauses=pl.DataFrame(schema=PAUSE_SCHEMA),
    )


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sql")
    sha = "ab" * 32
    with Warehouse.open(root / "pipeline.duckdb") as wh:
        wh.begin_run(command="pytest")
        act = _activity(f"{sha[:16]}-0", sha)
        wh.load_file(ledger={"path": "ann/activities/a.fit", "sha256": sha}, activities=[act])
        wh.publish_snapshot(root / "snapshot.duckdb")
    return root / "snapshot.duckdb"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.csv"
    path.write_text("user,password\ncoach,hunter2\n")
    return path


def test_plain_select_works(snapshot: Path) -> None:
    got = run_readonly_query(snapshot, "SELECT count(*) AS n, max(hr_bpm) AS hr FROM samples")
    assert got.rows() == [(N_SAMPLES, 146.0)]


@pytest.mark.parametrize(
    "sql",
    [
        "WITH s AS (SELECT * FROM samples) SELECT count(*) AS n FROM s",
        "FROM samples SELECT count(*) AS n",
        "SELECT 1 AS x; SELECT count(*) AS n FROM samples",  # the last statement's rows come back
        "-- a comment first\nSELECT count(*) AS n FROM samples",
    ],
)
def test_read_only_forms_are_allowed(snapshot: Path, sql: str) -> None:
    assert run_readonly_query(snapshot, sql)["n"].to_list() == [N_SAMPLES]


def test_describe_show_and_explain_are_allowed(snapshot: Path) -> None:
    assert "t_utc" in run_readonly_query(snapshot, "DESCRIBE samples")["column_name"].to_list()
    assert "pain_onsets" in run_readonly_query(snapshot, "SHOW TABLES")["name"].to_list()
    plan = run_readonly_query(snapshot, "EXPLAIN SELECT * FROM samples")
    assert plan.height >= 1
    analysed = run_readonly_query(snapshot, "/* why slow? */ EXPLAIN ANALYZE SELECT count(*) FROM samples")
    assert analysed.height >= 1


def test_instants_come_back_in_utc(snapshot: Path) -> None:
    got = run_readonly_query(snapshot, "SELECT min(t_utc) AS t FROM samples")
    assert got.schema["t"] == pl.Datetime("us", "UTC")
    assert got["t"][0] == T0


@pytest.mark.parametrize(
    ("sql", "writes"),
    [
        ("COPY samples TO '{out}'", True),
        ("COPY (SELECT * FROM samples) TO '{out}' (FORMAT csv)", True),
        ("EXPORT DATABASE '{outdir}'", True),
        ("SELECT * FROM read_csv('/etc/passwd')", False),
        ("SELECT * FROM read_csv('{secret}')", False),
        ("SELECT * FROM read_text('/etc/passwd')", False),
        ("SELECT * FROM read_blob('{secret}')", False),
        ("SELECT * FROM read_parquet('{secret}')", False),
        ("SELECT * FROM read_json('{secret}')", False),
        ("SELECT * FROM glob('/etc/*')", False),
        ("SELECT * FROM '{secret}'", False),
        ("SELECT * FROM sniff_csv('{secret}')", False),
        ("ATTACH '{out}' AS other", True),
        ("DETACH snapshot", False),
        ("INSTALL httpfs", False),
        ("LOAD httpfs", False),
        ("SET threads = 8", False),
        ("SET enable_external_access = true", False),
        ("RESET memory_limit", False),
        ("SET VARIABLE x = 1", False),
        ("PRAGMA threads = 8", False),
        ("PRAGMA show_tables", False),
        ("CALL pragma_version()", False),
        ("CHECKPOINT", False),
        ("CREATE TABLE t AS SELECT 1 AS a", False),
        ("CREATE TEMP TABLE t AS SELECT 1 AS a", False),
        ("CREATE VIEW v AS SELECT 1 AS a", False),
        ("CREATE MACRO m(x) AS x", False),
        ("INSERT INTO _migrations VALUES (99, 'x', now())", False),
        ("UPDATE samples SET hr_bpm = 0", False),
        ("DELETE FROM samples", False),
        ("DROP TABLE samples", False),
        ("ALTER TABLE samples ADD COLUMN x INTEGER", False),
        ("BEGIN TRANSACTION", False),
        ("VACUUM", False),
        ("EXPLAIN COPY samples TO '{out}'", True),
        ("EXPLAIN ANALYZE COPY samples TO '{out}'", True),
        ("SELECT 1; COPY samples TO '{out}'", True),  # one bad statement refuses the lot
        ("SELECT 1; DELETE FROM samples", False),
    ],
)
def test_refused(snapshot: Path, secret_file: Path, tmp_path: Path, sql: str, writes: bool) -> None:
    out = tmp_path / "out.csv"
    outdir = tmp_path / "exported"
    text = sql.format(out=out, outdir=outdir, secret=secret_file)
    with pytest.raises(QueryRefused) as info:
        run_readonly_query(snapshot, text)
    assert "hunter2" not in str(info.value)
    assert not out.exists() and not outdir.exists()
    # still intact and readable afterwards
    assert run_readonly_query(snapshot, "SELECT count(*) AS n FROM samples")["n"][0] == N_SAMPLES


def test_file_functions_inside_a_select_are_stopped_by_the_sealed_session(snapshot: Path, secret_file: Path) -> None:
    """read_csv in a SELECT passes the statement-type check: only the locked config stops it."""
    with pytest.raises(QueryRefused, match="disabled by configuration"):
        run_readonly_query(snapshot, f"SELECT * FROM read_csv('{secret_file}')")
    with pytest.raises(QueryRefused, match="disabled by configuration"):
        run_readonly_query(snapshot, f"WITH x AS (SELECT * FROM read_text('{secret_file}')) SELECT * FROM x")


def test_negative_control_a_plain_read_only_connection_allows_files(
    snapshot: Path, secret_file: Path, tmp_path: Path
) -> None:
    """Without the guards, read_only=True alone lets a query read and write files."""
    # The raw library only for this control (the project imports duckdb under pipeline/warehouse only).
    duckdb = pytest.importorskip("duckdb")
    out = tmp_path / "leak.csv"
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        con.execute(f"COPY (SELECT * FROM samples) TO '{out}' (FORMAT csv)")
        con.complete()
        leaked = con.sql(f"SELECT password FROM read_csv('{secret_file}')").fetchall()
    finally:
        con.close()
    assert out.exists() and out.read_text().count("\n") == N_SAMPLES + 1
    assert leaked == [("hunter2",)]


def test_a_runaway_query_is_interrupted(snapshot: Path) -> None:
    start = time.monotonic()
    with pytest.raises(QueryRefused, match="exceeded 1 s"):
        run_readonly_query(
            snapshot,
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
            timeout_s=1,
        )
    assert time.monotonic() - start < 10


def test_a_huge_cross_join_is_interrupted(snapshot: Path) -> None:
    start = time.monotonic()
    with pytest.raises(QueryRefused, match="exceeded 1 s"):
        run_readonly_query(
            snapshot,
            "SELECT sum(a.range * b.range) FROM range(100000) a, range(100000) b",  # 10^10 pairs, little memory
            timeout_s=1,
        )
    assert time.monotonic() - start < 10


def test_a_memory_hog_is_stopped_by_the_memory_limit(snapshot: Path) -> None:
    with pytest.raises(QueryRefused, match="64MB memory limit"):
        run_readonly_query(
            snapshot, "SELECT count(*) FROM (SELECT DISTINCT range::VARCHAR FROM range(20000000))", memory_limit="64MB"
        )


def test_a_huge_result_is_refused(snapshot: Path) -> None:
    with pytest.raises(QueryRefused, match="more than 1000 rows"):
        run_readonly_query(snapshot, "SELECT * FROM range(5000)", max_rows=1000)
    assert run_readonly_query(snapshot, "SELECT * FROM range(1000)", max_rows=1000).height == 1000


@settings(max_examples=15, deadline=None)
@given(hr=st.floats(min_value=100, max_value=200), aid=st.text(min_size=1, max_size=20))
def test_named_parameters_bind_values_not_sql(snapshot: Path, hr: float, aid: str) -> None:
    got = run_readonly_query(
        snapshot,
        "SELECT count(*) AS n FROM samples WHERE hr_bpm >= $hr AND activity_id <> $aid",
        params={"hr": hr, "aid": aid},
    )
    expected = sum(1 for i in range(N_SAMPLES) if 140.0 + i % 7 >= hr)
    assert got["n"][0] == expected


def test_parameters_are_checked(snapshot: Path) -> None:
    sql = "SELECT count(*) AS n FROM samples WHERE hr_bpm > $hr"
    assert run_readonly_query(snapshot, sql, params={"hr": 145})["n"][0] == sum(
        1 for i in range(N_SAMPLES) if 140 + i % 7 > 145
    )
    with pytest.raises(QueryRefused, match=r"\$hr"):
        run_readonly_query(snapshot, sql)
    with pytest.raises(QueryRefused, match=r"\$extra"):
        run_readonly_query(snapshot, sql, params={"hr": 1, "extra": 2})
    with pytest.raises(QueryRefused, match="positional"):
        run_readonly_query(snapshot, "SELECT ? AS x", params={"1": 1})
    injected = run_readonly_query(
        snapshot, "SELECT count(*) AS n FROM samples WHERE activity_id = $a", params={"a": "x'; DROP TABLE samples; --"}
    )
    assert injected["n"][0] == 0
    assert run_readonly_query(snapshot, "SELECT count(*) AS n FROM samples")["n"][0] == N_SAMPLES


def test_errors_are_pipeline_errors(snapshot: Path, tmp_path: Path) -> None:
    with pytest.raises(WarehouseError, match="does not parse"):
        run_readonly_query(snapshot, "SELEC 1")
    with pytest.raises(WarehouseError, match="query failed"):
        run_readonly_query(snapshot, "SELECT * FROM no_such_table")
    with pytest.raises(WarehouseError, match="no snapshot"):
        run_readonly_query(tmp_path / "missing.duckdb", "SELECT 1")
    with pytest.raises(QueryRefused, match="no SQL statement"):
        run_readonly_query(snapshot, "  ;  ")
    for exc in (QueryRefused, WarehouseError):
        assert issubclass(exc, PipelineError)
