"""``pipeline sql`` safety: run_readonly_query refuses anything but reading the snapshot.

Each refused form is tried for real against a published snapshot, and where
it would write a file the test checks that no file appeared. A negative
control shows that a plain read-only DuckDB connection would have allowed
COPY TO and read_csv, so the guards are what stop them.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

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


#: Each form the issue names as refused: (id, the statement, what a plain read-only
#: connection does with it, checked by ``_control``). ``{out}``, ``{outdir}``, ``{secret}``,
#: ``{secret_json}``, ``{other_db}`` and ``{ext}`` are filled in per test.
FORMS = [
    ("copy_to", "COPY (SELECT * FROM samples) TO '{out}' (FORMAT csv)", "writes_out"),
    ("export_database", "EXPORT DATABASE '{outdir}'", "writes_outdir"),
    ("read_csv_etc_passwd", "SELECT * FROM read_csv('/etc/passwd')", "returns_rows"),
    ("read_csv", "SELECT * FROM read_csv('{secret}')", "leaks_secret"),
    ("read_text", "SELECT content FROM read_text('{secret}')", "leaks_secret"),
    ("read_blob", "SELECT content FROM read_blob('{secret}')", "leaks_secret"),
    ("read_json", "SELECT * FROM read_json('{secret_json}')", "leaks_secret"),
    ("replacement_scan", "SELECT * FROM '{secret}'", "leaks_secret"),
    ("glob", "SELECT * FROM glob('{secret_dir}/*')", "returns_rows"),
    ("attach", "ATTACH '{other_db}' AS other (READ_ONLY)", "attaches"),
    ("install", "INSTALL '{ext}'", "tries_file"),
    ("load", "LOAD json", "runs"),
    ("load_path", "LOAD '{ext}'", "tries_file"),
    ("set", "SET threads = 8", "runs"),
    ("set_memory_limit", "SET memory_limit = '64GB'", "runs"),
    ("reset", "RESET threads", "runs"),
    ("set_variable", "SET VARIABLE x = 1", "runs"),
    ("pragma", "PRAGMA threads = 8", "runs"),
    ("create_temp_table", "CREATE TEMP TABLE t AS SELECT 1 AS a", "runs"),
    ("create_temp_view", "CREATE TEMP VIEW v AS SELECT * FROM samples", "runs"),
    ("create_temp_macro", "CREATE TEMP MACRO m(x) AS x + 1", "runs"),
    ("insert_update_delete_drop",
     "CREATE TEMP TABLE t AS SELECT 1 AS a; INSERT INTO t VALUES (2); UPDATE t SET a = 3; DELETE FROM t; DROP TABLE t",
     "runs"),
    ("checkpoint", "CHECKPOINT", "runs"),
    ("transaction", "BEGIN TRANSACTION; COMMIT", "runs"),
]


@pytest.fixture
def places(tmp_path: Path, secret_file: Path) -> dict[str, Path]:
    secret_json = secret_file.parent / "secret.json"
    secret_json.write_text('[{"user": "coach", "password": "hunter2"}]')
    other = tmp_path / "other.duckdb"
    return {
        "out": tmp_path / "out.csv",
        "outdir": tmp_path / "exported",
        "secret": secret_file,
        "secret_json": secret_json,
        "secret_dir": secret_file.parent,
        "other_db": other,
        "ext": tmp_path / "nothing.duckdb_extension",
    }


def _fill(sql: str, places: dict[str, Path]) -> str:
    return sql.format(**{k: str(v) for k, v in places.items()})


@pytest.mark.parametrize(("form", "sql", "control"), FORMS, ids=[f[0] for f in FORMS])
def test_each_refused_form_is_refused_where_read_only_alone_allows_it(
    snapshot: Path, places: dict[str, Path], form: str, sql: str, control: str
) -> None:
    """The sealed session refuses the form; a plain ``read_only=True`` connection lets it through."""
    duckdb = pytest.importorskip("duckdb")  # the raw library, only for the negative control
    shutil.copy(snapshot, places["other_db"])  # a real database to ATTACH
    text = _fill(sql, places)

    with pytest.raises(QueryRefused) as info:
        run_readonly_query(snapshot, text)
    message = str(info.value)
    assert "hunter2" not in message and "\n" not in message.strip()
    assert not places["out"].exists() and not places["outdir"].exists()

    # the negative control: the same statements on a plain read-only connection
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        if control == "tries_file":
            # it goes looking for the extension file: nothing read-only about that
            with pytest.raises(duckdb.IOException, match="nothing.duckdb_extension"):
                con.execute(text)
            return
        rows: list[Any] = []
        for stmt in con.extract_statements(text):
            con.execute(stmt.query)
            try:
                rows = con.fetchall()
            except duckdb.Error:
                rows = []
        if control == "writes_out":
            assert places["out"].read_text().count("\n") == N_SAMPLES + 1
        elif control == "writes_outdir":
            assert (places["outdir"] / "schema.sql").is_file()
        elif control == "returns_rows":
            assert len(rows) > 0
        elif control == "leaks_secret":
            assert "hunter2" in repr(rows)
        elif control == "attaches":
            assert con.sql("SELECT count(*) FROM other.samples").fetchall() == [(N_SAMPLES,)]
        else:
            assert control == "runs"
    finally:
        con.close()


def test_the_sealed_session_refuses_to_loosen_itself(snapshot: Path, secret_file: Path) -> None:
    """Even a statement that got past the statement check could not change a setting."""
    from pipeline.warehouse.query import open_readonly

    con = open_readonly(snapshot, memory_limit="256MB", threads=1)
    try:
        settings = dict(con.sql(
            "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('enable_external_access', 'lock_configuration', 'threads', 'autoload_known_extensions', "
            "'autoinstall_known_extensions', 'allow_community_extensions', 'TimeZone')"
        ).fetchall())
        assert settings == {
            "enable_external_access": "false", "lock_configuration": "true", "threads": "1",
            "autoload_known_extensions": "false", "autoinstall_known_extensions": "false",
            "allow_community_extensions": "false", "TimeZone": "UTC",
        }
        for statement in ("SET enable_external_access = true", "SET threads = 8", "SET lock_configuration = false"):
            with pytest.raises(Exception, match="configuration has been locked"):
                con.execute(statement)
        with pytest.raises(Exception, match="disabled by configuration"):
            con.execute(f"SELECT * FROM read_csv('{secret_file}')")
    finally:
        con.close()


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


def test_a_time_limit_that_runs_out_before_the_query_starts_still_stops_it(
    snapshot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB drops an interrupt that lands before its query starts (a paused or slow process):
    past the limit the watchdog interrupts again until the query ends."""
    import pipeline.warehouse.query as query

    checked = query.check_statements

    def slow_check(con: Any, sql: str) -> Any:
        time.sleep(1.5)  # the 1 s limit runs out here, before any query runs
        return checked(con, sql)

    monkeypatch.setattr(query, "check_statements", slow_check)
    start = time.monotonic()
    with pytest.raises(QueryRefused, match="exceeded 1 s"):
        run_readonly_query(snapshot, "SELECT sum(a.range * b.range) FROM range(60000) a, range(60000) b",
                           timeout_s=1, threads=1)
    assert time.monotonic() - start < 10


