"""The fast FIT path (pipeline.sources.fastfit) against fitparse, the reference, value by value.

Every FIT file of ../shared/corpus (fit/ and broken/), a sample of simulator
files and hand-built files with the rarer features (compressed timestamps,
big-endian definitions, developer power, chained files, header CRC 0,
invalid values) are decoded twice: with fitparse (``read_fit(fast=False)``)
and with the vectorised decoder. The sessions must be equal field by field
and sample by sample (same values, same Python types), the normalised frames
must be equal, and a file the fast decoder declines must be one listed here
with its reason (a stale entry fails). Random byte mutations with a repaired
CRC must end the same way on both paths.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fitparse.records import Crc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.normalise import normalise_session
from pipeline.sources.columnar import SampleColumns, datetime_from_us
from pipeline.sources.fastfit import Unsupported, decode_fit_fast, read_fit_fast
from pipeline.sources.fit import read_fit
from pipeline.sources.fitscan import crc16

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
FIT_FILES = sorted(
    str(p.relative_to(CORPUS))
    for folder in ("fit", "broken")
    for p in (CORPUS / folder).glob("*")
    if p.name.lower().endswith((".fit", ".fit.gz"))
) if CORPUS.is_dir() else []

#: Corpus files the fast decoder hands to fitparse, and a phrase of its reason.
DEFERRED = {
    # FR70 ANT-FS dumps: speed and distance packed in a 3-byte array with an accumulating component
    "fit/fitparse__compressed-speed-distance.fit": "compressed_speed_distance",
    "fit/fitparse__null_compressed_speed_dist.fit": "compressed_speed_distance",
    # damaged files: fitparse rejects them and words the reason
    "broken/fitparse__activity-filecrc.fit": "file CRC",
    "broken/fitparse__activity-settings-corruptheader.fit": "not a FIT header",
    "broken/fitparse__activity-settings-nodata.fit": "truncated",
    "broken/fitparse__activity-unexpected-eof.fit": "truncated",
    "broken/fitparse__coros-pace-2-cycling-misaligned-fields.fit": "not a multiple",
    "broken/fitparse__strava-android-app-201.10-b1218918.fit": "truncated",
    "broken/sportslib__empty-sessions.fit": "not a FIT header",
}

_REFERENCE: dict[str, Any] = {}


def _bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _outcome(fn: Any, data: bytes, name: str) -> Any:
    """``("sessions", [...])`` or ``(exception type, message)``."""
    try:
        return ("sessions", fn(data, path=name))
    except InputError as exc:
        return (type(exc).__name__, exc.message)
    except Exception as exc:  # noqa: BLE001 - the reference's own failures must match too
        return (type(exc).__name__, str(exc))


def _reference(data: bytes, name: str) -> Any:
    return _outcome(lambda d, path: read_fit(d, path=path, fast=False), data, name)


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same type (1 != 1.0 here; datetimes must both be aware)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)


def _assert_same_sessions(ref: list[Any], fast: list[Any]) -> None:
    assert len(ref) == len(fast)
    for r, f in zip(ref, fast):
        for fl in fields(r):
            a, b = getattr(r, fl.name), getattr(f, fl.name)
            if fl.name == "samples":
                _assert_same_samples(a, b)
            else:
                assert _same(a, b), f"{fl.name}: fitparse {a!r} fast {b!r}"


def _assert_same_samples(ref: list[dict[str, Any]], got: Any) -> None:
    """Sample dicts equal key by key, value by value, type by type (compared column-wise for speed)."""
    assert len(ref) == len(got)
    if not isinstance(got, SampleColumns):
        assert all(_same(x, y) for x, y in zip(ref, got))
        return
    keys = {k for row in ref for k in row}
    assert not ref or keys == {"index", "t_utc", *got.keys}  # a session without records has no keys to compare
    assert [r["index"] for r in ref] == got.index.tolist()
    assert all(r["t_utc"].utcoffset() is not None for r in ref)
    assert [r["t_utc"] for r in ref] == [datetime_from_us(t) for t in got.t_us.tolist()]
    for key in got.keys:
        want = [r[key] for r in ref]
        assert {type(v) for v in want} <= {float, type(None)}, key
        have = [None if v != v else v for v in got.column(key).tolist()]
        bad = next((i for i, (x, y) in enumerate(zip(want, have)) if x != y), None)
        assert bad is None, f"{key} at sample {bad}: fitparse {want[bad]!r} fast {have[bad]!r}"


def _assert_same_normalised(ref: list[Any], fast: list[Any], name: str) -> None:
    for r, f in zip(ref, fast):
        kw = {"rel_path": name, "athlete_id": "a", "athlete_tz": "Europe/Berlin", "sha256": "0" * 64}
        a = _outcome(lambda _d, path: normalise_session(r, **kw), b"", name)
        b = _outcome(lambda _d, path: normalise_session(f, **kw), b"", name)
        assert a[0] == b[0]
        if a[0] != "sessions":
            assert a == b
            continue
        x, y = a[1], b[1]
        assert _same(x.activity, y.activity)
        for frame in ("samples", "laps", "pauses"):
            fx, fy = getattr(x, frame), getattr(y, frame)
            assert fx.schema == fy.schema and fx.equals(fy), frame


def _check(data: bytes, name: str) -> Any:
    """Both decoders on one file: the fast result (None when it declined) after the checks."""
    ref = _REFERENCE.get(name) or _reference(data, name)
    _REFERENCE[name] = ref
    fast = _outcome(read_fit_fast, data, name)
    if fast == ("sessions", None):
        return None
    assert fast[0] == ref[0], f"fitparse: {ref[0]} {ref[1]!s:.200}; fast: {fast[0]} {fast[1]!s:.200}"
    if ref[0] == "sessions":
        assert all(isinstance(s.samples, SampleColumns) for s in fast[1])
        _assert_same_sessions(ref[1], fast[1])
        _assert_same_normalised(ref[1], fast[1], name)
    else:
        assert fast == ref
    return fast


# --------------------------------------------------------------------------- the corpus


@pytest.mark.corpus
def test_corpus_fit_files_found(corpus_dir: Path) -> None:
    assert len(FIT_FILES) >= 50
    assert set(DEFERRED) <= set(FIT_FILES)


@pytest.mark.corpus
@pytest.mark.parametrize("rel", FIT_FILES)
def test_corpus_file_matches_fitparse(rel: str, corpus_dir: Path) -> None:
    data = _bytes(corpus_dir / rel)
    fast = _check(data, rel)
    if rel in DEFERRED:
        assert fast is None, f"{rel} is now decoded by the fast path: drop it from DEFERRED"
        with pytest.raises(Unsupported, match=DEFERRED[rel]):
            decode_fit_fast(data)
        if rel.startswith("broken/"):
            assert _REFERENCE[rel][0] == "RejectedFile"  # and read_fit still rejects it
            with pytest.raises(InputError):
                read_fit(data, path=rel)
    else:
        assert fast is not None, f"fast path declined {rel}: {_decline_reason(data)}"


def _decline_reason(data: bytes) -> str:
    try:
        decode_fit_fast(data)
    except Unsupported as exc:
        return str(exc)
    return "(decoded, but read_fit_fast returned None)"


# --------------------------------------------------------------------------- simulator files


def _sim_sample(raw: Path) -> list[Path]:
    """Per athlete the shortest and the longest FIT file, plus every file fitparse cannot read."""
    picked: list[Path] = []
    for athlete in sorted(p for p in raw.iterdir() if p.is_dir() and not p.name.startswith("_")):
        fits = sorted(athlete.rglob("*.fit"), key=lambda p: (p.stat().st_size, p.name))
        picked += fits[:1] + fits[-1:]
    return picked


def test_simulator_files_match_fitparse(sim_club: dict[str, Any]) -> None:
    broken = {a["file"] for a in sim_club["truth"]["activities"] if a.get("broken")}
    files = _sim_sample(sim_club["raw"]) + [sim_club["raw"] / rel for rel in sorted(broken)]
    assert len(files) >= 6 and broken
    for path in files:
        rel = path.relative_to(sim_club["raw"]).as_posix()
        fast = _check(path.read_bytes(), "sim/" + rel)
        if rel in broken:
            assert fast is None and _REFERENCE["sim/" + rel][0] == "RejectedFile"
        else:
            assert fast is not None, f"fast path declined simulator file {rel}"


@pytest.mark.parametrize("index, watch", [(6, "current+strap"), (8, "current")])
def test_current_watch_simulator_files_match_fitparse(index: int, watch: str) -> None:
    """The simulator's Forerunner 955/965 files (hrv, gps_metadata, message 233 between records): fitparse's values."""
    from datetime import date

    from pipeline.simulate.core import simulate_athlete

    out = simulate_athlete(index, 3, date(2026, 11, 2), 1)
    assert out.athlete.watch == watch
    fits = sorted((rel for rel in out.files if rel.endswith(".fit")), key=lambda rel: len(out.files[rel]))
    assert fits
    for rel in fits[:1] + fits[-1:]:
        fast = _check(out.files[rel], f"sim-{watch}/{rel}")
        assert fast is not None, f"fast path declined {rel}: {_decline_reason(out.files[rel])}"
        samples = fast[1][0].samples
        moving = [s for s in samples if (s["speed_mps"] or 0) > 1.0]
        assert moving and all(s["power_w"] is not None and s["temperature_c"] is not None for s in moving)
        strap = [s["stance_time_ms"] is not None and s["step_length_mm"] is not None for s in moving]
        assert all(strap) if watch == "current+strap" else not any(strap)


# --------------------------------------------------------------------------- hand-built files

_FMT = {0x00: "B", 0x02: "B", 0x83: "h", 0x84: "H", 0x85: "i", 0x86: "I", 0x07: "s"}
ENUM, UINT8, SINT16, UINT16, SINT32, UINT32, STRING, BYTES = 0x00, 0x02, 0x83, 0x84, 0x85, 0x86, 0x07, 0x0D
T0 = 1_100_000_000  # FIT seconds: 2024-11-08
DEVICE_T0 = 17_000_000  # below 0x10000000: seconds since the device was switched on


class _Fit:
    """Definition and data messages with any endianness, developer fields and header kind."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.layout: dict[int, tuple[str, list[tuple[int, int, int]]]] = {}

    def define(self, local: int, global_num: int, spec: list[tuple[int, int, int]], *, big: bool = False,
               dev: list[tuple[int, int, int]] = ()) -> None:  # type: ignore[assignment]
        e = ">" if big else "<"
        self.body += struct.pack(e + "BBBHB", 0x40 | local | (0x20 if dev else 0), 0, int(big), global_num, len(spec))
        for num, code, size in spec:
            self.body += bytes((num, size, code))
        if dev:
            self.body += bytes((len(dev),))
            for num, size, index in dev:
                self.body += bytes((num, size, index))
        self.layout[local] = (e, list(spec) + [(-1, UINT16, size) for _n, size, _i in dev])

    def data(self, local: int, *values: Any, time_offset: int | None = None) -> None:
        e, spec = self.layout[local]
        head = 0x80 | (local << 5) | time_offset if time_offset is not None else local
        out = bytes((head,))
        for (_num, code, size), value in zip(spec, values, strict=True):
            out += value.ljust(size, b"\0") if code in (STRING, BYTES) else struct.pack(e + _FMT[code], value)
        self.body += out

    def file(self, *, header_crc: bool = True) -> bytes:
        head = struct.pack("<BBHI4s", 14, 0x20, 2132, len(self.body), b".FIT")
        head += struct.pack("<H", Crc.calculate(head) if header_crc else 0)
        data = head + bytes(self.body)
        return data + struct.pack("<H", Crc.calculate(data))


