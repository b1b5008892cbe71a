"""Readers: one activity or pain file -> raw records. The only fitparse/gpxpy imports.

The activity readers (:mod:`.fit`, :mod:`.gpx`, :mod:`.tcx`) turn one file's
bytes into :class:`RawSession` objects: the file's own values, with their
own units where a conversion is a normalisation decision (FIT positions stay
semicircles, cadence stays *cycles* per minute, i.e. strides/min for foot
sports and rpm for cycling). :mod:`pipeline.normalise` turns them into the
schema of :mod:`pipeline.schema`.

This package also holds the helpers the readers share, including those that
need a library the rest of the package must not import: gzip inflation with
a size cap (:func:`gunzip_bounded`), the GPS time-zone lookup
(:func:`timezone_at`, timezonefinder), safe XML parsing (:func:`safe_xml_root`,
defusedxml: no DOCTYPE, no entities; :func:`guard_xml_text`: size and
``xmlns`` limits run before any parser), ISO times (:func:`parse_iso_time`)
and the sport/manufacturer vocabularies (:func:`sport_from_text`,
:func:`manufacturer_from_text`).
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from pipeline.errors import RejectedFile

__all__ = [
    "GZIP_MAGIC",
    "MAX_XML_BYTES",
    "MAX_ODD_XMLNS",
    "RawSession",
    "gunzip_bounded",
    "timezone_at",
    "safe_xml_root",
    "guard_xml_text",
    "local_name",
    "parse_iso_time",
    "sport_from_text",
    "manufacturer_from_text",
    "to_float",
]

log = logging.getLogger(__name__)

#: The first two bytes of a gzip stream.
GZIP_MAGIC = b"\x1f\x8b"
#: Largest GPX/TCX text accepted (a 24 h run at 1 Hz is ~25 MB of GPX).
MAX_XML_BYTES = 64 * 1024**2
#: ``xmlns`` occurrences that are not a short, well-formed declaration, tolerated
#: (e.g. the word in a description). gpxpy runs ``\\sxmlns:?[^=]*="[^"]+"``
#: over the whole text: each occurrence not promptly followed by ``="..."``
#: scans far ahead, so many of them take quadratic time.
MAX_ODD_XMLNS = 16
#: Longest namespace URI accepted in a declaration.
MAX_XMLNS_URI = 2048


@dataclass
class RawSession:
    """One activity (FIT session, GPX file, TCX ``Activity``) as read from the file.

    ``samples`` are dicts with any of these keys (absent or None = unknown):
    ``t_utc`` (aware UTC datetime, required), ``index`` (0-based position of
    the record/point in the file, for error messages), ``lat_deg``/``lon_deg``
    or ``lat_semicircles``/``lon_semicircles`` (FIT), ``altitude_m``,
    ``speed_mps``, ``distance_m`` (device cumulative), ``cadence_cpm``
    (cycles/min as recorded: strides/min on foot, rpm on a bike),
    ``hr_bpm``, ``power_w``, ``temperature_c``, ``vertical_oscillation_mm``,
    ``stance_time_ms``, ``step_length_mm``, ``segment`` (GPX segment / TCX
    track number; a new segment after a gap marks a pause).

    ``laps`` are dicts with the keys of :data:`pipeline.schema.LAP_SCHEMA`
    except that cadence is ``avg_cadence_cpm``. ``pauses`` are (timer stop,
    timer start) pairs.

    ``device_clock`` (FIT files whose ``date_time`` values are seconds since
    the device was switched on): every instant of the session (start, end,
    samples, laps, pauses) is then ``FIT_EPOCH + those seconds``, a stand-in
    on the device's own clock of which only differences mean anything; the
    normaliser keeps the durations and stores no instant.
    """

    source_format: str  # fit | gpx | tcx
    session_index: int
    sport: str | None = None
    sub_sport: str | None = None
    start_utc: datetime | None = None  # the device's own start, else the first sample
    end_utc: datetime | None = None
    elapsed_s: float | None = None  # device totals
    moving_s: float | None = None
    distance_m: float | None = None
    avg_hr_bpm: float | None = None
    max_hr_bpm: float | None = None
    avg_cadence_cpm: float | None = None
    avg_power_w: float | None = None
    total_ascent_m: float | None = None
    total_descent_m: float | None = None
    utc_offset_s: int | None = None  # from the file itself (FIT local_timestamp, ISO offsets)
    tz_source: str | None = None  # fit_local_timestamp | file_offset when utc_offset_s is set
    device_manufacturer: str | None = None
    device_product: str | None = None
    point_name: str = "record"  # what a sample is called in this format, for messages
    samples: list[dict[str, Any]] = field(default_factory=list)
    laps: list[dict[str, Any]] = field(default_factory=list)
    pauses: list[tuple[datetime, datetime]] = field(default_factory=list)
    device_clock: bool = False  # instants are device seconds since power-on, not dates (FIT)


def gunzip_bounded(data: bytes, *, max_bytes: int, path: str) -> bytes:
    """Inflate a gzip stream, refusing output larger than ``max_bytes``.

    Concatenated gzip members are inflated in turn, as ``gzip`` does.

    Parameters
    ----------
    data
        The compressed bytes (starting with :data:`GZIP_MAGIC`).
    max_bytes
        Largest inflated size accepted.
    path
        The file's name for error messages.

    Raises
    ------
    RejectedFile
        Corrupt or truncated gzip data, or output larger than ``max_bytes``
        (a decompression bomb).
    """
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            chunk = inflater.decompress(rest, max_bytes + 1 - len(out))
        except zlib.error as exc:
            raise RejectedFile(
                f"corrupt gzip data: {exc}", path=path, offset=len(data) - len(rest)
            ) from exc
        out += chunk
        if len(out) > max_bytes:
            raise RejectedFile(
                f"gzip data inflates to more than {max_bytes} bytes (limit)", path=path
            )
        if not inflater.eof:
            raise RejectedFile("truncated gzip data", path=path, offset=len(data))
        rest = inflater.unused_data
        if rest and not rest.startswith(GZIP_MAGIC):
            # trailing garbage after the gzip member: gzip tolerates NUL padding only
            if rest.strip(b"\x00"):
                raise RejectedFile(
                    "unexpected bytes after the gzip data", path=path, offset=len(data) - len(rest)
                )
            break
    return bytes(out)


_TZ_FINDER: Any = None


def timezone_at(lat_deg: float, lon_deg: float) -> str | None:
    """The IANA time-zone name at a position (timezonefinder), or None at sea / unknown.

    The finder's data are loaded once per process (about half a second).
    Ocean zones (``Etc/GMT+5``) are returned as timezonefinder gives them.
    """
    global _TZ_FINDER
    if not (-90.0 <= lat_deg <= 90.0 and -180.0 <= lon_deg <= 180.0):
        return None
    if _TZ_FINDER is None:
        from timezonefinder import TimezoneFinder

        _TZ_FINDER = TimezoneFinder()
    try:
        name = _TZ_FINDER.timezone_at(lng=float(lon_deg), lat=float(lat_deg))
    except ValueError:  # pragma: no cover - coordinates already range-checked
        return None
    return str(name) if name else None


# --------------------------------------------------------------------------- XML helpers


_XMLNS = re.compile(r"xmlns")
_XMLNS_DECL = re.compile(r"""xmlns(?::[A-Za-z_][\w.\-]*)?\s*=\s*(?:"[^"<]{0,%d}"|'[^'<]{0,%d}')""" % (MAX_XMLNS_URI, MAX_XMLNS_URI))


