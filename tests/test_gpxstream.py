"""The streaming GPX reader (pipeline.sources.gpxstream) against gpxpy, the reference.

Every GPX file of ../shared/corpus, the simulator's GPX files and hand-built
quirks are read by ``read_gpx(fast=False)`` (gpxpy) and by the streaming
reader, with and without its fast lane for the common layout. The sessions
must be equal (samples compared with NaN and None alike, as the normaliser
treats them), the normalised frames equal, and a file the streaming reader
declines must be one listed here with its reason. Random documents from a
small GPX grammar must end the same way on both paths.
"""

from __future__ import annotations

import math
from dataclasses import fields
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError, RejectedFile
from pipeline.normalise import normalise_session
from pipeline.sources.columnar import SampleColumns
from pipeline.sources.gpx import decode_xml_bytes, read_gpx
from pipeline.sources.gpxstream import read_gpx_stream

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
GPX_FILES = sorted(str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*.gpx")) if CORPUS.is_dir() else []

#: Corpus files the streaming reader hands to gpxpy, and why.
DECLINED = {
    "gpx/gpxpy__cerknicko-jezero.gpx": "GPX 1.0",
    "gpx/gpxpy__cerknicko-without-times.gpx": "GPX 1.0",
    "gpx/gpxpy__gpx1.0_with_all_fields.gpx": "GPX 1.0",
    "gpx/gpxpy__gpx1.1_with_all_fields.gpx": "waypoints",
    "gpx/opentracks__legacy_gpx_trackpointextensions_incorrect.gpx": "waypoints",
    "broken/sportslib__6037744996.gpx": "not well-formed",  # an unbound prefix
}


def _outcome(fn: Any) -> Any:
    try:
        return ("sessions", fn())
    except InputError as exc:
        return (type(exc).__name__, exc.message)


def _text(data: bytes) -> str:
    return decode_xml_bytes(data, path="t.gpx").lstrip(" \t\r\n\ufeff")


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}


def _assert_same(ref: list[Any], got: list[Any]) -> None:
    assert len(ref) == len(got) == 1
    r, g = ref[0], got[0]
    for fl in fields(r):
        a, b = getattr(r, fl.name), getattr(g, fl.name)
        if fl.name == "samples":
            assert isinstance(b, SampleColumns)
            assert [_clean(x) for x in a] == [_clean(y) for y in b]
        else:
            assert a == b, fl.name
    kw = {"rel_path": "t.gpx", "athlete_id": "a", "athlete_tz": "Europe/Madrid", "sha256": "0" * 64}
    x = _outcome(lambda: normalise_session(r, **kw))
    y = _outcome(lambda: normalise_session(g, **kw))
    assert x[0] == y[0]
    if x[0] != "sessions":
        assert x == y
        return
    assert x[1].activity == y[1].activity
    for frame in ("samples", "laps", "pauses"):
        assert getattr(x[1], frame).equals(getattr(y[1], frame)), frame


def _check(data: bytes) -> list[str]:
    """gpxpy and the streaming reader with each lane: the lanes that answered (all must agree)."""
    ref = _outcome(lambda: read_gpx(data, path="t.gpx", fast=False))
    answered = []
    for plain in (True, False):
        got = _outcome(lambda: read_gpx_stream(_text(data), path="t.gpx", plain=plain))
        if got == ("sessions", None):
            continue
        if plain:
            if not _plain_lane_reads(data):
                continue  # the call above went on to the general lane: checked next
            answered.append("plain")
        else:
            answered.append("tree")
        assert got[0] == ref[0], f"gpxpy: {ref}; stream: {got}"
        if ref[0] == "sessions":
            _assert_same(ref[1], got[1])
        else:
            assert got == ref
    # and read_gpx itself, whichever path it takes, ends as gpxpy does
    final = _outcome(lambda: read_gpx(data, path="t.gpx"))
    assert final[0] == ref[0] and (ref[0] == "sessions" or final == ref)
    return answered


def _plain_lane_reads(data: bytes) -> bool:
    """Whether the common-layout lane (regular expressions) takes this file on itself."""
    from pipeline.sources import gpxstream

    try:
        return gpxstream._read_plain(_text(data)) is not None
    except (gpxstream._Decline, ValueError):
        return False


@pytest.mark.corpus
def test_corpus_gpx_files_found(corpus_dir: Path) -> None:
    assert len(GPX_FILES) >= 15 and set(DECLINED) <= set(GPX_FILES)


