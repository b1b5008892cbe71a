"""Crash safety: a real ``pipeline ingest`` killed with SIGKILL, then re-run, ends as a clean run does.

Each round starts a fresh warehouse, runs ``python -m pipeline -v ingest --workers 2`` in its own
process group on a small batch copied from the simulated club (a duplicate FIT/GPX pair, the
same bytes under two names, a truncated FIT file, a zip export, a malformed pain row), and kills
the whole group (the decoder workers too) with SIGKILL at a seeded random moment inside one
phase: decoding, loading files, the pain join and replace, publishing the snapshot. (Decoding and
loading overlap: files load as they come back from the workers.) The trigger is the ingest's own log
line that opens the phase, plus a random delay no longer than the phase lasted in the clean run.
Then the ingest is run again to completion, and a digest of every table and view, of the
warehouse and of the published snapshot, must equal the clean run's. Four rounds (one per phase)
always run; more, with two or three kills in a row, are marked slow.

This test found two bugs, both now fixed in pipeline/ingest.py: an archive was ledgered before
its members loaded (a run killed in between never read the members again), and a "same bytes"
copy was ledgered before the first copy loaded (so the first copy's load was skipped as already
known, even without a crash).

What the digest leaves out (:data:`IGNORED`) is only bookkeeping that differs between any two
runs, crashed or not: run ids and load timestamps, and ``_ingest_runs`` (one row per run, so a
killed run adds one). ``pain_reports.superseded_utc`` is compared as "is it null" (a report is
current or not); its timestamp is the time of the run that noticed. Everything else is compared
value by value, rows in a canonical order (row order in a table is not meaningful).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]

#: Columns the digest leaves out, and why (see the module docstring and docs/warehouse.md).
IGNORED: dict[str, tuple[str, ...]] = {
    # which run loaded the row: a resumed run re-writes some rows under its own id
    "activities": ("_run_id",),
    "laps": ("_run_id",),
    "pauses": ("_run_id",),
    "activity_duplicates": ("_run_id",),
    "pain_rows_rejected": ("_run_id",),
    # rewritten on every run (recomputed from athlete.toml), so its time and run always move
    "athletes": ("updated_utc", "_run_id"),
    # when a run first read the report, which run last recomputed it
    "pain_reports": ("first_seen_utc", "_run_id"),
    "pain_reports_current": ("first_seen_utc", "_run_id"),  # the view of the current pain_reports
    # when the ledger first saw / last rewrote the row, and by which run
    "files": ("first_seen_utc", "updated_utc", "run_id", "mtime_ns"),
    # when a migration ran
    "_migrations": ("applied_utc",),
}
#: Tables left out whole: one row per ingest run, so a killed run adds a row by design.
IGNORED_TABLES = {"_ingest_runs"}

#: Files of the simulated club copied into the batch (plus every athlete.toml and pain.csv).
PLAIN = [
    "control/activities/2026-10-20-0654-easy.fit",  # truncated: rejected
    "control/activities/2026-10-23-0723-easy.fit",
    "control/activities/2026-10-23-0723-easy.gpx",  # the same run as a GPX: duplicate
    "control/activities/2026-11-15-0913-long.fit",
    "knee/activities/2026-11-08-0844-long.fit",
    "knee/activities/2026-11-15-0812-long.fit",
    "spike/activities/2026-11-01-0927-long.fit",
]
#: Files packed into knee/activities/export.zip (an export archive) instead of copied.
ZIPPED = ["knee/activities/2026-11-12-0630-long.fit", "knee/activities/2026-11-14-0831-easy.fit"]
#: The same bytes under a second name (the ledger calls it a duplicate of the first).
COPIED = ("knee/activities/2026-11-08-0844-long.fit", "knee/activities/zz-copy-of-the-long-run.fit")

#: phase -> the log line that opens it (``pipeline -v`` logs at INFO).
PHASES = {
    "decode": re.compile(r"opened warehouse "),
    "load": re.compile(r": loaded \d+ activities"),
    "pain": re.compile(r"pain onsets joined"),
    "publish": re.compile(r"publishing snapshot"),
}
#: The log line that ends each phase in the clean run (its length bounds the random delay).
PHASE_ENDS = {
    "decode": re.compile(r": loaded \d+ activities"),
    "load": re.compile(r"pain onsets joined"),
    "pain": re.compile(r"publishing snapshot"),
    "publish": re.compile(r"published snapshot"),
}
#: How many of the rounds start each phase; the extra (slow) rounds draw phases at random.
FAST_ROUNDS = [("decode", 11), ("load", 12), ("pain", 13), ("publish", 14)]
SLOW_SEEDS = list(range(100, 104))


# ---------------------------------------------------------------------- the batch and the process


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def batch(sim_club: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    src: Path = sim_club["raw"]
    raw = tmp_path_factory.mktemp("crash") / "raw"
    for athlete in sorted(p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith("_")):
        (raw / athlete / "activities").mkdir(parents=True)
        for name in ("athlete.toml", "pain.csv"):
            shutil.copy2(src / athlete / name, raw / athlete / name)
    for rel in PLAIN:
        shutil.copy2(src / rel, raw / rel)
    shutil.copy2(src / COPIED[0], raw / COPIED[1])
    with zipfile.ZipFile(raw / "knee" / "activities" / "export.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in ZIPPED:
            zf.write(src / rel, arcname=f"activities/{Path(rel).name}")
    with (raw / "control" / "pain.csv").open("a", encoding="utf-8") as fh:
        fh.write("2026-11-15,09:13,5 km,knee,left,11,severity out of range\n")
    return raw


@dataclass
class Run:
    """One ``pipeline ingest`` process and the log lines it wrote, with their times."""

    proc: subprocess.Popen[str]
    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    seen: threading.Condition = field(default_factory=threading.Condition)
    reader: threading.Thread | None = None

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.seen:
                self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))
                self.seen.notify_all()
        with self.seen:
            self.seen.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout_s: float = 120.0) -> bool:
        """Block until a log line matches (True) or the process ends without one (False)."""
        deadline = time.monotonic() + timeout_s
        with self.seen:
            while True:
                if any(pattern.search(text) for _, text in self.lines):
                    return True
                if self.proc.poll() is not None and not (self.reader and self.reader.is_alive()):
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log line matching {pattern.pattern!r} in {timeout_s} s")
                self.seen.wait(min(left, 0.2))

    def kill(self) -> None:
        """SIGKILL the whole process group: the ingest and its decoder workers."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def finish(self, timeout_s: float = 180.0) -> int:
        code = self.proc.wait(timeout=timeout_s)
        if self.reader is not None:
            self.reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code

    @property
    def text(self) -> str:
        return "\n".join(text for _, text in self.lines)

    def time_of(self, pattern: re.Pattern[str], *, last: bool = False) -> float:
        times = [t for t, text in self.lines if pattern.search(text)]
        assert times, f"no log line matching {pattern.pattern!r}:\n{self.text}"
        return times[-1] if last else times[0]


