#!/usr/bin/env python
"""Benchmark of issue 7: a club's history ingested in minutes, not hours.

One run builds a synthetic club with the project's simulator, then measures,
on this machine and in this run:

1. ``pipeline ingest`` end to end (decode + normalise + load, a subprocess):
   records/s, wall time, peak RSS of its process tree;
2. a plain fitparse loop (``FitFile(path).get_messages("record")``, one
   process) over a sample of the same FIT files, for a time budget, its
   records/s extrapolated to all files, and the ratio of the two;
3. the nightly case: ``pipeline nightly`` with N new files (held back from
   the backfill) plus reports and the snapshot;
4. the coach's queries through ``pipeline sql`` (a per-run aggregate over
   ``samples`` and the ``pain_onsets`` view, i.e. the 5 minutes before each
   onset) on a warehouse of ``--query-samples`` samples, built by copying
   the ingested snapshot and replicating its activities, samples and pain
   reports (new ids, times shifted by the club's period) in DuckDB.

Usage (from the repository root)::

    .venv/bin/python bench/bench.py                  # ~600 files: a few minutes
    .venv/bin/python bench/bench.py --files 37000    # the full backfill of issue 7
    make bench

The figures and the command are written to ``docs/performance.md`` (between
the ``bench:results`` markers) unless ``--no-doc``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

END_DATE = date(2026, 11, 15)
CHUNK_WEEKS = 52  # simulate long histories a year at a time (bounded memory)
DOC = REPO / "docs" / "performance.md"
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"


# --------------------------------------------------------------------------- the club


def _plan_count(athletes: int, weeks: int, seed: int) -> int:
    """Activities the simulator plans for this club (files are about the same number)."""
    from pipeline.simulate.core import _rng
    from pipeline.simulate.plan import make_athlete, plan_athlete

    start = END_DATE - timedelta(days=7 * weeks - 1)
    total = 0
    for i in range(athletes):
        prng = _rng(seed, i, 0)  # as simulate_athlete draws them
        total += len(plan_athlete(make_athlete(i, prng), prng, start, weeks))
    return total


def watches(athletes: int, seed: int) -> dict[str, str]:
    """Athlete id -> the kind of watch the simulator gives them (classic | current | current+strap)."""
    from pipeline.simulate.core import _rng
    from pipeline.simulate.plan import make_athlete

    return {a.athlete_id: a.watch for a in (make_athlete(i, _rng(seed, i, 0)) for i in range(athletes))}


def club_size(files: int, seed: int) -> tuple[int, int]:
    """(athletes, weeks) whose club has about ``files`` activity files."""
    athletes = 30 if files >= 3000 else max(4, min(30, files // 100))
    per_week = _plan_count(athletes, 8, seed) / 8
    weeks = max(1, round(files / per_week))
    return athletes, weeks


def _simulate_chunk(args: tuple[int, int, date, int, str]) -> tuple[int, int, int, list[str], int]:
    """One athlete over one chunk of weeks -> files written (pain log rows appended)."""
    from pipeline.simulate.core import simulate_athlete

    index, seed, start, weeks, out = args
    result = simulate_athlete(index, seed, start, weeks)
    n_files = written = 0
    broken: list[str] = []
    for rel, data in result.files.items():
        path = Path(out) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("pain.csv"):
            text = data.decode("utf-8")
            part = f"{path}.{start.isoformat()}"  # merged in date order after all chunks
            Path(part).write_text(text, encoding="utf-8")
            continue
        path.write_bytes(data)
        written += len(data)
        n_files += rel.lower().endswith((".fit", ".gpx"))
    broken = [a["file"] for a in result.activities if a.get("broken")]
    fit_records = sum(a["n_records"] for a in result.activities
                      if not a.get("broken") and str(a.get("file", "")).endswith(".fit"))
    return n_files, result.n_records, written, broken, fit_records


def build_club(raw: Path, athletes: int, weeks: int, seed: int, procs: int) -> dict[str, Any]:
    start = END_DATE - timedelta(days=7 * weeks - 1)
    chunks = []
    for i in range(athletes):
        offset = 0
        while offset < weeks:
            n = min(CHUNK_WEEKS, weeks - offset)
            chunks.append((i, seed, start + timedelta(days=7 * offset), n, str(raw)))
            offset += n
    t0 = time.monotonic()
    files = records = size = fit_records = 0
    broken: list[str] = []
    fit_by_athlete: dict[int, int] = {}
    with ProcessPoolExecutor(max_workers=procs) as pool:
        for chunk, (n_files, n_records, written, bad, n_fit) in zip(chunks, pool.map(_simulate_chunk, chunks)):
            files, records, size = files + n_files, records + n_records, size + written
            fit_records += n_fit
            fit_by_athlete[chunk[0]] = fit_by_athlete.get(chunk[0], 0) + n_fit
            broken += bad
    for folder in sorted(p for p in raw.iterdir() if p.is_dir()):
        parts = sorted(folder.glob("pain.csv.*"))
        if parts:
            lines: list[str] = []
            for k, part in enumerate(parts):
                text = part.read_text(encoding="utf-8").splitlines()
                lines += text if k == 0 else text[1:]
                part.unlink()
            (folder / "pain.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"athletes": athletes, "weeks": weeks, "files": files, "records": records, "bytes": size,
            "fit_records": fit_records, "fit_records_by_athlete": fit_by_athlete, "broken": sorted(broken),
            "seconds": time.monotonic() - t0}


def hold_back(raw: Path, held: Path, n: int, broken: list[str]) -> list[str]:
    """Move the ``n`` newest FIT files out of the club (the nightly case puts them back)."""
    bad = set(broken)
    fits = sorted((p for p in raw.rglob("*.fit") if p.relative_to(raw).as_posix() not in bad),
                  key=lambda p: (p.name, p.as_posix()))
    moved = []
    for path in fits[-n:]:
        rel = path.relative_to(raw)
        dest = held / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, dest)
        moved.append(rel.as_posix())
    return moved


# --------------------------------------------------------------------------- measuring processes


def _tree_rss_kb(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, kB (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
            with open(f"/proc/{entry}/statm", encoding="ascii") as fh:
                pages = int(fh.read().split()[1])
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE") // 1024
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


_WRAPPER = (
    "import resource, subprocess, sys, json\n"
    "p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)\n"
    "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr)\n"
    "print(json.dumps({'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
    " 'code': p.returncode}), file=sys.stderr)\n"
)


def run_measured(cmd: list[str], *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``; wall time, peak RSS of its process tree (polled) and its largest process."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    peak = [0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss_kb(proc.pid))
            done.wait(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    out, err = proc.communicate()
    done.set()
    poller.join()
    seconds = time.monotonic() - t0
    last = err.strip().splitlines()[-1] if err.strip() else "{}"
    info = json.loads(last) if last.startswith("{") else {}
    return {"seconds": seconds, "stdout": out, "stderr": err, "code": info.get("code", proc.returncode),
            "tree_peak_rss_mb": peak[0] / 1024, "max_process_rss_mb": info.get("maxrss_kb", 0) / 1024}


def _pipeline(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def _new_samples(stdout: str) -> int:
    match = re.search(r"(\d+) new samples", stdout)
    return int(match.group(1)) if match else 0


# --------------------------------------------------------------------------- the fitparse loop


def fitparse_loop(files: list[Path], budget_s: float, kind_of: dict[Path, str] | None = None) -> dict[str, Any]:
    """A plain fitparse loop over ``files`` in a seeded random order until ``budget_s`` is spent.

    The random order makes any prefix a fair sample of the club's athletes and
    watches. ``kind_of`` (file -> watch kind) splits the figures by watch.
    """
    from fitparse import FitFile

    if not files:
        return {"records": 0, "seconds": 0.0, "files": 0, "records_per_s": 0.0, "by_watch": {}}
    order = list(files)
    random.Random(0).shuffle(order)
    n = used = 0
    by_watch: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    for path in order:
        t_file, n_file = time.perf_counter(), 0
        try:
            for message in FitFile(str(path)).get_messages("record"):
                message.get_values()
                n_file += 1
        except Exception:  # noqa: BLE001 - the planted broken files
            continue
        n += n_file
        used += 1
        kind = by_watch.setdefault((kind_of or {}).get(path, "?"), {"files": 0, "records": 0, "seconds": 0.0})
        kind["files"] += 1
        kind["records"] += n_file
        kind["seconds"] += time.perf_counter() - t_file
        if time.perf_counter() - t0 >= budget_s:
            break
    seconds = time.perf_counter() - t0
    for kind in by_watch.values():
        kind["records_per_s"] = kind["records"] / kind["seconds"] if kind["seconds"] else 0.0
    return {"records": n, "seconds": seconds, "files": used, "of_files": len(files),
            "records_per_s": n / seconds if seconds else 0.0, "by_watch": by_watch}


def corpus_probe(corpus: Path, repeats: int = 3) -> dict[str, Any] | None:
    """Real watch files: the fitparse loop and the pipeline's decoder, one process each, file by file.

    ``read_activities`` (decode + normalise, as a decoder process does) on
    every FIT file of ``corpus`` that the pipeline loads; the best of
    ``repeats`` runs per file, so start-up costs are not counted. None when
    the corpus is absent.
    """
    from fitparse import FitFile

    from pipeline.normalise import read_activities

    files = sorted((corpus / "fit").glob("*.fit")) if corpus.is_dir() else []
    if not files:
        return None
    used, fp_s, ours_s, records = [], 0.0, 0.0, 0
    for path in files:
        data = path.read_bytes()
        try:
            read_activities(path, rel_path=path.name, athlete_id="a", athlete_tz=None, data=data)
        except Exception:  # noqa: BLE001 - rejected or skipped files (not runs, broken): not loaded
            continue
        t0 = time.perf_counter()
        n = 0
        for message in FitFile(str(path)).get_messages("record"):
            message.get_values()
            n += 1
        fp_s += time.perf_counter() - t0
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            read_activities(path, rel_path=path.name, athlete_id="a", athlete_tz=None, data=data)
            best = min(best, time.perf_counter() - t0)
        ours_s += best
        records += n
        used.append(path.name)
    return {"files": len(used), "records": records, "fitparse_records_per_s": records / fp_s,
            "ours_records_per_s": records / ours_s, "ratio": fp_s / ours_s}


# --------------------------------------------------------------------------- the decoders alone


def _sample(files: list[Path], limit: int) -> list[Path]:
    step = max(1, -(-len(files) // limit))
    return files[::step]


def decode_only(raw: Path, workers: int, limit: int, suffix: str) -> dict[str, Any]:
    """What the ingest's decoder processes do (read, decode, normalise, hand back Arrow IPC), no loading."""
    from pipeline.ingest import decode_file, unpack_activities
    from pipeline.workers import Job, run_jobs

    files = _sample(sorted(raw.rglob(f"*{suffix}")), limit)
    if len(files) < 2:
        return {"files": len(files), "samples": 0, "seconds": 0.0, "records_per_s": 0.0}
    jobs = [Job(str(p), decode_file, (str(p), p.relative_to(raw).as_posix(), p.parts[-3], None, None))
            for p in files]
    samples = payload = 0
    t0 = time.monotonic()
    first: float | None = None
    for result in run_jobs(jobs, workers=workers, timeout_s=120, memory_bytes=2 * 1024**3, window=8 * workers):
        if first is None:
            first = time.monotonic()  # the workers have started (spawn + imports: ~1 s each)
            continue
        if result.error is None and not result.timed_out:
            payload += len(result.value)
            samples += sum(a.samples.height for a in unpack_activities(result.value))
    seconds = time.monotonic() - (first or t0)
    return {"files": len(files), "samples": samples, "seconds": seconds, "records_per_s": samples / max(seconds, 1e-9),
            "startup_s": (first or t0) - t0, "payload_mb": payload / 1e6}


