"""The byte level of :mod:`.fastfit`: FIT headers, CRCs, definitions, messages, record columns.

:func:`decode_fit_fast` walks the message headers in Python and notes where
each ``record`` message lies: a run of records with nothing between them
(what older watches write) is found by a vector test on its header bytes.
Newer Garmin watches write ``hrv``, ``gps_metadata`` and undocumented
messages between every two records: a quick inner walk steps over those and
notes the records, with one table lookup per message (the size of each local
type's messages, kept up to date at every definition); the full step is
taken only for definitions, compressed-timestamp headers and the messages
decoded one by one. Each definition's records are then
gathered by byte position and decoded at once as a numpy structured array.
Every other message of interest is decoded one by one with fitparse's own
profile objects (subfields, components, scale/offset, enum names), so its
values are fitparse's values. Anything it does not handle exactly raises
:class:`Unsupported`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
from fitparse.profile import MESSAGE_TYPES
from fitparse.records import BASE_TYPE_BYTE, BASE_TYPES, DevField

from pipeline.sources.fit import DEVICE_RELATIVE_LIMIT, FIT_EPOCH, _when

__all__ = ["decode_fit_fast", "crc16", "Unsupported", "Decoded", "SAMPLE_KEYS"]

#: The value keys of a FIT sample (as :func:`pipeline.sources.fit.read_fit` writes them).
SAMPLE_KEYS = (
    "lat_semicircles", "lon_semicircles", "altitude_m", "speed_mps", "distance_m", "cadence_cpm",
    "hr_bpm", "power_w", "temperature_c", "vertical_oscillation_mm", "stance_time_ms", "step_length_mm",
)
_TIMESTAMP = 253
# messages decoded one by one (global numbers) -> the name fit.py gives them
_SCALAR = {0: "file_id", 12: "sport", 18: "session", 19: "lap", 21: "event", 23: "device_info",
           34: "activity", 206: "field_description", 207: "developer_data_id"}
_RECORD = 20
_RECORD_FIELDS = MESSAGE_TYPES[_RECORD].fields
# record field names fit.py reads; each may come from the field itself or from a component
_NEEDED = ("timestamp", "position_lat", "position_long", "enhanced_altitude", "altitude", "enhanced_speed",
           "speed", "distance", "cadence", "fractional_cadence", "heart_rate", "power", "temperature",
           "vertical_oscillation", "stance_time", "step_length")
_POWER_COMPONENTS = ("form", "air", "lap", "avg", "max", "normalized", "left", "right")
# numeric base types: code -> (numpy type, invalid value; None = NaN)
_NUMERIC: dict[int, tuple[str, float | None]] = {
    0x00: ("u1", 0xFF), 0x01: ("i1", 0x7F), 0x02: ("u1", 0xFF), 0x83: ("i2", 0x7FFF),
    0x84: ("u2", 0xFFFF), 0x85: ("i4", 0x7FFFFFFF), 0x86: ("u4", 0xFFFFFFFF), 0x88: ("f4", None),
    0x89: ("f8", None), 0x0A: ("u1", 0), 0x8B: ("u2", 0), 0x8C: ("u4", 0),
}


class Unsupported(Exception):
    """The fast path does not handle this file; decode it with fitparse."""


# --------------------------------------------------------------------------- CRC


@lru_cache(maxsize=1)
def _crc_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ 0xA001, t >> 1)
    return t.astype(np.uint16)


@lru_cache(maxsize=1)
def _word_table() -> np.ndarray:
    """The register after two bytes, by (register XOR the two bytes as a little-endian word).

    The register is 16 bits wide, so two bytes XORed into it leave nothing of
    the old register outside the index: one lookup per two bytes.
    """
    table = _crc_table().astype(np.uint32)
    reg = np.arange(1 << 16, dtype=np.uint32)
    reg = (reg >> 8) ^ table[reg & 0xFF]
    reg = (reg >> 8) ^ table[reg & 0xFF]
    return reg.astype(np.uint16)


@lru_cache(maxsize=64)
def _shift_tables(nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """The CRC register after ``nbytes`` zero bytes, for each low byte and each high byte."""
    if nbytes > _CRC_BLOCK and nbytes % 2 == 0:
        lo, hi = _shift_tables(nbytes // 2)
        return lo[lo & 0xFF] ^ hi[lo >> 8], lo[hi & 0xFF] ^ hi[hi >> 8]
    table = _crc_table()
    lo = np.arange(256, dtype=np.uint16)
    hi = (lo.astype(np.uint32) << 8).astype(np.uint16)
    for _ in range(nbytes):
        lo = (lo >> 8) ^ table[lo & 0xFF]
        hi = (hi >> 8) ^ table[hi & 0xFF]
    return lo, hi


_CRC_BLOCK = 16  # bytes per lane: 8 two-byte lookups


def crc16(data: bytes | memoryview | np.ndarray) -> int:
    """The FIT CRC-16 (CRC-16/ARC, initial value 0) of ``data``.

    Blocks of 16 bytes are run side by side, two bytes per table lookup
    (:func:`_word_table`), then folded pairwise in a tree:
    ``crc(A + B) = shift_len(B)(crc(A)) ^ crc(B)`` (the CRC is linear; leading
    zero bytes leave a zero register unchanged, so the data is front-padded to
    whole blocks, and a zero block goes in front of an odd count at each level).
    """
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    n = len(buf)
    if n < 4 * _CRC_BLOCK:
        crc, tab = 0, _crc_table().tolist()
        for byte in buf.tolist():
            crc = (crc >> 8) ^ tab[(crc ^ byte) & 0xFF]
        return crc
    blocks_n = -(-n // _CRC_BLOCK)
    padded = np.zeros(blocks_n * _CRC_BLOCK, dtype=np.uint8)
    padded[len(padded) - n:] = buf
    words = padded.view("<u2").reshape(blocks_n, _CRC_BLOCK // 2)
    table = _word_table()
    regs = np.zeros(blocks_n, dtype=np.uint16)
    for j in range(_CRC_BLOCK // 2):
        regs = table[regs ^ words[:, j]]
    span = _CRC_BLOCK
    while len(regs) > 1:
        if len(regs) % 2:
            regs = np.concatenate((np.zeros(1, dtype=np.uint16), regs))
        lo, hi = _shift_tables(span)
        left, right = regs[0::2], regs[1::2]
        regs = lo[left & 0xFF] ^ hi[left >> 8] ^ right
        span *= 2
    return int(regs[0])


# --------------------------------------------------------------------------- definitions


@dataclass
class _FieldDef:
    def_num: int
    size: int
    code: int  # base type byte as written
    offset: int  # within the message, after the header byte
    field: Any  # fitparse profile Field, DevField, or None
    dev_index: int | None = None  # developer fields only

    @property
    def base(self) -> Any:
        if self.dev_index is not None:
            return self.field.type
        return BASE_TYPES.get(self.code, BASE_TYPE_BYTE)


# (bytes with the header, record?, (offset, struct, invalid, numpy type) per timestamp field, name)
_Step = tuple[int, bool, tuple[tuple[int, struct.Struct, int, str], ...], str | None]


@dataclass
class _Def:
    global_num: int
    endian: str
    fields: list[_FieldDef]
    dev_fields: list[_FieldDef]
    size: int  # data bytes after the header byte
    bad: str | None = None  # fitparse would fail on a data message of this definition
    _structs: list[struct.Struct] | None = field(default=None, repr=False)
    _ts: list[tuple[int, struct.Struct, Any]] | None = field(default=None, repr=False)
    _plan: Any = field(default=None, repr=False)
    _step: _Step | None = field(default=None, repr=False)

    @property
    def mesg_type(self) -> Any:
        return MESSAGE_TYPES.get(self.global_num)

    def structs(self) -> list[struct.Struct]:
        if self._structs is None:
            out = []
            for fd in self.fields + self.dev_fields:
                base = fd.base
                if base.name in ("byte", "string"):
                    fmt = f"{fd.size}{'s' if base.name == 'string' else 'B'}"
                else:
                    fmt = f"{fd.size // base.size}{base.fmt}"
                out.append(struct.Struct(self.endian + fmt))
            self._structs = out
        return self._structs

    def timestamp_fields(self) -> list[tuple[int, struct.Struct, Any]]:
        """Fields numbered 253 (native or developer): they set the compressed-timestamp base."""
        if self._ts is None:
            self._ts = [(fd.offset, st, fd.base) for fd, st in zip(self.fields + self.dev_fields, self.structs())
                        if fd.def_num == _TIMESTAMP]
        return self._ts


def _step(defn: _Def) -> _Step:
    """What the walk needs of a data message of ``defn``: (bytes with the header, is it a record,
    (offset, struct, invalid value, numpy type) of each timestamp field, the name of a message
    decoded one by one)."""
    if defn._step is not None:
        return defn._step
    if defn.bad:
        raise Unsupported(defn.bad)
    readers = []
    for off, st, base in defn.timestamp_fields():
        spec = _NUMERIC.get(base.identifier)
        if base.name in ("byte", "string") or st.size != base.size or spec is None or spec[0][0] == "f":
            raise Unsupported("a field numbered 253 that is not one integer")
        readers.append((1 + off, st, int(spec[1]), spec[0]))  # type: ignore[arg-type]
    defn._step = (1 + defn.size, defn.global_num == _RECORD, tuple(readers), _SCALAR.get(defn.global_num))
    return defn._step


def _raw_values(defn: _Def, buf: bytes, pos: int) -> list[Any]:
    """fitparse's raw values of one data message (``pos`` = its first data byte)."""
    out: list[Any] = []
    for fd, st in zip(defn.fields + defn.dev_fields, defn.structs()):
        base = fd.base
        raw = st.unpack_from(buf, pos + fd.offset)
        if base.name == "byte":
            out.append(base.parse(raw))
        elif len(raw) > 1:
            out.append(tuple(base.parse(r) for r in raw))
        else:
            out.append(base.parse(raw[0]))
    return out