@pytest.mark.corpus
@pytest.mark.parametrize("rel", GPX_FILES)
def test_corpus_file_matches_gpxpy(rel: str, corpus_dir: Path) -> None:
    lanes = _check((corpus_dir / rel).read_bytes())
    if rel in DECLINED:
        assert lanes == [], f"{rel} is now read by the streaming reader: drop it from DECLINED"
    else:
        assert "tree" in lanes, f"the streaming reader declined {rel}"


def test_simulator_gpx_files_match_gpxpy(sim_club: dict[str, Any]) -> None:
    from pipeline.simulate.core import simulate_athlete

    phone = simulate_athlete(3, 11, date(2026, 10, 5), 2)  # the phone-app athlete (Strava GPX)
    files = [data for rel, data in sorted(phone.files.items()) if rel.endswith(".gpx")]
    files += [p.read_bytes() for p in sorted(sim_club["raw"].rglob("*.gpx"))]  # a Garmin Connect export
    assert len(files) >= 5
    for data in files:
        assert _check(data) == ["plain", "tree"]  # the common layout


# --------------------------------------------------------------------------- hand-built quirks

HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n<gpx version="1.1" creator="{creator}" '
        'xmlns="http://www.topografix.com/GPX/1/1" '
        'xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v1" '
        'xmlns:gpxdata="http://www.cluetrust.com/XML/GPXDATA/1/0">\n')


def _point(i: int, *, time: str | None = None, ext: str | None = None, ele: str | None = "100.5",
           attrs: str | None = None) -> str:
    t = time if time is not None else f"2024-05-04T07:{30 + i // 60:02d}:{i % 60:02d}Z"
    body = (f"<ele>{ele}</ele>" if ele is not None else "") + f"<time>{t}</time>"
    if ext is None:
        ext = f"<gpxtpx:TrackPointExtension><gpxtpx:hr>{140 + i % 7}</gpxtpx:hr><gpxtpx:cad>{84 + i % 3}</gpxtpx:cad></gpxtpx:TrackPointExtension>"
    if ext:
        body += f"<extensions>{ext}</extensions>"
    at = attrs or f'lat="{40.4 + i * 1e-4:.7f}" lon="{-3.7 + i * 1e-4:.7f}"'
    return f"   <trkpt {at}>\n    {body}\n   </trkpt>\n"


def _gpx(segments: list[list[str]], *, creator: str = "StravaGPX", kind: str = "running", extra: str = "",
         head: str | None = None) -> bytes:
    out = (head or HEAD).format(creator=creator) + extra + f" <trk>\n  <type>{kind}</type>\n"
    for seg in segments:
        out += "  <trkseg>\n" + "".join(seg) + "  </trkseg>\n"
    return (out + " </trk>\n</gpx>\n").encode("utf-8")


