"""Join pain reports to the run, and the sample, where the pain started.

:func:`join_pain_onsets` takes the reports parsed by
:func:`pipeline.sources.pain.read_pain_log`, the activities table and a way to
fetch samples, and fills the join columns of every report (it never drops
one). The rules, with worked examples, are in ``docs/pain-log.md``:

1. *Which run*: the athlete's running activities whose local start date is the
   report's ``date`` (``date - 1`` for ``next day``), narrowed by the ``run``
   column; a clock or ISO onset picks the run containing the instant.
2. *Which sample*: distance -> first sample with ``distance_m >=`` the
   distance; elapsed -> first sample with ``moving_s >=`` the time (timer time,
   pauses excluded); clock/instant -> the nearest sample within
   :data:`CLOCK_NEAREST_S`, else the last sample at or before the instant.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import polars as pl

from pipeline.errors import InputError, PainRowError
from pipeline.schema import PAIN_REPORT_SCHEMA, RUNNING_SPORTS, frame_from_rows
from pipeline.sources.pain import Onset, parse_onset

__all__ = [
    "join_pain_onsets",
    "JOIN_COLUMNS",
    "STATUSES",
    "CLOCK_NEAREST_S",
    "RUN_HINT_TOLERANCE_S",
    "local_instants",
]

logger = logging.getLogger(__name__)

#: A clock/instant onset takes the nearest sample if it is at most this far, seconds.
CLOCK_NEAREST_S = 5.0
#: A ``run`` column ``HH:MM`` matches runs whose local start is within this, seconds.
RUN_HINT_TOLERANCE_S = 600.0
#: Activity ids per ``samples_for`` call (each call is one scan of the samples table, so few
#: and large: 1,024 runs of ~4,000 samples in the TRACK_COLUMNS are ~150 MB).
SAMPLES_BATCH = 1024
#: The sample columns the join reads (``samples_for`` may return only these).
TRACK_COLUMNS = ("activity_id", "t_utc", "elapsed_s", "moving_s", "distance_m")

#: The columns :func:`join_pain_onsets` (re)computes.
JOIN_COLUMNS = (
    "status",
    "status_detail",
    "activity_id",
    "sample_t_utc",
    "onset_utc",
    "onset_elapsed_s",
    "onset_moving_s",
    "onset_distance_m",
    "onset_distance_lo_m",
    "onset_distance_hi_m",
)

#: Every ``status`` value, with its meaning (documented in docs/pain-log.md).
STATUSES = {
    "matched": "joined to a run and a sample",
    "unmatched": "no run fits (status_detail says why)",
    "ambiguous": "several runs fit; candidate ids in status_detail",
    "beyond_run": "the onset is past the run's end; activity_id set, sample columns null",
    "nonexistent_local_time": "the clock time does not exist that day (DST gap)",
    "ambiguous_local_time": "the clock time occurs twice (DST overlap) and neither or both fall in a run",
    "after_run": "'after': the last run of the day; onset = the run's end",
    "next_day": "'next day': the last run of the previous day; onset = the run's end",
    "no_samples": "the run has no samples with the channel needed (distance / time)",
    "bad_onset": "onset_raw could not be parsed (reports not from read_pain_log)",
}

_UTC = timezone.utc
_HHMM_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


@dataclass(frozen=True)
class _Run:
    activity_id: str
    start_utc: datetime
    end_utc: datetime
    local_start: datetime  # naive local wall clock at the start
    own_zone: tzinfo | None  # the activity's own zone/offset, when it has one
    source_file: str | None
    distance_m: float | None
    elapsed_s: float | None
    moving_s: float | None

    @property
    def local_date(self) -> date:
        return self.local_start.date()

    def contains(self, instant: datetime) -> bool:
        return self.start_utc <= instant <= self.end_utc

    def label(self) -> str:
        return f"{self.activity_id} ({self.local_start:%Y-%m-%d %H:%M})"


@dataclass
class _Decision:
    status: str
    detail: str | None = None
    run: _Run | None = None
    target: tuple[Any, ...] | None = None  # ("distance", Onset) | ("moving", s) | ("instant", dt) | ("end",)


@dataclass(frozen=True)
class _Track:
    t_us: np.ndarray  # int64 epoch microseconds, sorted
    elapsed_s: np.ndarray
    moving_s: np.ndarray
    distance_m: np.ndarray


@dataclass
class _Fill:
    status: str
    detail: str | None = None
    activity_id: str | None = None
    values: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- public


def join_pain_onsets(
    reports: pl.DataFrame,
    activities: pl.DataFrame,
    samples_for: Callable[[list[str]], pl.DataFrame],
    *,
    timezones: Mapping[str, str | None],
    after_window_h: float = 12.0,
) -> pl.DataFrame:
    """Fill the join columns of every pain report.

    Parameters
    ----------
    reports : polars.DataFrame
        :data:`~pipeline.schema.PAIN_REPORT_SCHEMA` rows (from ``read_pain_log``).
    activities : polars.DataFrame
        :data:`~pipeline.schema.ACTIVITY_SCHEMA`, duplicates already removed;
        only sports in :data:`~pipeline.schema.RUNNING_SPORTS` with a date are
        candidates (an activity on a device clock, ``device_time_s`` set, never is).
    samples_for : callable
        ``samples_for(activity_ids) -> SAMPLE_SCHEMA frame`` for those ids. Called
        only for the runs reports were joined to, in batches.
    timezones : mapping
        ``athlete_id -> IANA zone`` (or None): the zone clock-time onsets are read in.
    after_window_h : float
        For an ``after`` report with no run that day, ``status_detail`` points at
        a run that ended at most this many hours before the day began (the
        report itself stays ``unmatched``).

    Returns
    -------
    polars.DataFrame
        Every report, in order, with ``status``, ``status_detail`` and the join
        columns filled (see ``STATUSES``).

    Raises
    ------
    InputError
        A zone in ``timezones`` is not an IANA name.
    """
    zones = _zones(timezones)
    runs = _runs(activities, zones)
    rows = reports.select(list(PAIN_REPORT_SCHEMA)).to_dicts()
    decisions = [
        _decide(row, runs.get(row["athlete_id"], _Runs()), zones.get(row["athlete_id"]), after_window_h)
        for row in rows
    ]
    needed = sorted(
        {
            d.run.activity_id
            for d in decisions
            if d.run is not None
            and d.target is not None
            and (d.target[0] != "end" or d.run.distance_m is None)
        }
    )
    tracks = _load_tracks(needed, samples_for)
    for row, decision in zip(rows, decisions):
        fill = _fill(decision, tracks)
        for name in JOIN_COLUMNS:
            row[name] = None
        row.update(fill.values)
        row["status"] = fill.status
        row["status_detail"] = fill.detail
        row["activity_id"] = fill.activity_id
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    logger.info("pain onsets joined: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return frame_from_rows(rows, PAIN_REPORT_SCHEMA)


def local_instants(day: date, clock: time, zone: tzinfo) -> tuple[str, list[datetime]]:
    """The UTC instants a local wall-clock time names in ``zone``.

    Returns
    -------
    (str, list of datetime)
        ``("normal", [t])``, ``("overlap", [earlier, later])`` when the clock is
        set back (the time occurs twice), or ``("gap", [])`` when it is set
        forward over it (the time does not exist).
    """
    naive = datetime.combine(day, clock)
    found: list[datetime] = []
    for fold in (0, 1):
        aware = naive.replace(tzinfo=zone, fold=fold)
        instant = aware.astimezone(_UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == naive and instant not in found:
            found.append(instant)
    found.sort()
    if not found:
        return "gap", []
    return ("overlap" if len(found) > 1 else "normal"), found


# --------------------------------------------------------------------------- runs


def _zones(timezones: Mapping[str, str | None]) -> dict[str, tzinfo]:
    zones: dict[str, tzinfo] = {}
    for athlete_id, name in timezones.items():
        if not name:
            continue
        try:
            zones[athlete_id] = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InputError(f"time zone {name!r} of athlete {athlete_id!r} is not an IANA zone") from exc
    return zones


def _zone_of(name: str | None) -> tzinfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        logger.warning("activity time zone %r is not an IANA zone; ignored", name)
        return None


class _Runs(list):  # type: ignore[type-arg]
    """One athlete's runs sorted by start, with an index by local date (a pain row looks up its day)."""

    def on(self, day: date) -> list[_Run]:
        """The runs whose local start is on ``day``, in start order."""
        index = self.__dict__.get("_by_day")
        if index is None:
            index = self.__dict__["_by_day"] = {}
            for r in self:
                index.setdefault(r.local_date, []).append(r)
        return list(index.get(day, ()))