# --------------------------------------------------------------------------- one message, fitparse's way


def _resolve_subfield(fieldobj: Any, defn: _Def, raw_values: list[Any]) -> Any:
    for sub in fieldobj.subfields or ():
        for ref in sub.ref_fields:
            for fd, raw in zip(defn.fields, raw_values):
                if fd.def_num == ref.def_num and ref.raw_value == raw:
                    return sub
    return fieldobj


def _scale_offset(spec: Any, value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_scale_offset(spec, v) for v in value)
    if isinstance(value, (int, float)):
        if spec.scale:
            value = float(value) / spec.scale
        if spec.offset:
            value = value - spec.offset
    return value


def _processed(type_name: str, value: Any) -> Any:
    """fit.py's ``_Processor``: aware UTC for absolute date_time, bool for bool."""
    if type_name == "date_time":
        if isinstance(value, int) and value >= DEVICE_RELATIVE_LIMIT:
            return FIT_EPOCH + timedelta(seconds=value)
    elif type_name == "bool" and value is not None:
        return bool(value)
    return value


def _native_fields(defn: _Def, raw_values: list[Any], ts_header: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(native values by name, first non-None wins; raw values by name) of one message."""
    mesg_type = defn.mesg_type
    native: dict[str, Any] = {}
    raws: dict[str, Any] = {}
    for fd, raw in zip(defn.fields, raw_values):
        fobj = fd.field
        if fobj is None:
            name = f"unknown_{fd.def_num}"
            raws.setdefault(name, raw)
            if raw is not None:
                native.setdefault(name, _processed(fd.base.name, raw))
            continue
        resolved = _resolve_subfield(fobj, defn, raw_values)
        for comp in resolved.components or ():
            if comp.accumulate:
                raise Unsupported(f"accumulating component {comp.name} in message {defn.global_num}")
            try:
                cmp_raw = comp.render(raw)
            except ValueError:
                continue
            cmp_raw = _scale_offset(comp, cmp_raw)
            cmp_field = _resolve_subfield(mesg_type.fields[comp.def_num], defn, raw_values)
            value = cmp_field.render(cmp_raw)
            value = _processed(cmp_field.type.name, value)
            raws.setdefault(cmp_field.name, cmp_raw)
            if cmp_field.name == fobj.name:
                raws.setdefault(fobj.name, cmp_raw)
            if value is not None:
                native.setdefault(cmp_field.name, value)
        value = _processed(resolved.type.name, _scale_offset(resolved, resolved.render(raw)))
        raws.setdefault(resolved.name, raw)
        raws.setdefault(fobj.name, raw)
        if value is not None:
            native.setdefault(resolved.name, value)
    if ts_header is not None:
        native.setdefault("timestamp", _processed("date_time", ts_header))
    return native, raws


# --------------------------------------------------------------------------- record plans


@dataclass
class _Source:
    kind: str  # field | comp | header | dev
    offset: int = 0
    dtype: str = ""
    invalid: float | None = None
    scale: float | None = None
    add: float | None = None  # the profile's offset (subtracted)
    bit_offset: int = 0
    bits: int = 0
    factor: float | None = None  # developer VO in cm -> mm


@dataclass
class _Plan:
    dtype: np.dtype
    sources: dict[str, list[_Source]]


def _numeric(fd: _FieldDef, what: str) -> tuple[str, float | None]:
    spec = _NUMERIC.get(fd.code if fd.dev_index is None else fd.field.type.identifier)
    if spec is None:
        raise Unsupported(f"{what}: base type 0x{fd.code:02X} is not a plain number")
    np_type, invalid = spec
    if fd.size != np.dtype(np_type).itemsize:
        raise Unsupported(f"{what}: an array of {fd.size} bytes")
    return np_type, invalid


def _record_plan(defn: _Def) -> _Plan:
    """Where each record value of fit.py comes from, in fitparse's field order."""
    if defn._plan is not None:
        return defn._plan
    names, formats, offsets = ["_h"], ["u1"], [0]
    sources: dict[str, list[_Source]] = {name: [] for name in _NEEDED}
    dev_power_exact: list[_Source] = []
    dev_power_like: list[_Source] = []
    dev_vo: list[_Source] = []
    dev_ground: list[_Source] = []

    def column(fd: _FieldDef, what: str) -> tuple[str, str, float | None]:
        np_type, invalid = _numeric(fd, what)
        name = f"f{len(names)}"
        names.append(name)
        formats.append(defn.endian + np_type)
        offsets.append(1 + fd.offset)
        return name, np_type, invalid

    for fd in defn.fields:
        fobj = fd.field
        if fobj is None:
            continue
        for comp in fobj.components or ():
            target = _RECORD_FIELDS[comp.def_num].name
            if target not in sources:
                continue
            if comp.accumulate:
                raise Unsupported(f"record {fobj.name}: accumulating component {target}")
            col, np_type, invalid = column(fd, f"record {fobj.name}")
            if np_type[0] == "f":
                raise Unsupported(f"record {fobj.name}: component of a float field")
            if _RECORD_FIELDS[comp.def_num].subfields or _RECORD_FIELDS[comp.def_num].type.values:
                raise Unsupported(f"record {target}: subfields or named values")
            sources[target].append(_Source("comp", dtype=col, invalid=invalid, scale=comp.scale, add=comp.offset,
                                           bit_offset=comp.bit_offset, bits=comp.bits))
        if fobj.name in sources:
            if fobj.subfields or fobj.type.values:
                raise Unsupported(f"record {fobj.name}: subfields or named values")
            col, np_type, invalid = column(fd, f"record {fobj.name}")
            if fobj.name == "timestamp" and np_type[0] == "f":
                raise Unsupported("record timestamp in a float field")
            sources[fobj.name].append(_Source("field", dtype=col, invalid=invalid, scale=fobj.scale, add=fobj.offset))
    for fd in defn.dev_fields:
        name = str(fd.field.name)
        low = name.strip().lower()
        wanted = [lst for lst, hit in (
            (dev_power_exact, low == "power"),
            (dev_power_like, low != "power" and low.endswith("power") and not low.startswith(_POWER_COMPONENTS)),
            (dev_vo, name == "Vertical Oscillation"),
            (dev_ground, name == "Ground Time"),
        ) if hit]
        if not wanted:
            continue
        col, _np_type, invalid = column(fd, f"developer field {name!r}")
        units = fd.field.units
        for lst in wanted:
            factor = 10.0 if lst is dev_vo and units and str(units).lower().startswith("cent") else None
            lst.append(_Source("dev", dtype=col, invalid=invalid, factor=factor))
    sources["timestamp"].append(_Source("header"))
    sources["_dev_power"] = dev_power_exact + dev_power_like
    sources["_dev_vo"] = dev_vo
    sources["_dev_ground"] = dev_ground
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": 1 + defn.size})
    defn._plan = _Plan(dtype, sources)
    return defn._plan


def _source_values(arr: np.ndarray, src: _Source, header_ts: np.ndarray) -> np.ndarray:
    """One source column as float64, NaN where fitparse would give None."""
    if src.kind == "header":
        return header_ts
    raw = arr[src.dtype]
    if raw.dtype.kind == "f":
        values = raw.astype(np.float64)  # NaN is already "invalid"
    else:
        wide = raw.astype(np.int64)
        invalid = wide == int(src.invalid)  # type: ignore[arg-type]
        if src.kind == "comp":
            wide = (wide >> src.bit_offset) & ((1 << src.bits) - 1)
        values = wide.astype(np.float64)
        values[invalid] = np.nan
    if src.scale:
        values = values / float(src.scale)
    if src.add:
        values = values - src.add
    if src.factor is not None:
        values = values * src.factor
    return values


def _first_present(columns: list[np.ndarray], n: int) -> np.ndarray:
    """Per row, the first column that is not NaN (fitparse: the first non-None field wins)."""
    if not columns:
        return np.full(n, np.nan)
    out = columns[0]
    for col in columns[1:]:
        out = np.where(np.isnan(out), col, out)
    return out


def _record_columns(defn: _Def, arr: np.ndarray, header_ts: np.ndarray) -> dict[str, np.ndarray]:
    """fit.py's sample values (float64, NaN = None) for records of one definition."""
    plan = _record_plan(defn)
    n = len(arr)
    got = {name: _first_present([_source_values(arr, s, header_ts) for s in srcs], n)
           for name, srcs in plan.sources.items()}
    cadence = got["cadence"]
    frac = got["fractional_cadence"]
    cadence = cadence + np.where(np.isnan(frac), 0.0, frac)
    power = np.where(np.isnan(got["power"]), got["_dev_power"], got["power"])
    vo = np.where(np.isnan(got["vertical_oscillation"]), got["_dev_vo"], got["vertical_oscillation"])
    stance = np.where(np.isnan(got["stance_time"]), got["_dev_ground"], got["stance_time"])
    return {
        "t": got["timestamp"],
        "lat_semicircles": got["position_lat"],
        "lon_semicircles": got["position_long"],
        "altitude_m": np.where(np.isnan(got["enhanced_altitude"]), got["altitude"], got["enhanced_altitude"]),
        "speed_mps": np.where(np.isnan(got["enhanced_speed"]), got["speed"], got["enhanced_speed"]),
        "distance_m": got["distance"],
        "cadence_cpm": cadence,
        "hr_bpm": got["heart_rate"],
        "power_w": power,
        "temperature_c": got["temperature"],
        "vertical_oscillation_mm": vo,
        "stance_time_ms": stance,
        "step_length_mm": got["step_length"],
    }


# --------------------------------------------------------------------------- the scan


@dataclass
class Decoded:
    """What fit.py's ``_decode`` collects, with the records as columns."""

    file_ids: list[dict[str, Any]] = field(default_factory=list)
    creators: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    laps: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[datetime | int, str]] = field(default_factory=list)
    activity: dict[str, Any] | None = None
    sports: list[dict[str, Any]] = field(default_factory=list)
    records: dict[str, np.ndarray] = field(default_factory=dict)  # "t" (FIT seconds) + SAMPLE_KEYS

    @property
    def n_records(self) -> int:
        return len(self.records["t"])


