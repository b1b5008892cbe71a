"""GPX 1.1 tracks streamed into columns: :func:`pipeline.sources.gpx.read_gpx` without gpxpy.

gpxpy builds a Python object per point (and deep-copies every extension
element), about 10,000 points/s. This reader keeps only what ``read_gpx``
uses (``lat``/``lon``, ``ele``, ``time``, the extension values by local
name), parses the common ``...Z`` times in one vectorised step, and hands
:mod:`pipeline.normalise` a :class:`~pipeline.sources.columnar.SampleColumns`.
It never parses text that holds ``<!DOCTYPE`` or ``<!ENTITY``: without a DTD
there are no entity declarations and no external references, and such a
file goes to the gpxpy path, where defusedxml refuses it as before.

Two lanes, both held to gpxpy:

* the common layout (Strava, Garmin Connect, most apps: ``<trkpt lat lon>``
  with ``ele``, ``time`` and one extension element of leaves), in text with
  no comments, CDATA, references or processing instructions: expat checks
  the whole text is well formed, then regular expressions read the points
  and a scan of the tags around them checks where they are (~5x gpxpy);
* anything else: the C parser's end events, one track point at a time
  (each emptied once read), the structure checked at the end (~3x gpxpy).

gpxpy stays the reference: the values are those gpxpy gives (its own
converters and time parser for anything but the common time form), and
:func:`read_gpx_stream` returns ``None``, so that ``read_gpx`` uses gpxpy,
for anything it does not handle exactly like gpxpy: GPX 1.0, waypoints or
routes, a default namespace that is not the root's, non-GPX elements
without a namespace, values gpxpy would refuse, XML that is not well formed
or declares a DOCTYPE (gpxpy's path words those rejections).
``tests/test_gpxstream.py`` holds both paths to the same sessions.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from typing import Any
from xml.etree.ElementTree import Element, ParseError, XMLPullParser
from xml.parsers import expat

import numpy as np
from gpxpy.gpxfield import FLOAT_TYPE, INT_TYPE, TIME_TYPE

from pipeline.errors import RejectedFile, SkippedFile
from pipeline.sources import RawSession, guard_xml_text, manufacturer_from_text, sport_from_text, to_float
from pipeline.sources.columnar import SampleColumns, datetime_from_us, us_from_datetime

__all__ = ["read_gpx_stream"]

log = logging.getLogger(__name__)

# what gpx.py reads from extension elements (local name, lower-case -> sample key)
_EXT_KEYS: dict[str, str] = {
    "hr": "hr_bpm", "heartrate": "hr_bpm", "heart_rate": "hr_bpm", "heartratebpm": "hr_bpm",
    "cad": "cadence_cpm", "cadence": "cadence_cpm", "runcadence": "cadence_cpm",
    "power": "power_w", "powerinwatts": "power_w", "watts": "power_w",
    "atemp": "temperature_c", "temp": "temperature_c", "temperature": "temperature_c",
    "speed": "speed_mps",
}
_KEYS = ("lat_deg", "lon_deg", "altitude_m", "speed_mps")  # always in gpx.py's sample dicts
# gpxpy's GPX 1.1 track point fields that convert (and may refuse) their text
_POINT_FLOATS = ("magvar", "geoidheight", "hdop", "vdop", "pdop", "ageofdgpsdata")
_POINT_INTS = ("sat", "dgpsid")
_FIX = ("none", "2d", "3d", "dgps", "pps", "3")
_DEFAULT_NS = re.compile(r"""\sxmlns=(['"])[^'"]+\1""")  # the declaration gpxpy deletes
_UTC_TIME = re.compile(r"(?!0000)\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?Z")
_EPOCH64 = np.datetime64("1970-01-01T00:00:00", "us")
_CHUNK = 1 << 16  # characters fed to the parser at a time
_NAN = float("nan")
_UNSEEN = object()


class _Decline(Exception):
    """Not handled exactly like gpxpy: use gpxpy."""


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _times(texts: list[str | None]) -> tuple[np.ndarray, np.ndarray, list[int | None]]:
    """(UTC microseconds, whether gpxpy gives a time, written offset in s or None) per time text."""
    n = len(texts)
    out = np.zeros(n, dtype=np.int64)
    found = np.zeros(n, dtype=bool)
    offsets: list[int | None] = [None] * n
    common = [i for i, s in enumerate(texts) if s is not None and _UTC_TIME.fullmatch(s)]
    if common:
        try:
            parsed = np.array([texts[i][:-1] for i in common], dtype="datetime64[us]")  # type: ignore[index]
        except ValueError:  # a day that does not exist: gpxpy's parser decides below
            common = []
        else:
            out[common] = (parsed - _EPOCH64).astype(np.int64)
            found[common] = True
            for i in common:
                offsets[i] = 0
    done = set(common)
    for i, text in enumerate(texts):
        if text is None or i in done:
            continue
        value: datetime | None = TIME_TYPE.from_string(text)  # gpxpy's: None for what it cannot read
        if value is None:
            continue
        found[i] = True
        if value.tzinfo is None:
            out[i] = us_from_datetime(value.replace(tzinfo=timezone.utc))
        else:
            off = value.utcoffset()
            offsets[i] = int(off.total_seconds()) if off is not None else None
            out[i] = us_from_datetime(value.astimezone(timezone.utc))
    return out, found, offsets


def _first_children(el: Element) -> dict[str, Element]:
    first: dict[str, Element] = {}
    for child in el:
        first.setdefault(child.tag, child)
    return first


def _convert(converter: Any, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return converter.from_string(text)
    except Exception as exc:  # gpxpy would refuse the file: let it say why
        raise _Decline(f"gpxpy refuses {text!r}") from exc


def read_gpx_stream(text: str, *, path: str, plain: bool = True) -> list[RawSession] | None:
    """``read_gpx``'s session from decoded GPX text, or None to use gpxpy.

    ``plain=False`` skips the regular-expression reader of the common layout
    (tests hold both readers to gpxpy).

    Raises
    ------
    RejectedFile, SkippedFile
        With ``read_gpx``'s reasons (too large, no times, no points, one point).
    """
    guard_xml_text(text, path=path, check_xmlns=True)
    try:
        return _read(text, path, plain=plain)
    except _Decline as exc:
        log.debug("%s: streaming GPX reader declined (%s); using gpxpy", path, exc)
        return None
    except (ParseError, expat.ExpatError, LookupError, ValueError, UnicodeError) as exc:
        log.debug("%s: streaming GPX reader declined (%s); using gpxpy", path, type(exc).__name__)
        return None


def _read(text: str, path: str, *, plain: bool = True) -> list[RawSession]:
    # No DTD means no entity declarations and no external references: refuse any before
    # expat sees the text (the gpxpy path then rejects the file through defusedxml).
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise _Decline("a DOCTYPE or entity declaration")
    if 'xmlns=""' in text or "xmlns=''" in text:
        raise _Decline("elements without a namespace below a default namespace")
    # gpxpy deletes the first default-namespace declaration of the text: it must be the root's
    decl = _DEFAULT_NS.search(text)
    start = text.find("<gpx")
    root_tag = _ROOT_TAG.match(text, start) if start >= 0 else None
    if root_tag is None or -1 < text.find("<!--") < start:
        raise _Decline("the root start tag is not plainly the first <gpx")
    ns = decl.group(0).split("=", 1)[1].strip()[1:-1] if decl is not None else ""
    if decl is not None and not start < decl.start() < root_tag.end():
        raise _Decline("the first default namespace is not declared on the root")
    common = _read_plain(text) if plain else None
    if common is not None:
        return _session(path, *common)
    return _session(path, *_read_tree(text, ns))


def _read_tree(text: str, ns: str) -> tuple[str | None, _Columns, list[int], list[str | None]]:
    """Any GPX 1.1 layout: the C parser's events, one track point at a time."""
    tag = {name: f"{{{ns}}}{name}" if ns else name for name in
           ("gpx", "trk", "trkseg", "trkpt", "ele", "time", "extensions", "type", "number", "metadata",
            "bounds", "wpt", "rte", "fix", *_POINT_FLOATS, *_POINT_INTS)}
    t_trkpt = tag["trkpt"]
    cols = _Columns(tag)
    points: list[Element] = []  # every trkpt read, in document order (emptied once read)
    parser = XMLPullParser(events=("start-ns", "end"))
    first_default: str | None = None
    root: Element | None = None
    for offset in range(0, len(text), _CHUNK):
        parser.feed(text[offset:offset + _CHUNK])
        for event, el in parser.read_events():
            if event == "end":
                root = el
                if el.tag == t_trkpt:
                    cols.add(el)
                    points.append(el)
                    el.clear()
            elif first_default is None and el[0] == "":
                first_default = el[1]
    parser.close()
    for event, el in parser.read_events():
        if event == "end":
            root = el
    if root is None or root.tag != tag["gpx"] or root.get("version") != "1.1" or (first_default or "") != ns:
        raise _Decline("not a GPX 1.1 root with its own default namespace")
    # the points read must be exactly those gpxpy reads: root/trk/trkseg/trkpt
    segments: list[int] = []
    placed: list[Element] = []
    track_types: list[str | None] = []
    segment = 0
    for child in root:
        if child.tag in (tag["wpt"], tag["rte"]):
            raise _Decline("waypoints or routes")
        if child.tag == tag["metadata"]:
            bounds = _first_children(child).get(tag["bounds"])
            if bounds is not None:
                for attr in ("minlat", "maxlat", "minlon", "maxlon"):
                    _convert(FLOAT_TYPE, bounds.get(attr))
        if child.tag != tag["trk"]:
            continue
        first = _first_children(child)
        kind = first.get(tag["type"])
        track_types.append(kind.text if kind is not None else None)
        if tag["number"] in first:
            _convert(INT_TYPE, first[tag["number"]].text)
        for seg in child:
            if seg.tag == tag["trkseg"]:
                for pt in seg:
                    if pt.tag == t_trkpt:
                        placed.append(pt)
                        segments.append(segment)
                segment += 1
    if len(placed) != len(points) or any(a is not b for a, b in zip(placed, points)):
        raise _Decline("track points outside root/trk/trkseg")
    return root.get("creator"), cols, segments, track_types


# The common layout (Strava, Garmin Connect, most apps), read with regular expressions once expat
# has checked the whole text is well-formed: no comments, CDATA, entity or character references or
# processing instructions anywhere, so the text between tags is exactly the XML text.
_PLAIN_POINT = re.compile(
    r'<trkpt lat="([-+.0-9eE]+)" lon="([-+.0-9eE]+)">\s*'
    r'(?:<ele>([^<]*)</ele>\s*)?'
    r'(?:<time>([^<]*)</time>\s*)?'
    r'(?:<extensions>\s*(?:<[\w.:-]+>((?:\s*<[\w.:-]+>[^<]*</[\w.:-]+>)*)\s*</[\w.:-]+>'  # a wrapper of leaves
    r'|((?:\s*<[\w.:-]+>[^<]*</[\w.:-]+>)+))\s*</extensions>\s*)?'  # or the leaves themselves
    r'</trkpt>'
)
_LEAF = re.compile(r"<(?:[\w.-]+:)?([\w.-]+)>([^<]*)</")
_TOKEN = re.compile(r"<(/?)([^\s/>!?]+)([^>]*?)(/?)>|\x00")
_ROOT_TAG = re.compile(r"""<gpx(?:\s+[\w:.-]+\s*=\s*(?:"[^"]*"|'[^']*'))*\s*/?>""")
_GT_IN_VALUE = re.compile(r"""=\s*(?:"[^"]*>|'[^']*>)""")
_ATTR = re.compile(r"""([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def _refuse_markup(*_args: Any) -> None:
    raise _Decline("a DOCTYPE or entity declaration")


def _read_plain(text: str) -> tuple[str | None, _Columns, list[int], list[str | None]] | None:
    """The common layout without building elements, or None when the text is not plainly that."""
    if "&" in text or "<!--" in text or "<![CDATA[" in text or "\x00" in text or text.count("<?") > 1:
        return None
    if text.count("<?") == 1 and not text.startswith("<?xml"):
        return None
    if _GT_IN_VALUE.search(text):
        return None  # a ">" inside an attribute value would cut the tag scan short
    parser = expat.ParserCreate(namespace_separator=" ")  # checks well-formedness and prefixes
    parser.StartDoctypeDeclHandler = _refuse_markup
    parser.EntityDeclHandler = _refuse_markup
    parser.Parse(text, True)
    points = _PLAIN_POINT.findall(text)
    if len(points) != text.count("<trkpt"):
        return None  # some track point has another layout
    cols = _Columns({})
    cols.add_plain(points)
    return _walk_skeleton(_PLAIN_POINT.sub("\x00", text), cols)


def _walk_skeleton(skeleton: str, cols: _Columns) -> tuple[str | None, _Columns, list[int], list[str | None]] | None:
    """The structure around the points (``\\x00`` each): root, tracks, segments, what gpxpy checks."""
    stack: list[str] = []
    segments: list[int] = []
    types: list[str | None] = []
    segment = 0
    creator: str | None = None
    leaf: tuple[str, int, int] | None = None  # (name, depth, text start) of an element being read
    bounds_seen = False
    for m in _TOKEN.finditer(skeleton):
        if m.group(0) == "\x00":
            if stack != ["gpx", "trk", "trkseg"]:
                return None
            segments.append(segment)
            continue
        closing, name, attrs, self_closing = m.groups()
        if closing:
            stack.pop()
            if leaf is not None and leaf[1] == len(stack):
                text = skeleton[leaf[2]:m.start()] or None
                if leaf[0] == "type":
                    types[-1] = text
                else:
                    _convert(INT_TYPE, text)
                leaf = None
            if name == "trkseg" and stack == ["gpx", "trk"]:
                segment += 1
            continue
        if leaf is not None:
            return None  # a <type> or <number> with child elements
        depth = len(stack)
        if depth == 0:
            found = {k: a if a is not None else b for k, a, b in _ATTR.findall(attrs)}
            if name != "gpx" or found.get("version") != "1.1":
                return None
            creator = found.get("creator")
            if creator is not None and any(c in creator for c in "\t\n\r"):
                return None  # attribute value normalisation: let the tree reader see it
        elif depth == 1:
            if name in ("wpt", "rte"):
                raise _Decline("waypoints or routes")
            if name == "trk":
                types.append(None)
                seen: set[str] = set()
        elif depth == 2 and stack[1] == "trk" and name in ("type", "number") and name not in seen:
            seen.add(name)
            leaf = (name, depth, m.end())
        elif depth == 2 and stack[1] == "metadata" and name == "bounds" and not bounds_seen:
            bounds_seen = True
            found = {k: a if a is not None else b for k, a, b in _ATTR.findall(attrs)}
            for attr in ("minlat", "maxlat", "minlon", "maxlon"):
                _convert(FLOAT_TYPE, found.get(attr))
        if self_closing:
            leaf = None
            if name == "trkseg" and stack == ["gpx", "trk"]:
                segment += 1
        else:
            stack.append(name)
    if len(segments) != len(cols.lats):
        return None
    return creator, cols, segments, types


class _Columns:
    """The values of each track point, as gpx.py reads them from gpxpy's objects."""

    def __init__(self, tag: dict[str, str]) -> None:
        self.tag = tag
        self.lats: list[float] = []
        self.lons: list[float] = []
        self.eles: list[float] = []
        self.times: list[str | None] = []
        self.ext: dict[str, list[float]] = {}
        self.keys: dict[Any, Any] = {}  # element tag -> sample key (or None)

    def add_plain(self, points: list[tuple[str, str, str, str, str, str]]) -> None:
        """Points of the common layout: (lat, lon, ele, time, extension leaves) texts as the XML has them."""
        try:
            self.lats = [float(p[0]) for p in points]
            self.lons = [float(p[1]) for p in points]
            self.eles = [float(p[2].strip()) if p[2] else _NAN for p in points]
        except ValueError as exc:
            raise _Decline("a value gpxpy refuses") from exc
        self.times = [p[3] or None for p in points]
        keys = self.keys
        for n, leaves in enumerate(p[4] or p[5] for p in points):
            if not leaves:
                continue
            seen: set[str] = set()
            for name, text in _LEAF.findall(leaves):
                key = keys.get(name, _UNSEEN)
                if key is _UNSEEN:
                    key = keys[name] = _EXT_KEYS.get(name.lower())
                if key is None or key in seen:
                    continue
                found = to_float(text or None)
                if found is not None:
                    seen.add(key)
                    col = self.ext.get(key)
                    if col is None:
                        col = self.ext[key] = [_NAN] * len(points)
                    col[n] = found

    def add(self, pt: Element) -> None:
        tag = self.tag
        n = len(self.lats)
        try:  # gpxpy's FLOAT_TYPE: float(text.strip()); lat and lon are mandatory
            self.lats.append(float(pt.attrib["lat"].strip()))
            self.lons.append(float(pt.attrib["lon"].strip()))
        except (KeyError, ValueError) as exc:
            raise _Decline("a track point gpxpy refuses") from exc
        first: dict[str, Element] = {}
        for child in pt:
            first.setdefault(child.tag, child)
        ele = first.get(tag["ele"])
        value = _convert(FLOAT_TYPE, ele.text) if ele is not None else None
        self.eles.append(_NAN if value is None else value)
        when = first.get(tag["time"])
        self.times.append(when.text if when is not None else None)
        ext = first.get(tag["extensions"])
        if len(first) > 3 or (ext is None and len(first) > 2):
            for name in _POINT_FLOATS + _POINT_INTS:
                child = first.get(tag[name])
                if child is not None:
                    _convert(INT_TYPE if name in _POINT_INTS else FLOAT_TYPE, child.text)
            fix = first.get(tag["fix"])
            if fix is not None and fix.text is not None and fix.text not in _FIX:
                raise _Decline("a fix gpxpy refuses")
        cols = self.ext
        if ext is not None:
            keys = self.keys
            seen: set[str] = set()
            for child in ext:
                for sub in child.iter():
                    key = keys.get(sub.tag, _UNSEEN)
                    if key is _UNSEEN:
                        key = keys[sub.tag] = _EXT_KEYS.get(_local(sub.tag).lower())
                    if key is None or key in seen:
                        continue
                    found = to_float(sub.text)
                    if found is not None:
                        seen.add(key)
                        cols.setdefault(key, [_NAN] * n).append(found)
        for col in cols.values():
            if len(col) == n:
                col.append(_NAN)


def _session(path: str, creator: str | None, cols: _Columns, segments: list[int],
             track_types: list[str | None]) -> list[RawSession]:
    n_points = len(cols.lats)
    t_us, timed, offsets = _times(cols.times)
    missing = np.flatnonzero(~timed)
    if n_points == 0:
        raise SkippedFile("GPX has no track points (nothing): not an activity", path=path)
    if len(missing):
        raise RejectedFile(
            f"GPX track points without <time>: {len(missing)} of {n_points} "
            f"(first: point {int(missing[0])}); a run needs a time on every point",
            path=path,
        )
    if n_points < 2:
        raise SkippedFile("GPX track has a single point: not an activity", path=path)
    values = {"lat_deg": np.array(cols.lats, dtype=np.float64), "lon_deg": np.array(cols.lons, dtype=np.float64),
              "altitude_m": np.array(cols.eles, dtype=np.float64), "speed_mps": np.full(n_points, np.nan)}
    for key, col in cols.ext.items():
        values[key] = np.array(col, dtype=np.float64)
    seg = np.array(segments, dtype=np.int64)
    samples = SampleColumns(t_us, np.arange(n_points), values, keys=_KEYS, segment=seg)
    breaks = np.flatnonzero((seg[1:] != seg[:-1]) & (t_us[1:] > t_us[:-1]))
    pauses = [(datetime_from_us(int(t_us[i])), datetime_from_us(int(t_us[i + 1]))) for i in breaks]
    nonzero = {o for o in offsets if o is not None and o != 0}
    offset = nonzero.pop() if len(nonzero) == 1 else None
    sport, sub_sport = sport_from_text(next((t for t in track_types if t), None))
    creator_text = (creator or "").strip() or None
    return [
        RawSession(
            source_format="gpx",
            session_index=0,
            sport=sport,
            sub_sport=sub_sport,
            start_utc=datetime_from_us(int(t_us.min())),
            end_utc=datetime_from_us(int(t_us.max())),
            utc_offset_s=offset,
            tz_source="file_offset" if offset is not None else None,
            device_manufacturer=manufacturer_from_text(creator_text),
            device_product=creator_text,
            point_name="track point",
            samples=samples,  # type: ignore[arg-type]  # a Sequence of the same dicts
            pauses=pauses,
        )
    ]
