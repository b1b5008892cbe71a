"""FIT activity files (Garmin, Suunto, COROS, Wahoo, Stryd, ...) via fitparse.

:func:`read_fit` decodes a whole file with ``FitFile(check_crc=True)``
(chained FIT files and compressed-timestamp headers are handled by fitparse)
and returns one :class:`~pipeline.sources.RawSession` per ``session``
message, in file order. Records, laps and timer events are assigned to the
session whose time window holds them. A file with records but no session is
one session built from its records.

Values keep the file's units where converting them is a normalisation step:
positions stay semicircles and cadence stays cycles per minute (FIT
``cadence + fractional_cadence``: strides/min on foot, rpm on a bike).

Decisions
---------
* fitparse's own value processor would give naive datetimes (via the
  deprecated ``utcfromtimestamp``); a slimmer processor here makes
  ``date_time`` values aware UTC and skips the unit/field hooks we do not use.
* **Device-relative timestamps** (``date_time`` < 0x10000000: seconds since
  the device was switched on, e.g. the Forerunner 70 ANT-FS dumps) load as a
  session on the *device clock* (``RawSession.device_clock``): its instants
  are ``FIT_EPOCH + device seconds``, stand-ins whose differences (elapsed
  time, pauses, laps) are valid and which the normaliser never stores as
  dates (:mod:`.fitclock`). The only absolute time in such files is
  ``activity.local_timestamp`` and it is not the run's start: the two FR70
  files in the corpus carry the very same ``local_timestamp`` for two
  different runs (it is the download time). Any anchor we invented would put the run on a wrong day and join
  pain reports to the wrong run, so none is invented (no UTC offset either).
* The clock is the first session's (``start_time``, else its ``timestamp``),
  else the first record's. A session or record time on the other clock
  rejects the file (no mixing of absolute and device-relative times); laps
  and timer events on the other clock are ignored.
* Power: native ``power``; else a developer field named ``Power``; else one
  whose name ends in "power" that is not a component (Form/Air/Lap Power).
* UTC offset: ``activity.local_timestamp - activity.timestamp`` when it is a
  whole quarter hour within +-14 h.
* Records are assigned to the session whose start is the latest one not after
  the record's time (records before the first session go to it); laps by the
  sessions' ``first_lap_index``/``num_laps`` when consistent, else by time;
  timer events by time. A session ends at ``start_time + total_elapsed_time``
  or at its last record when that is later (some devices stop counting early).
* Records without a timestamp cannot be placed on the run's timeline: a file
  with any is rejected (the corpus's FR910XT pool swim has 67 of them).
"""

from __future__ import annotations

import io
import logging
from bisect import bisect_right
from datetime import datetime, timedelta
from typing import Any

from fitparse import FitFile
from fitparse.processors import FitFileDataProcessor
from fitparse.records import DevField
from fitparse.utils import FitCRCError, FitEOFError, FitHeaderError, FitParseError

from pipeline.errors import RejectedFile, SkippedFile
from pipeline.sources import RawSession
from pipeline.sources.fitclock import DEVICE_RELATIVE_LIMIT, FIT_EPOCH, device_instant

__all__ = ["read_fit", "FIT_EPOCH", "DEVICE_RELATIVE_LIMIT", "device_instant"]

log = logging.getLogger(__name__)


_STOP_EVENTS = frozenset({"stop", "stop_all", "stop_disable", "stop_disable_all"})
_POWER_COMPONENTS = ("form", "air", "lap", "avg", "max", "normalized", "left", "right")


class _Processor(FitFileDataProcessor):
    """Aware UTC datetimes; raw ints for device-relative and local times; nothing else."""

    def run_type_processor(self, field_data: Any) -> None:
        name = field_data.type.name
        if name == "date_time":
            value = field_data.value
            if isinstance(value, int) and value >= DEVICE_RELATIVE_LIMIT:
                field_data.value = FIT_EPOCH + timedelta(seconds=value)
        elif name == "bool" and field_data.value is not None:
            field_data.value = bool(field_data.value)
        # local_date_time stays the raw int: we only need local - utc

    def run_field_processor(self, field_data: Any) -> None:
        return None

    def run_unit_processor(self, field_data: Any) -> None:
        return None

    def run_message_processor(self, data_message: Any) -> None:
        return None