def _compressed(offset: int, acc: int) -> int:
    """fitparse's compressed-timestamp accumulation (5 bits)."""
    base = offset + (acc & ~0x1F)
    if offset < (acc & 0x1F):
        base += 0x20
    return base


class _Scanner:
    def __init__(self, data: bytes) -> None:
        self.buf = data
        self.u8 = np.frombuffer(data, dtype=np.uint8)
        self.out = Decoded()
        self.dev_types: dict[int, dict[int, Any]] = {}
        self.records: dict[int, _Records] = {}  # where the records of each definition are, by id
        self.def_cache: dict[tuple[int, int, bytes], _Def] = {}
        self.dev_version = 0  # bumped by developer data messages: cached layouts go stale

    def scan(self) -> Decoded:
        buf, pos, n = self.buf, 0, len(self.buf)
        while True:
            if n - pos < 12 or buf[pos + 8:pos + 12] != b".FIT":
                raise Unsupported("not a FIT header")
            header_size = buf[pos]
            (data_size,) = struct.unpack_from("<I", buf, pos + 4)
            if header_size < 12 or header_size == 13:
                raise Unsupported(f"header size {header_size}")
            if header_size >= 14:
                (header_crc,) = struct.unpack_from("<H", buf, pos + 12)
                if header_crc != 0 and header_crc != crc16(self.u8[pos:pos + 12]):
                    raise Unsupported("header CRC")
            start = pos + header_size
            end = start + data_size
            if end + 2 > n:
                raise Unsupported("truncated")
            (file_crc,) = struct.unpack_from("<H", buf, end)
            if crc16(self.u8[pos:end]) != file_crc:
                raise Unsupported("file CRC")
            self._messages(start, end)
            pos = end + 2
            if pos >= n:
                break
        self._records()
        return self.out

    def _definition(self, p: int, end: int, local: dict[int, _Def]) -> int:
        buf = self.buf
        h = buf[p]
        if p + 6 > end:
            raise Unsupported("definition runs past the data")
        # devices often repeat the same definition: reuse its decoded layout (and record plan)
        stop = p + 6 + 3 * buf[p + 5]
        if h & 0x20 and stop < end:
            stop += 1 + 3 * buf[stop]
        key = (h & 0x20, self.dev_version if h & 0x20 else 0, buf[p + 1:stop])
        cached = self.def_cache.get(key)
        if cached is not None and stop <= end:
            local[h & 0x0F] = cached
            return stop
        endian = ">" if buf[p + 2] else "<"
        (global_num,) = struct.unpack_from(endian + "H", buf, p + 3)
        mesg_type = MESSAGE_TYPES.get(global_num)
        q, offset, bad = p + 6, 0, None
        fields: list[_FieldDef] = []
        for _ in range(buf[p + 5]):
            if q + 3 > end:
                raise Unsupported("definition runs past the data")
            num, size, code = buf[q], buf[q + 1], buf[q + 2]
            base = BASE_TYPES.get(code, BASE_TYPE_BYTE)
            if size % base.size:
                raise Unsupported("field size not a multiple of its base type")  # fitparse raises
            if size == 0:
                bad = "zero-size field"
            fobj = mesg_type.fields.get(num) if mesg_type else None
            fields.append(_FieldDef(num, size, code, offset, fobj))
            offset += size
            q += 3
        dev_fields: list[_FieldDef] = []
        if h & 0x20:
            if q + 1 > end:
                raise Unsupported("definition runs past the data")
            count = buf[q]
            q += 1
            for _ in range(count):
                if q + 3 > end:
                    raise Unsupported("definition runs past the data")
                num, size, index = buf[q], buf[q + 1], buf[q + 2]
                dev = self.dev_types.get(index, {}).get(num)
                if dev is None:
                    raise Unsupported(f"undeclared developer field {index}/{num}")
                if size == 0 or size % dev.type.size:
                    bad = "developer field size not a multiple of its base type"
                dev_fields.append(_FieldDef(num, size, dev.type.identifier, offset, dev, dev_index=index))
                offset += size
                q += 3
        defn = _Def(global_num, endian, fields, dev_fields, offset, bad)
        if any(st.size != fd.size for st, fd in zip(defn.structs(), fields + dev_fields)):
            raise Unsupported("field layout")
        local[h & 0x0F] = defn
        if q == stop:
            self.def_cache[key] = defn
        return q

    def _messages(self, start: int, end: int) -> None:
        buf = self.buf
        local: dict[int, _Def] = {}
        acc = 0
        p = start
        records = self._records_of
        # the quick walk, by header byte: (size with the header, the list its records' positions go to or
        # None, its timestamp readers) for a normal data header (local type 0-15) whose messages the walk
        # only has to step over or note as records; None: take the full step below
        quick: list[tuple[int, list[int] | None, tuple[tuple[int, struct.Struct, int, str], ...]] | None]
        quick = [None] * 256
        while p < end:
            begin, last, last_readers = p, -1, ()
            while p < end:
                step = quick[buf[p]]
                if step is None:
                    break
                size, positions, readers = step
                after = p + size
                if after > end:
                    break
                if positions is not None:
                    if after < end and buf[after] == buf[p]:
                        break  # records back to back: the vector test below
                    positions.append(p)
                if readers:
                    last, last_readers = p, readers
                p = after
            if last >= 0:
                acc = _last_timestamp(buf, quick, begin, last, last_readers, acc)
            if p >= end:
                break
            h = buf[p]
            if h & 0x80:
                lnum, time_offset = (h >> 5) & 0x3, h & 0x1F
            elif h & 0x40:
                p = self._definition(p, end, local)
                lnum = h & 0x0F
                defn = local[lnum]
                quick[lnum] = None
                if not defn.bad:
                    size, is_record, readers, name = _step(defn)
                    if name is None:  # a record, or a message nothing here reads
                        quick[lnum] = (size, records(defn).singles if is_record else None, readers)
                continue
            else:
                lnum, time_offset = h & 0x0F, None
            defn = local.get(lnum)
            if defn is None:
                raise Unsupported(f"data message of undefined local type {lnum}")
            size, is_record, readers, name = defn._step or _step(defn)
            after = p + size
            if after > end:
                raise Unsupported("message runs past the data")
            if is_record and after + size < end and _same_local(buf[after], lnum) \
                    and _same_local(buf[after + size], lnum):
                # a run of records (a watch that writes nothing between them): found and timed as vectors
                count = self._run_length(p, end, size, lnum)
                acc, header_ts = self._run_timestamps(defn, p, count, size, acc)
                records(defn).runs.append((p, count, size, header_ts))
                p += count * size
                continue
            # any other message: one step each
            if readers:
                value = _stamp(buf, p, readers)
                if value is not None:
                    acc = value
            ts_header = None
            if time_offset is not None:
                acc = ts_header = _compressed(time_offset, acc)
            if is_record:
                recs = records(defn)
                if ts_header is None:
                    recs.singles.append(p)
                else:
                    recs.compressed.append(p)
                    recs.compressed_ts.append(float(ts_header))
            elif name is not None:
                self._dispatch(name, defn, _raw_values(defn, buf, p + 1), ts_header)
            p = after

    def _run_length(self, p: int, end: int, size: int, lnum: int) -> int:
        """Consecutive data messages of local type ``lnum`` (normal or compressed headers) from ``p``."""
        limit = (end - p) // size
        count, window = 0, 64
        while count < limit:
            stop = min(limit, count + window)
            heads = self.u8[p + count * size:p + stop * size:size]
            same = ((heads & 0xC0) == 0) & ((heads & 0x0F) == lnum)
            if lnum < 4:
                same |= ((heads & 0x80) != 0) & (((heads >> 5) & 0x3) == lnum)
            miss = np.flatnonzero(~same)
            if len(miss):
                return count + int(miss[0])
            count = stop
            window *= 8
        return count

    def _run_timestamps(self, defn: _Def, p: int, count: int, size: int, acc: int) -> tuple[int, np.ndarray | None]:
        """The compressed-timestamp base after the run, and the run's header timestamps (NaN: none)."""
        heads = self.u8[p:p + count * size:size]
        compressed = (heads & 0x80) != 0
        readers = _step(defn)[2]  # checked there: integers only
        values = None
        if readers:
            rows = np.frombuffer(self.buf, dtype=np.uint8, count=count * size, offset=p).reshape(count, size)
            values = np.full(count, -1, dtype=np.int64)
            for off, st, invalid, np_type in readers:
                col = np.ascontiguousarray(rows[:, off:off + st.size]).view(defn.endian + np_type).ravel()
                col = col.astype(np.int64)
                values = np.where(col != invalid, col, values)
        if not compressed.any():
            if values is not None and (values >= 0).any():
                acc = int(values[np.flatnonzero(values >= 0)[-1]])
            return acc, None
        header_ts = np.full(count, np.nan)
        offsets = (heads & 0x1F).tolist()
        flags = compressed.tolist()
        native = values.tolist() if values is not None else [-1] * count
        for k in range(count):
            if native[k] >= 0:
                acc = native[k]
            if flags[k]:
                acc = _compressed(offsets[k], acc)
                header_ts[k] = acc
        return acc, header_ts

    def _dispatch(self, name: str, defn: _Def, raw_values: list[Any], ts_header: int | None) -> None:
        native, raws = _native_fields(defn, raw_values, ts_header)
        out = self.out
        if name == "session":
            out.sessions.append(native)
        elif name == "lap":
            out.laps.append(native)
        elif name == "event":
            when = _when(native.get("timestamp"))
            if native.get("event") == "timer" and when is not None:  # datetime, or int (device-relative)
                out.events.append((when, str(native.get("event_type"))))
        elif name == "file_id":
            out.file_ids.append(native)
        elif name == "device_info":
            if native.get("device_index") in ("creator", 0):
                out.creators.append(native)
        elif name == "activity":
            out.activity = out.activity or native
        elif name == "sport":
            out.sports.append(native)
        elif name == "developer_data_id":
            index = raws.get("developer_data_index")
            if not isinstance(index, int):
                raise Unsupported("developer_data_id without an index")
            self.dev_types[index] = {}
            self.dev_version += 1
        else:  # field_description
            self._field_description(raws)

    def _field_description(self, raws: dict[str, Any]) -> None:
        index = raws.get("developer_data_index")
        number = raws.get("field_definition_number")
        base_id = raws.get("fit_base_type_id")
        name = raws.get("field_name") or f"unnamed_dev_field_{number}"
        units = raws.get("units")
        if index not in self.dev_types or base_id not in BASE_TYPES or not isinstance(name, str):
            raise Unsupported("field_description fitparse would refuse or read from another file")
        if units is not None and not isinstance(units, str):
            raise Unsupported("field_description units")
        self.dev_version += 1
        self.dev_types[index][number] = DevField(
            dev_data_index=index, def_num=number, type=BASE_TYPES[base_id], name=name, units=units,
            native_field_num=raws.get("native_field_num"),
        )

    def _records_of(self, defn: _Def) -> _Records:
        recs = self.records.get(id(defn))
        if recs is None:
            recs = self.records[id(defn)] = _Records(defn)
        return recs

    def _records(self) -> None:
        """Decode every record, definition by definition, into columns in file order."""
        parts: list[tuple[np.ndarray | None, dict[str, np.ndarray]]] = []
        found = [recs for recs in self.records.values() if recs.singles or recs.compressed or recs.runs]
        many = len(found) > 1
        for recs in found:  # a record definition no record uses is never planned (nor refused)
            plan = _record_plan(recs.defn)
            if not recs.singles and not recs.compressed and len(recs.runs) == 1:
                p, count, _size, header_ts = recs.runs[0]  # the whole file is one run (older watches)
                arr = np.frombuffer(self.buf, dtype=plan.dtype, count=count, offset=p)
                starts = p + np.arange(count) * plan.dtype.itemsize if many else None
                times = header_ts if header_ts is not None else np.full(count, np.nan)
            else:
                starts, times = recs.positions()
                rows = self.u8[starts[:, None] + np.arange(plan.dtype.itemsize)]
                arr = rows.view(plan.dtype).reshape(len(starts))
            parts.append((starts, _record_columns(recs.defn, arr, times)))
        if not parts:
            self.out.records = {key: np.empty(0) for key in ("t",) + SAMPLE_KEYS}
        elif len(parts) == 1:
            self.out.records = parts[0][1]
        else:  # several record definitions: back into file order by byte position
            order = np.argsort(np.concatenate([starts for starts, _c in parts]), kind="stable")
            merged = {key: np.concatenate([cols[key] for _s, cols in parts]) for key in parts[0][1]}
            self.out.records = {key: values[order] for key, values in merged.items()}