def writer_probe(raw: Path, work: Path, n_files: int) -> dict[str, Any]:
    """The single writer alone: one transaction per file vs the ingest's batches.

    Decodes ``n_files`` FIT files, then loads them into two scratch
    warehouses: one file per transaction (``find_overlapping`` +
    ``Warehouse.load_file``, the ingest before batching) and the way the
    ingest loads now (``OverlapIndex`` + ``Warehouse.load_files`` with
    ``_BATCH_FILES`` files per transaction, one Arrow append per table,
    DuckDB on one thread: ``Warehouse.loading``).
    """
    from pipeline.ingest import _BATCH_FILES, _ledger, _Unit, decode_file, unpack_activities
    from pipeline.warehouse import FileLoad, Warehouse

    files = _sample(sorted(raw.rglob("*.fit")), n_files)
    decoded = []
    for path in files:
        try:
            decoded.append((path, unpack_activities(decode_file(str(path), path.name, path.parts[-3], None, None))))
        except Exception:  # noqa: BLE001 - planted broken files
            continue
    samples = sum(a.samples.height for _p, acts in decoded for a in acts)
    scratch = work / "writer-probe"
    shutil.rmtree(scratch, ignore_errors=True)

    def ledger(path: Path, acts: list[Any], run_id: str) -> dict[str, Any]:
        unit = _Unit(path.name, path, path.parts[-3], acts[0].activity["source_sha256"], 1, None)
        return _ledger(unit, run_id=run_id, fmt="fit", status="loaded", activity_ids=[a.activity_id for a in acts])

    t0 = time.monotonic()
    with Warehouse.open(scratch / "per-file" / "pipeline.duckdb") as wh:
        run_id = wh.begin_run(command="ingest")
        for path, acts in decoded:
            for a in acts:
                wh.find_overlapping(athlete_id=a.activity["athlete_id"], start_utc=a.activity["start_utc"],
                                    end_utc=a.activity["end_utc"])
            wh.load_file(ledger=ledger(path, acts, run_id), activities=acts, duplicates={})
        wh.finish_run(run_id, status="ok", summary={})
    per_file = time.monotonic() - t0
    t0 = time.monotonic()
    with Warehouse.open(scratch / "batched" / "pipeline.duckdb") as wh, wh.loading():  # as the ingest loads
        run_id = wh.begin_run(command="ingest")
        index = wh.overlap_index()
        batch: list[Any] = []
        for path, acts in decoded:
            for a in acts:
                index.find(a.activity["athlete_id"], a.activity["start_utc"], a.activity["end_utc"])
                index.add(a.activity["athlete_id"], a.activity_id, a.activity["start_utc"], a.activity["end_utc"])
            batch.append(FileLoad(ledger=ledger(path, acts, run_id), activities=acts))
            if len(batch) == _BATCH_FILES:
                wh.load_files(batch)
                batch = []
        wh.load_files(batch)
        wh.finish_run(run_id, status="ok", summary={})
    batched = time.monotonic() - t0
    shutil.rmtree(scratch, ignore_errors=True)
    return {"files": len(decoded), "samples": samples, "batch_files": _BATCH_FILES,
            "per_file_ms": 1000 * per_file / max(1, len(decoded)),
            "per_file_records_per_s": samples / per_file,
            "batched_ms": 1000 * batched / max(1, len(decoded)), "batched_records_per_s": samples / batched}