def _runs(activities: pl.DataFrame, zones: Mapping[str, tzinfo]) -> dict[str, _Runs]:
    """Running activities by athlete, sorted by start."""
    wanted = ["activity_id", "athlete_id", "sport", "start_utc", "end_utc", "utc_offset_s",
              "timezone", "source_file", "distance_m", "elapsed_s", "moving_s"]  # fmt: skip
    if "device_time_s" in activities.columns:  # on a device clock: no date, never a pain candidate
        activities = activities.filter(pl.col("start_utc").is_not_null() | pl.col("device_time_s").is_null())
    frame = activities.select(wanted).filter(pl.col("sport").is_in(sorted(RUNNING_SPORTS)))
    by_athlete: dict[str, _Runs] = {}
    for a in frame.to_dicts():
        start: datetime | None = a["start_utc"]
        if start is None or a["athlete_id"] is None:
            logger.warning("activity %s has no start time or athlete; not a pain candidate", a["activity_id"])
            continue
        end: datetime | None = a["end_utc"]
        if end is None:
            end = start + timedelta(seconds=a["elapsed_s"] or 0.0)
        own_zone = _zone_of(a["timezone"])
        if own_zone is None and a["utc_offset_s"] is not None:
            own_zone = timezone(timedelta(seconds=int(a["utc_offset_s"])))
        if a["utc_offset_s"] is not None:
            local = (start + timedelta(seconds=int(a["utc_offset_s"]))).replace(tzinfo=None)
        else:
            zone = zones.get(a["athlete_id"]) or own_zone or _UTC
            local = start.astimezone(zone).replace(tzinfo=None)
        by_athlete.setdefault(a["athlete_id"], _Runs()).append(
            _Run(
                activity_id=a["activity_id"],
                start_utc=start,
                end_utc=end,
                local_start=local,
                own_zone=own_zone,
                source_file=a["source_file"],
                distance_m=a["distance_m"],
                elapsed_s=a["elapsed_s"],
                moving_s=a["moving_s"],
            )
        )
    for runs in by_athlete.values():
        runs.sort(key=lambda r: (r.start_utc, r.activity_id))
    return by_athlete