def guard_xml_text(data: bytes | str, *, path: str, check_xmlns: bool = False) -> None:
    """Refuse XML that is too large, or (``check_xmlns``) laden with odd ``xmlns`` text.

    Runs in linear time, before any XML parser sees the text. With
    ``check_xmlns`` every ``xmlns`` occurrence must be a declaration with a
    quoted URI of at most :data:`MAX_XMLNS_URI` characters; more than
    :data:`MAX_ODD_XMLNS` exceptions reject the file (gpxpy's namespace regex
    would take quadratic time on it).
    """
    size = len(data)
    if size > MAX_XML_BYTES:
        raise RejectedFile(f"XML file is {size} bytes, above the {MAX_XML_BYTES}-byte limit", path=path)
    if not check_xmlns:
        return
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    odd = 0
    for match in _XMLNS.finditer(text):
        pos = match.start()
        if _XMLNS_DECL.match(text, pos, pos + MAX_XMLNS_URI + 200) is None:
            odd += 1
            if odd > MAX_ODD_XMLNS:
                raise RejectedFile(
                    f"more than {MAX_ODD_XMLNS} 'xmlns' occurrences that are not namespace "
                    f"declarations (refused: quadratic-time parsing)",
                    path=path,
                    offset=pos,
                )


def safe_xml_root(data: bytes | str, *, path: str, kind: str, check_xmlns: bool = False) -> Element:
    """Parse XML with defusedxml: no DOCTYPE, no entities, no external references.

    Raises
    ------
    RejectedFile
        DTD/entity/external reference present, or not well-formed XML (the
        message names the line).
    """
    guard_xml_text(data, path=path, check_xmlns=check_xmlns)
    if isinstance(data, bytes):
        data = data.lstrip(b" \t\r\n")  # some exporters (Polar) put blanks before <?xml
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:].lstrip(b" \t\r\n")
    else:
        data = data.lstrip(" \t\r\n\ufeff")
    try:
        return SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise RejectedFile(
            f"{kind} file declares a DOCTYPE/entity ({type(exc).__name__}); refused for safety",
            path=path,
        ) from exc
    except ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else None
        raise RejectedFile(f"not well-formed XML ({kind}): {exc}", path=path, line=line) from exc
    except (LookupError, ValueError, UnicodeError) as exc:  # unknown declared encoding, ...
        raise RejectedFile(f"unreadable XML ({kind}): {exc}", path=path) from exc