# --------------------------------------------------------------------------- the query warehouse


QUERIES = {
    "per-run aggregate": (
        "SELECT activity_id, count(*) AS n, avg(hr_bpm) AS hr, avg(cadence_spm) AS cadence, "
        "avg(speed_mps) AS speed, max(distance_m) AS distance, max(elapsed_s) AS elapsed "
        "FROM samples GROUP BY activity_id ORDER BY activity_id"
    ),
    "5 minutes before onset (pain_onsets)": "SELECT * FROM pain_onsets ORDER BY report_id",
}


def build_query_warehouse(snapshot: Path, dest_dir: Path, target: int) -> dict[str, Any]:
    """A copy of ``snapshot`` whose samples are replicated up to about ``target`` rows."""
    import duckdb

    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / "snapshot.duckdb"
    shutil.copyfile(snapshot, dest)
    t0 = time.monotonic()
    con = duckdb.connect(str(dest))
    con.execute("SET threads = 2; SET memory_limit = '1500MB'; SET preserve_insertion_order = false")
    base = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    copies = max(0, math.ceil(target / max(base, 1)) - 1)
    span = con.execute(
        "SELECT coalesce(date_diff('day', min(start_utc), max(end_utc)), 0) + 7 FROM activities"
    ).fetchone()[0]
    if copies:
        cols = [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                          "WHERE table_name = 'samples' ORDER BY ordinal_position").fetchall()]
        sel = ", ".join(
            "b.activity_id || '~' || r.range" if c == "activity_id"
            else f"b.t_utc + to_days(CAST(r.range * {span} AS INTEGER))" if c == "t_utc" else f"b.{c}"
            for c in cols
        )
        for r0 in range(1, copies + 1, 8):  # a few replicas per statement keeps memory in check
            r1 = min(copies + 1, r0 + 8)
            con.execute(f"INSERT INTO samples SELECT {sel} FROM (SELECT * FROM samples WHERE NOT contains("
                        f"activity_id, '~')) b, range({r0}, {r1}) r")
        _replicate(con, "activities", copies, span, key="activity_id",
                   shift=("start_utc", "end_utc"), ids=("activity_id",))
        _replicate(con, "pain_reports", copies, span, key="report_id",
                   shift=("sample_t_utc", "onset_utc", "first_seen_utc"), ids=("report_id", "activity_id"),
                   where="activity_id IS NOT NULL")
    con.execute("CHECKPOINT")
    total = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    onsets = con.execute("SELECT count(*) FROM pain_reports WHERE status = 'matched'").fetchone()[0]
    con.close()
    return {"samples": total, "base_samples": base, "copies": copies, "matched_onsets": onsets,
            "seconds": time.monotonic() - t0, "bytes": dest.stat().st_size}