def start_ingest(raw: Path, warehouse: Path) -> Run:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "-v", "ingest", "--raw", str(raw), "--warehouse", str(warehouse),
         "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        start_new_session=True,  # its own process group, so one killpg reaches the workers
    )
    run = Run(proc=proc, started=time.monotonic())
    run.reader = threading.Thread(target=run._read, daemon=True)
    run.reader.start()
    return run


def ingest_to_completion(raw: Path, warehouse: Path) -> Run:
    run = start_ingest(raw, warehouse)
    code = run.finish()
    assert code in (0, 3), f"ingest exited {code}:\n{run.text}"
    assert "Traceback" not in run.text, run.text
    return run


# ---------------------------------------------------------------------- the digest


def _canonical(frame: pl.DataFrame) -> pl.DataFrame:
    lists = [name for name, dtype in frame.schema.items() if isinstance(dtype, pl.List)]
    frame = frame.with_columns(pl.col(name).list.join("\x1f") for name in lists)
    return frame.sort(frame.columns, nulls_last=True) if frame.width else frame


def digest(db: Path) -> dict[str, str]:
    """``{table or view: sha256 of its rows}`` without the :data:`IGNORED` bookkeeping."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        objects = con.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1"
        ).fetchall()
        out: dict[str, str] = {}
        for (name,) in objects:
            if name in IGNORED_TABLES:
                continue
            skip = set(IGNORED.get(name, ()))
            columns = [c for (c,) in con.sql(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $t ORDER BY ordinal_position",
                params={"t": name},
            ).fetchall()]
            missing = skip - set(columns)
            assert not missing, f"IGNORED names columns {name}.{sorted(missing)} that do not exist"
            exprs = [
                f'("{c}" IS NULL) AS "{c}_is_null"' if c == "superseded_utc" else f'"{c}"'
                for c in columns
                if c not in skip
            ]
            frame = con.sql(f'SELECT {", ".join(exprs)} FROM "{name}"').pl()
            text = _canonical(frame).write_csv()
            out[name] = f"{frame.height}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
        return out
    finally:
        con.close()


def _runs(db: Path) -> list[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [s for (s,) in con.sql("SELECT status FROM _ingest_runs ORDER BY started_utc").fetchall()]
    finally:
        con.close()


@pytest.fixture(scope="module")
def clean(batch: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted ingest of the batch: its digests and how long each phase lasted."""
    warehouse = tmp_path_factory.mktemp("clean") / "warehouse"
    run = ingest_to_completion(batch, warehouse)
    wh_digest = digest(warehouse / "pipeline.duckdb")
    assert digest(warehouse / "snapshot.duckdb") == wh_digest
    spans = {}
    for phase, start in PHASES.items():
        spans[phase] = max(0.0, run.time_of(PHASE_ENDS[phase], last=True) - run.time_of(start))
    return {"digest": wh_digest, "spans": spans, "log": run.text, "warehouse": warehouse}


