"""GPX 1.0 / 1.1 tracks via gpxpy, after a defusedxml safety check.

Order of defences: size and ``xmlns``-count limits on the raw text (gpxpy
runs a regex over the whole text once per namespace declaration), then a
full defusedxml parse that refuses any DOCTYPE/entity, and only then
``gpxpy.parse``. Not well-formed XML (e.g. an undeclared ``gpxdata:``
prefix) is rejected with its line.

One GPX file is one activity: every ``<trkpt>`` of every ``<trk>``/``<trkseg>``
in document order. Segment (and track) breaks are pauses: the time between
the last point of one segment and the first of the next, and the GPS
distance does not bridge them. Heart rate, cadence, power, temperature and
speed are read from any extension element by its local name, whatever the
namespace (Garmin TrackPointExtension v1/v2 ``hr``/``cad``/``atemp``,
Cluetrust ``gpxdata:hr``/``cadence``/``temp``, plain ``<heartrate>``,
``<power>``/``PowerInWatts``, ``<speed>``).

Times: a time without an offset is UTC (as the GPX schema says); a time
written with a non-zero offset gives ``utc_offset_s`` (``tz_source =
"file_offset"``). A track point without a time cannot be placed on the
run's timeline: such a file is rejected, naming how many points lack one.
"""

from __future__ import annotations

import codecs
import logging
import re
from datetime import datetime, timezone
from typing import Any

import gpxpy
import gpxpy.gpx

from pipeline.errors import RejectedFile, SkippedFile
from pipeline.sources import (
    RawSession,
    local_name,
    manufacturer_from_text,
    safe_xml_root,
    sport_from_text,
    to_float,
)

__all__ = ["read_gpx", "decode_xml_bytes"]

log = logging.getLogger(__name__)

_ENCODING = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._\-]+)["']""")
_EXT_KEYS: dict[str, str] = {
    "hr": "hr_bpm",
    "heartrate": "hr_bpm",
    "heart_rate": "hr_bpm",
    "heartratebpm": "hr_bpm",
    "cad": "cadence_cpm",
    "cadence": "cadence_cpm",
    "runcadence": "cadence_cpm",
    "power": "power_w",
    "powerinwatts": "power_w",
    "watts": "power_w",
    "atemp": "temperature_c",
    "temp": "temperature_c",
    "temperature": "temperature_c",
    "speed": "speed_mps",
}


def decode_xml_bytes(data: bytes, *, path: str) -> str:
    """XML bytes -> text: BOM first, then the declared encoding, else UTF-8.

    Raises
    ------
    RejectedFile
        Unknown encoding or bytes that do not decode (names the byte offset).
    """
    for bom, codec in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            data, encoding = data[len(bom):], codec
            break
    else:
        match = _ENCODING.match(data.lstrip()[:200])
        encoding = match.group(1).decode("ascii").lower() if match else "utf-8"
    try:
        text = data.decode(encoding)
    except LookupError as exc:
        raise RejectedFile(f"unknown XML encoding {encoding!r}", path=path) from exc
    except UnicodeDecodeError as exc:
        raise RejectedFile(f"bytes are not valid {encoding}: {exc.reason}", path=path, offset=exc.start) from exc
    # the declaration would contradict the now-decoded str for some parsers
    return re.sub(r"""^(\s*<\?xml[^>]*?)\s+encoding\s*=\s*["'][^"']*["']""", r"\1", text, count=1)


def _extensions(point: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for ext in getattr(point, "extensions", None) or []:
        for el in ext.iter():
            key = _EXT_KEYS.get(local_name(el.tag).lower())
            if key is None or key in out:
                continue
            value = to_float(el.text)
            if value is not None:
                out[key] = value
    return out


def _time(value: datetime | None) -> tuple[datetime | None, int | None]:
    if value is None:
        return None, None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc), None
    off = value.utcoffset()
    return value.astimezone(timezone.utc), (int(off.total_seconds()) if off is not None else None)


