"""A vectorised FIT reader: the same :class:`RawSession` output as :mod:`.fit`, ~100x faster.

fitparse decodes one field of one message at a time in Python (~3,000
records/s). A FIT file is mostly ``record`` messages sharing one definition,
i.e. a packed array of fixed-size rows: :mod:`.fitscan` decodes each
definition's records at once as a numpy structured array, and the few other
messages (file_id, session, lap, event, device_info, activity, sport,
developer data) one by one with fitparse's own profile objects.

:func:`read_fit_fast` returns ``None`` whenever the file is anything but
plainly valid (bad header, header or file CRC, truncation, an undefined
local message, an odd field size, developer fields declared elsewhere,
accumulating components or arrays in the record fields we read, ...): the
caller then decodes with fitparse, the reference, which also words the
rejection. What happens after decoding (which sessions, which records belong
to them, the clock: absolute or device-relative, the device) follows
:func:`pipeline.sources.fit.read_fit` rule for rule, on columns.

``tests/test_fastfit.py`` holds this module to fitparse, value by value, on
every FIT file of the real corpus and on simulator files.
"""

from __future__ import annotations

import logging
import struct
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from pipeline.errors import RejectedFile, SkippedFile
from pipeline.sources import RawSession
from pipeline.sources.columnar import SampleColumns, datetime_from_us, us_from_datetime
from pipeline.sources.fit import (
    DEVICE_RELATIVE_LIMIT,
    _end,
    _instant,
    _offset_from_activity,
    _pauses,
    _text,
    check_clock,
    device_of,
    laps_and_events_by_session,
    session_clock,
    session_from_native,
)
from pipeline.sources.fitscan import SAMPLE_KEYS, Decoded, Unsupported, decode_fit_fast

__all__ = ["read_fit_fast", "decode_fit_fast", "Unsupported", "SAMPLE_KEYS"]

log = logging.getLogger(__name__)

_FIT_EPOCH_UNIX_S = 631065600  # 1989-12-31T00:00:00Z
_FIT_EPOCH_DT = datetime_from_us(_FIT_EPOCH_UNIX_S * 1_000_000)


# --------------------------------------------------------------------------- sessions (fit.py's rules)


def read_fit_fast(data: bytes, *, path: str) -> list[RawSession] | None:
    """:func:`pipeline.sources.fit.read_fit` without fitparse, or None to use fitparse.

    Returns
    -------
    list[RawSession] or None
        The sessions (samples as :class:`~pipeline.sources.columnar.SampleColumns`),
        or None when the file needs the reference decoder.

    Raises
    ------
    RejectedFile, SkippedFile
        The decisions fit.py takes after decoding, with its wording.
    """
    try:
        decoded = decode_fit_fast(data)
    except Unsupported as exc:
        log.debug("%s: fast FIT decoder declined (%s); using fitparse", path, exc)
        return None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, struct.error) as exc:
        # a case this decoder does not know: the reference decides, never a guess
        log.warning("%s: fast FIT decoder failed (%s: %s); using fitparse", path, type(exc).__name__, exc)
        return None
    return _sessions(decoded, path)


def _sessions(decoded: Decoded, path: str) -> list[RawSession]:
    file_ids = decoded.file_ids
    file_types = [_text(f.get("type")) for f in file_ids if f.get("type") is not None]
    if file_types and "activity" not in file_types:
        raise SkippedFile(f"FIT file type '{file_types[0]}' is not an activity", path=path)
    rec = decoded.records
    n = decoded.n_records
    sessions = decoded.sessions
    if not n and not sessions:
        raise SkippedFile("FIT activity file with no records and no sessions", path=path)
    device = session_clock(sessions, path)
    t = rec["t"]
    missing = np.isnan(t)
    n_missing = int(np.count_nonzero(missing))
    if n and n_missing == n:
        raise RejectedFile(f"no timestamp on any of the {n} FIT records", path=path)
    if n_missing:
        first = int(np.flatnonzero(missing)[0])
        raise RejectedFile(
            f"{n_missing} of {n} FIT records have no timestamp (first: record {first})", path=path
        )
    relative = t < DEVICE_RELATIVE_LIMIT
    if device is None and n:
        device = bool(relative[0])
    device = bool(device)
    other = np.flatnonzero(relative != device)
    if len(other):
        bad = int(other[0])
        value = int(t[bad])
        check_clock(value if device is False else _FIT_EPOCH_DT + timedelta(seconds=value), device,
                    f"record {bad} timestamp", path)
    t_us = (t.astype(np.int64) + _FIT_EPOCH_UNIX_S) * 1_000_000  # on the device clock: the stand-ins

    manufacturer, product = device_of(file_ids, decoded.creators)
    offset = None if device else _offset_from_activity(decoded.activity)

    def first_at_or_after(limit: datetime | None) -> datetime | None:
        cands = t_us if limit is None else t_us[t_us >= us_from_datetime(limit)]
        return datetime_from_us(int(cands.min())) if len(cands) else None

    if sessions:
        specs: list[dict[str, Any]] = []
        for native in sessions:
            specs.append({"native": native, "start": _instant(native.get("start_time"), device)})
        for i, spec in enumerate(specs):
            if spec["start"] is None:
                prev_end = _end(specs[i - 1]["native"], specs[i - 1]["start"], device) if i else None
                spec["start"] = first_at_or_after(prev_end) or prev_end
        if any(spec["start"] is None for spec in specs):
            raise RejectedFile("FIT session without start_time and without records", path=path)
    else:
        sport_msg = decoded.sports[0] if decoded.sports else {}
        lap_sport = next((lap.get("sport") for lap in decoded.laps if lap.get("sport") is not None), None)
        native = {"sport": sport_msg.get("sport", lap_sport), "sub_sport": sport_msg.get("sub_sport")}
        specs = [{"native": native, "start": first_at_or_after(None)}]

    order = sorted(range(len(specs)), key=lambda i: specs[i]["start"])
    starts = [specs[i]["start"] for i in order]
    boundaries = starts[1:]
    bounds_us = np.array([us_from_datetime(b) for b in boundaries], dtype=np.int64)
    bucket = np.asarray(order, dtype=np.int64)[np.searchsorted(bounds_us, t_us, side="right")]
    lap_buckets, event_buckets = laps_and_events_by_session(
        specs, order, boundaries, decoded.laps, decoded.events, device
    )

    index = np.arange(n, dtype=np.int64)
    out: list[RawSession] = []
    for i, spec in enumerate(specs):
        native, start = spec["native"], spec["start"]
        rows = np.flatnonzero(bucket == i)
        end = _end(native, start, device) if sessions else None
        if len(rows):
            last = datetime_from_us(int(t_us[rows].max()))
            if end is None or last > end:
                end = last
        end = end or start
        samples = SampleColumns(t_us[rows], index[rows], {k: rec[k][rows] for k in SAMPLE_KEYS}, keys=SAMPLE_KEYS)
        out.append(
            session_from_native(
                i, native, start=start, end=end, offset=offset, manufacturer=manufacturer, product=product,
                samples=samples, laps=lap_buckets[i], pauses=_pauses(event_buckets[i], end), device_clock=device,
            )
        )
    return out