def test_the_batch_exercises_what_a_crash_can_break(clean: dict[str, Any]) -> None:
    """The clean run covers loads, a duplicate, a rejection, an archive and pain rows of each kind."""
    d = clean["digest"]
    for table in ("activities", "samples", "laps", "activity_duplicates", "files", "pain_reports",
                  "pain_rows_rejected", "athletes"):
        assert int(d[table].split(":")[0]) > 0, (table, d[table])
    assert int(d["activities"].split(":")[0]) == len(PLAIN) - 2 + len(ZIPPED)
    assert "export.zip!activities/" in clean["log"]
    assert "truncated" in clean["log"]
    assert f"{COPIED[1]}: same bytes as {COPIED[0]}" in clean["log"]


def test_running_again_changes_only_bookkeeping(batch: Path, clean: dict[str, Any]) -> None:
    """Idempotence, the baseline of the crash rounds: a second clean run loads nothing, changes nothing."""
    again = ingest_to_completion(batch, clean["warehouse"])
    assert ": loaded " not in again.text and "same bytes" not in again.text
    assert digest(clean["warehouse"] / "pipeline.duckdb") == clean["digest"]
    assert _runs(clean["warehouse"] / "pipeline.duckdb") == ["rejections", "ok"]


def test_the_digest_sees_content_and_only_content(clean: dict[str, Any], tmp_path: Path) -> None:
    """One changed value changes the digest; rewritten bookkeeping does not (so equality means something)."""
    copy = tmp_path / "copy.duckdb"
    shutil.copy(clean["warehouse"] / "pipeline.duckdb", copy)
    con = duckdb.connect(str(copy))
    try:
        for table, columns in IGNORED.items():
            if table == "pain_reports_current":
                continue
            sets = ", ".join(
                f'"{c}" = now()' if c.endswith("_utc") else f'"{c}" = 42' if c.endswith("_ns") else f"\"{c}\" = 'other'"
                for c in columns
            )
            con.execute(f"UPDATE {table} SET {sets}")
        con.execute("UPDATE _ingest_runs SET status = 'interrupted'")
    finally:
        con.close()
    assert digest(copy) == clean["digest"]
    for change in ("UPDATE samples SET cadence_spm = cadence_spm + 1 WHERE rowid = 7",
                   "UPDATE pain_reports SET superseded_utc = now() WHERE rowid = 0",
                   "DELETE FROM files WHERE status = 'duplicate'"):
        changed = tmp_path / f"changed-{abs(hash(change))}.duckdb"
        shutil.copy(clean["warehouse"] / "pipeline.duckdb", changed)
        con = duckdb.connect(str(changed))
        try:
            con.execute(change)
        finally:
            con.close()
        assert digest(changed) != clean["digest"], change


def test_the_digest_ignores_only_the_documented_bookkeeping() -> None:
    """IGNORED is the table in docs/warehouse.md ("Content and bookkeeping"), plus the view of pain_reports."""
    from pipeline.warehouse.content import BOOKKEEPING_COLUMNS, BOOKKEEPING_TABLES

    tables = {name: cols for name, cols in IGNORED.items() if name in BOOKKEEPING_COLUMNS}
    assert tables == BOOKKEEPING_COLUMNS
    assert set(IGNORED) - set(tables) == {"pain_reports_current", "_migrations"}
    assert IGNORED["pain_reports_current"] == IGNORED["pain_reports"]
    assert IGNORED_TABLES | {"_migrations"} == set(BOOKKEEPING_TABLES)


# ---------------------------------------------------------------------- the rounds