def _basename(path: str) -> str:
    return re.split(r"[\\/]", path.strip())[-1].lower()


def _file_matches(run: _Run, hint: str) -> bool:
    if not run.source_file:
        return False
    base = _basename(run.source_file)
    names = {base}
    if base.endswith(".gz"):
        names.add(base[:-3])
    return _basename(hint) in names


def _apply_hint(
    hint: str | None, day: date, same_day: list[_Run], all_runs: list[_Run]
) -> tuple[list[_Run], str | None]:
    """Narrow candidates by the ``run`` column: ``HH:MM`` local start or a file name."""
    if not hint:
        return same_day, None
    m = _HHMM_RE.match(hint.strip())
    if m and int(m[1]) < 24 and int(m[2]) < 60:
        wanted = datetime.combine(day, time(int(m[1]), int(m[2]), int(m[3] or 0)))
        found = [r for r in same_day if abs((r.local_start - wanted).total_seconds()) <= RUN_HINT_TOLERANCE_S]
        if not found:
            return [], (
                f"run {hint!r}: no run on {day} starts within 10 min of {wanted:%H:%M}{_listing(same_day)}"
            )
        return found, None
    found = [r for r in all_runs if _file_matches(r, hint)]
    if not found:
        return [], f"run {hint!r}: no running activity from a file of that name"
    return found, None


def _listing(runs: Iterable[_Run]) -> str:
    starts = [f"{r.local_start:%H:%M}" for r in runs]
    return f" (runs that day start at {', '.join(starts)})" if starts else " (no runs that day)"


def _one(cands: list[_Run], day: date) -> _Decision | _Run:
    if not cands:
        return _Decision("unmatched", f"no running activity on {day}")
    if len(cands) > 1:
        return _Decision(
            "ambiguous",
            f"candidates: {', '.join(r.activity_id for r in cands)} "
            f"(runs at {', '.join(f'{r.local_start:%Y-%m-%d %H:%M}' for r in cands)}; "
            "give the run's start time or file name in the `run` column)",
        )
    return cands[0]


# --------------------------------------------------------------------------- deciding