def test_ctrl_c_stops_a_running_query_at_once(snapshot: Path) -> None:
    """SIGINT reaches ``pipeline sql`` while DuckDB works: exit 130, one line, well before the time limit."""
    import signal
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "sql", "--warehouse", str(snapshot.parent), "--timeout", "120",
         "--threads", "1", "SELECT count(*) FROM range(100000000000) r WHERE hash(r.range) = 42"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        fd_dir = Path(f"/proc/{proc.pid}/fd")
        while not any(_points_at(fd, snapshot) for fd in fd_dir.iterdir()):  # the snapshot is open
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(1.0)  # the query is running
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert time.monotonic() - start < 10
    assert proc.returncode == 130 and out == "" and err == "error: query interrupted (Ctrl-C)\n", err


def _points_at(fd: Path, target: Path) -> bool:
    try:
        return Path(os.readlink(fd)) == target  # noqa: PTH115
    except OSError:
        return False


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


# ---------------------------------------------------------------------- through `pipeline sql`


def _sql(snapshot: Path, *args: str, stdin: str | None = None) -> Any:
    from click.testing import CliRunner

    from pipeline.cli import cli

    return CliRunner().invoke(cli, ["sql", "--warehouse", str(snapshot.parent), *args], input=stdin)


def test_cli_query_from_argument_or_stdin_in_three_formats(snapshot: Path) -> None:
    import json

    query = "SELECT activity_id, count(*) AS n, max(hr_bpm) AS hr FROM samples GROUP BY 1"
    table = _sql(snapshot, query)
    assert table.exit_code == 0, table.output
    assert "146.0" in table.output and str(N_SAMPLES) in table.output and "(1 row)" in table.output
    csv = _sql(snapshot, "--format", "csv", stdin=query)
    assert csv.exit_code == 0, csv.output
    assert csv.output.splitlines() == ["activity_id,n,hr", f"{'ab' * 8}-0,{N_SAMPLES},146.0"]
    js = _sql(snapshot, "--format", "json", stdin=query + ";\n")
    assert js.exit_code == 0, js.output
    assert json.loads(js.output) == [{"activity_id": f"{'ab' * 8}-0", "n": N_SAMPLES, "hr": 146.0}]
    empty = _sql(snapshot, stdin="  \n")
    assert empty.exit_code == 2 and "empty" in empty.output