@dataclass
class _Records:
    """Where the records of one definition are: single records with a normal header, with a compressed
    header (and its timestamp), and runs of records back to back (position, count, size, header times)."""

    defn: _Def
    singles: list[int] = field(default_factory=list)
    compressed: list[int] = field(default_factory=list)
    compressed_ts: list[float] = field(default_factory=list)
    runs: list[tuple[int, int, int, np.ndarray | None]] = field(default_factory=list)

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Every record's byte position in file order, and its compressed-header timestamp (NaN: none)."""
        starts = [np.array(self.singles, dtype=np.int64), np.array(self.compressed, dtype=np.int64)]
        times = [np.full(len(self.singles), np.nan), np.array(self.compressed_ts, dtype=np.float64)]
        for p, count, size, header_ts in self.runs:
            starts.append(p + np.arange(count, dtype=np.int64) * size)
            times.append(header_ts if header_ts is not None else np.full(count, np.nan))
        pos, ts = np.concatenate(starts), np.concatenate(times)
        order = np.argsort(pos, kind="stable")
        return pos[order], ts[order]


def _stamp(buf: bytes, p: int, readers: tuple[tuple[int, struct.Struct, int, str], ...]) -> int | None:
    """The last valid value of the timestamp fields (``readers``) of the message at ``p``, or None."""
    for off, st, invalid, _type in reversed(readers):
        (value,) = st.unpack_from(buf, p + off)
        if value != invalid:
            return value
    return None


def _last_timestamp(buf: bytes, quick: list[Any], begin: int, last: int,
                    readers: tuple[tuple[int, struct.Struct, int, str], ...], acc: int) -> int:
    """The compressed-timestamp base after a quick walk from ``begin``: its last valid timestamp, else ``acc``.

    ``last`` is the last message with timestamp fields it stepped over; when none of them holds a
    valid value (rare), the stretch is walked again for the messages before it.
    """
    value = _stamp(buf, last, readers)
    if value is not None:
        return value
    stamped = []
    p = begin
    while p < last:
        size, _positions, step_readers = quick[buf[p]]
        if step_readers:
            stamped.append((p, step_readers))
        p += size
    for p, step_readers in reversed(stamped):
        value = _stamp(buf, p, step_readers)
        if value is not None:
            return value
    return acc


def _same_local(head: int, lnum: int) -> bool:
    """A data message header (normal or compressed-timestamp) of local type ``lnum``."""
    if head & 0x80:
        return (head >> 5) & 0x3 == lnum
    return not head & 0x40 and head & 0x0F == lnum


def decode_fit_fast(data: bytes) -> Decoded:
    """Decode the messages fit.py reads; raise :class:`Unsupported` for anything unusual."""
    return _Scanner(bytes(data)).scan()