def _decide(row: dict[str, Any], runs: _Runs, zone: tzinfo | None, after_window_h: float) -> _Decision:
    try:
        onset = parse_onset(row["onset_raw"] or "")
    except PainRowError as exc:
        return _Decision("bad_onset", exc.reason)
    day: date | None = row["date_local"]
    if day is None:
        day = onset.instant.date() if onset.instant is not None else None
    if day is None:
        return _Decision("unmatched", "no date")
    if not runs:
        return _Decision("unmatched", f"no running activities for athlete {row['athlete_id']!r}")
    hint = row["run_hint"]

    if onset.kind in ("clock", "instant"):
        return _decide_instant(onset, day, runs, zone, hint)

    note: str | None = None
    if onset.kind == "next_day":
        # `date` is the day the pain was noticed: the run is the day before. A
        # `run` start time is first looked up on `date` itself (the column's
        # definition: the run's date), then on the day before.
        if hint and _HHMM_RE.match(hint.strip()):
            on_date = runs.on(day)
            cands, why = _apply_hint(hint, day, on_date, runs)
            if cands:
                note = f"`run` {hint} names a run on {day}: date read as the run's date"
        day = day - timedelta(days=1)
        if note is None:
            cands, why = _apply_hint(hint, day, runs.on(day), runs)
    else:
        cands, why = _apply_hint(hint, day, runs.on(day), runs)
    if why is not None:
        return _Decision("unmatched", why)

    if onset.kind in ("after", "next_day"):
        if not cands:
            detail = f"no running activity on {day}"
            if onset.kind == "after":
                detail += _recent_hint(runs, day, zone, after_window_h)
            return _Decision("unmatched", detail)
        if hint and len(cands) > 1:
            return _one(cands, day)
        run = cands[-1]
        status = "after_run" if onset.kind == "after" else "next_day"
        detail = note
        if len(cands) > 1:
            detail = f"last of {len(cands)} runs on {day}"
        return _Decision(status, detail, run, ("end",))

    picked = _one(cands, day)
    if isinstance(picked, _Decision):
        return picked
    if onset.kind == "distance":
        return _Decision("matched", None, picked, ("distance", onset))
    return _Decision("matched", None, picked, ("moving", onset.moving_s))


def _recent_hint(runs: list[_Run], day: date, zone: tzinfo | None, window_h: float) -> str:
    """For an unmatched ``after``: point at a run that ended shortly before the day began."""
    day_start_naive = datetime.combine(day, time())
    if zone is not None:
        day_start = local_instants(day, time(), zone)[1]
        begin = day_start[0] if day_start else day_start_naive.replace(tzinfo=zone)
    else:
        begin = day_start_naive.replace(tzinfo=_UTC)
    earlier = [r for r in runs if r.end_utc <= begin and begin - r.end_utc <= timedelta(hours=window_h)]
    if not earlier:
        return ""
    r = earlier[-1]
    hours = (begin - r.end_utc).total_seconds() / 3600
    return f"; {r.activity_id} ended {hours:.1f} h before the day began (is `date` the run's date?)"