def read_gpx(data: bytes, *, path: str, fast: bool = True) -> list[RawSession]:
    """Decode a GPX file into one :class:`RawSession`.

    Parameters
    ----------
    data
        The file's bytes (already inflated if it was gzip).
    path
        The file's name for error messages.
    fast
        Try the streaming reader (:mod:`.gpxstream`) first; it hands any file
        it does not handle exactly like gpxpy back to gpxpy, the reference.
        ``False`` reads with gpxpy only.

    Raises
    ------
    RejectedFile
        Unsafe or malformed XML, gpxpy errors, track points without times.
    SkippedFile
        No track points (only waypoints/routes, or nothing), or a single point.
    """
    if not data:
        raise RejectedFile("empty file", path=path)
    text = decode_xml_bytes(data, path=path)
    text = text.lstrip(" \t\r\n\ufeff")
    if fast:
        from pipeline.sources.gpxstream import read_gpx_stream

        sessions = read_gpx_stream(text, path=path)
        if sessions is not None:
            return sessions
    root = safe_xml_root(text, path=path, kind="GPX", check_xmlns=True)
    if local_name(root.tag) != "gpx":
        raise RejectedFile(f"root element is <{local_name(root.tag)}>, not <gpx>", path=path)
    try:
        gpx = gpxpy.parse(text)
    except gpxpy.gpx.GPXException as exc:
        raise RejectedFile(f"GPX decode error: {exc}", path=path) from exc
    except Exception as exc:  # gpxpy lets ValueError/TypeError through on odd values
        raise RejectedFile(f"GPX decode error: {type(exc).__name__}: {exc}", path=path) from exc

    samples: list[dict[str, Any]] = []
    missing_time: list[int] = []
    offsets: set[int] = set()
    segment = 0
    for track in gpx.tracks:
        for seg in track.segments:
            for point in seg.points:
                t, off = _time(point.time)
                index = len(samples) + len(missing_time)
                if t is None:
                    missing_time.append(index)
                    continue
                if off is not None:
                    offsets.add(off)
                sample: dict[str, Any] = {
                    "index": index,
                    "segment": segment,
                    "t_utc": t,
                    "lat_deg": point.latitude,
                    "lon_deg": point.longitude,
                    "altitude_m": point.elevation,
                    "speed_mps": getattr(point, "speed", None),
                }
                for key, value in _extensions(point).items():
                    if sample.get(key) is None:
                        sample[key] = value
                samples.append(sample)
            segment += 1
    n_points = len(samples) + len(missing_time)
    if n_points == 0:
        what = []
        if gpx.waypoints:
            what.append(f"{len(gpx.waypoints)} waypoints")
        if gpx.routes:
            what.append(f"{len(gpx.routes)} routes")
        held = " and ".join(what) if what else "nothing"
        raise SkippedFile(f"GPX has no track points ({held}): not an activity", path=path)
    if missing_time:
        raise RejectedFile(
            f"GPX track points without <time>: {len(missing_time)} of {n_points} "
            f"(first: point {missing_time[0]}); a run needs a time on every point",
            path=path,
        )
    if n_points < 2:
        raise SkippedFile("GPX track has a single point: not an activity", path=path)

    pauses = []
    for prev, nxt in zip(samples, samples[1:]):
        if nxt["segment"] != prev["segment"] and nxt["t_utc"] > prev["t_utc"]:
            pauses.append((prev["t_utc"], nxt["t_utc"]))
    nonzero = {o for o in offsets if o != 0}
    offset = nonzero.pop() if len(nonzero) == 1 else None
    track_type = next((t.type for t in gpx.tracks if t.type), None)
    sport, sub_sport = sport_from_text(track_type)
    creator = (gpx.creator or "").strip() or None
    times = [s["t_utc"] for s in samples]
    return [
        RawSession(
            source_format="gpx",
            session_index=0,
            sport=sport,
            sub_sport=sub_sport,
            start_utc=min(times),
            end_utc=max(times),
            utc_offset_s=offset,
            tz_source="file_offset" if offset is not None else None,
            device_manufacturer=manufacturer_from_text(creator),
            device_product=creator,
            point_name="track point",
            samples=samples,
            pauses=pauses,
        )
    ]