def local_name(tag: Any) -> str:
    """``{namespace}Name`` or ``prefix:Name`` -> ``Name``."""
    if not isinstance(tag, str):  # comments / processing instructions
        return ""
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def to_float(text: str | None) -> float | None:
    """A finite float from element text, else None (isolated garbage becomes null)."""
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_iso_time(text: str | None) -> tuple[datetime, int | None] | None:
    """An ISO 8601 instant -> (aware UTC datetime, offset seconds written in the text or None).

    A time without an offset is taken as UTC (GPX and TCX both specify UTC;
    the offset is then reported as None, i.e. unknown). Returns None for
    text that is not a time.
    """
    if not text:
        return None
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc), None
    off = parsed.utcoffset()
    offset = int(off.total_seconds()) if off is not None else None
    if value.endswith(("Z", "z")):
        offset = None  # the UTC designator says nothing about local time
    return parsed.astimezone(timezone.utc), offset


# --------------------------------------------------------------------------- vocabularies

#: Strava's numeric GPX ``<type>`` codes that are certain from exports.
_STRAVA_TYPES = {"1": "cycling", "4": "hiking", "9": "running", "10": "walking", "16": "swimming"}
_SPORT_WORDS: dict[str, tuple[str, str | None]] = {
    "run": ("running", None),
    "running": ("running", None),
    "trail_running": ("running", "trail"),
    "trailrun": ("running", "trail"),
    "treadmill_running": ("running", "treadmill"),
    "street_running": ("running", "street"),
    "track_running": ("running", "track"),
    "virtual_run": ("running", "virtual_activity"),
    "biking": ("cycling", None),
    "bike": ("cycling", None),
    "ride": ("cycling", None),
    "cycling": ("cycling", None),
    "road_biking": ("cycling", "road"),
    "mountain_biking": ("cycling", "mountain"),
    "indoor_cycling": ("cycling", "indoor_cycling"),
    "virtual_ride": ("cycling", "virtual_activity"),
    "walk": ("walking", None),
    "walking": ("walking", None),
    "hike": ("hiking", None),
    "hiking": ("hiking", None),
    "swim": ("swimming", None),
    "swimming": ("swimming", None),
    "lap_swimming": ("swimming", "lap_swimming"),
    "open_water_swimming": ("swimming", "open_water"),
    "other": ("generic", None),
    "unknown": ("generic", None),
    "generic": ("generic", None),
}


def sport_from_text(text: str | None) -> tuple[str, str | None]:
    """GPX ``<type>`` / TCX ``Sport`` -> (FIT sport, FIT sub_sport).

    Strava's numeric codes (1 ride, 4 hike, 9 run, 10 walk, 16 swim) and the
    usual words are mapped to FIT names; an unknown word is kept as written
    (lower-case, ``_`` for spaces); nothing -> ``generic``.
    """
    if text is None or not text.strip():
        return "generic", None
    word = re.sub(r"[\s\-]+", "_", text.strip().lower())
    if word in _STRAVA_TYPES:
        return _STRAVA_TYPES[word], None
    return _SPORT_WORDS.get(word, (word, None))


_BRANDS = (
    ("garmin", "garmin"), ("forerunner", "garmin"), ("edge", "garmin"), ("fenix", "garmin"),
    ("fēnix", "garmin"), ("suunto", "suunto"), ("movescount", "suunto"), ("polar", "polar"),
    ("coros", "coros"), ("wahoo", "wahoo_fitness"), ("apple", "apple"), ("amazfit", "huami"),
    ("huami", "huami"), ("strava", "strava"), ("zwift", "zwift"), ("stryd", "stryd"),
)


def manufacturer_from_text(text: str | None) -> str | None:
    """A manufacturer name guessed from a GPX ``creator`` / TCX ``Creator/Name``, else None."""
    if not text:
        return None
    low = text.lower()
    return next((brand for word, brand in _BRANDS if word in low), None)