def _fields(message: Any) -> tuple[dict[str, Any], dict[str, tuple[Any, str | None]]]:
    """(native fields, developer fields) of a message; first non-None value wins."""
    native: dict[str, Any] = {}
    dev: dict[str, tuple[Any, str | None]] = {}
    for fd in message.fields:
        value = fd.value
        if value is None:
            continue
        field = fd.field
        if isinstance(field, DevField):
            dev.setdefault(str(field.name), (value, fd.units))
        else:
            native.setdefault(fd.name, value)
    return native, dev


def _num(value: Any) -> float | None:
    """A scalar float from a FIT value (tuples: first element; invalid -> None)."""
    if isinstance(value, (tuple, list)):
        value = next((v for v in value if v is not None), None)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _when(value: Any) -> datetime | int | None:
    """A FIT date_time: aware datetime, int (device-relative) or None (arrays: first element)."""
    if isinstance(value, (tuple, list)):
        value = next((v for v in value if v is not None), None)
    if isinstance(value, datetime) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def _instant(value: Any, device: bool) -> datetime | None:
    """A FIT date_time on the session's clock as a datetime, or None (absent, or the other clock)."""
    when = _when(value)
    if device:
        return device_instant(when) if isinstance(when, int) else None
    return when if isinstance(when, datetime) else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip().strip("\x00")
    return text or None


def _power_field(dev: dict[str, tuple[Any, str | None]]) -> str | None:
    """The developer field holding running/cycling power, if any (Stryd: ``Power``)."""
    names = list(dev)
    for name in names:
        if name.strip().lower() == "power":
            return name
    for name in names:
        low = name.strip().lower()
        if low.endswith("power") and not low.startswith(_POWER_COMPONENTS):
            return name
    return None


def _record_sample(native: dict[str, Any], dev: dict[str, tuple[Any, str | None]], index: int) -> dict[str, Any]:
    speed = native.get("enhanced_speed", native.get("speed"))
    altitude = native.get("enhanced_altitude", native.get("altitude"))
    cadence = _num(native.get("cadence"))
    if cadence is not None:
        cadence += _num(native.get("fractional_cadence")) or 0.0
    power = _num(native.get("power"))
    if power is None and dev:
        name = _power_field(dev)
        if name is not None:
            power = _num(dev[name][0])
    vo = _num(native.get("vertical_oscillation"))
    if vo is None and "Vertical Oscillation" in dev:
        raw, units = dev["Vertical Oscillation"]
        vo = _num(raw)
        if vo is not None and units and units.lower().startswith("cent"):
            vo *= 10.0
    stance = _num(native.get("stance_time"))
    if stance is None and "Ground Time" in dev:
        stance = _num(dev["Ground Time"][0])
    return {
        "index": index,
        "t_utc": _when(native.get("timestamp")),
        "lat_semicircles": _num(native.get("position_lat")),
        "lon_semicircles": _num(native.get("position_long")),
        "altitude_m": _num(altitude),
        "speed_mps": _num(speed),
        "distance_m": _num(native.get("distance")),
        "cadence_cpm": cadence,
        "hr_bpm": _num(native.get("heart_rate")),
        "power_w": power,
        "temperature_c": _num(native.get("temperature")),
        "vertical_oscillation_mm": vo,
        "stance_time_ms": stance,
        "step_length_mm": _num(native.get("step_length")),
    }


def _avg_cadence(native: dict[str, Any]) -> float | None:
    value = _num(native.get("avg_running_cadence", native.get("avg_cadence")))
    if value is not None:
        value += _num(native.get("avg_fractional_cadence")) or 0.0
    return value