def _decide_instant(
    onset: Onset, day: date, runs: _Runs, zone: tzinfo | None, hint: str | None
) -> _Decision:
    same_day = runs.on(day)
    cands, why = _apply_hint(hint, day, same_day, runs)
    if why is not None:
        return _Decision("unmatched", why)
    pool = cands if hint else runs  # any run containing the instant is a candidate

    # interpretations: (instant, run-or-None for per-run readings, note)
    kind = "normal"
    instants: list[datetime] = []
    pairs: list[tuple[_Run, datetime, str | None]] = []
    reference: dict[str, datetime] = {}  # per-run instant used for beyond/before decisions
    if onset.kind == "instant":
        assert onset.instant is not None
        instant = onset.instant.astimezone(_UTC)
        pairs = [(r, instant, None) for r in pool if r.contains(instant)]
        reference = {r.activity_id: instant for r in cands}
    else:
        assert onset.clock is not None
        if zone is not None:
            kind, instants = local_instants(day, onset.clock, zone)
            for i, instant in enumerate(instants):
                note = None
                if kind == "overlap":
                    first = "first" if i == 0 else "second"
                    note = (
                        f"{onset.clock:%H:%M:%S} occurs twice on {day}; the {first} one "
                        f"({_offset(instant, zone)}) is inside the run"
                    )
                pairs += [(r, instant, note) for r in pool if r.contains(instant)]
            if kind == "normal":
                reference = {r.activity_id: instants[0] for r in cands}
        if not pairs:
            # the athlete's zone does not place it in a run (or there is no zone):
            # read the clock in each run's own zone/offset (travel); with no
            # zone at all, UTC
            for r in cands:
                own_zone = r.own_zone or (_UTC if zone is None else None)
                if own_zone is None:
                    continue
                own_kind, own = local_instants(day, onset.clock, own_zone)
                if zone is not None and own == instants:
                    continue  # same reading as the athlete's zone
                if own_kind == "normal":
                    reference.setdefault(r.activity_id, own[0])
                for instant in own:
                    if r.contains(instant):
                        note = None
                        if zone is not None:
                            note = (
                                f"clock read in the run's own offset ({_offset(instant, own_zone)}), "
                                "not the athlete's zone"
                            )
                        pairs.append((r, instant, note))

    by_run: dict[str, list[tuple[_Run, datetime, str | None]]] = {}
    for pair in pairs:
        by_run.setdefault(pair[0].activity_id, []).append(pair)
    if len(by_run) == 1:
        (found,) = by_run.values()
        run = found[0][0]
        if len({p[1] for p in found}) > 1:
            return _Decision(
                "ambiguous_local_time",
                f"{onset.clock:%H:%M:%S} occurs twice on {day} and both fall inside the run",
                run,
                None,
            )
        return _Decision("matched", found[0][2], run, ("instant", found[0][1]))
    if len(by_run) > 1:
        two_readings = kind == "overlap" and len({p[1] for p in pairs}) > 1
        starts = ", ".join(f"{v[0][0].local_start:%Y-%m-%d %H:%M}" for v in by_run.values())
        return _Decision(
            "ambiguous_local_time" if two_readings else "ambiguous",
            f"candidates: {', '.join(by_run)} (runs at {starts} contain the onset)",
        )
    if kind == "gap":
        return _Decision(
            "nonexistent_local_time",
            f"{onset.clock:%H:%M:%S} does not exist on {day} in {zone} (clocks went forward)",
        )
    if kind == "overlap":
        return _Decision(
            "ambiguous_local_time",
            f"{onset.clock:%H:%M:%S} occurs twice on {day} in {zone} and neither is inside a run",
        )
    started = [r for r in cands if r.activity_id in reference and r.start_utc <= reference[r.activity_id]]
    if started:
        run = started[-1]
        instant = reference[run.activity_id]
        late = (instant - run.end_utc).total_seconds()
        return _Decision("beyond_run", f"onset is {_duration(late)} after the run ended", run, None)
    if not cands:
        return _Decision("unmatched", f"no running activity on {day} or containing the onset")
    return _Decision("unmatched", f"onset is before the run(s) on {day}{_listing(cands)}")


def _offset(instant: datetime, zone: tzinfo) -> str:
    off = instant.astimezone(zone).utcoffset() or timedelta()
    total = int(off.total_seconds())
    sign = "+" if total >= 0 else "-"
    total = abs(total)
    return f"UTC{sign}{total // 3600:02d}:{total % 3600 // 60:02d}"