def _activity(*, n: int = 40, big: bool = False, compressed: bool = False, stryd: bool = False,
              header_crc: bool = True, sport: int = 1, start: int = T0, other_clock_at: int | None = None,
              between: bool = False) -> bytes:
    """A small run; ``between``: most records followed by hrv and gps_metadata messages, as newer watches write."""
    w = _Fit()
    w.define(0, 0, [(0, ENUM, 1), (1, UINT16, 2), (2, UINT16, 2), (4, UINT32, 4)], big=big)
    w.data(0, 4, 1, 1623, start)
    dev: list[tuple[int, int, int]] = []
    if stryd:
        w.define(1, 207, [(3, UINT8, 1), (1, BYTES, 16)])
        w.data(1, 0, bytes(range(16)))
        w.define(2, 206, [(0, UINT8, 1), (1, UINT8, 1), (2, UINT8, 1), (3, STRING, 12), (8, STRING, 8)])
        w.data(2, 0, 0, 0x84, b"Power", b"Watts")
        w.data(2, 0, 1, 0x84, b"Form Power", b"Watts")
        dev = [(0, 2, 0), (1, 2, 0)]
    w.define(3, 21, [(253, UINT32, 4), (0, ENUM, 1), (1, ENUM, 1)], big=big)
    w.data(3, start, 0, 0)
    record = [(253, UINT32, 4), (0, SINT32, 4), (1, SINT32, 4), (2, UINT16, 2), (3, UINT8, 1), (4, UINT8, 1),
              (53, UINT8, 1), (5, UINT32, 4), (6, UINT16, 2)]
    w.define(4, 20, record, big=big, dev=dev)
    if compressed:  # same layout without the timestamp: it comes from the header
        w.define(1, 20, record[1:], big=big, dev=dev)
    if between:
        w.define(8, 78, [(0, UINT16, 2)], big=big)  # hrv: no timestamp
        w.define(9, 160, [(253, UINT32, 4), (1, UINT16, 2)], big=big)  # gps_metadata: a timestamp
    for i in range(n):
        t = start + i + (30 if i > 20 else 0)  # a 30 s pause after record 20
        if between and i >= 32:  # a gap of over 32 s that only record 32's own timestamp spans
            t += 64
        if i == other_clock_at:  # one record on the other clock (absolute <-> device-relative)
            t = t - start + (T0 if start == DEVICE_T0 else DEVICE_T0)
        hr = 0xFF if i == 7 else 140 + i % 9  # one invalid heart rate -> None
        values = [int((48.1 + i * 1e-5) / 180 * 2**31), int(11.5 / 180 * 2**31), (520 + 500) * 5, hr, 84, 64,
                  i * 310, 3100 + (0xFFFF - 3100 if i == 9 else 0)]  # an invalid speed at i = 9
        extra = [250 + i % 5, 60] if stryd else []
        if compressed and i % 4:
            w.data(1, *values, *extra, time_offset=t & 0x1F)
        else:
            w.data(4, t, *values, *extra)
        if between and i % 7 in (1, 2, 4):  # singles, pairs and runs of records between them
            w.data(8, 800 + i)
            if i % 7 == 2:
                w.data(9, t, 1000)
        if i == 20:
            w.data(3, t, 0, 4)
            w.data(3, t + 30, 0, 0)
    last = start + n - 1 + 30 + (64 if between and n > 32 else 0)
    w.data(3, last, 0, 4)
    w.define(5, 19, [(253, UINT32, 4), (2, UINT32, 4), (7, UINT32, 4), (8, UINT32, 4), (9, UINT32, 4),
                     (25, ENUM, 1)], big=big)
    w.data(5, last, start, (n - 1 + 30) * 1000, (n - 1) * 1000, (n - 1) * 310, sport)
    w.define(6, 18, [(253, UINT32, 4), (2, UINT32, 4), (7, UINT32, 4), (8, UINT32, 4), (9, UINT32, 4),
                     (5, ENUM, 1), (25, UINT16, 2), (26, UINT16, 2)], big=big)
    w.data(6, last, start, (n - 1 + 30) * 1000, (n - 1) * 1000, (n - 1) * 310, sport, 0, 1)
    w.define(7, 34, [(253, UINT32, 4), (1, UINT16, 2), (5, UINT32, 4)], big=big)
    w.data(7, last, 1, last + 3600)
    return w.file(header_crc=header_crc)