def _end(native: dict[str, Any], start: datetime | None, device: bool = False) -> datetime | None:
    elapsed = _num(native.get("total_elapsed_time"))
    if isinstance(start, datetime) and elapsed is not None:
        return start + timedelta(seconds=elapsed)
    return _instant(native.get("timestamp"), device)


def _lap_row(native: dict[str, Any], device: bool = False) -> dict[str, Any]:
    start = _instant(native.get("start_time"), device)
    return {
        "start_utc": start,
        "end_utc": _end(native, start, device),
        "elapsed_s": _num(native.get("total_elapsed_time")),
        "moving_s": _num(native.get("total_timer_time")),
        "distance_m": _num(native.get("total_distance")),
        "avg_speed_mps": _num(native.get("enhanced_avg_speed", native.get("avg_speed"))),
        "avg_hr_bpm": _num(native.get("avg_heart_rate")),
        "avg_cadence_cpm": _avg_cadence(native),
        "trigger": _text(native.get("lap_trigger")),
    }


def _product(native: dict[str, Any]) -> str | None:
    name = _text(native.get("product_name"))
    if name:
        return name
    for key, value in native.items():
        if key == "product" or key.endswith("_product"):
            return _text(value)
    return None


def _offset_from_activity(activity: dict[str, Any] | None) -> int | None:
    """``local_timestamp - timestamp`` as whole quarter hours, or None."""
    if not activity:
        return None
    local_raw, ts = activity.get("local_timestamp"), _when(activity.get("timestamp"))
    if not isinstance(local_raw, int) or not isinstance(ts, datetime):
        return None
    offset = (FIT_EPOCH + timedelta(seconds=local_raw) - ts).total_seconds()
    quarter = round(offset / 900.0) * 900
    if abs(offset - quarter) > 60 or abs(quarter) > 14 * 3600:
        log.info("ignoring FIT local_timestamp offset of %.0f s (not a plausible zone offset)", offset)
        return None
    return int(quarter)


def _pauses(events: list[tuple[datetime, str]], end: datetime | None) -> list[tuple[datetime, datetime]]:
    """Timer stop -> next timer start pairs of one session.

    Repeated stops count from the first; a final stop more than a second
    before ``end`` pauses until ``end`` (the timer never restarted).
    """
    pauses: list[tuple[datetime, datetime]] = []
    stopped_at: datetime | None = None
    for t, kind in sorted(events, key=lambda e: e[0]):
        if kind in _STOP_EVENTS:
            if stopped_at is None:
                stopped_at = t
        elif kind == "start" and stopped_at is not None:
            if t > stopped_at:
                pauses.append((stopped_at, t))
            stopped_at = None
    if stopped_at is not None and end is not None and (end - stopped_at).total_seconds() > 1.0:
        pauses.append((stopped_at, end))
    return pauses


def _decode(data: bytes, path: str) -> dict[str, Any]:
    """Read every message of interest; wrap any decoder failure in RejectedFile."""
    stream = io.BytesIO(data)
    out: dict[str, Any] = {
        "file_ids": [], "creators": [], "records": [], "sessions": [], "laps": [],
        "events": [], "activity": None, "sports": [],
    }
    records = out["records"]
    try:
        fit = FitFile(stream, check_crc=True, data_processor=_Processor())
        for message in fit.get_messages():
            name = message.name
            if name == "record":
                native, dev = _fields(message)
                records.append(_record_sample(native, dev, len(records)))
            elif name in ("session", "lap", "event", "file_id", "device_info", "activity", "sport"):
                native, _dev = _fields(message)
                if name == "session":
                    out["sessions"].append(native)
                elif name == "lap":
                    out["laps"].append(native)
                elif name == "event":
                    when = _when(native.get("timestamp"))
                    if native.get("event") == "timer" and when is not None:
                        out["events"].append((when, str(native.get("event_type"))))
                elif name == "file_id":
                    out["file_ids"].append(native)
                elif name == "device_info":
                    if native.get("device_index") in ("creator", 0):
                        out["creators"].append(native)
                elif name == "activity":
                    out["activity"] = out["activity"] or native
                else:
                    out["sports"].append(native)
    except FitCRCError as exc:
        raise RejectedFile(f"FIT CRC check failed ({exc})", path=path, offset=_tell(stream)) from exc
    except FitEOFError as exc:
        raise RejectedFile(f"truncated FIT file ({exc})", path=path, offset=_tell(stream)) from exc
    except FitHeaderError as exc:
        raise RejectedFile(f"invalid FIT header ({exc})", path=path, offset=_tell(stream)) from exc
    except FitParseError as exc:
        raise RejectedFile(f"FIT decode error: {exc}", path=path, offset=_tell(stream)) from exc
    except Exception as exc:  # fitparse raises bare struct/Key/Index errors on garbage
        raise RejectedFile(
            f"FIT decode error: {type(exc).__name__}: {exc}", path=path, offset=_tell(stream)
        ) from exc
    return out