def _replicate(con: Any, table: str, copies: int, span: int, *, key: str, shift: tuple[str, ...],
               ids: tuple[str, ...], where: str = "TRUE") -> None:
    cols = [r[0] for r in con.execute(f"SELECT column_name FROM information_schema.columns "
                                      f"WHERE table_name = '{table}' ORDER BY ordinal_position").fetchall()]
    sel = ", ".join(
        f"b.{c} || '~' || r.range" if c in ids
        else f"b.{c} + to_days(CAST(r.range * {span} AS INTEGER))" if c in shift else f"b.{c}"
        for c in cols
    )
    con.execute(f"INSERT INTO {table} SELECT {sel} FROM (SELECT * FROM {table} WHERE {where} "
                f"AND NOT contains({key}, '~')) b, range(1, {copies + 1}) r")


def time_queries(warehouse: Path, repeats: int) -> dict[str, Any]:
    base = min(run_measured(_pipeline("sql", "--warehouse", str(warehouse), "SELECT 1"))["seconds"]
               for _ in range(2))
    out: dict[str, Any] = {"startup_s": base}
    for name, sql in QUERIES.items():
        runs = [run_measured(_pipeline("sql", "--warehouse", str(warehouse), "--format", "csv",
                                       "--timeout", "600", sql)) for _ in range(repeats)]
        best = min(runs, key=lambda r: r["seconds"])
        rows = max(0, len(best["stdout"].splitlines()) - 1)
        out[name] = {"seconds": best["seconds"], "query_s": max(0.0, best["seconds"] - base), "rows": rows,
                     "code": best["code"], "error": best["stderr"].strip().splitlines()[:1] if best["code"] else []}
    return out