QUIRKS = {
    "common layout": _gpx([[_point(i) for i in range(30)]]),
    "two segments (a pause)": _gpx([[_point(i) for i in range(10)], [_point(i) for i in range(40, 60)]]),
    "times with an offset": _gpx([[_point(i, time=f"2024-05-04T09:30:{i:02d}+02:00") for i in range(20)]]),
    "naive times": _gpx([[_point(i, time=f"2024-05-04T07:30:{i:02d}") for i in range(20)]]),
    "fractional seconds": _gpx([[_point(i, time=f"2024-05-04T07:30:{i:02d}.{i:03d}Z") for i in range(20)]]),
    "Cluetrust extensions": _gpx([[_point(i, ext=f"<gpxdata:hr>{150 + i}</gpxdata:hr><gpxdata:cadence>90</gpxdata:cadence>")
                                   for i in range(20)]]),
    "empty elevation": _gpx([[_point(i, ele="") for i in range(20)]]),
    "no elevation, no extensions": _gpx([[_point(i, ele=None, ext="") for i in range(20)]]),
    "lon before lat": _gpx([[_point(i, attrs=f'lon="-3.7" lat="{40.4 + i * 1e-4}"') for i in range(20)]]),
    "a comment and an entity": _gpx([[_point(i) for i in range(20)]], creator="Me &amp; my watch",
                                    extra=" <!-- recorded on a phone -->\n"),
    "a > in an attribute": _gpx([[_point(i) for i in range(20)]], creator="a > b"),
    "hdop and sat": _gpx([[_point(i).replace("<time>", "<hdop>1.5</hdop><sat>7</sat><time>") for i in range(20)]]),
    "an impossible day": _gpx([[_point(i, time="2024-02-30T07:30:00Z") for i in range(3)]]),
    "a time with blanks": _gpx([[_point(i, time=" 2024-05-04T07:30:00Z") for i in range(3)]]),
    "times before 1970": _gpx([[_point(i, time=f"1969-12-31T23:59:{i:02d}Z") for i in range(20)]]),
    "year 0000": _gpx([[_point(i, time=f"0000-01-01T00:00:{i:02d}Z") for i in range(3)]]),
    "a single point": _gpx([[_point(0)]]),
    "no points": _gpx([[]]),
    "bad hdop": _gpx([[_point(i).replace("<time>", "<hdop>x</hdop><time>") for i in range(5)]]),
    "bad latitude": _gpx([[_point(i, attrs='lat="4O.1" lon="1.0"') for i in range(5)]]),
    "waypoints": _gpx([[_point(i) for i in range(5)]], extra=' <wpt lat="1" lon="2"><name>x</name></wpt>\n'),
    "GPX 1.0": _gpx([[_point(i) for i in range(5)]], head=HEAD.replace('version="1.1"', 'version="1.0"')),
}
#: (readers that must answer, for each quirk): plain = the common-layout lane, tree = the general one
ANSWERED = {
    "common layout": ["plain", "tree"], "two segments (a pause)": ["plain", "tree"],
    "times with an offset": ["plain", "tree"], "naive times": ["plain", "tree"],
    "fractional seconds": ["plain", "tree"], "Cluetrust extensions": ["plain", "tree"],
    "empty elevation": ["plain", "tree"], "no elevation, no extensions": ["plain", "tree"],
    "lon before lat": ["tree"], "a comment and an entity": ["tree"], "a > in an attribute": ["tree"],
    "hdop and sat": ["tree"], "an impossible day": ["plain", "tree"], "a time with blanks": ["plain", "tree"],
    "a single point": ["plain", "tree"], "no points": ["plain", "tree"],
    "times before 1970": ["plain", "tree"], "year 0000": ["plain", "tree"],
    "bad hdop": [], "bad latitude": [], "waypoints": [], "GPX 1.0": [],
}


@pytest.mark.parametrize("quirk", sorted(QUIRKS))
def test_hand_built_quirks_match_gpxpy(quirk: str) -> None:
    assert _check(QUIRKS[quirk]) == ANSWERED[quirk]


def test_doctype_is_refused_before_any_parser_expands_it() -> None:
    bomb = ('<?xml version="1.0"?>\n<!DOCTYPE gpx [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>\n'
            '<gpx version="1.1" creator="&b;" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
            '<trkpt lat="1" lon="2"><time>2024-05-04T07:30:00Z</time></trkpt></trkseg></trk></gpx>')
    assert read_gpx_stream(bomb, path="b.gpx") is None
    with pytest.raises(RejectedFile, match="DOCTYPE"):
        read_gpx(bomb.encode(), path="b.gpx")


_NAMES = st.sampled_from(["hr", "cad", "heartrate", "power", "atemp", "speed", "temp", "foo", "cadence"])
_VALUES = st.sampled_from(["72", "0", "-3.5", "nan", "inf", "", " 80 ", "x", "1e3"])
_TIMES = st.sampled_from(["2024-05-04T07:30:{s:02d}Z", "2024-05-04T07:30:{s:02d}", "2024-05-04T09:30:{s:02d}+02:00",
                          "2024-05-04T07:30:{s:02d}.5Z", "bad", ""])


@st.composite
def _documents(draw: Any) -> bytes:
    segments = []
    for _ in range(draw(st.integers(0, 2))):
        points = []
        for i in range(draw(st.integers(0, 4))):
            leaves = "".join(f"<gpxtpx:{n}>{v}</gpxtpx:{n}>" for n, v in draw(st.lists(st.tuples(_NAMES, _VALUES),
                                                                                         max_size=3)))
            ext = f"<gpxtpx:TrackPointExtension>{leaves}</gpxtpx:TrackPointExtension>" if leaves else ""
            time = draw(_TIMES).format(s=i)
            ele = draw(st.sampled_from([None, "", "12.5", "x", " 3 "]))
            points.append(_point(i, time=time, ext=ext, ele=ele))
        segments.append(points)
    return _gpx(segments, kind=draw(st.sampled_from(["running", "", "Ride", "9"])))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents())
def test_generated_documents_end_as_gpxpy_ends(data: bytes) -> None:
    _check(data)