VARIANTS = {
    "plain": lambda: _activity(),
    "big-endian definitions": lambda: _activity(big=True),
    "compressed timestamps": lambda: _activity(compressed=True),
    "compressed timestamps, big-endian, developer power": lambda: _activity(compressed=True, big=True, stryd=True),
    "developer power (Stryd)": lambda: _activity(stryd=True),
    "header CRC 0": lambda: _activity(header_crc=False),
    "records between other messages": lambda: _activity(between=True),
    "records between other messages, compressed timestamps": lambda: _activity(between=True, compressed=True),
    "records between other messages, compressed, big-endian, Stryd": lambda: _activity(
        n=60, between=True, compressed=True, big=True, stryd=True),
    "chained files": lambda: _activity(n=30) + _activity(n=25, sport=2, start=T0 + 4000, compressed=True),
    "device-relative clock": lambda: _activity(start=DEVICE_T0),
    "device-relative clock, compressed timestamps": lambda: _activity(start=DEVICE_T0, compressed=True, big=True),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_hand_built_features_match_fitparse(variant: str) -> None:
    data = VARIANTS[variant]()
    fast = _check(data, "hand/" + variant)
    assert fast is not None and fast[0] == "sessions", f"fast path declined: {_decline_reason(data)}"
    samples = [s for session in fast[1] for s in session.samples]
    assert samples[7]["hr_bpm"] is None and samples[9]["speed_mps"] is None
    assert samples[8]["hr_bpm"] is not None and samples[8]["speed_mps"] == 3.1
    if "developer" in variant:
        assert {s["power_w"] for s in samples} == {250.0, 251.0, 252.0, 253.0, 254.0}  # not Form Power (60)
    if "chained" in variant:
        assert [s.sport for s in fast[1]] == ["running", "cycling"]
    if "device" in variant:
        session = fast[1][0]
        assert session.device_clock and session.utc_offset_s is None
        assert session.start_utc == datetime(1989, 12, 31, tzinfo=timezone.utc) + timedelta(seconds=DEVICE_T0)
        assert [(b - a).total_seconds() for a, b in session.pauses] == [30.0]


@pytest.mark.parametrize("start", [T0, DEVICE_T0], ids=["absolute", "device-relative"])
def test_a_record_on_the_other_clock_is_rejected_alike(start: int) -> None:
    """Absolute and device-relative times are never mixed: both decoders refuse, in the same words."""
    data = _activity(start=start, other_clock_at=12)
    fast = _check(data, f"hand/mixed-{start}")
    assert fast is not None and fast[0] == "RejectedFile"
    assert "record 12 timestamp" in fast[1] and ("device-relative" if start == T0 else "absolute") in fast[1]


def test_compressed_timestamps_follow_the_last_full_timestamp() -> None:
    sessions = read_fit_fast(_activity(compressed=True), path="c.fit")
    assert sessions is not None
    times = [s["t_utc"] for s in sessions[0].samples]
    first = datetime(1989, 12, 31, tzinfo=timezone.utc).timestamp() + T0
    assert [t.timestamp() - first for t in times] == [i + (30 if i > 20 else 0) for i in range(40)]


def _interleaved_then_compressed(*, lead_s: int | None) -> bytes:
    """Ten records each followed by an hrv, then a gps_metadata stamped ``lead_s`` later (None: an invalid
    timestamp), then a compressed record."""
    w = _Fit()
    w.define(0, 0, [(0, ENUM, 1), (1, UINT16, 2), (2, UINT16, 2), (4, UINT32, 4)])
    w.data(0, 4, 1, 1623, T0)
    w.define(3, 21, [(253, UINT32, 4), (0, ENUM, 1), (1, ENUM, 1)])
    w.data(3, T0, 0, 0)
    w.define(4, 20, [(253, UINT32, 4), (3, UINT8, 1), (5, UINT32, 4), (6, UINT16, 2)])
    w.define(1, 20, [(3, UINT8, 1), (5, UINT32, 4), (6, UINT16, 2)])  # no timestamp: the header has it
    w.define(8, 78, [(0, UINT16, 2)])
    w.define(9, 160, [(253, UINT32, 4), (1, UINT16, 2)])
    step_s = 4 if lead_s is None else 1  # without a valid gps_metadata time the records must span > 32 s
    for i in range(10):
        w.data(4, T0 + i * step_s, 140, i * 310, 3100)
        w.data(8, 800 + i)
    w.data(9, 0xFFFFFFFF if lead_s is None else T0 + 9 + lead_s, 1000)
    last = T0 + 9 * step_s + 1 + (lead_s or 0)
    w.data(1, 141, 3100, 3100, time_offset=last & 0x1F)
    w.data(3, last, 0, 4)
    w.define(6, 18, [(253, UINT32, 4), (2, UINT32, 4), (7, UINT32, 4), (8, UINT32, 4), (9, UINT32, 4),
                     (5, ENUM, 1), (25, UINT16, 2), (26, UINT16, 2)])
    w.data(6, last, T0, (last - T0) * 1000, (last - T0) * 1000, 3100, 1, 0, 1)
    return w.file()


@pytest.mark.parametrize("lead_s", [1, 40, 70, None])
def test_a_compressed_header_counts_from_the_last_stamped_message_between_records(lead_s: int | None) -> None:
    """The quick walk over records and hrv/gps_metadata hands on the last timestamp it stepped over."""
    data = _interleaved_then_compressed(lead_s=lead_s)
    fast = _check(data, f"hand/interleaved-then-compressed-{lead_s}")
    assert fast is not None and fast[0] == "sessions", f"fast path declined: {_decline_reason(data)}"
    times = [s["t_utc"] for s in fast[1][0].samples]
    first = datetime(1989, 12, 31, tzinfo=timezone.utc).timestamp() + T0
    step_s = 4 if lead_s is None else 1
    assert [t.timestamp() - first for t in times] == [i * step_s for i in range(10)] + [9 * step_s + 1 + (lead_s or 0)]


def _mutated(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    body = bytearray(data[:-2])
    for offset, value in edits:
        body[14 + offset % (len(body) - 14)] = value
    return bytes(body) + struct.pack("<H", Crc.calculate(bytes(body)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    variant=st.sampled_from(["plain", "compressed timestamps, big-endian, developer power", "chained files"]),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
)
@example(variant="plain", edits=[(52, 1)])  # the record definition turns big-endian: message 5120, no records
def test_crc_valid_mutations_end_the_same_way(variant: str, edits: list[tuple[int, int]]) -> None:
    """Garbage with a valid CRC: the fast path gives fitparse's answer, or hands the file to it."""
    data = _mutated(VARIANTS[variant](), edits)
    ref = _reference(data, "m.fit")
    got = _outcome(read_fit, data, "m.fit")  # fast first, fitparse on decline
    assert got[0] == ref[0], f"fitparse: {ref}; read_fit: {got}"
    if ref[0] == "sessions":
        _assert_same_sessions(ref[1], got[1])
    else:
        assert got == ref


# --------------------------------------------------------------------------- the CRC


@given(st.binary(min_size=0, max_size=5000))
def test_crc16_matches_fitparse(data: bytes) -> None:
    assert crc16(data) == Crc.calculate(data)


def test_a_wrong_file_crc_is_declined_and_rejected_by_fitparse() -> None:
    data = bytearray(_activity())
    data[-1] ^= 0xFF
    assert read_fit_fast(bytes(data), path="x.fit") is None
    with pytest.raises(InputError, match="CRC"):
        read_fit(bytes(data), path="x.fit")
