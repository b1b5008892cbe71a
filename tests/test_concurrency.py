"""Processes side by side: one ingest at a time, and coaches' readers never in the ingest's way.

Real processes throughout: ``python -m pipeline`` subprocesses for the ingests and the coach's
``pipeline sql``, and a plain ``duckdb.connect(snapshot, read_only=True)`` in a subprocess for a
coach who keeps the stock DuckDB library open all night.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipeline.cli import EXIT_LOCKED, EXIT_REFUSED

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")

#: In the warehouse before the nightly run ...
OLD = [
    "knee/activities/2026-11-15-0812-long.fit",
    "spike/activities/2026-11-15-0835-long.fit",
]
#: ... and what the nightly run finds new (a truncated file among them).
NEW = [
    "knee/activities/2026-11-08-0844-long.fit",
    "spike/activities/2026-11-01-0927-long.fit",
    "spike/activities/2026-10-19-0826-long.fit",
]
#: For the lock test: the first ingest should hold the lock for a few seconds.
MORE = ["control/activities/2026-10-20-0654-easy.fit", "control/activities/2026-11-15-0913-long.fit"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _copy(src: Path, raw: Path, files: list[str]) -> None:
    """``files`` and their athletes' athlete.toml and pain.csv."""
    for athlete in sorted({rel.split("/", 1)[0] for rel in files}):
        (raw / athlete / "activities").mkdir(parents=True, exist_ok=True)
        for name in ("athlete.toml", "pain.csv"):
            if not (raw / athlete / name).exists():
                shutil.copy2(src / athlete / name, raw / athlete / name)
    for rel in files:
        shutil.copy2(src / rel, raw / rel)