# --------------------------------------------------------------------------- the report


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def report(args: argparse.Namespace, r: dict[str, Any]) -> str:
    club, ing, fp, night, q = r["club"], r["ingest"], r["fitparse"], r.get("nightly"), r.get("queries")
    ratio = ing["records_per_s"] / fp["records_per_s"] if fp["records_per_s"] else float("nan")
    est_fp_h = club["fit_records_est"] / fp["records_per_s"] / 3600 if fp["records_per_s"] else float("nan")
    lines = [
        f"Measured {r['when']} on {r['machine']} (load average at start {r['load']}).",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Club: {club['athletes']} athletes x {club['weeks']} weeks = {club['files']} activity files "
        f"({club['fit_files']} FIT, {club['gpx_files']} GPX; {len(club['broken'])} planted broken), "
        f"{club['records']:,} records, {club['bytes'] / 1e9:.2f} GB; simulated in {club['seconds']:.0f} s.",
        "",
        "| measure | value | target | met? |",
        "|---|---|---|---|",
        f"| `pipeline ingest` end to end ({ing['workers']} workers) | {_fmt_rate(ing['records_per_s'])} records/s "
        f"({ing['samples']:,} samples in {ing['seconds']:.1f} s) | | |",
        *(f"| decoder processes alone, {fmt} ({ing['workers']} workers: read, decode, normalise, Arrow IPC; no "
          f"loading; {r['decode_only.' + fmt.lower()]['files']} files) | "
          f"{_fmt_rate(r['decode_only.' + fmt.lower()]['records_per_s'])} records/s | | |"
          for fmt in ("FIT", "GPX") if r["decode_only." + fmt.lower()]["files"] > 1),
        f"| the writer alone, one transaction per file (`load_file`, {r['writer']['files']} FIT files; "
        f"the ingest before batching) | {r['writer']['per_file_ms']:.1f} ms per file = "
        f"{_fmt_rate(r['writer']['per_file_records_per_s'])} records/s | | |",
        f"| the writer alone, as the ingest loads (`load_files`, {r['writer'].get('batch_files', '?')} files per "
        f"transaction) | {r['writer'].get('batched_ms', float('nan')):.1f} ms per file = "
        f"{_fmt_rate(r['writer']['batched_records_per_s'])} records/s | | |",
        f"| plain fitparse loop (1 process, {fp['files']} of {fp['of_files']} FIT files in a seeded random order"
        + (", each watch kind's rate weighted by its share of the club's records; the sample's own mix: "
           f"{_fmt_rate(fp['sampled_records_per_s'])} records/s" if "sampled_records_per_s" in fp else "")
        + f") | {_fmt_rate(fp['records_per_s'])} records/s (all FIT files: ~{est_fp_h:.1f} h) | | |",
        *(["| the fitparse loop by watch (the club's FIT files: "
           + ", ".join(f"{k} {v:,} ({club.get('fit_records_by_watch', {}).get(k, 0):,} records)"
                       for k, v in club.get("fit_files_by_watch", {}).items()) + ") | "
           + "; ".join(f"{k}: {_fmt_rate(v['records_per_s'])} records/s ({v['files']} files)"
                       for k, v in sorted(fp["by_watch"].items())) + " | | |"] if fp.get("by_watch") else []),
        f"| ratio ingest / fitparse loop | {ratio:.0f}x | >= 100x | {'yes' if ratio >= 100 else 'no'} |",
        f"| ratio FIT decoders alone / fitparse loop (the same kind of files) | "
        f"{r['decode_only.fit']['records_per_s'] / fp['records_per_s']:.0f}x | | |",
        *([f"| real watch files, one process ({r['corpus']['files']} FIT files of `../shared/corpus`, "
           f"{r['corpus']['records']:,} records): fitparse loop / pipeline decoder (decode + normalise) | "
           f"{_fmt_rate(r['corpus']['fitparse_records_per_s'])} / "
           f"{_fmt_rate(r['corpus']['ours_records_per_s'])} records/s = {r['corpus']['ratio']:.0f}x | | |"]
          if r.get("corpus") else []),
        f"| peak RSS of the ingest process tree | {ing['tree_peak_rss_mb']:.0f} MB (largest process "
        f"{ing['max_process_rss_mb']:.0f} MB) | < 1.5 GB | "
        f"{'yes' if ing['tree_peak_rss_mb'] < 1536 else 'no'} |",
    ]
    scale = 37000 / max(1, club["files"])
    projected = ing["seconds"] * scale
    lines.append(
        f"| backfill of 37,000 files | {'measured' if club['files'] >= 30000 else 'projected linearly'}: "
        f"{(ing['seconds'] if club['files'] >= 30000 else projected) / 60:.1f} min | <= 10 min | "
        f"{'yes' if (ing['seconds'] if club['files'] >= 30000 else projected) <= 600 else 'no'} |"
    )
    first = r.get("first_reports")
    if first:
        lines.append(
            f"| every report page built from scratch (`pipeline report`, the night before) | "
            f"{first['seconds']:.1f} s | | |"
        )
    if night:
        lines.append(
            f"| nightly: {night['files']} new files + reports + snapshot (last night's pages in place) | "
            f"{night['seconds']:.1f} s (warehouse of {ing['samples']:,} samples, {club['athletes']} athletes) | "
            f"< 30 s | {'yes' if night['seconds'] < 30 else 'no'} |"
        )
    if q:
        agg = q["per-run aggregate"]
        onset = q["5 minutes before onset (pain_onsets)"]
        lines += [
            f"| per-run aggregate over {q['warehouse']['samples']:,} samples (`pipeline sql`) | "
            f"{agg['query_s']:.2f} s ({agg['rows']:,} runs; {agg['seconds']:.2f} s with process start) | < 5 s | "
            f"{'yes' if agg['query_s'] < 5 and not agg['code'] else 'no'} |",
            f"| 5 minutes before onset (`pain_onsets`, {q['warehouse']['matched_onsets']:,} onsets) | "
            f"{onset['query_s']:.2f} s ({onset['rows']:,} rows) | | |",
        ]
    lines += ["", "Details (JSON):", "", "```json", json.dumps(_public(r), indent=1, default=str), "```"]
    return "\n".join(lines)


