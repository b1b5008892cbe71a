"""The decoder hand-over: Arrow IPC payloads, results in job order, a bounded window, limits kept."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.ingest import decode_file, pack_activities, unpack_activities
from pipeline.normalise import read_activities
from pipeline.workers import Job, run_jobs


def _fit_files(sim_club: dict[str, Any]) -> list[Path]:
    broken = {a["file"] for a in sim_club["truth"]["activities"] if a.get("broken")}
    return [p for p in sorted(sim_club["raw"].rglob("*.fit")) if p.relative_to(sim_club["raw"]).as_posix() not in broken]


def test_payload_round_trip_keeps_every_value(sim_club: dict[str, Any]) -> None:
    a, b = (read_activities(p, rel_path=p.name, athlete_id="x", athlete_tz=None)[0] for p in _fit_files(sim_club)[:2])
    payload = pack_activities([a, b])
    assert isinstance(payload, bytes)
    back = unpack_activities(payload)
    assert [x.activity_id for x in back] == [a.activity_id, b.activity_id]
    for want, got in zip((a, b), back):
        assert got.activity == want.activity
        for frame in ("samples", "laps", "pauses"):
            assert getattr(got, frame).equals(getattr(want, frame)), frame
            assert getattr(got, frame).schema == getattr(want, frame).schema


def test_decode_file_hands_back_bytes_not_objects(sim_club: dict[str, Any]) -> None:
    path = _fit_files(sim_club)[0]
    payload = decode_file(str(path), path.name, "x", None, None)
    assert isinstance(payload, bytes)
    (act,) = unpack_activities(payload)
    assert act.samples.height > 100 and act.samples.schema["t_utc"] == pl.Datetime("us", "UTC")


def test_decode_file_takes_the_ingest_hash_only_for_the_bytes_it_was_taken_of(
    sim_club: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "run.fit"
    path.write_bytes(_fit_files(sim_club)[0].read_bytes())
    stat = path.stat()
    real = hashlib.sha256(path.read_bytes()).hexdigest()
    stand_in = "ab" * 32  # not the file's hash: shows which one the activity id was made from

    def activity_id(known: tuple[str, int, int | None] | None, data: bytes | None = None) -> str:
        (act,) = unpack_activities(decode_file(str(path), path.name, "x", None, data, None, known))
        return act.activity_id

    assert activity_id(None).startswith(real[:16])
    assert activity_id((stand_in, stat.st_size, stat.st_mtime_ns)).startswith(stand_in[:16])  # unchanged file
    assert activity_id((stand_in, stat.st_size, None), data=path.read_bytes()).startswith(stand_in[:16])  # member
    # the file changed since the ingest hashed it (another modification time, or size): hashed again
    assert activity_id((stand_in, stat.st_size, stat.st_mtime_ns + 1)).startswith(real[:16])
    assert activity_id((stand_in, stat.st_size + 1, stat.st_mtime_ns)).startswith(real[:16])


def test_empty_payload_round_trip() -> None:
    assert unpack_activities(pack_activities([])) == []


def test_results_come_in_job_order_and_the_window_bounds_what_runs_ahead() -> None:
    window = 3
    # each job returns when it ran; the caller is slow, so without the window the workers would run ahead
    jobs = [Job(i, time.time, ()) for i in range(12)]
    taken: list[float] = []
    started: list[float] = []
    keys = []
    for result in run_jobs(jobs, workers=2, timeout_s=30, window=window):
        assert result.error is None
        keys.append(result.key)
        started.append(result.value)
        taken.append(time.time())
        time.sleep(0.15)
    assert keys == list(range(12))
    for i in range(window, 12):
        assert started[i] >= taken[i - window], f"job {i} started before result {i - window} was taken"


def test_ordered_results_keep_the_time_limit_and_survive_a_dead_worker() -> None:
    jobs = [Job("ok-1", os.getpid, ()), Job("slow", time.sleep, (30,)), Job("dies", os._exit, (7,)),
            Job("ok-2", os.getpid, ())]
    t0 = time.monotonic()
    results = list(run_jobs(jobs, workers=2, timeout_s=1.5, window=2))
    assert time.monotonic() - t0 < 20
    by_key = {r.key: r for r in results}
    assert [r.key for r in results] == ["ok-1", "slow", "dies", "ok-2"]
    assert by_key["slow"].timed_out
    assert isinstance(by_key["dies"].error, RuntimeError) and "died" in str(by_key["dies"].error)
    assert isinstance(by_key["ok-1"].value, int) and isinstance(by_key["ok-2"].value, int)


def test_a_caller_that_stops_early_stops_the_workers() -> None:
    jobs = [Job(i, time.sleep, (0.2,)) for i in range(50)]
    t0 = time.monotonic()
    for result in run_jobs(jobs, workers=2, timeout_s=30, window=4):
        if result.key == 2:
            break
    assert time.monotonic() - t0 < 10
