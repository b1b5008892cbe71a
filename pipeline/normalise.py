"""One activity file -> :class:`~pipeline.schema.NormalisedActivity` per session.

:func:`read_activities` is what ingest calls: it inflates ``.gz``, sniffs the
format by content (:func:`sniff_format`), lets the reader in
:mod:`pipeline.sources` decode it, then converts units, screens the values
for plausibility, derives distances, pauses and moving time, resolves the
time zone and builds the frames of :mod:`pipeline.schema`.

Conversions and rules (the decisions, in one place)
---------------------------------------------------
* Positions: FIT semicircles -> degrees (``deg = sc * 180 / 2**31``). A fix at
  exactly (0, 0) is a placeholder ("no fix"), not a place, and becomes null.
* Cadence: every reader gives cycles/min as the file has it (FIT ``cadence +
  fractional_cadence``, GPX ``cad``, TCX ``Cadence``/``RunCadence``; all
  strides/min for foot sports in the corpus). For foot sports
  (:data:`FOOT_SPORTS`) the sample, lap and activity cadence is doubled to
  steps/min; other sports keep rpm (or the recorded cycles/min).
* Distance: the device's own total and per-sample cumulative distance when
  present (``distance_source = "device"``), else the haversine length of the
  GPS track, not bridging GPX/TCX segment breaks (``"gps"``), else ``"none"``.
* Moving time: wall-clock time since start minus the pauses before it.
  ``elapsed_s`` is the device's total elapsed time, or ``end - start`` when
  the samples run past it (some devices stop counting early); ``moving_s`` is
  the device's timer time (else elapsed minus pauses), capped at ``elapsed_s``.
* Plausibility (CRC-valid garbage vs. real-world glitches): values outside
  the ranges of :data:`LIMITS` become null when isolated; when more than
  :data:`SYSTEMIC_FRACTION` of a column's values (and at least
  :data:`SYSTEMIC_MIN` of them) are out of range, or running speed is above
  30 m/s for :data:`SUSTAINED_SAMPLES` samples in a row, the file is
  rejected with the value and the record index. A heart rate of 0 is "no
  reading" (null), not an error. Timestamps must be within [2000-01-01,
  now + 1 day] and may go backwards by at most :data:`TIME_JITTER_S`
  (samples are then sorted by time, stably).
* Time zone: the file's own offset (FIT ``activity.local_timestamp``, GPX/TCX
  times written with a non-zero offset), else the zone at the first GPS fix
  (timezonefinder), else the athlete's zone, else none. ``timezone`` is the
  IANA name when one is known and agrees with the offset.
* Device-relative FIT times (seconds since power-on): durations kept, no
  instant stored, ``device_time_s`` set (:mod:`pipeline.sources.fitclock`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import polars as pl

from pipeline.config import Settings
from pipeline.errors import RejectedFile
from pipeline.schema import (
    LAP_SCHEMA,
    PAUSE_SCHEMA,
    SAMPLE_SCHEMA,
    NormalisedActivity,
    frame_from_rows,
)
from pipeline.sources import GZIP_MAGIC, RawSession, gunzip_bounded, timezone_at
from pipeline.sources.columnar import (
    SampleColumns,
    columns_frame,
    datetime_from_us,
    first_backward_step_us,
    first_sustained_run,
    moving_seconds_us,
    screen_mask,
    us_from_datetime,
)
from pipeline.sources.fitclock import undate

__all__ = [
    "read_activities",
    "unknown_sport",
    "sniff_format",
    "semicircles_to_deg",
    "is_foot_sport",
    "cadence_to_spm",
    "haversine_m",
    "cumulative_distance_m",
    "first_backward_step",
    "ascent_descent_m",
    "moving_seconds",
    "screen_range",
    "FOOT_SPORTS",
    "LIMITS",
]

log = logging.getLogger(__name__)

Format = Literal["fit", "gpx", "tcx"]

#: Sports whose cadence is counted in steps (FIT strides are doubled).
FOOT_SPORTS = frozenset(
    {"running", "trail_running", "treadmill_running", "walking", "hiking", "mountaineering"}
)
#: Mean Earth radius (IUGG), metres.
EARTH_RADIUS_M = 6_371_008.8
#: Plausible ranges; outside them a value is a glitch (null) or, when systemic, garbage.
LIMITS: dict[str, tuple[float, float]] = {
    "hr_bpm": (20.0, 250.0),
    "cadence_spm": (0.0, 260.0),
    "speed_mps": (0.0, 100.0),
    "altitude_m": (-1000.0, 10000.0),
    "power_w": (0.0, 3000.0),
    "temperature_c": (-60.0, 70.0),
}
#: Running faster than this for SUSTAINED_SAMPLES samples in a row is not running.
RUNNING_SPEED_LIMIT_MPS = 30.0
SUSTAINED_SAMPLES = 5
#: A column is garbage when more than this share of its values is out of range ...
SYSTEMIC_FRACTION = 0.10
#: ... and at least this many of them.
SYSTEMIC_MIN = 3
#: Timestamps may step back this much (device clock jitter) before the file is refused.
TIME_JITTER_S = 2.0
EARLIEST_UTC = datetime(2000, 1, 1, tzinfo=timezone.utc)
#: Columns only nulled when out of range, never a reason to refuse a file.
_NULL_ONLY = ("altitude_m", "power_w", "temperature_c")
_SEMICIRCLE_DEG = 180.0 / 2**31
_SNIFF_BYTES = 16384


# --------------------------------------------------------------------------- pure helpers


def semicircles_to_deg(value: float | None) -> float | None:
    """FIT semicircles -> degrees (``value * 180 / 2**31``); None stays None."""
    if value is None:
        return None
    return float(value) * _SEMICIRCLE_DEG


def is_foot_sport(sport: str | None) -> bool:
    """True for sports whose cadence is steps (running, walking, hiking, ...)."""
    return sport in FOOT_SPORTS


def cadence_to_spm(cycles_per_min: float | None, sport: str | None) -> float | None:
    """Recorded cadence (cycles/min) -> the schema's cadence.

    Foot sports: strides/min * 2 = steps/min. Anything else (cycling rpm,
    rowing strokes/min, ...) is returned unchanged.
    """
    if cycles_per_min is None:
        return None
    return float(cycles_per_min) * 2.0 if is_foot_sport(sport) else float(cycles_per_min)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two points in degrees, metres (mean Earth radius)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2.0) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2.0) ** 2
    return 2.0 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def cumulative_distance_m(
    lats: Sequence[float | None],
    lons: Sequence[float | None],
    segments: Sequence[int | None] | None = None,
) -> list[float | None]:
    """Cumulative GPS distance at each point; None where the point has no fix.

    Points without a fix are bridged (the distance from the last fix to the
    next one counts). A change of ``segments`` value is not bridged: the
    first fix of a new segment adds nothing (a GPX/TCX pause).
    """
    out: list[float | None] = []
    total = 0.0
    prev: tuple[float, float] | None = None
    prev_seg: int | None = None
    for i, (lat, lon) in enumerate(zip(lats, lons)):
        seg = segments[i] if segments is not None else None
        if lat is None or lon is None:
            out.append(None)
            continue
        if prev is not None and seg == prev_seg:
            total += haversine_m(prev[0], prev[1], lat, lon)
        prev, prev_seg = (lat, lon), seg
        out.append(total)
    return out


def first_backward_step(times: Sequence[datetime], jitter_s: float = TIME_JITTER_S) -> int | None:
    """Index of the first time more than ``jitter_s`` earlier than the latest before it, else None."""
    latest: datetime | None = None
    limit = timedelta(seconds=jitter_s)
    for i, t in enumerate(times):
        if latest is not None and latest - t > limit:
            return i
        if latest is None or t > latest:
            latest = t
    return None


def ascent_descent_m(altitudes: Sequence[float | None], threshold_m: float = 2.0) -> tuple[float, float] | None:
    """Total ascent and descent with a hysteresis of ``threshold_m`` (filters GPS/baro noise).

    Returns None when fewer than two altitudes are known.
    """
    values = [a for a in altitudes if a is not None]
    if len(values) < 2:
        return None
    ascent = descent = 0.0
    ref = values[0]
    for a in values[1:]:
        if a - ref >= threshold_m:
            ascent += a - ref
            ref = a
        elif ref - a >= threshold_m:
            descent += ref - a
            ref = a
    return ascent, descent


def moving_seconds(
    times: Sequence[datetime], start: datetime, pauses: Sequence[tuple[datetime, datetime]]
) -> list[float]:
    """Timer time at each of ``times`` (sorted): elapsed since ``start`` minus pauses before it."""
    ordered = sorted(pauses)
    out: list[float] = []
    done = 0.0  # total of the pauses that ended before the current time
    j = 0
    for t in times:
        while j < len(ordered) and ordered[j][1] <= t:
            done += (ordered[j][1] - ordered[j][0]).total_seconds()
            j += 1
        paused = done
        k = j
        while k < len(ordered) and ordered[k][0] < t:  # pauses in progress at t (overlaps allowed)
            paused += (min(t, ordered[k][1]) - ordered[k][0]).total_seconds()
            k += 1
        out.append((t - start).total_seconds() - paused)
    return out


def screen_range(
    values: list[float | None],
    lo: float,
    hi: float,
    *,
    what: str,
    indices: Sequence[int],
    point_name: str = "record",
    reject: bool = True,
) -> tuple[list[float | None], str | None]:
    """Null out-of-range values; say why the column is garbage when it is.

    Returns ``(cleaned values, reason or None)``. The reason is set (when
    ``reject``) if more than :data:`SYSTEMIC_FRACTION` of the present values
    and at least :data:`SYSTEMIC_MIN` are outside ``[lo, hi]``; it names the
    first bad value and its record index.
    """
    present = 0
    bad: list[int] = []
    cleaned: list[float | None] = list(values)
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, float) and math.isnan(v):
            cleaned[i] = None
            continue
        present += 1
        if not lo <= v <= hi:
            bad.append(i)
            cleaned[i] = None
    if not bad:
        return cleaned, None
    first = bad[0]
    if reject and len(bad) >= SYSTEMIC_MIN and len(bad) > SYSTEMIC_FRACTION * present:
        reason = (
            f"implausible {what}={values[first]:g} at {point_name} {indices[first]} "
            f"({len(bad)} of {present} values outside {lo:g}-{hi:g})"
        )
        return cleaned, reason
    log.info("nulled %d implausible %s value(s) (first %s at %s %d)", len(bad), what, values[first], point_name, indices[first])
    return cleaned, None


# --------------------------------------------------------------------------- sniffing

_COMMENT = re.compile(rb"<!--.*?-->", re.S)
_ROOT = re.compile(rb"<(?![?!/])(?:[A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)")


def sniff_format(path: Path, data: bytes) -> Format | None:
    """The activity format of ``data`` by content: ``"fit"``, ``"gpx"``, ``"tcx"`` or None.

    gzip data is inflated (its first few KiB only) first. FIT is recognised by
    its header (``.FIT`` at byte 8, header size 12 or 14); XML by the name of
    its root element (``gpx``, ``TrainingCenterDatabase``). ``path`` is not
    trusted: a ``.fit`` name on XML content is sniffed as XML.
    """
    head = data[:_SNIFF_BYTES * 4]
    if head.startswith(GZIP_MAGIC):
        try:
            head = zlib.decompressobj(wbits=31).decompress(head, _SNIFF_BYTES)
        except zlib.error:
            return None
    if len(head) >= 12 and head[8:12] == b".FIT" and head[0] in (12, 14):
        return "fit"
    head = head[:_SNIFF_BYTES]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            head = head.decode("utf-16", errors="ignore").encode("utf-8")
        except UnicodeError:  # pragma: no cover - errors ignored
            return None
    head = _COMMENT.sub(b"", head.lstrip(b"\xef\xbb\xbf \t\r\n"))
    match = _ROOT.search(head)
    if not match:
        return None
    root = match.group(1).decode("ascii", errors="replace")
    if root == "gpx":
        return "gpx"
    if root == "TrainingCenterDatabase":
        return "tcx"
    return None


# --------------------------------------------------------------------------- the entry point


def read_activities(
    path: Path,
    *,
    rel_path: str,
    athlete_id: str,
    athlete_tz: str | None,
    data: bytes | None = None,
    max_bytes: int | None = None,
    sport_hint: tuple[str, str | None] | None = None,
    sha256: str | None = None,
) -> list[NormalisedActivity]:
    """Read one FIT/GPX/TCX file (optionally ``.gz``) into normalised activities.

    Parameters
    ----------
    path
        Where the file is (read unless ``data`` is given).
    rel_path
        The file's path relative to the raw folder: ``source_file`` and the
        place named in errors.
    athlete_id
        Goes into every activity row.
    athlete_tz
        The athlete's IANA zone (``athlete.toml``), the last resort for the
        UTC offset.
    data
        The file's raw bytes when the caller already read them.
    max_bytes
        Largest accepted size, stored and inflated (default
        ``Settings.max_file_bytes``).
    sport_hint
        ``(sport, sub_sport)`` from elsewhere (a Strava export's
        ``activities.csv``) for sessions whose file names no sport
        (:func:`unknown_sport`); a sport the file states wins. Applied before
        normalising: the sport decides the cadence unit and the range checks.
    sha256
        The SHA-256 (hex) of the file's bytes when the caller already has it
        (the ingest hashes every file to find known content): not computed
        again.

    Returns
    -------
    list[NormalisedActivity]
        One per session (multisport FIT, multi-activity TCX), in file order.

    Raises
    ------
    RejectedFile
        The file cannot be loaded (unreadable, not FIT/GPX/TCX, corrupt,
        implausible values); the message names the file and the place.
    SkippedFile
        A readable file that holds no activity.
    """
    limit = max_bytes if max_bytes is not None else Settings.max_file_bytes
    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise RejectedFile(f"cannot read file: {exc.strerror or exc}", path=rel_path) from exc
    if len(data) > limit:
        raise RejectedFile(f"file is {len(data)} bytes, above the {limit}-byte limit", path=rel_path)
    sha = sha256 if sha256 is not None else hashlib.sha256(data).hexdigest()
    raw = gunzip_bounded(data, max_bytes=limit, path=rel_path) if data.startswith(GZIP_MAGIC) else data
    if not raw:
        raise RejectedFile("empty file", path=rel_path)
    fmt = sniff_format(Path(path), raw)
    if fmt is None:
        raise RejectedFile(
            f"not a FIT, GPX or TCX file (content starts with {raw[:16]!r})", path=rel_path
        )
    sessions = _reader(fmt)(raw, path=rel_path)
    if sport_hint is not None:
        for session in sessions:
            if unknown_sport(session.sport):
                session.sport, session.sub_sport = sport_hint
    return [
        normalise_session(
            s, rel_path=rel_path, athlete_id=athlete_id, athlete_tz=athlete_tz, sha256=sha
        )
        for s in sessions
    ]


def unknown_sport(sport: object) -> bool:
    """No sport, ``generic``/``other``/``unknown``, or a number no profile names."""
    text = "" if sport is None else str(sport).strip().lower()
    return text in {"", "generic", "other", "unknown"} or text.isdigit()


def _reader(fmt: Format) -> Callable[..., list[RawSession]]:
    if fmt == "fit":
        from pipeline.sources.fit import read_fit

        return read_fit
    if fmt == "gpx":
        from pipeline.sources.gpx import read_gpx

        return read_gpx
    from pipeline.sources.tcx import read_tcx

    return read_tcx


# --------------------------------------------------------------------------- one session


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _zone_offset_s(name: str | None, at: datetime) -> int | None:
    if not name:
        return None
    try:
        off = at.astimezone(ZoneInfo(name)).utcoffset()
    except (ZoneInfoNotFoundError, ValueError, KeyError, OSError):
        return None
    return int(off.total_seconds()) if off is not None else None


def _resolve_zone(
    raw: RawSession, start: datetime, fix: tuple[float, float] | None, athlete_tz: str | None
) -> tuple[int | None, str | None, str]:
    """(utc_offset_s, timezone, tz_source) for an activity starting at ``start``."""
    gps_zone = timezone_at(fix[0], fix[1]) if fix is not None else None
    if raw.utc_offset_s is not None:
        name = next(
            (z for z in (gps_zone, athlete_tz) if z and _zone_offset_s(z, start) == raw.utc_offset_s),
            None,
        )
        return raw.utc_offset_s, name, raw.tz_source or "file_offset"
    if gps_zone is not None:
        offset = _zone_offset_s(gps_zone, start)
        if offset is not None:
            return offset, gps_zone, "gps"
    offset = _zone_offset_s(athlete_tz, start)
    if offset is not None:
        return offset, athlete_tz, "athlete"
    return None, None, "none"


def _reject(reason: str, raw: RawSession, rel_path: str) -> RejectedFile:
    where = f"session {raw.session_index}: " if raw.session_index else ""
    return RejectedFile(where + reason, path=rel_path)


def normalise_session(
    raw: RawSession, *, rel_path: str, athlete_id: str, athlete_tz: str | None, sha256: str
) -> NormalisedActivity:
    """Turn one :class:`RawSession` into a :class:`NormalisedActivity` (rules in the module doc).

    Raises
    ------
    RejectedFile
        Implausible timestamps or systemic out-of-range values.
    """
    activity_id = f"{sha256[:16]}-{raw.session_index}"
    sport = (raw.sport or "generic").strip().lower().replace(" ", "_")
    sub_sport = raw.sub_sport.strip().lower().replace(" ", "_") if raw.sub_sport else None
    name = raw.point_name
    if isinstance(raw.samples, SampleColumns):  # the fast readers' columns: same rules, vectorised
        return _normalise_columns(
            raw, raw.samples, activity_id=activity_id, athlete_id=athlete_id, athlete_tz=athlete_tz,
            sport=sport, sub_sport=sub_sport, rel_path=rel_path, sha256=sha256,
        )

    samples = raw.samples
    times = [s["t_utc"] for s in samples]
    bad = first_backward_step(times)
    if bad is not None:
        raise _reject(
            f"timestamps go backwards: {name} {samples[bad].get('index', bad)} at "
            f"{times[bad].isoformat()} is {(max(times[:bad]) - times[bad]).total_seconds():g} s "
            f"before an earlier {name}",
            raw,
            rel_path,
        )
    latest_ok = datetime.now(timezone.utc) + timedelta(days=1)
    for s, t in ((s, s["t_utc"]) for s in samples[:1] + samples[-1:]):
        if not (raw.device_clock or EARLIEST_UTC <= t <= latest_ok):
            raise _reject(
                f"implausible timestamp {t.isoformat()} at {name} {s.get('index', 0)} "
                f"(outside 2000-01-01 .. now + 1 day)",
                raw,
                rel_path,
            )
    for t in (raw.start_utc, raw.end_utc):
        if t is not None and not (raw.device_clock or EARLIEST_UTC <= t <= latest_ok):
            raise _reject(f"implausible session time {t.isoformat()}", raw, rel_path)
    if any(times[i] > times[i + 1] for i in range(len(times) - 1)):
        samples = sorted(samples, key=lambda s: s["t_utc"])  # within jitter: stable sort
        times = [s["t_utc"] for s in samples]
    indices = [s.get("index", i) for i, s in enumerate(samples)]

    # positions
    if any("lat_semicircles" in s for s in samples[:1]):
        lats = [semicircles_to_deg(s.get("lat_semicircles")) for s in samples]
        lons = [semicircles_to_deg(s.get("lon_semicircles")) for s in samples]
    else:
        lats = [s.get("lat_deg") for s in samples]
        lons = [s.get("lon_deg") for s in samples]
    for i, (la, lo) in enumerate(zip(lats, lons)):
        if la is None or lo is None or (la == 0.0 and lo == 0.0):
            lats[i] = lons[i] = None
    lats, why_lat = screen_range(lats, -90.0, 90.0, what="latitude", indices=indices, point_name=name)
    lons, why_lon = screen_range(lons, -180.0, 180.0, what="longitude", indices=indices, point_name=name)
    if why_lat or why_lon:
        raise _reject(str(why_lat or why_lon), raw, rel_path)
    for i in range(len(lats)):
        if lats[i] is None or lons[i] is None:
            lats[i] = lons[i] = None

    # values
    columns: dict[str, list[Any]] = {}
    hr = [None if s.get("hr_bpm") in (None, 0, 0.0) else s.get("hr_bpm") for s in samples]
    cadence = [cadence_to_spm(s.get("cadence_cpm"), sport) for s in samples]
    for key, values in (
        ("hr_bpm", hr),
        ("cadence_spm", cadence),
        ("speed_mps", [s.get("speed_mps") for s in samples]),
        ("altitude_m", [s.get("altitude_m") for s in samples]),
        ("power_w", [s.get("power_w") for s in samples]),
        ("temperature_c", [s.get("temperature_c") for s in samples]),
    ):
        lo, hi = LIMITS[key]
        cleaned, why = screen_range(
            values, lo, hi, what=key, indices=indices, point_name=name, reject=key not in _NULL_ONLY
        )
        if why:
            raise _reject(why, raw, rel_path)
        columns[key] = cleaned
    if is_foot_sport(sport):
        run = 0
        for i, v in enumerate(columns["speed_mps"]):
            run = run + 1 if v is not None and v > RUNNING_SPEED_LIMIT_MPS else 0
            if run >= SUSTAINED_SAMPLES:
                j = i - run + 1
                raise _reject(
                    f"implausible running speed_mps={columns['speed_mps'][j]:g} at {name} "
                    f"{indices[j]} (above {RUNNING_SPEED_LIMIT_MPS:g} m/s for {run} samples in a row)",
                    raw,
                    rel_path,
                )
        columns["speed_mps"] = [
            None if v is not None and v > RUNNING_SPEED_LIMIT_MPS else v for v in columns["speed_mps"]
        ]

    # distance
    device_dist = [s.get("distance_m") for s in samples]
    gps_dist = cumulative_distance_m(lats, lons, [s.get("segment") for s in samples])
    has_gps = any(la is not None for la in lats)
    if any(d is not None for d in device_dist):
        sample_dist = device_dist
    else:
        sample_dist = gps_dist
    if raw.distance_m is not None:
        distance, distance_source = raw.distance_m, "device"
    elif any(d is not None for d in device_dist):
        distance, distance_source = max(d for d in device_dist if d is not None), "device"
    elif has_gps:
        distance, distance_source = max(d for d in gps_dist if d is not None), "gps"
    else:
        distance, distance_source = None, "none"

    # time axis
    start = raw.start_utc or (times[0] if times else None)
    if start is None:
        raise _reject("no start time and no samples", raw, rel_path)
    end = raw.end_utc or (times[-1] if times else start)
    if times and times[-1] > end and raw.end_utc is None:
        end = times[-1]
    pauses = sorted(raw.pauses)
    elapsed_col = [(t - start).total_seconds() for t in times]
    moving_col = moving_seconds(times, start, pauses)
    # wall clock: the device's total, unless its samples run past it (then end - start)
    elapsed = max(raw.elapsed_s or 0.0, (end - start).total_seconds())
    paused_total = sum((b - a).total_seconds() for a, b in pauses)
    moving = raw.moving_s if raw.moving_s is not None else elapsed - paused_total
    moving = min(max(0.0, moving), elapsed)  # timer time never exceeds wall-clock time

    sample_columns: dict[str, list[Any]] = {
        "activity_id": [activity_id] * len(samples),
        "t_utc": times,
        "elapsed_s": elapsed_col,
        "moving_s": moving_col,
        "distance_m": sample_dist,
        "lat_deg": lats,
        "lon_deg": lons,
        "altitude_m": columns["altitude_m"],
        "speed_mps": columns["speed_mps"],
        "cadence_spm": columns["cadence_spm"],
        "hr_bpm": columns["hr_bpm"],
        "power_w": columns["power_w"],
        "temperature_c": columns["temperature_c"],
        "vertical_oscillation_mm": [s.get("vertical_oscillation_mm") for s in samples],
        "stance_time_ms": [s.get("stance_time_ms") for s in samples],
        "step_length_mm": [s.get("step_length_mm") for s in samples],
    }
    samples_frame = pl.DataFrame(sample_columns, schema=SAMPLE_SCHEMA, strict=False)
    fix = next(((la, lo) for la, lo in zip(lats, lons) if la is not None and lo is not None), None)
    return _finish(
        raw, activity_id=activity_id, athlete_id=athlete_id, athlete_tz=athlete_tz, sport=sport,
        sub_sport=sub_sport, rel_path=rel_path, sha256=sha256, start=start, end=end, pauses=pauses,
        elapsed=elapsed, moving=moving, distance=distance, distance_source=distance_source, has_gps=has_gps,
        fix=fix, present=lambda key: [v for v in columns[key] if v is not None], samples_frame=samples_frame,
    )


def _finish(
    raw: RawSession,
    *,
    activity_id: str,
    athlete_id: str,
    athlete_tz: str | None,
    sport: str,
    sub_sport: str | None,
    rel_path: str,
    sha256: str,
    start: datetime,
    end: datetime,
    pauses: list[tuple[datetime, datetime]],
    elapsed: float,
    moving: float,
    distance: float | None,
    distance_source: str,
    has_gps: bool,
    fix: tuple[float, float] | None,
    present: Callable[[str], list[float]],
    samples_frame: pl.DataFrame,
) -> NormalisedActivity:
    """The activity row, laps and pauses of a session whose samples are done (both paths).

    ``present(column)`` gives a sample column's present values in order; it is only
    called for a total the session does not state (most watch files state them all).
    """
    offset, zone, tz_source = _resolve_zone(raw, start, fix, athlete_tz)
    climb = (ascent_descent_m(present("altitude_m"))
             if raw.total_ascent_m is None or raw.total_descent_m is None else None)
    avg_cadence = cadence_to_spm(raw.avg_cadence_cpm, sport)
    if avg_cadence is None:
        positive_cadence = [c for c in present("cadence_spm") if c > 0]
        if positive_cadence:
            avg_cadence = sum(positive_cadence) / len(positive_cadence)
    present_hr = present("hr_bpm") if raw.avg_hr_bpm is None or raw.max_hr_bpm is None else []
    n_samples = samples_frame.height

    activity = {
        "activity_id": activity_id,
        "athlete_id": athlete_id,
        "sport": sport,
        "sub_sport": sub_sport,
        "start_utc": start,
        "end_utc": end,
        "device_time_s": None,  # set by undate() for a session on the device clock
        "utc_offset_s": offset,
        "timezone": zone,
        "tz_source": tz_source,
        "elapsed_s": elapsed,
        "moving_s": moving,
        "distance_m": distance,
        "distance_source": distance_source,
        "avg_speed_mps": distance / moving if distance is not None and moving else None,
        "avg_hr_bpm": raw.avg_hr_bpm if raw.avg_hr_bpm is not None else _mean(present_hr),
        "max_hr_bpm": raw.max_hr_bpm if raw.max_hr_bpm is not None else (max(present_hr) if present_hr else None),
        "avg_cadence_spm": avg_cadence,
        "avg_power_w": raw.avg_power_w if raw.avg_power_w is not None else _mean(present("power_w")),
        "total_ascent_m": raw.total_ascent_m if raw.total_ascent_m is not None else (climb[0] if climb else None),
        "total_descent_m": raw.total_descent_m if raw.total_descent_m is not None else (climb[1] if climb else None),
        "has_gps": has_gps,
        "n_samples": n_samples,
        "device_manufacturer": raw.device_manufacturer,
        "device_product": raw.device_product,
        "source_file": rel_path,
        "source_format": raw.source_format,
        "source_sha256": sha256,
        "session_index": raw.session_index,
    }

    lap_rows = []
    for i, lap in enumerate(sorted(raw.laps, key=lambda lp: lp["start_utc"] or start)):
        lap_moving = lap.get("moving_s")
        lap_dist = lap.get("distance_m")
        speed = lap.get("avg_speed_mps")
        if speed is None and lap_dist is not None and lap_moving:
            speed = lap_dist / lap_moving
        lap_rows.append(
            {
                "activity_id": activity_id,
                "lap_index": i,
                "start_utc": lap.get("start_utc"),
                "end_utc": lap.get("end_utc"),
                "elapsed_s": lap.get("elapsed_s"),
                "moving_s": lap_moving,
                "distance_m": lap_dist,
                "avg_speed_mps": speed,
                "avg_hr_bpm": lap.get("avg_hr_bpm"),
                "avg_cadence_spm": cadence_to_spm(lap.get("avg_cadence_cpm"), sport),
                "trigger": lap.get("trigger"),
            }
        )
    pause_rows = [
        {
            "activity_id": activity_id,
            "pause_index": i,
            "start_utc": a,
            "end_utc": b,
            "duration_s": (b - a).total_seconds(),
        }
        for i, (a, b) in enumerate(pauses)
    ]
    return undate(raw, NormalisedActivity(
        activity=activity,
        samples=samples_frame,
        laps=frame_from_rows(lap_rows, LAP_SCHEMA),
        pauses=frame_from_rows(pause_rows, PAUSE_SCHEMA),
    ))


# --------------------------------------------------------------------------- the columnar path


def _screen_column(
    values: np.ndarray, lo: float, hi: float, *, what: str, indices: np.ndarray, point_name: str, reject: bool = True
) -> tuple[np.ndarray, str | None]:
    """:func:`screen_range` on a NaN-for-absent column (same reasons, same log lines)."""
    bad, present = screen_mask(values, lo, hi)
    where = np.flatnonzero(bad)
    if not len(where):
        return values, None
    cleaned = values.copy()
    cleaned[bad] = np.nan
    first, n_bad = int(where[0]), len(where)
    if reject and n_bad >= SYSTEMIC_MIN and n_bad > SYSTEMIC_FRACTION * present:
        return cleaned, (
            f"implausible {what}={float(values[first]):g} at {point_name} {int(indices[first])} "
            f"({n_bad} of {present} values outside {lo:g}-{hi:g})"
        )
    log.info("nulled %d implausible %s value(s) (first %s at %s %d)", n_bad, what, float(values[first]),
             point_name, int(indices[first]))
    return cleaned, None


def _present(values: np.ndarray) -> list[float]:
    return values[~np.isnan(values)].tolist()


def _normalise_columns(
    raw: RawSession, cols: SampleColumns, *, activity_id: str, athlete_id: str, athlete_tz: str | None,
    sport: str, sub_sport: str | None, rel_path: str, sha256: str,
) -> NormalisedActivity:
    """:func:`normalise_session` for :class:`SampleColumns`: the same checks, values and floats."""
    name = raw.point_name
    t = cols.t_us
    bad = first_backward_step_us(t, round(TIME_JITTER_S * 1_000_000))
    if bad is not None:
        when, latest = datetime_from_us(int(t[bad])), datetime_from_us(int(t[:bad].max()))
        raise _reject(f"timestamps go backwards: {name} {int(cols.index[bad])} at {when.isoformat()} is "
                      f"{(latest - when).total_seconds():g} s before an earlier {name}", raw, rel_path)
    latest_ok = datetime.now(timezone.utc) + timedelta(days=1)
    for i in ([0, len(t) - 1] if len(t) else []):
        when = datetime_from_us(int(t[i]))
        if not (raw.device_clock or EARLIEST_UTC <= when <= latest_ok):
            raise _reject(f"implausible timestamp {when.isoformat()} at {name} {int(cols.index[i])} "
                          f"(outside 2000-01-01 .. now + 1 day)", raw, rel_path)
    for when in (raw.start_utc, raw.end_utc):
        if when is not None and not (raw.device_clock or EARLIEST_UTC <= when <= latest_ok):
            raise _reject(f"implausible session time {when.isoformat()}", raw, rel_path)
    if len(t) > 1 and bool((t[1:] < t[:-1]).any()):
        cols = cols.take(np.argsort(t, kind="stable"))  # within jitter: stable sort
        t = cols.t_us
    n, indices = len(t), cols.index

    # positions
    if "lat_semicircles" in cols.values:
        lats, lons = cols.column("lat_semicircles") * _SEMICIRCLE_DEG, cols.column("lon_semicircles") * _SEMICIRCLE_DEG
    else:
        lats, lons = cols.column("lat_deg").copy(), cols.column("lon_deg").copy()
    nofix = np.isnan(lats) | np.isnan(lons) | ((lats == 0.0) & (lons == 0.0))
    lats[nofix] = lons[nofix] = np.nan
    lats, why_lat = _screen_column(lats, -90.0, 90.0, what="latitude", indices=indices, point_name=name)
    lons, why_lon = _screen_column(lons, -180.0, 180.0, what="longitude", indices=indices, point_name=name)
    if why_lat or why_lon:
        raise _reject(str(why_lat or why_lon), raw, rel_path)
    nofix = np.isnan(lats) | np.isnan(lons)
    lats[nofix] = lons[nofix] = np.nan

    # values
    hr = cols.column("hr_bpm").copy()
    hr[hr == 0.0] = np.nan
    cadence = cols.column("cadence_cpm") * 2.0 if is_foot_sport(sport) else cols.column("cadence_cpm")
    columns: dict[str, np.ndarray] = {}
    for key, values in (("hr_bpm", hr), ("cadence_spm", cadence), ("speed_mps", cols.column("speed_mps")),
                        ("altitude_m", cols.column("altitude_m")), ("power_w", cols.column("power_w")),
                        ("temperature_c", cols.column("temperature_c"))):
        lo, hi = LIMITS[key]
        cleaned, why = _screen_column(values, lo, hi, what=key, indices=indices, point_name=name,
                                      reject=key not in _NULL_ONLY)
        if why:
            raise _reject(why, raw, rel_path)
        columns[key] = cleaned
    if is_foot_sport(sport):
        speed = columns["speed_mps"]
        fast = speed > RUNNING_SPEED_LIMIT_MPS
        j = first_sustained_run(fast, SUSTAINED_SAMPLES)
        if j is not None:
            raise _reject(f"implausible running speed_mps={float(speed[j]):g} at {name} {int(indices[j])} "
                          f"(above {RUNNING_SPEED_LIMIT_MPS:g} m/s for {SUSTAINED_SAMPLES} samples in a row)",
                          raw, rel_path)
        columns["speed_mps"] = np.where(fast, np.nan, speed)

    # distance
    device = cols.column("distance_m")
    has_device = bool((~np.isnan(device)).any())
    has_gps = bool((~np.isnan(lats)).any())
    gps = None
    if not has_device:
        segments = cols.segment.tolist() if cols.segment is not None else None
        lat_list = [None if v != v else v for v in lats.tolist()]
        lon_list = [None if v != v else v for v in lons.tolist()]
        gps = np.array([np.nan if d is None else d for d in cumulative_distance_m(lat_list, lon_list, segments)],
                       dtype=np.float64).reshape(-1)
    sample_dist = device if has_device else gps
    if raw.distance_m is not None:
        distance, distance_source = raw.distance_m, "device"
    elif has_device:
        distance, distance_source = float(np.nanmax(device)), "device"
    elif has_gps and gps is not None:
        distance, distance_source = float(np.nanmax(gps)), "gps"
    else:
        distance, distance_source = None, "none"

    # time axis
    start = raw.start_utc or (datetime_from_us(int(t[0])) if n else None)
    if start is None:
        raise _reject("no start time and no samples", raw, rel_path)
    last = datetime_from_us(int(t[-1])) if n else None
    end = raw.end_utc or (last if last is not None else start)
    if last is not None and last > end and raw.end_utc is None:
        end = last
    pauses = sorted(raw.pauses)
    start_us = us_from_datetime(start)
    elapsed_col = (t - start_us) / 1e6
    moving_col = moving_seconds_us(t, start_us, [(us_from_datetime(a), us_from_datetime(b)) for a, b in pauses])
    elapsed = max(raw.elapsed_s or 0.0, (end - start).total_seconds())
    paused_total = sum((b - a).total_seconds() for a, b in pauses)
    moving = raw.moving_s if raw.moving_s is not None else elapsed - paused_total
    moving = min(max(0.0, moving), elapsed)
    first_fix = np.flatnonzero(~np.isnan(lats))
    fix = (float(lats[first_fix[0]]), float(lons[first_fix[0]])) if len(first_fix) else None

    frame = columns_frame(SAMPLE_SCHEMA, activity_id=activity_id, t_us=t, columns={
        **cols.values, **columns, "elapsed_s": elapsed_col, "moving_s": moving_col, "distance_m": sample_dist,
        "lat_deg": lats, "lon_deg": lons})
    return _finish(
        raw, activity_id=activity_id, athlete_id=athlete_id, athlete_tz=athlete_tz, sport=sport,
        sub_sport=sub_sport, rel_path=rel_path, sha256=sha256, start=start, end=end, pauses=pauses,
        elapsed=elapsed, moving=moving, distance=distance, distance_source=distance_source, has_gps=has_gps,
        fix=fix, present=lambda key: _present(columns[key]), samples_frame=frame,
    )