def test_cli_named_parameters(snapshot: Path) -> None:
    got = _sql(snapshot, "--format", "csv", "-p", "hr", "145", "-p", "a", f"{'ab' * 8}-0",
               "SELECT count(*) AS n FROM samples WHERE hr_bpm > $hr AND activity_id = $a")
    assert got.exit_code == 0, got.output
    assert got.output.splitlines()[1] == str(sum(1 for i in range(N_SAMPLES) if 140 + i % 7 > 145))
    twice = _sql(snapshot, "-p", "hr", "1", "-p", "hr", "2", "SELECT $hr")
    assert twice.exit_code == 2 and "more than once" in twice.output
    missing = _sql(snapshot, "SELECT $hr")
    assert missing.exit_code == 5 and "$hr" in missing.output


def test_cli_unusual_result_types_print_in_every_format(snapshot: Path) -> None:
    query = "SELECT INTERVAL 90 SECOND AS i, [1, 2] AS l, {'a': 1} AS s, 1.50 AS d, [INTERVAL 1 HOUR] AS li"
    for fmt in ("table", "csv", "json"):
        got = _sql(snapshot, "--format", fmt, query)
        assert got.exit_code == 0, (fmt, got.output, got.exception)
        assert "00:01:30" in got.output
    assert '"d": 1.5' in _sql(snapshot, "--format", "json", query).output


@pytest.mark.parametrize(
    "sql",
    [
        "COPY samples TO '/tmp/pipeline-should-not-exist.csv'",
        "EXPORT DATABASE '/tmp/pipeline-should-not-exist'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "ATTACH '/tmp/pipeline-should-not-exist.duckdb' AS x",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET threads = 64",
        "CREATE TABLE t (a INTEGER)",
        "DELETE FROM samples",
    ],
)
def test_cli_refusals_are_one_line_and_exit_5(snapshot: Path, sql: str) -> None:
    got = _sql(snapshot, sql)
    assert got.exit_code == 5, got.output
    assert got.output.startswith("error: refused") and got.output.count("\n") == 1, got.output
    assert not isinstance(got.exception, Exception) or isinstance(got.exception, SystemExit)
    assert not Path("/tmp/pipeline-should-not-exist.csv").exists()


def test_cli_time_and_resource_limits(snapshot: Path) -> None:
    start = time.monotonic()
    slow = _sql(snapshot, "--timeout", "1", "SELECT sum(a.range * b.range) FROM range(100000) a, range(100000) b")
    assert slow.exit_code == 5 and slow.output == "error: query exceeded 1 s and was interrupted\n"
    assert time.monotonic() - start < 10
    hog = _sql(snapshot, "--memory-limit", "64MB",
               "SELECT count(*) FROM (SELECT DISTINCT range::VARCHAR FROM range(20000000))")
    assert hog.exit_code == 5 and "64MB memory limit" in hog.output and hog.output.count("\n") == 1
    limits = _sql(snapshot, "--format", "csv", "--threads", "1", "--memory-limit", "300MB",
                  "SELECT current_setting('threads') AS t, current_setting('memory_limit') AS m")
    assert limits.exit_code == 0, limits.output
    threads, memory = limits.output.splitlines()[1].split(",")
    assert threads == "1" and memory.startswith("286.")  # 300 MB = 286.1 MiB
    for bad in (["--memory-limit", "lots"], ["--threads", "0"], ["--timeout", "0"]):
        usage = _sql(snapshot, *bad, "SELECT 1")
        assert usage.exit_code == 2, (bad, usage.output)