def _tell(stream: io.BytesIO) -> int | None:
    try:
        return stream.tell()
    except ValueError:  # closed
        return None


def session_clock(sessions: list[dict[str, Any]], path: str) -> bool | None:
    """The clock of the sessions' times: True device-relative, False absolute, None no time.

    Raises
    ------
    RejectedFile
        A session time on the other clock than the first one's.
    """
    device: bool | None = None
    for i, session in enumerate(sessions):
        for key in ("start_time", "timestamp"):
            when = _when(session.get(key))
            if when is None:
                continue
            if device is None:
                device = isinstance(when, int)
            else:
                check_clock(when, device, f"session {i} {key}", path)
    return device


def check_clock(value: Any, device: bool, what: str, path: str) -> None:
    """Reject a FIT time that is not on the file's clock (``device``: device-relative)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not device:
            raise RejectedFile(
                f"device-relative FIT timestamps ({what} = {value} s since device power-on, "
                f"< 0x10000000) in a file whose other times are absolute",
                path=path,
            )
    elif device and isinstance(value, datetime):
        raise RejectedFile(
            f"absolute FIT timestamp ({what} = {value.isoformat()}) in a file whose other times are "
            f"device-relative (seconds since device power-on)",
            path=path,
        )


def read_fit(data: bytes, *, path: str, fast: bool = True) -> list[RawSession]:
    """Decode a FIT file into one :class:`RawSession` per session.

    Parameters
    ----------
    data
        The file's bytes (already inflated if it was gzip).
    path
        The file's name (relative to the raw folder) for error messages.
    fast
        Try the vectorised decoder (:mod:`.fastfit`) first; it hands any file
        it does not fully handle (including every damaged one) back to
        fitparse, the reference. ``False`` decodes with fitparse only.

    Returns
    -------
    list[RawSession]
        In session order; ``session_index`` is 0-based.

    Raises
    ------
    RejectedFile
        Empty, truncated, bad CRC, undecodable, absolute and device-relative
        timestamps mixed, records without timestamps.
    SkippedFile
        A readable FIT file that is not an activity (settings, monitoring,
        ...) or an activity file with neither records nor sessions.
    """
    if not data:
        raise RejectedFile("empty file", path=path)
    if fast:
        from pipeline.sources.fastfit import read_fit_fast

        sessions = read_fit_fast(data, path=path)
        if sessions is not None:
            return sessions
    decoded = _decode(data, path)
    file_ids = decoded["file_ids"]
    file_types = [_text(f.get("type")) for f in file_ids if f.get("type") is not None]
    if file_types and "activity" not in file_types:
        raise SkippedFile(f"FIT file type '{file_types[0]}' is not an activity", path=path)
    records: list[dict[str, Any]] = decoded["records"]
    sessions: list[dict[str, Any]] = decoded["sessions"]
    if not records and not sessions:
        raise SkippedFile("FIT activity file with no records and no sessions", path=path)

    device = session_clock(sessions, path)
    timed = [r for r in records if r["t_utc"] is not None]
    if records and not timed:
        raise RejectedFile(f"no timestamp on any of the {len(records)} FIT records", path=path)
    if len(timed) < len(records):
        first = next(r["index"] for r in records if r["t_utc"] is None)
        raise RejectedFile(
            f"{len(records) - len(timed)} of {len(records)} FIT records have no timestamp "
            f"(first: record {first})",
            path=path,
        )
    if device is None and timed:
        device = isinstance(timed[0]["t_utc"], int)
    device = bool(device)
    for r in timed:
        if isinstance(r["t_utc"], int) != device:
            check_clock(r["t_utc"], device, f"record {r['index']} timestamp", path)
    if device:
        for r in timed:
            r["t_utc"] = device_instant(r["t_utc"])

    # the device
    manufacturer, product = device_of(file_ids, decoded["creators"])
    offset = None if device else _offset_from_activity(decoded["activity"])

    # session windows
    if sessions:
        specs = []
        for native in sessions:
            specs.append({"native": native, "start": _instant(native.get("start_time"), device)})
        # a session without start_time starts with its first record after the previous one
        for i, spec in enumerate(specs):
            if spec["start"] is None:
                prev_end = _end(specs[i - 1]["native"], specs[i - 1]["start"], device) if i else None
                cands = [r["t_utc"] for r in timed if prev_end is None or r["t_utc"] >= prev_end]
                spec["start"] = min(cands) if cands else prev_end
        if any(spec["start"] is None for spec in specs):
            raise RejectedFile("FIT session without start_time and without records", path=path)
    else:
        sport_msg = decoded["sports"][0] if decoded["sports"] else {}
        lap_sport = next((lap.get("sport") for lap in decoded["laps"] if lap.get("sport") is not None), None)
        native = {
            "sport": sport_msg.get("sport", lap_sport),
            "sub_sport": sport_msg.get("sub_sport"),
        }
        specs = [{"native": native, "start": min(r["t_utc"] for r in timed)}]

    order = sorted(range(len(specs)), key=lambda i: specs[i]["start"])
    starts = [specs[i]["start"] for i in order]
    boundaries = starts[1:]
    buckets: list[list[dict[str, Any]]] = [[] for _ in specs]
    for r in timed:
        buckets[order[bisect_right(boundaries, r["t_utc"])]].append(r)
    lap_buckets, event_buckets = laps_and_events_by_session(
        specs, order, boundaries, decoded["laps"], decoded["events"], device
    )

    out: list[RawSession] = []
    for i, spec in enumerate(specs):
        native, start = spec["native"], spec["start"]
        samples = buckets[i]
        end = _end(native, start, device) if sessions else None
        if samples:
            last = max(s["t_utc"] for s in samples)
            if end is None or last > end:
                end = last  # some devices' total_elapsed_time stops short of the last record
        end = end or start
        out.append(
            session_from_native(
                i, native, start=start, end=end, offset=offset, manufacturer=manufacturer, product=product,
                samples=samples, laps=lap_buckets[i], pauses=_pauses(event_buckets[i], end), device_clock=device,
            )
        )
    return out


def _laps_by_index(laps: list[dict[str, Any]], sessions: list[dict[str, Any]]) -> list[int] | None:
    """Session of each lap from ``first_lap_index``/``num_laps`` when they cover every lap exactly."""
    if len(sessions) < 2:
        return [0] * len(laps)
    owner: list[int | None] = [None] * len(laps)
    for s, native in enumerate(sessions):
        first, count = native.get("first_lap_index"), native.get("num_laps")
        if not isinstance(first, int) or not isinstance(count, int):
            return None
        for j in range(first, first + count):
            if j >= len(laps) or owner[j] is not None:
                return None
            owner[j] = s
    if any(o is None for o in owner):
        return None
    return [int(o) for o in owner if o is not None]


def session_from_native(
    index: int,
    native: dict[str, Any],
    *,
    start: Any,
    end: Any,
    offset: int | None,
    manufacturer: str | None,
    product: str | None,
    samples: Any,
    laps: Any,
    pauses: Any,
    device_clock: bool = False,
) -> RawSession:
    """One :class:`RawSession` from a FIT ``session`` message's values (shared with the fast path)."""
    return RawSession(
        source_format="fit",
        session_index=index,
        sport=_text(native.get("sport")),
        sub_sport=_text(native.get("sub_sport")),
        start_utc=start,
        end_utc=end,
        elapsed_s=_num(native.get("total_elapsed_time")),
        moving_s=_num(native.get("total_timer_time")),
        distance_m=_num(native.get("total_distance")),
        avg_hr_bpm=_num(native.get("avg_heart_rate")),
        max_hr_bpm=_num(native.get("max_heart_rate")),
        avg_cadence_cpm=_avg_cadence(native),
        avg_power_w=_num(native.get("avg_power")),
        total_ascent_m=_num(native.get("total_ascent")),
        total_descent_m=_num(native.get("total_descent")),
        utc_offset_s=offset,
        tz_source="fit_local_timestamp" if offset is not None else None,
        device_manufacturer=manufacturer,
        device_product=product,
        point_name="record",
        samples=samples,
        laps=laps,
        pauses=pauses,
        device_clock=device_clock,
    )


