"""A small, vectorised FIT encoder: what a Garmin watch writes, nothing more.

A FIT file is a 14-byte header (with its own CRC), a run of *definition* and
*data* messages, and a CRC-16 over everything before it. Each definition
message binds a local message number (0-15) to a global message number and a
list of ``(field number, size, base type)``; every data message after it with
the same local number is the fields' raw little-endian bytes in that order.

That fixed layout is exactly a numpy structured dtype, so a whole column of
1 Hz records is encoded with one ``np.zeros(n, dtype)``, a handful of column
assignments and ``.tobytes()``. Values are passed already in raw form
(scaled and offset integers, FIT seconds); :func:`scaled` helps with that.

The CRC is the FIT SDK's CRC-16 (CRC-16/ARC: reflected polynomial 0xA001,
initial value 0). :func:`crc16` computes it block-wise with numpy: the CRC is
linear over GF(2), so independent blocks can be folded together with a
precomputed "shift by one block of zero bytes" table.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "FIT_EPOCH_UNIX",
    "BASE_TYPES",
    "Field",
    "MessageDef",
    "FitWriter",
    "crc16",
    "crc16_reference",
    "fit_time",
    "scaled",
]

#: 1989-12-31T00:00:00Z as a Unix timestamp: FIT ``date_time`` counts from here.
FIT_EPOCH_UNIX = 631065600

#: FIT protocol 2.0 and profile 21.40 (encoded as major * 100 + minor).
PROTOCOL_VERSION = 0x20
PROFILE_VERSION = 2140


@dataclass(frozen=True)
class BaseType:
    """A FIT base type: its wire code, numpy dtype and "invalid" sentinel."""

    code: int
    dtype: str
    invalid: int


BASE_TYPES: dict[str, BaseType] = {
    "enum": BaseType(0x00, "u1", 0xFF),
    "sint8": BaseType(0x01, "i1", 0x7F),
    "uint8": BaseType(0x02, "u1", 0xFF),
    "sint16": BaseType(0x83, "<i2", 0x7FFF),
    "uint16": BaseType(0x84, "<u2", 0xFFFF),
    "sint32": BaseType(0x85, "<i4", 0x7FFFFFFF),
    "uint32": BaseType(0x86, "<u4", 0xFFFFFFFF),
    "uint8z": BaseType(0x0A, "u1", 0x00),
    "uint16z": BaseType(0x8B, "<u2", 0x0000),
    "uint32z": BaseType(0x8C, "<u4", 0x00000000),
    "byte": BaseType(0x0D, "u1", 0xFF),
}


@dataclass(frozen=True)
class Field:
    """One field of a message definition (name is ours; the file holds ``num``); ``count`` > 1: an array."""

    name: str
    num: int
    base: str
    count: int = 1

    @property
    def base_type(self) -> BaseType:
        return BASE_TYPES[self.base]


@dataclass(frozen=True)
class MessageDef:
    """A global message number and its field layout."""

    global_num: int
    fields: tuple[Field, ...]

    @property
    def dtype(self) -> np.dtype:
        """Packed structured dtype of one data message, record header included."""
        parts: list[tuple[Any, ...]] = [("_header", "u1")]
        parts += [(f.name, f.base_type.dtype) if f.count == 1 else (f.name, f.base_type.dtype, (f.count,))
                  for f in self.fields]
        return np.dtype(parts)

    def definition_bytes(self, local: int) -> bytes:
        """The definition message binding ``local`` to this layout (little-endian)."""
        out = [struct.pack("<BBBHB", 0x40 | local, 0, 0, self.global_num, len(self.fields))]
        for f in self.fields:
            bt = f.base_type
            out.append(struct.pack("<BBB", f.num, np.dtype(bt.dtype).itemsize * f.count, bt.code))
        return b"".join(out)

    def encode(self, local: int, values: Mapping[str, Any], n: int | None = None) -> np.ndarray:
        """Data messages for ``values`` (column arrays or scalars) as a structured array.

        Fields absent from ``values`` (or given as ``None``) get the base type's
        invalid value. Raises ``ValueError`` when a value does not fit its type.
        """
        unknown = set(values) - {f.name for f in self.fields}
        if unknown:
            raise ValueError(f"fields not in the definition of message {self.global_num}: {sorted(unknown)}")
        if n is None:
            lengths = {np.shape(v)[0] for v in values.values() if v is not None and np.ndim(v) > 0}
            if len(lengths) > 1:
                raise ValueError(f"columns of different lengths: {sorted(lengths)}")
            n = lengths.pop() if lengths else 1
        arr = np.zeros(n, dtype=self.dtype)
        arr["_header"] = local
        for f in self.fields:
            bt = f.base_type
            value = values.get(f.name)
            if value is None:
                arr[f.name] = bt.invalid
                continue
            raw = np.asarray(value)
            if raw.dtype.kind == "f":
                if not np.all(np.isfinite(raw)):
                    raise ValueError(f"{f.name}: non-finite value")
                raw = np.round(raw)
            info = np.iinfo(np.dtype(bt.dtype))
            if raw.size and (raw.min() < info.min or raw.max() > info.max):
                raise ValueError(f"{f.name}: value out of range for {f.base} ({raw.min()}..{raw.max()})")
            arr[f.name] = raw.astype(np.int64)
        return arr


class FitWriter:
    """Collects definition and data messages and writes a complete FIT file."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._defs: dict[int, MessageDef] = {}

    def define(self, local: int, mdef: MessageDef) -> None:
        """Write a definition message binding ``local`` (0-15) to ``mdef``."""
        if not 0 <= local <= 15:
            raise ValueError(f"local message number must be 0-15 (got {local})")
        self._defs[local] = mdef
        self._chunks.append(mdef.definition_bytes(local))

    def encode(self, local: int, values: Mapping[str, Any], n: int | None = None) -> np.ndarray:
        """Encode data messages with the layout currently bound to ``local``."""
        return self._defs[local].encode(local, values, n)

    def write(self, local: int, values: Mapping[str, Any]) -> None:
        """Encode and append data messages in one step."""
        self._chunks.append(self.encode(local, values).tobytes())

    def write_raw(self, data: bytes | np.ndarray) -> None:
        """Append already-encoded data messages (from :meth:`encode`)."""
        self._chunks.append(data.tobytes() if isinstance(data, np.ndarray) else bytes(data))

    @property
    def size(self) -> int:
        """Bytes of messages written so far (the header not included)."""
        return sum(len(c) for c in self._chunks)

    def to_bytes(self) -> bytes:
        """Header + messages + file CRC."""
        body = b"".join(self._chunks)
        head = struct.pack("<BBHI4s", 14, PROTOCOL_VERSION, PROFILE_VERSION, len(body), b".FIT")
        head += struct.pack("<H", crc16(head))
        data = head + body
        return data + struct.pack("<H", crc16(data))