def _kill_round(batch: Path, root: Path, clean: dict[str, Any], phases: list[str], seed: int) -> dict[str, Any]:
    """Start an ingest and kill it in each of ``phases`` in turn, then let one finish.

    With one phase the kill must land (the warehouse starts empty, so every phase comes).
    With several, a later attempt may have nothing left to do in its phase (say, no file left
    to load) and finish on its own; that is fine, the digests must agree all the same.
    """
    rng = random.Random(seed)
    warehouse = root / f"round-{seed}"
    notes = []
    killed: list[str] = []
    held = False
    for phase in phases:
        # A single-phase round must crash in its phase. The delay is drawn from the clean run's
        # length of that phase; on a quieter machine the phase may end sooner and the run finish
        # before the kill: then start again on a fresh warehouse with half the delay (the last
        # try kills at the trigger line itself).
        attempts = 6 if len(phases) == 1 else 1
        for attempt in range(attempts):
            if len(phases) == 1 and attempt:
                shutil.rmtree(warehouse, ignore_errors=True)
            run = start_ingest(batch, warehouse)
            found = run.wait_for(PHASES[phase])
            delay = 0.0 if attempt == attempts - 1 else rng.uniform(0.0, clean["spans"][phase]) * 0.5 ** attempt
            if found:
                time.sleep(delay)
                run.kill()
            code = run.finish()
            last = run.lines[-1][1] if run.lines else ""
            notes.append(f"{phase}: {'killed' if code == -signal.SIGKILL else f'exit {code}'} "
                         f"{delay * 1000:.0f} ms after the trigger; last line {last[-100:]!r}")
            if code == -signal.SIGKILL or len(phases) > 1:
                break
        held = False
        if code == -signal.SIGKILL:
            killed.append(_where(run))
            # the flock went with the process; the lock file's text still names it (unless the
            # kill came after the run had released the lock, on its way out)
            text = (warehouse / "pipeline.duckdb.lock").read_text().strip()
            held = text == str(run.proc.pid)
            assert held or text == "", (phase, text)
            if len(phases) == 1 and phase == "load":
                assert held, (phase, text)
        if len(phases) == 1:
            assert found and code == -signal.SIGKILL, "\n".join(notes) + "\n" + run.text
        else:
            assert code in (-signal.SIGKILL, 0, 3), notes[-1] + "\n" + run.text
    resumed = ingest_to_completion(batch, warehouse)
    report = "\n".join(notes) + "\n-- resumed run --\n" + resumed.text
    return {"warehouse": warehouse, "report": report, "killed": killed,
            "resumed": resumed, "left_a_stale_lock": held}


def _where(run: Run) -> str:
    """Where a killed run stood, from the last lines it logged.

    ``in_run``: certainly between begin_run and finish_run (it logged something after opening the
    warehouse, and had not reached the pain join); ``maybe``: just after opening, or after the
    pain join (finish_run may or may not have happened); ``out``: before opening, or publishing.
    """
    texts = [text for _, text in run.lines]
    if any(PHASES["publish"].search(t) for t in texts):
        return "out"
    if any(PHASES["pain"].search(t) for t in texts):
        return "maybe"
    opened = [i for i, t in enumerate(texts) if PHASES["decode"].search(t)]
    if not opened:
        return "out"
    return "in_run" if len(texts) > opened[0] + 1 else "maybe"


def _check_round(result: dict[str, Any], clean: dict[str, Any]) -> None:
    warehouse = result["warehouse"]
    report = result["report"]
    assert digest(warehouse / "pipeline.duckdb") == clean["digest"], report
    assert digest(warehouse / "snapshot.duckdb") == clean["digest"], report
    # nothing half-written is left, and no run is left "running"
    assert sorted(p.name for p in warehouse.iterdir()) == [
        "pipeline.duckdb", "pipeline.duckdb.lock", "snapshot.duckdb"
    ], report
    statuses = _runs(warehouse / "pipeline.duckdb")
    if result["left_a_stale_lock"]:
        # the killed ingest's lock did not stand in the way: the resumed run took it over
        assert "which ended without releasing it" in result["resumed"].text, report
    assert "running" not in statuses, (statuses, report)
    assert statuses[-1] in ("ok", "rejections"), (statuses, report)
    # a kill between begin_run and finish_run leaves one 'interrupted' run (see _where)
    killed = result["killed"]
    sure = killed.count("in_run")
    assert sure <= statuses.count("interrupted") <= sure + killed.count("maybe"), (statuses, killed, report)


@pytest.mark.parametrize(("phase", "seed"), FAST_ROUNDS, ids=[p for p, _ in FAST_ROUNDS])
def test_killed_ingest_resumes_to_the_clean_result(
    batch: Path, clean: dict[str, Any], tmp_path: Path, phase: str, seed: int
) -> None:
    result = _kill_round(batch, tmp_path, clean, [phase], seed)
    _check_round(result, clean)
    if phase == "publish":
        # killed while publishing: the data were complete, the resumed run loads nothing new
        assert ": loaded " not in result["resumed"].text, result["report"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_killed_again_and_again_resumes_to_the_clean_result(
    batch: Path, clean: dict[str, Any], tmp_path: Path, seed: int
) -> None:
    """Two or three kills in a row, in random phases, before the run may finish."""
    rng = random.Random(seed)
    phases = [rng.choice(list(PHASES)) for _ in range(rng.randint(2, 3))]
    result = _kill_round(batch, tmp_path, clean, phases, seed)
    _check_round(result, clean)