def laps_and_events_by_session(
    specs: list[dict[str, Any]],
    order: list[int],
    boundaries: list[datetime],
    raw_laps: list[dict[str, Any]],
    events: list[tuple[Any, str]],
    device: bool,
) -> tuple[list[list[dict[str, Any]]], list[list[tuple[datetime, str]]]]:
    """Each lap and timer event to its session (shared with the fast path).

    A lap goes to the session its index range names when the sessions give
    one, else to the session its start falls in; an event to the session its
    time falls in. ``specs`` are the sessions, ``order`` their indices by
    start, ``boundaries`` the starts of all but the first in that order.
    """
    lap_buckets: list[list[dict[str, Any]]] = [[] for _ in specs]
    laps = [_lap_row(lap, device) for lap in raw_laps]
    by_index = _laps_by_index(raw_laps, [s["native"] for s in specs])
    for i, lap in enumerate(laps):
        if by_index is not None:
            lap_buckets[by_index[i]].append(lap)
        elif lap["start_utc"] is not None:
            lap_buckets[order[bisect_right(boundaries, lap["start_utc"])]].append(lap)
    event_buckets: list[list[tuple[datetime, str]]] = [[] for _ in specs]
    for value, kind in events:
        when = _instant(value, device)
        if when is not None:
            event_buckets[order[bisect_right(boundaries, when)]].append((when, kind))
    return lap_buckets, event_buckets


def device_of(file_ids: list[dict[str, Any]], creators: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(manufacturer, product) from the activity ``file_id``, named from the creator ``device_info``
    when file_id gives only a number (shared with the fast path)."""
    fid = next((f for f in file_ids if _text(f.get("type")) == "activity"), file_ids[0] if file_ids else {})
    manufacturer = _text(fid.get("manufacturer"))
    product = _product(fid)
    creator = creators[0] if creators else {}
    if product is None or product.isdigit():
        creator_product = _product(creator)
        if creator_product and not creator_product.isdigit():
            product = creator_product
        elif product is None:
            product = creator_product
    if manufacturer is None:
        manufacturer = _text(creator.get("manufacturer"))
    if product is not None and product.isdigit():  # an id newer than fitparse's profile: the FIT SDK's name
        from pipeline.sources.garmin_products import GARMIN_PRODUCT_MANUFACTURERS, garmin_product_name

        if manufacturer in GARMIN_PRODUCT_MANUFACTURERS:
            product = garmin_product_name(product) or product
    return manufacturer, product