# --------------------------------------------------------------------------- CRC

def _byte_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint16)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table[i] = crc
    return table


_TABLE = _byte_table()
_TABLE_LIST = _TABLE.tolist()
_BLOCK = 512


@lru_cache(maxsize=4)
def _shift_tables(block: int) -> tuple[list[int], list[int]]:
    """Maps of a register state's low and high byte through ``block`` zero bytes."""
    lo = np.arange(256, dtype=np.uint16)
    hi = (np.arange(256, dtype=np.uint16) << 8).astype(np.uint16)
    for _ in range(block):
        lo = (lo >> 8) ^ _TABLE[lo & 0xFF]
        hi = (hi >> 8) ^ _TABLE[hi & 0xFF]
    return lo.tolist(), hi.tolist()


def crc16_reference(data: bytes, crc: int = 0) -> int:
    """Byte-at-a-time CRC-16/ARC, the definition :func:`crc16` must agree with."""
    for byte in data:
        crc = (crc >> 8) ^ _TABLE_LIST[(crc ^ byte) & 0xFF]
    return crc


def crc16(data: bytes) -> int:
    """FIT CRC-16 of ``data`` (initial value 0), vectorised over 512-byte blocks.

    Leading zero bytes do not change a CRC that starts at 0, so the data is
    front-padded to whole blocks; each block's CRC is computed in parallel and
    the blocks are folded left to right: ``crc(A + B) = shift(crc(A)) ^ crc(B)``.
    """
    n = len(data)
    if n < 4 * _BLOCK:
        return crc16_reference(data)
    pad = (-n) % _BLOCK
    blocks = np.frombuffer(b"\x00" * pad + bytes(data), dtype=np.uint8).reshape(-1, _BLOCK)
    regs = np.zeros(blocks.shape[0], dtype=np.uint16)
    for j in range(_BLOCK):
        regs = (regs >> 8) ^ _TABLE[(regs ^ blocks[:, j]) & 0xFF]
    lo, hi = _shift_tables(_BLOCK)
    crc = 0
    for reg in regs.tolist():
        crc = lo[crc & 0xFF] ^ hi[crc >> 8] ^ reg
    return crc


# --------------------------------------------------------------------------- values

def fit_time(value: datetime | Sequence[float] | np.ndarray | float) -> Any:
    """FIT ``date_time`` seconds for an aware datetime or Unix seconds (scalar or array)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("fit_time needs an aware datetime")
        return int(value.astimezone(timezone.utc).timestamp()) - FIT_EPOCH_UNIX
    return np.asarray(value, dtype=np.int64) - FIT_EPOCH_UNIX


def scaled(value: Any, scale: float, offset: float = 0.0) -> np.ndarray:
    """Raw integer for a profile field with ``scale``/``offset``: ``round((v + offset) * scale)``."""
    return np.round((np.asarray(value, dtype=np.float64) + offset) * scale).astype(np.int64)