def _public(r: dict[str, Any]) -> dict[str, Any]:
    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("stdout", "stderr", "broken")}
        return round(x, 3) if isinstance(x, float) else x
    return strip(r)


def write_doc(text: str, *, block: str = "results") -> None:
    """Replace the text between the ``bench:<block>`` markers of docs/performance.md."""
    begin, end = BEGIN.replace("results", block), END.replace("results", block)
    doc = DOC.read_text(encoding="utf-8") if DOC.is_file() else "# Performance\n"
    if begin not in doc or end not in doc:
        doc += f"\n{begin}\n{end}\n"
    head, rest = doc.split(begin, 1)
    _old, tail = rest.split(end, 1)
    DOC.write_text(f"{head}{begin}\n{text}\n{end}{tail}", encoding="utf-8")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=600, help="about this many activity files (default 600)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", type=int, default=2, help="decoder processes of the ingest (default 2)")
    ap.add_argument("--work", type=Path, help="work folder (default: a temporary folder, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--fitparse-budget", type=float, default=60.0, help="seconds for the fitparse loop")
    ap.add_argument("--sample-files", type=int, default=600,
                    help="files for the decoder-only and writer measurements (a sample of the club)")
    ap.add_argument("--nightly-files", type=int, default=30)
    ap.add_argument("--query-samples", type=float, default=150e6, help="samples in the query warehouse")
    ap.add_argument("--no-queries", action="store_true")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each query (the best counts)")
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus",
                    help="real FIT files (corpus/fit/*.fit) for the fitparse-vs-decoder row (default ../shared/corpus)")
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/performance.md")
    ap.add_argument("--fit-only", action="store_true",
                    help="drop the GPX files (the phone-app athletes record GPX): a club of watches")
    args = ap.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    raw, wh, held, reports = work / "raw", work / "warehouse", work / "held", work / "reports"
    for folder in (raw, wh, held, reports, work / "query"):
        shutil.rmtree(folder, ignore_errors=True)
    cmd = "bench/bench.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "command": f".venv/bin/python {cmd}",
    }
    try:
        athletes, weeks = club_size(args.files, args.seed)
        print(f"simulating {athletes} athletes x {weeks} weeks into {raw} ...", flush=True)
        club = build_club(raw, athletes, weeks, args.seed, procs=max(1, min(2, os.cpu_count() or 1)))
        if args.fit_only:
            for gpx in raw.rglob("*.gpx"):
                gpx.unlink()
            club["files"] = len(list(raw.rglob("*.fit")))
            club["records"] = club["fit_records"]
            club["bytes"] = sum(p.stat().st_size for p in raw.rglob("*") if p.is_file())
        fit_files = sorted(raw.rglob("*.fit"))
        club["fit_files"] = len(fit_files)
        watch_of = watches(athletes, args.seed)
        ids = list(watch_of)
        club["fit_records_by_watch"] = {}
        for index, n_fit in club.pop("fit_records_by_athlete").items():
            kind = watch_of[ids[index]]
            club["fit_records_by_watch"][kind] = club["fit_records_by_watch"].get(kind, 0) + n_fit
        kind_of = {path: watch_of.get(path.relative_to(raw).parts[0], "?") for path in fit_files}
        club["fit_files_by_watch"] = {kind: sum(1 for k in kind_of.values() if k == kind)
                                      for kind in sorted(set(kind_of.values()))}
        club["gpx_files"] = len(list(raw.rglob("*.gpx")))
        held_files = hold_back(raw, held, args.nightly_files, club["broken"])
        result["club"] = club
        print(f"  {club['files']} files, {club['records']:,} records in {club['seconds']:.0f} s", flush=True)

        print("fitparse loop ...", flush=True)
        fp = fitparse_loop([f for f in fit_files if f.exists()], args.fitparse_budget, kind_of)
        result["fitparse"] = fp
        club["fit_records_est"] = club["fit_records"]
        # the loop's time for the whole club, watch kind by watch kind (a random sample of a few dozen
        # files mixes the kinds by chance): the club's records of each kind at that kind's rate
        rates = {k: v["records_per_s"] for k, v in fp["by_watch"].items()}
        if rates and all(rates.get(k) for k in club["fit_records_by_watch"]):
            total = sum(club["fit_records_by_watch"].values())
            fp["sampled_records_per_s"] = fp["records_per_s"]
            fp["records_per_s"] = total / sum(n / rates[k] for k, n in club["fit_records_by_watch"].items())
        print(f"  {fp['records_per_s']:,.0f} records/s ({fp['files']} files)", flush=True)

        print(f"real watch files ({args.corpus}) ...", flush=True)
        result["corpus"] = corpus_probe(args.corpus)
        if result["corpus"]:
            c = result["corpus"]
            print(f"  {c['files']} files: fitparse {c['fitparse_records_per_s']:,.0f}/s, "
                  f"pipeline decoder {c['ours_records_per_s']:,.0f}/s ({c['ratio']:.0f}x)", flush=True)

        print("decoders alone (no warehouse) ...", flush=True)
        for suffix in (".fit", ".gpx"):
            dec = decode_only(raw, args.workers, args.sample_files // 2, suffix)
            result[f"decode_only{suffix}"] = dec
            print(f"  {suffix}: {dec['samples']:,} samples in {dec['seconds']:.1f} s = {dec['records_per_s']:,.0f}/s",
                  flush=True)

        print("the writer alone ...", flush=True)
        wr = writer_probe(raw, work, min(60, args.sample_files))
        result["writer"] = wr
        print(f"  {wr['per_file_ms']:.0f} ms per file = {wr['per_file_records_per_s']:,.0f} records/s; batched "
              f"appends {wr['batched_records_per_s']:,.0f} records/s", flush=True)

        print("pipeline ingest (backfill) ...", flush=True)
        ing = run_measured(_pipeline("ingest", "--raw", str(raw), "--warehouse", str(wh),
                                     "--workers", str(args.workers)))
        if ing["code"] not in (0, 3):
            print(ing["stdout"], ing["stderr"], file=sys.stderr)
            raise SystemExit(f"ingest failed with exit code {ing['code']}")
        ing["samples"] = _new_samples(ing["stdout"])
        ing["records_per_s"] = ing["samples"] / ing["seconds"]
        ing["workers"] = args.workers
        result["ingest"] = ing
        print(f"  {ing['samples']:,} samples in {ing['seconds']:.1f} s = {ing['records_per_s']:,.0f}/s, "
              f"peak tree RSS {ing['tree_peak_rss_mb']:.0f} MB", flush=True)

        # the reports of the night before: a nightly run finds last night's pages in place
        print("reports of the backfilled warehouse (the night before) ...", flush=True)
        first = run_measured(_pipeline("report", "--warehouse", str(wh), "--reports", str(reports)))
        result["first_reports"] = first
        print(f"  {first['seconds']:.1f} s (exit {first['code']})", flush=True)

        print(f"nightly with {len(held_files)} new files ...", flush=True)
        for rel in held_files:
            shutil.move(held / rel, raw / rel)
        night = run_measured(_pipeline("nightly", "--raw", str(raw), "--warehouse", str(wh),
                                       "--reports", str(reports), "--workers", str(args.workers)))
        night["files"] = len(held_files)
        night["samples"] = _new_samples(night["stdout"])
        result["nightly"] = night
        print(f"  {night['seconds']:.1f} s (exit {night['code']})", flush=True)

        if not args.no_queries:
            print(f"query warehouse of ~{args.query_samples:,.0f} samples ...", flush=True)
            qwh = build_query_warehouse(wh / "snapshot.duckdb", work / "query", int(args.query_samples))
            print(f"  {qwh['samples']:,} samples in {qwh['seconds']:.0f} s", flush=True)
            queries = time_queries(work / "query", args.repeats)
            queries["warehouse"] = qwh
            result["queries"] = queries
            for name in QUERIES:
                print(f"  {name}: {queries[name]['query_s']:.2f} s", flush=True)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    text = report(args, result)
    print()
    print(text)
    if not args.no_doc:
        write_doc(text, block="results-fit-only" if args.fit_only else "results")
        print(f"\nwritten to {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
