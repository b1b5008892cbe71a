"""Seeded simulator of runners' watch files and pain logs, with planted, documented effects.

``simulate(out_dir, athletes=4, weeks=8, seed=42, end_date=2026-11-15)`` writes::

    <out_dir>/<athlete_id>/athlete.toml      name, timezone, unit, optional distance_cap
    <out_dir>/<athlete_id>/pain.csv          date,run,onset,body_part,side,severity,notes
    <out_dir>/<athlete_id>/activities/*.fit|*.gpx   YYYY-MM-DD-HHMM-<type>.<ext> (local start)
    <out_dir>/_truth/truth.json              the planted truth

Planted effects (full description in ``docs/simulator.md``):

* ``knee`` (London, miles, FIT from a Forerunner 945): on every run longer than
  its onset distance, right-knee pain starts at ``D ~ N(9.6 km, 0.35 km)``
  (clipped to 8.7-10.5 km, drawn per run). Over the ~5 minutes before the
  onset sample, cadence drops by 6-8 steps/min and pace fades by 4-6 %; both
  persist to the end. A weekly long run (11-18 km) plus a medium-long run in
  odd weeks give >= 8 onsets in 8 weeks. Its pain log mixes ``9.6 km``,
  ``~6 mi``, ``5-6 mi``, ``HH:MM:SS``, ``+47:30`` and ISO-instant onsets, and
  has one report on a day without a run (expected ``unmatched``).
* ``spike`` (New York, miles, FR935): Sunday long runs of 14-16 km; planted
  spike runs are 1.36-1.5x the previous 30 days' longest run (every other run
  stays <= 1.25x), each followed by pain: left hamstring late in the run by
  distance (``13 mi``), lower back ``after`` plus calves ``next day``, or a
  hamstring by clock time (``10:41``). Also the cohort's one bike ride.
* ``control`` (Berlin, km, fenix 5): no pain (``pain.csv`` is the header
  only). Holds the truncated and the corrupt FIT file and a run exported as
  both FIT and Garmin Connect GPX.
* ``phone`` (index 3, Madrid, km): GPX 1.1 from a phone app (``StravaGPX
  Android``), TrackPointExtension v1 hr and cad (cad in strides/min), a few
  dropped points; left shin pain ``NN min`` into two tempo runs.
* index >= 4: more ``control`` and ``phone`` variants in other cities.

Determinism: the same arguments give byte-identical files (no wall clock, no
set order, fixed float formatting, ``numpy.random.SeedSequence(seed,
spawn_key=(athlete, ...))`` streams).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipeline.simulate.core import AthleteOutput, simulate_athlete

__all__ = ["simulate", "SimulationSummary", "TRUTH_RELPATH", "GENERATOR"]

logger = logging.getLogger(__name__)

#: Where the truth goes, relative to ``out_dir``.
TRUTH_RELPATH = Path("_truth") / "truth.json"
#: The marker in truth.json that identifies a previous simulator output.
GENERATOR = "pipeline.simulate"
TRUTH_VERSION = 1
_ID_RE = re.compile(r"^[a-z0-9_-]+$")
_IGNORABLE = re.compile(r"^(README(\..*)?|\..*)$", re.IGNORECASE)


@dataclass(frozen=True)
class SimulationSummary:
    """What :func:`simulate` wrote."""

    out_dir: Path
    n_athletes: int
    n_activity_files: int
    n_pain_rows: int
    truth_path: Path
    athlete_ids: tuple[str, ...]
    n_records: int
    n_knee_onsets: int
    n_spikes: int
    n_broken_files: int
    period_start: date
    period_end: date
    seed: int
    bytes_written: int

    def line(self) -> str:
        """One line for the CLI."""
        return (
            f"simulated {self.n_athletes} athletes ({', '.join(self.athlete_ids)}) "
            f"{self.period_start}..{self.period_end} seed {self.seed}: "
            f"{self.n_activity_files} activity files ({self.n_broken_files} broken), "
            f"{self.n_records} samples, {self.n_pain_rows} pain rows, "
            f"{self.n_knee_onsets} knee onsets, {self.n_spikes} load spikes -> {self.out_dir}"
        )


def simulate(
    out_dir: Path,
    *,
    athletes: int = 4,
    weeks: int = 8,
    seed: int = 42,
    end_date: date = date(2026, 11, 15),
) -> SimulationSummary:
    """Write a simulated raw-data folder with planted effects and its truth.

    Parameters
    ----------
    out_dir
        Folder to write (created if missing). It must be empty (apart from
        ``README*`` and dot-files), or hold a previous simulator output, which
        is replaced: the athlete folders and ``_truth`` listed in its
        truth.json are removed first.
    athletes
        Number of athletes, >= 3 (0 knee, 1 spike, 2 control, 3+ phone/control).
    weeks
        Length of the period in weeks, >= 1; it ends on ``end_date``.
    seed
        Seed of every random stream.
    end_date
        Last day of the period (athlete-local dates).

    Returns
    -------
    SimulationSummary
        Counts and paths of what was written.

    Raises
    ------
    ValueError
        Bad arguments, or ``out_dir`` is non-empty and not a simulator output.
    """
    out_dir = Path(out_dir)
    if athletes < 3:
        raise ValueError(f"athletes must be >= 3 (knee, spike, control); got {athletes}")
    if weeks < 1:
        raise ValueError(f"weeks must be >= 1; got {weeks}")
    start = end_date - timedelta(days=7 * weeks - 1)
    _prepare(out_dir)

    outputs: list[AthleteOutput] = [simulate_athlete(i, seed, start, weeks) for i in range(athletes)]
    ids = [o.athlete.athlete_id for o in outputs]
    if len(set(ids)) != len(ids) or not all(_ID_RE.match(i) for i in ids):
        raise AssertionError(f"athlete ids must be unique and [a-z0-9_-]: {ids}")  # pragma: no cover

    files: dict[str, bytes] = {}
    activities: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    for o in outputs:
        files.update(o.files)
        activities.extend(o.activities)
        reports.extend(o.pain_reports)
    truth = {
        "generator": GENERATOR,
        "version": TRUTH_VERSION,
        "seed": seed,
        "args": {"athletes": athletes, "weeks": weeks, "seed": seed, "end_date": end_date.isoformat()},
        "period": {"start_date": start.isoformat(), "end_date": end_date.isoformat()},
        "written": sorted(ids) + ["_truth"],
        "athletes": {o.athlete.athlete_id: o.athlete_truth for o in outputs},
        "activities": activities,
        "pain_reports": reports,
    }
    files[TRUTH_RELPATH.as_posix()] = (json.dumps(truth, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    total = 0
    for rel in sorted(files):  # "_truth/..." sorts before the (lower-case) athlete folders: written first
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[rel])
        total += len(files[rel])
    n_activity_files = len(activities)
    summary = SimulationSummary(
        out_dir=out_dir,
        n_athletes=athletes,
        n_activity_files=n_activity_files,
        n_pain_rows=len(reports),
        truth_path=out_dir / TRUTH_RELPATH,
        athlete_ids=tuple(ids),
        n_records=sum(o.n_records for o in outputs),
        n_knee_onsets=sum(1 for a in activities if a.get("knee_onset") and a["duplicate_of"] is None),
        n_spikes=sum(1 for a in activities if a["is_spike"] and a["duplicate_of"] is None),
        n_broken_files=sum(1 for a in activities if a["broken"]),
        period_start=start,
        period_end=end_date,
        seed=seed,
        bytes_written=total,
    )
    logger.info(summary.line())
    return summary


def _prepare(out_dir: Path) -> None:
    """Make ``out_dir`` ready: create it, or clear a previous simulator output, or refuse."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: exists and is not a directory")
    if not out_dir.exists():
        out_dir.mkdir(parents=True)
        return
    entries = sorted(p.name for p in out_dir.iterdir() if not _IGNORABLE.match(p.name))
    if not entries:
        return
    truth_path = out_dir / TRUTH_RELPATH
    previous = _read_previous_truth(truth_path)
    if previous is None:
        raise ValueError(
            f"{out_dir}: not empty and not a previous simulator output (no {TRUTH_RELPATH} written by "
            f"{GENERATOR}); refusing to write into it. Found: {', '.join(entries[:5])}"
            + (" ..." if len(entries) > 5 else "")
        )
    written = previous.get("written")
    if not isinstance(written, list) or not all(isinstance(w, str) for w in written):
        raise ValueError(f"{truth_path}: malformed 'written' list; refusing to clear {out_dir}")
    for name in written:
        if name != "_truth" and not _ID_RE.match(name):
            raise ValueError(f"{truth_path}: unexpected entry {name!r} in 'written'; refusing to clear {out_dir}")
        target = out_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    logger.info("%s: replaced a previous simulator output (%d entries)", out_dir, len(written))


def _read_previous_truth(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("generator") == GENERATOR:
        return data
    return None
