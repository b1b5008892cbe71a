"""Garmin Training Center (TCX) activities via defusedxml ElementTree.

Every ``Activity`` (plain, or inside a ``MultiSportSession``) is one
:class:`~pipeline.sources.RawSession`, in document order. A file with
``Courses`` but no ``Activity`` is a route, not a run: :class:`SkippedFile`.

Per trackpoint: ``Time``, ``Position``, ``AltitudeMeters``, ``DistanceMeters``
(device cumulative), ``HeartRateBpm/Value``, ``Cadence`` and the extension
``TPX`` ``Speed``, ``RunCadence``, ``Watts`` (any namespace prefix: ``ns3:``,
``ax:``, ...). Cadence is reported as cycles/min: Garmin writes
``RunCadence`` in strides/min (the heartandsole FIT/TCX pair of the corpus
has identical FIT ``cadence`` and TCX ``RunCadence`` values) and Polar/Suunto
write running ``Cadence`` in strides/min too; normalisation doubles both for
foot sports.

Laps give the device totals: ``TotalTimeSeconds`` is timer time (their sum is
``moving_s``), ``DistanceMeters`` the lap distance (their sum is the
activity distance, ``distance_source = "device"``). A new ``Track`` element
after a time gap marks a pause (Garmin starts one after each timer stop).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from xml.etree.ElementTree import Element

from pipeline.errors import RejectedFile, SkippedFile
from pipeline.sources import (
    RawSession,
    local_name,
    manufacturer_from_text,
    parse_iso_time,
    safe_xml_root,
    sport_from_text,
    to_float,
)

__all__ = ["read_tcx"]

log = logging.getLogger(__name__)

#: A gap between two ``Track`` elements is a pause when it is longer than this
#: and than 3 sampling intervals, and only when the laps' timer time falls short
#: of the elapsed time by more than PAUSE_GAP_S (the device says it was stopped).
PAUSE_GAP_S = 10.0


def _child(el: Element, name: str) -> Element | None:
    for c in el:
        if local_name(c.tag) == name:
            return c
    return None


def _children(el: Element, name: str) -> list[Element]:
    return [c for c in el if local_name(c.tag) == name]


def _text(el: Element | None, *path: str) -> str | None:
    for name in path:
        if el is None:
            return None
        el = _child(el, name)
    return el.text.strip() if el is not None and el.text else None


def _num(el: Element | None, *path: str) -> float | None:
    return to_float(_text(el, *path))


def _ext_values(el: Element | None) -> dict[str, float]:
    """TPX / LX extension values by local name (Speed, RunCadence, Watts, AvgSpeed, AvgRunCadence, ...)."""
    out: dict[str, float] = {}
    if el is None:
        return out
    for sub in el.iter():
        name = local_name(sub.tag)
        value = to_float(sub.text) if sub.text else None
        if value is not None and name not in out:
            out[name] = value
    return out


def _activities(root: Element) -> list[Element]:
    return [el for el in root.iter() if local_name(el.tag) == "Activity"]


def _trackpoint(tp: Element, index: int, segment: int) -> tuple[dict[str, Any], int | None] | None:
    parsed = parse_iso_time(_text(tp, "Time"))
    if parsed is None:
        return None
    t, offset = parsed
    ext = _ext_values(_child(tp, "Extensions"))
    cadence = _num(tp, "Cadence")
    if cadence is None:
        cadence = ext.get("RunCadence")
    sample = {
        "index": index,
        "segment": segment,
        "t_utc": t,
        "lat_deg": _num(tp, "Position", "LatitudeDegrees"),
        "lon_deg": _num(tp, "Position", "LongitudeDegrees"),
        "altitude_m": _num(tp, "AltitudeMeters"),
        "distance_m": _num(tp, "DistanceMeters"),
        "hr_bpm": _num(tp, "HeartRateBpm", "Value"),
        "cadence_cpm": cadence,
        "speed_mps": ext.get("Speed"),
        "power_w": ext.get("Watts"),
    }
    return sample, offset


def _pauses(samples: list[dict[str, Any]], segment_starts: list[int], stopped_s: float) -> list[tuple[datetime, datetime]]:
    """Gaps at ``Track`` boundaries that are pauses (see :data:`PAUSE_GAP_S`)."""
    if stopped_s <= PAUSE_GAP_S or len(samples) < 2:
        return []
    steps = sorted((b["t_utc"] - a["t_utc"]).total_seconds() for a, b in zip(samples, samples[1:]))
    threshold = max(PAUSE_GAP_S, 3.0 * steps[len(steps) // 2])
    pauses = []
    for k in sorted(set(segment_starts)):
        if 0 < k < len(samples):
            a, b = samples[k - 1]["t_utc"], samples[k]["t_utc"]
            if (b - a).total_seconds() > threshold:
                pauses.append((a, b))
    return pauses


def _weighted(pairs: list[tuple[float | None, float | None]]) -> float | None:
    """Time-weighted mean of lap averages; None unless every lap has both."""
    if not pairs or any(v is None or w is None for v, w in pairs):
        return None
    total = sum(w for _, w in pairs if w is not None)
    if not total:
        return None
    return sum(v * w for v, w in pairs if v is not None and w is not None) / total


def _session(activity: Element, session_index: int, path: str, counter: list[int]) -> RawSession:
    sport, sub_sport = sport_from_text(activity.get("Sport"))
    id_time = parse_iso_time(_text(activity, "Id"))
    creator = _text(activity, "Creator", "Name")
    product_id = _text(activity, "Creator", "ProductID")
    samples: list[dict[str, Any]] = []
    laps: list[dict[str, Any]] = []
    missing: list[int] = []
    offsets: set[int] = set()
    segment_starts: list[int] = []
    lap_pairs: dict[str, list[tuple[float | None, float | None]]] = {"hr": [], "cad": []}
    max_hr: list[float] = []
    segment = 0
    for lap in _children(activity, "Lap"):
        lap_start = parse_iso_time(lap.get("StartTime"))
        timer = _num(lap, "TotalTimeSeconds")
        lx = _ext_values(_child(lap, "Extensions"))
        avg_hr = _num(lap, "AverageHeartRateBpm", "Value")
        avg_cad = _num(lap, "Cadence")
        if avg_cad is None:
            avg_cad = lx.get("AvgRunCadence")
        lap_hr_max = _num(lap, "MaximumHeartRateBpm", "Value")
        if lap_hr_max is not None:
            max_hr.append(lap_hr_max)
        lap_pairs["hr"].append((avg_hr, timer))
        lap_pairs["cad"].append((avg_cad, timer))
        first_in_lap = len(samples)
        for track in _children(lap, "Track"):
            segment_starts.append(len(samples))
            for tp in _children(track, "Trackpoint"):
                index = counter[0]
                counter[0] += 1
                got = _trackpoint(tp, index, segment)
                if got is None:
                    missing.append(index)
                    continue
                sample, offset = got
                if offset is not None:
                    offsets.add(offset)
                samples.append(sample)
            segment += 1
        lap_samples = samples[first_in_lap:]
        start = lap_start[0] if lap_start else (lap_samples[0]["t_utc"] if lap_samples else None)
        end = lap_samples[-1]["t_utc"] if lap_samples else (start + timedelta(seconds=timer) if start and timer else None)
        trigger = _text(lap, "TriggerMethod")
        laps.append(
            {
                "start_utc": start,
                "end_utc": end,
                "elapsed_s": (end - start).total_seconds() if start and end else None,
                "moving_s": timer,
                "distance_m": _num(lap, "DistanceMeters"),
                "avg_speed_mps": lx.get("AvgSpeed"),
                "avg_hr_bpm": avg_hr,
                "avg_cadence_cpm": avg_cad,
                "trigger": trigger.lower() if trigger else None,
            }
        )
    if missing:
        raise RejectedFile(
            f"TCX trackpoints without a valid <Time>: {len(missing)} (first: trackpoint {missing[0]})",
            path=path,
        )
    times = [s["t_utc"] for s in samples]
    start_candidates = [t for t in ([id_time[0]] if id_time else []) + [lap["start_utc"] for lap in laps] if t]
    start = start_candidates[0] if start_candidates else (min(times) if times else None)
    if start is None:
        raise RejectedFile(f"TCX activity {session_index} has no Id time, no lap start and no trackpoints", path=path)
    end = max(times) if times else None
    if end is None:
        timer_total = sum(lap["moving_s"] or 0.0 for lap in laps)
        end = start + timedelta(seconds=timer_total)

    lap_dist = [lap["distance_m"] for lap in laps if lap["distance_m"] is not None]
    timers = [lap["moving_s"] for lap in laps if lap["moving_s"] is not None]
    pauses = _pauses(samples, segment_starts, (end - start).total_seconds() - sum(timers) if timers else 0.0)
    nonzero = {o for o in offsets if o != 0}
    offset = nonzero.pop() if len(nonzero) == 1 else None
    label = f"{creator} (ProductID {product_id})" if creator and product_id else creator
    return RawSession(
        source_format="tcx",
        session_index=session_index,
        sport=sport,
        sub_sport=sub_sport,
        start_utc=start,
        end_utc=end,
        moving_s=sum(timers) if timers else None,
        distance_m=sum(lap_dist) if lap_dist else None,
        avg_hr_bpm=_weighted(lap_pairs["hr"]),
        max_hr_bpm=max(max_hr) if max_hr else None,
        avg_cadence_cpm=_weighted(lap_pairs["cad"]),
        utc_offset_s=offset,
        tz_source="file_offset" if offset is not None else None,
        device_manufacturer=manufacturer_from_text(creator),
        device_product=label,
        point_name="trackpoint",
        samples=samples,
        laps=laps,
        pauses=pauses,
    )


def read_tcx(data: bytes, *, path: str) -> list[RawSession]:
    """Decode a TCX file into one :class:`RawSession` per ``Activity``.

    Raises
    ------
    RejectedFile
        Unsafe or malformed XML, trackpoints without a time.
    SkippedFile
        A course file or a file with no activity.
    """
    if not data:
        raise RejectedFile("empty file", path=path)
    root = safe_xml_root(data, path=path, kind="TCX")
    if local_name(root.tag) != "TrainingCenterDatabase":
        raise RejectedFile(f"root element is <{local_name(root.tag)}>, not <TrainingCenterDatabase>", path=path)
    activities = _activities(root)
    if not activities:
        if any(local_name(el.tag) == "Course" for el in root.iter()):
            raise SkippedFile("TCX course (a planned route), not an activity", path=path)
        raise SkippedFile("TCX file holds no activity", path=path)
    counter = [0]
    return [_session(act, i, path, counter) for i, act in enumerate(activities)]