def _pipeline(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def _wait_until(check: Any, what: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _open_paths(pid: int) -> list[str]:
    """What process ``pid`` has open (``/proc/<pid>/fd`` links; " (deleted)" once unlinked)."""
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            out.append(os.readlink(fd))
        except OSError:
            continue
    return out


def _runs(db: Path) -> list[dict[str, Any]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.sql("SELECT pid, status, epoch(started_utc) AS s, epoch(finished_utc) AS f "
                       "FROM _ingest_runs ORDER BY started_utc").pl().to_dicts()
    finally:
        con.close()


# ---------------------------------------------------------------------- one ingest at a time


def test_a_second_ingest_exits_at_once_and_wait_waits(sim_club: dict[str, Any], tmp_path: Path) -> None:
    raw, warehouse = tmp_path / "raw", tmp_path / "warehouse"
    _copy(sim_club["raw"], raw, OLD + NEW + MORE)
    lock = warehouse / "pipeline.duckdb.lock"
    patient: subprocess.Popen[str] | None = None
    first = subprocess.Popen(_pipeline("-v", "ingest", "--raw", str(raw), "--warehouse", str(warehouse),
                                       "--workers", "2"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_until(lambda: lock.is_file() and lock.read_text().strip() == str(first.pid), "the first ingest's lock")
        assert first.poll() is None

        start = time.monotonic()
        second = subprocess.run(_pipeline("ingest", "--raw", str(raw), "--warehouse", str(warehouse)),
                                capture_output=True, text=True, env=_env(), timeout=60)
        took = time.monotonic() - start
        assert first.poll() is None, "the first ingest ended before the second tried"
        assert second.returncode == EXIT_LOCKED, second.stderr
        assert took < 1.0, f"the locked-out ingest took {took:.2f} s"
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: warehouse is locked by pid"), second.stderr
        assert f"pid {first.pid}" in lines[0] and "--wait" in lines[0]

        patient = subprocess.Popen(_pipeline("-v", "ingest", "--wait", "--raw", str(raw), "--warehouse",
                                             str(warehouse)),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        first_err = first.communicate(timeout=300)[1]
        assert first.returncode == 3, first_err  # the truncated file is rejected, the rest loads
        out, err = patient.communicate(timeout=300)
    finally:
        for proc in (first, patient):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    # the patient one found everything loaded: nothing new, nothing rejected
    assert patient is not None and patient.returncode == 0, err
    assert f"waiting for pid {first.pid}" in err
    n_files = len(OLD + NEW + MORE)
    assert "0 loaded" in out and f"{n_files} unchanged" in out
    # under a pipe (cron) the progress is plain log lines, no bar
    assert f"decoded {n_files}/{n_files} files" in first_err and "\r" not in first_err

    runs = _runs(warehouse / "pipeline.duckdb")
    assert [r["pid"] for r in runs] == [first.pid, patient.pid]  # the locked-out one wrote nothing
    assert runs[0]["status"] == "rejections" and runs[1]["status"] == "ok"
    assert runs[1]["s"] >= runs[0]["f"]  # the waiting ingest began after the first had finished


# ---------------------------------------------------------------------- coaches never block the nightly

READER = r"""
import json, sys
import duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
def look():
    n_acts, n_declared = con.sql("SELECT count(*), coalesce(sum(n_samples), 0) FROM activities").fetchall()[0]
    (n_samples,) = con.sql("SELECT count(*) FROM samples").fetchall()[0]
    (n_files,) = con.sql("SELECT count(*) FROM files").fetchall()[0]
    return {"activities": n_acts, "declared": int(n_declared), "samples": n_samples, "files": n_files}
print(json.dumps(look()), flush=True)
sys.stdin.readline()
print(json.dumps(look()), flush=True)
sys.stdin.readline()
con.close()
"""

#: A query that would run for an hour; its --timeout ends it.
ENDLESS = "SELECT count(*) AS n FROM activities, range(1000000000000) r WHERE hash(r.range) = 42"
#: The coach's --timeout: longer than it takes to start and reach the query, shorter than the test.
COACH_TIMEOUT_S = 8


def _drain(fd: int, sink: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side of the pty closed
            return
        if not chunk:
            return
        sink.append(chunk)


def test_coach_connections_do_not_block_the_nightly(sim_club: dict[str, Any], tmp_path: Path) -> None:
    """Two coaches hold the snapshot open for the whole nightly run; it completes all the same.

    One holds a stock ``duckdb.connect(snapshot, read_only=True)`` session; the other is a
    ``pipeline sql`` in the middle of a long query, paused with SIGSTOP once it has the snapshot
    open (so it keeps its session all night without taking a core from the nightly run). Both
    still read the complete old snapshot afterwards; new sessions see the new one; and while the
    nightly runs, new sessions see the old or the new snapshot, complete, never anything between.
    """
    from pipeline.config import Settings
    from pipeline.ingest import ingest
    from pipeline.warehouse import run_readonly_query

    raw, warehouse, reports = tmp_path / "raw", tmp_path / "warehouse", tmp_path / "reports"
    _copy(sim_club["raw"], raw, OLD)
    ingest(Settings(raw_dir=raw, warehouse_dir=warehouse, reports_dir=reports, workers=0))
    snapshot = warehouse / "snapshot.duckdb"
    _copy(sim_club["raw"], raw, NEW)

    reader = subprocess.Popen([sys.executable, "-c", READER, str(snapshot)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=_env())
    coach_sql = subprocess.Popen(
        _pipeline("sql", "--warehouse", str(warehouse), "--threads", "1", "--timeout", str(COACH_TIMEOUT_S), ENDLESS),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    procs: list[subprocess.Popen[Any]] = [reader, coach_sql]
    try:
        assert reader.stdin is not None and reader.stdout is not None
        old = json.loads(reader.stdout.readline())
        assert old["activities"] == len(OLD) and old["samples"] == old["declared"] > 0
        _wait_until(lambda: str(snapshot) in _open_paths(coach_sql.pid), "pipeline sql to open the snapshot",
                    timeout_s=COACH_TIMEOUT_S)
        os.kill(coach_sql.pid, signal.SIGSTOP)
        started_paused = time.monotonic()
        assert str(snapshot) in _open_paths(reader.pid)

        # the nightly run, its stderr on a terminal (so it draws a progress bar)
        master, slave = pty.openpty()
        nightly = subprocess.Popen(
            _pipeline("-v", "nightly", "--raw", str(raw), "--warehouse", str(warehouse), "--reports", str(reports),
                      "--workers", "2"),
            stdout=subprocess.PIPE, stderr=slave, text=True, env=_env(),
        )
        procs.append(nightly)
        os.close(slave)
        terminal: list[bytes] = []
        drain = threading.Thread(target=_drain, args=(master, terminal), daemon=True)
        drain.start()
        # meanwhile, new coach sessions see the old snapshot or the new one, each complete
        seen = set()
        while nightly.poll() is None:
            got = run_readonly_query(snapshot, "SELECT (SELECT count(*) FROM activities) AS a, "
                                               "(SELECT sum(n_samples) FROM activities) AS d, "
                                               "(SELECT count(*) FROM samples) AS s")
            a, d, s = got.row(0)
            assert s == d, f"a torn snapshot: {s} samples, {d} declared"
            seen.add(a)
            time.sleep(0.5)
        out = nightly.stdout.read() if nightly.stdout else ""
        nightly.wait()
        drain.join(timeout=10)
        os.close(master)
        err = b"".join(terminal).decode("utf-8", "replace")
        assert nightly.returncode == 0, out + err
        assert "Traceback" not in err and "summary run=" in out
        new_acts = len(OLD) + len(NEW)
        assert seen <= {len(OLD), new_acts}, seen
        # a progress bar on the terminal: click redraws it in place
        assert "decoding" in err and "\r" in err

        # the long query held the old snapshot through the whole run, and still does ...
        assert coach_sql.poll() is None, coach_sql.communicate()
        held = [p for p in _open_paths(coach_sql.pid) if p.startswith(str(snapshot))]
        assert held == [f"{snapshot} (deleted)"], held
        # ... until, let go again, it runs into its time limit: exit 5, one line, no traceback
        if time.monotonic() - started_paused < COACH_TIMEOUT_S:
            time.sleep(COACH_TIMEOUT_S - (time.monotonic() - started_paused))
        os.kill(coach_sql.pid, signal.SIGCONT)
        sql_out, sql_err = coach_sql.communicate(timeout=60)
        assert coach_sql.returncode == EXIT_REFUSED, sql_err
        assert sql_out == "" and sql_err == f"error: query exceeded {COACH_TIMEOUT_S} s and was interrupted\n"
        # the stock-library reader still reads its old, complete snapshot
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert json.loads(reader.stdout.readline()) == old
        # a new connection sees the new one
        con = duckdb.connect(str(snapshot), read_only=True)
        try:
            assert con.sql("SELECT count(*) FROM activities").fetchall() == [(new_acts,)]
        finally:
            con.close()
        assert sorted(p.name for p in warehouse.iterdir()) == [
            "pipeline.duckdb", "pipeline.duckdb.lock", "snapshot.duckdb"
        ]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.communicate()