def _duration(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------- samples


def _load_tracks(ids: list[str], samples_for: Callable[[list[str]], pl.DataFrame]) -> dict[str, _Track]:
    tracks: dict[str, _Track] = {}
    for lo in range(0, len(ids), SAMPLES_BATCH):
        batch = ids[lo : lo + SAMPLES_BATCH]
        frame = samples_for(batch)
        frame = (
            frame.select(*TRACK_COLUMNS)
            .filter(pl.col("activity_id").is_in(batch) & pl.col("t_utc").is_not_null())
            .with_columns(pl.col("t_utc").dt.epoch("us").alias("t_us"))
            .sort("activity_id", "t_us", maintain_order=True)
        )
        for (activity_id,), part in frame.partition_by("activity_id", as_dict=True).items():
            tracks[str(activity_id)] = _Track(
                t_us=part["t_us"].to_numpy().astype(np.int64),
                elapsed_s=part["elapsed_s"].cast(pl.Float64).fill_null(math.nan).to_numpy(),
                moving_s=part["moving_s"].cast(pl.Float64).fill_null(math.nan).to_numpy(),
                distance_m=part["distance_m"].cast(pl.Float64).fill_null(math.nan).to_numpy(),
            )
    return tracks


def _first_at_least(values: np.ndarray, target: float) -> int | None:
    hits = np.flatnonzero(values >= target)
    return int(hits[0]) if hits.size else None


def _num(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _sample_values(track: _Track, i: int) -> dict[str, Any]:
    t = datetime(1970, 1, 1, tzinfo=_UTC) + timedelta(microseconds=int(track.t_us[i]))
    d = _num(track.distance_m[i])
    return {
        "sample_t_utc": t,
        "onset_utc": t,
        "onset_elapsed_s": _num(track.elapsed_s[i]),
        "onset_moving_s": _num(track.moving_s[i]),
        "onset_distance_m": d,
        "onset_distance_lo_m": d,
        "onset_distance_hi_m": d,
    }


def _fill(decision: _Decision, tracks: Mapping[str, _Track]) -> _Fill:
    run = decision.run
    activity_id = run.activity_id if run is not None else None
    if run is None or decision.target is None:
        return _Fill(decision.status, decision.detail, activity_id)
    target = decision.target
    track = tracks.get(run.activity_id)

    if target[0] == "end":
        distance = run.distance_m
        if distance is None and track is not None and np.isfinite(track.distance_m).any():
            distance = float(np.nanmax(track.distance_m))
        return _Fill(
            decision.status,
            decision.detail,
            activity_id,
            {
                "onset_utc": run.end_utc,
                "onset_elapsed_s": run.elapsed_s,
                "onset_moving_s": run.moving_s,
                "onset_distance_m": distance,
                "onset_distance_lo_m": distance,
                "onset_distance_hi_m": distance,
            },
        )

    if track is None or track.t_us.size == 0:
        return _Fill("no_samples", "the run has no samples", activity_id)

    if target[0] == "distance":
        onset: Onset = target[1]
        assert onset.distance_m is not None
        dist = track.distance_m
        finite = dist[np.isfinite(dist)]
        if finite.size == 0:
            return _Fill("no_samples", "the run has no distance samples", activity_id)
        i = _first_at_least(dist, onset.distance_m)
        if i is None:
            return _Fill(
                "beyond_run",
                f"onset {onset.distance_m:.0f} m is beyond the run's end ({finite.max():.0f} m)",
                activity_id,
            )
        values = _sample_values(track, i)
        detail = decision.detail
        if onset.distance_lo_m != onset.distance_hi_m:  # "~6 mi" or "5-6 mi"
            lo_i = _first_at_least(dist, onset.distance_lo_m or 0.0)
            hi_i = _first_at_least(dist, onset.distance_hi_m or 0.0)
            values["onset_distance_lo_m"] = _num(dist[lo_i]) if lo_i is not None else None
            if hi_i is None:
                values["onset_distance_hi_m"] = float(finite.max())
                detail = "uncertainty interval clamped to the run's end"
            else:
                values["onset_distance_hi_m"] = _num(dist[hi_i])
        return _Fill("matched", detail, activity_id, values)

    if target[0] == "moving":
        seconds: float = target[1]
        clock, detail = track.moving_s, decision.detail
        if not np.isfinite(clock).any():
            clock = track.elapsed_s
            detail = "no timer (moving) time in the samples; wall-clock elapsed time used"
            if not np.isfinite(clock).any():
                return _Fill("no_samples", "the run has no time-into-run samples", activity_id)
        i = _first_at_least(clock, seconds)
        if i is None:
            end = float(np.nanmax(clock))
            return _Fill(
                "beyond_run",
                f"onset {_duration(seconds)} into the run is beyond its end ({_duration(end)} of timer time)",
                activity_id,
            )
        return _Fill("matched", detail, activity_id, _sample_values(track, i))

    # instant
    instant: datetime = target[1]
    want = int((instant - datetime(1970, 1, 1, tzinfo=_UTC)) / timedelta(microseconds=1))
    t = track.t_us
    before = int(np.searchsorted(t, want, side="right")) - 1
    options = [j for j in (before, before + 1) if 0 <= j < t.size]
    nearest = min(options, key=lambda j: (abs(int(t[j]) - want), j))
    detail = decision.detail
    if abs(int(t[nearest]) - want) <= CLOCK_NEAREST_S * 1e6:
        i = nearest
    elif before >= 0:
        i = before
        gap = _duration((want - int(t[i])) / 1e6)
        detail = _join(detail, f"no sample within {CLOCK_NEAREST_S:.0f} s; last sample {gap} before")
    else:
        i = 0
        detail = _join(detail, f"first sample is {_duration((int(t[0]) - want) / 1e6)} after the onset")
    return _Fill("matched", detail, activity_id, _sample_values(track, i))


def _join(a: str | None, b: str) -> str:
    return b if not a else f"{a}; {b}"
