"""Assemble a Garmin-like FIT activity file from simulated samples.

Message order, as a Forerunner writes it::

    file_id, file_creator, event(timer start), device_info(creator)
    [device_info(footpod) for treadmill runs]
    record ... record  lap  record ... [event(timer stop_all) event(timer start)] ... record
    event(timer stop_all)  lap(last)  session  activity

Records are 1 Hz: timestamp, position_lat/long (semicircles; absent on a
treadmill), distance (cm), enhanced_speed (mm/s), enhanced_altitude
((m + 500) * 5), heart_rate, cadence (strides/min, integer part) and, for
running, fractional_cadence (1/128). Laps split every 1 km or 1 mile (the
athlete's unit). ``activity.local_timestamp`` is local time in FIT seconds,
so importers can recover the UTC offset.

That is what a Forerunner of 2015-2019 writes. A current Garmin
(:attr:`DeviceInfo.current`; Forerunner 955/965 of 2022 on) writes the
record layout of a real Forerunner 955 file: also power, temperature, the
running dynamics (vertical oscillation, stance time and its share and
balance, vertical ratio, step length; only with a chest strap,
:attr:`DeviceInfo.chest_strap`, else invalid) and seven undocumented bytes;
and after every record a ``gps_metadata`` (outdoors) and the undocumented
message 233, in either order, plus, with a chest strap, an ``hrv`` message
of the beat intervals first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from pipeline.simulate.fitenc import Field, FitWriter, MessageDef, fit_time, scaled
from pipeline.simulate.signals import Samples

__all__ = ["DeviceInfo", "FitActivity", "build_fit", "SPORTS", "SUB_SPORTS"]

SPORTS = {"running": 1, "cycling": 2}
SUB_SPORTS = {"generic": 0, "treadmill": 1, "street": 2, "trail": 3, "road": 7}

F = Field
FILE_ID = MessageDef(0, (
    F("type", 0, "enum"), F("manufacturer", 1, "uint16"), F("product", 2, "uint16"),
    F("serial_number", 3, "uint32z"), F("time_created", 4, "uint32"),
))
FILE_CREATOR = MessageDef(49, (F("software_version", 0, "uint16"),))
EVENT = MessageDef(21, (
    F("timestamp", 253, "uint32"), F("data", 3, "uint32"), F("event", 0, "enum"),
    F("event_type", 1, "enum"), F("event_group", 4, "uint8"),
))
DEVICE_INFO = MessageDef(23, (
    F("timestamp", 253, "uint32"), F("serial_number", 3, "uint32z"), F("manufacturer", 2, "uint16"),
    F("product", 4, "uint16"), F("software_version", 5, "uint16"), F("device_index", 0, "uint8"),
    F("device_type", 1, "uint8"), F("source_type", 25, "enum"),
))
_REC_POS = (F("position_lat", 0, "sint32"), F("position_long", 1, "sint32"))
_REC_BASE = (
    F("distance", 5, "uint32"), F("enhanced_speed", 73, "uint32"), F("enhanced_altitude", 78, "uint32"),
    F("heart_rate", 3, "uint8"), F("cadence", 4, "uint8"),
)
_REC_FRAC = (F("fractional_cadence", 53, "uint8"),)
# a Forerunner 955's record after the positions (field numbers and sizes as a real file has them)
_REC_CURRENT = (
    F("distance", 5, "uint32"), F("enhanced_speed", 73, "uint32"), F("enhanced_altitude", 78, "uint32"),
    F("unknown_140", 140, "uint32"), F("power", 7, "uint16"), F("vertical_oscillation", 39, "uint16"),
    F("stance_time_percent", 40, "uint16"), F("stance_time", 41, "uint16"), F("vertical_ratio", 83, "uint16"),
    F("stance_time_balance", 84, "uint16"), F("step_length", 85, "uint16"), F("unknown_87", 87, "uint16"),
    F("heart_rate", 3, "uint8"), F("cadence", 4, "uint8"), F("temperature", 13, "sint8"),
    F("activity_type", 42, "enum"), F("fractional_cadence", 53, "uint8"), F("unknown_107", 107, "enum"),
    *(F(f"unknown_{k}", k, "uint8") for k in (134, 135, 136, 137, 138, 143)),
)
HRV = MessageDef(78, (F("time", 0, "uint16", count=5),))  # beat intervals (ms), up to five per record
GPS_METADATA = MessageDef(160, (F("enhanced_altitude", 3, "uint32"), F("enhanced_speed", 4, "uint32")))
MESG_233 = MessageDef(233, (F("unknown_2", 2, "byte", count=4),))  # undocumented; a Forerunner 955 writes it
LAP = MessageDef(19, (
    F("timestamp", 253, "uint32"), F("start_time", 2, "uint32"),
    F("start_position_lat", 3, "sint32"), F("start_position_long", 4, "sint32"),
    F("end_position_lat", 5, "sint32"), F("end_position_long", 6, "sint32"),
    F("total_elapsed_time", 7, "uint32"), F("total_timer_time", 8, "uint32"),
    F("total_distance", 9, "uint32"), F("total_cycles", 10, "uint32"),
    F("enhanced_avg_speed", 110, "uint32"), F("enhanced_max_speed", 111, "uint32"),
    F("message_index", 254, "uint16"), F("total_calories", 11, "uint16"),
    F("total_ascent", 21, "uint16"), F("total_descent", 22, "uint16"),
    F("event", 0, "enum"), F("event_type", 1, "enum"),
    F("avg_heart_rate", 15, "uint8"), F("max_heart_rate", 16, "uint8"),
    F("avg_cadence", 17, "uint8"), F("max_cadence", 18, "uint8"),
    F("intensity", 23, "enum"), F("lap_trigger", 24, "enum"), F("sport", 25, "enum"),
    F("avg_fractional_cadence", 80, "uint8"),
))
SESSION = MessageDef(18, (
    F("timestamp", 253, "uint32"), F("start_time", 2, "uint32"),
    F("start_position_lat", 3, "sint32"), F("start_position_long", 4, "sint32"),
    F("total_elapsed_time", 7, "uint32"), F("total_timer_time", 8, "uint32"),
    F("total_distance", 9, "uint32"), F("total_cycles", 10, "uint32"),
    F("enhanced_avg_speed", 124, "uint32"), F("enhanced_max_speed", 125, "uint32"),
    F("message_index", 254, "uint16"), F("total_calories", 11, "uint16"),
    F("total_ascent", 22, "uint16"), F("total_descent", 23, "uint16"),
    F("first_lap_index", 25, "uint16"), F("num_laps", 26, "uint16"),
    F("event", 0, "enum"), F("event_type", 1, "enum"), F("sport", 5, "enum"), F("sub_sport", 6, "enum"),
    F("avg_heart_rate", 16, "uint8"), F("max_heart_rate", 17, "uint8"),
    F("avg_cadence", 18, "uint8"), F("max_cadence", 19, "uint8"),
    F("trigger", 28, "enum"), F("avg_fractional_cadence", 92, "uint8"),
))
ACTIVITY = MessageDef(34, (
    F("timestamp", 253, "uint32"), F("total_timer_time", 0, "uint32"), F("local_timestamp", 5, "uint32"),
    F("num_sessions", 1, "uint16"), F("type", 2, "enum"), F("event", 3, "enum"), F("event_type", 4, "enum"),
))

L_FILE_ID, L_CREATOR, L_EVENT, L_DEVICE, L_RECORD, L_LAP, L_SESSION, L_ACTIVITY, L_HRV, L_GPS_META, L_233 = range(11)
EV_TIMER, EV_SESSION, EV_LAP, EV_ACTIVITY = 0, 8, 9, 26
ET_START, ET_STOP, ET_STOP_ALL = 0, 1, 4


def record_def(has_gps: bool, fractional: bool, current: bool = False) -> MessageDef:
    """The record layout: positions only with GPS, fractional cadence only for running (older watches)."""
    fields = (F("timestamp", 253, "uint32"),) + (_REC_POS if has_gps else ())
    if current:
        return MessageDef(20, fields + _REC_CURRENT)
    return MessageDef(20, fields + _REC_BASE + (_REC_FRAC if fractional else ()))


@dataclass(frozen=True)
class DeviceInfo:
    """The watch that wrote the file."""

    product: int
    serial: int
    software_version: int = 2170  # x 0.01
    current: bool = False  # a current Garmin's records, with gps_metadata and message 233 after each
    chest_strap: bool = False  # a current Garmin with an HRM-Pro: running dynamics, hrv after each record


@dataclass(frozen=True)
class FitActivity:
    """A written FIT file and where its parts are (for truncating / corrupting it)."""

    data: bytes
    record_offsets: np.ndarray  # byte offset of each record data message in ``data``
    record_size: int  # bytes per record data message
    n_laps: int
    lap_bounds: list[tuple[int, int]]  # (first sample, last sample) of each lap


def _cadence_summary(s: Samples, idx: np.ndarray, cycling: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """avg cadence (integer part), avg fractional part (1/128), max cadence per segment."""
    cad128 = s.cadence_raw * 128 + s.cadence_frac
    counts = np.diff(np.append(idx, s.n))
    moving = cad128 > 0
    sums = np.add.reduceat(cad128, idx)
    nz = np.add.reduceat(moving.astype(np.int64), idx) if cycling else counts
    avg128 = np.round(sums / np.maximum(nz, 1)).astype(np.int64)
    avg, frac = np.divmod(avg128, 128)
    return avg, (frac if not cycling else np.zeros_like(frac)), np.maximum.reduceat(s.cadence_raw, idx)


def build_fit(
    s: Samples,
    *,
    start_utc: datetime,
    utc_offset_s: int,
    sport: str,
    sub_sport: str,
    device: DeviceInfo,
    lap_m: float,
    footpod_serial: int | None = None,
) -> FitActivity:
    """Encode ``s`` as a complete FIT activity file.

    Parameters
    ----------
    s
        The samples (one record each).
    start_utc
        Aware start instant (the first record's timestamp).
    utc_offset_s
        Local time minus UTC, written as ``activity.local_timestamp - timestamp``.
    sport, sub_sport
        Keys of :data:`SPORTS` / :data:`SUB_SPORTS`.
    device
        The watch (Garmin product id, serial number).
    lap_m
        Auto-lap distance (1000 m or one mile).
    footpod_serial
        Adds a stride-sensor ``device_info`` (treadmill runs).

    Returns
    -------
    FitActivity
        The file's bytes and the byte offset of every record.
    """
    cycling = sport == "cycling"
    t0 = fit_time(start_utc)
    ts = t0 + s.elapsed_s
    t_end = int(ts[-1])
    w = FitWriter()
    w.define(L_FILE_ID, FILE_ID)
    w.write(L_FILE_ID, {"type": 4, "manufacturer": 1, "product": device.product,
                        "serial_number": device.serial, "time_created": t0})
    w.define(L_CREATOR, FILE_CREATOR)
    w.write(L_CREATOR, {"software_version": device.software_version})
    w.define(L_EVENT, EVENT)
    w.write(L_EVENT, {"timestamp": t0, "data": 0, "event": EV_TIMER, "event_type": ET_START, "event_group": 0})
    w.define(L_DEVICE, DEVICE_INFO)
    w.write(L_DEVICE, {"timestamp": t0, "serial_number": device.serial, "manufacturer": 1,
                       "product": device.product, "software_version": device.software_version,
                       "device_index": 0, "source_type": 5})
    if footpod_serial is not None:
        w.write(L_DEVICE, {"timestamp": t0, "serial_number": footpod_serial, "manufacturer": 1,
                           "product": 2, "software_version": 140, "device_index": 1,
                           "device_type": 124, "source_type": 1})

    rdef = record_def(s.has_gps, not cycling, device.current)
    w.define(L_RECORD, rdef)
    cols = {
        "timestamp": ts,
        "distance": s.distance_cm,
        "enhanced_speed": s.speed_mmps,
        "enhanced_altitude": scaled(s.altitude_m, 5.0, 500.0),
        "heart_rate": s.hr_bpm,
        "cadence": s.cadence_raw,
    }
    if s.has_gps:
        cols["position_lat"] = s.lat_semi
        cols["position_long"] = s.lon_semi
    if not cycling:
        cols["fractional_cadence"] = s.cadence_frac
    if device.current:
        cols.update(_current_values(s, device, int(t0), cycling))
    records = w.encode(L_RECORD, cols)
    rec_size = records.dtype.itemsize
    rows = records.view(np.uint8).reshape(s.n, rec_size)
    if device.current:
        rows = _with_trailers(w, s, cols, rows, device, int(t0))
    raw_records = rows.tobytes()
    stride = rows.shape[1]  # bytes from one record to the next

    # Laps: boundaries at every lap_m of distance; lap i spans samples [b_i, b_{i+1}].
    n = s.n
    marks = lap_m * np.arange(1, int(s.distance_m[-1] // lap_m) + 1)
    ends = np.searchsorted(s.distance_cm, np.round(marks * 100.0))
    ends = ends[(ends > 0) & (ends < n - 1)]
    starts = np.concatenate([[0], ends])
    lap_last = np.concatenate([ends, [n - 1]])
    n_laps = int(starts.size)
    moving_t = np.arange(n)  # timer seconds: one record per moving second
    hr_sum = np.add.reduceat(s.hr_bpm, starts)
    hr_avg = np.round(hr_sum / np.diff(np.append(starts, n))).astype(np.int64)
    hr_max = np.maximum.reduceat(s.hr_bpm, starts)
    sp_max = np.maximum.reduceat(s.speed_mmps, starts)
    cad_avg, cad_frac, cad_max = _cadence_summary(s, starts, cycling)
    alt = s.altitude_m
    d_alt = np.diff(alt, prepend=alt[0])
    up = np.add.reduceat(np.where(d_alt > 0, d_alt, 0.0), starts)
    down = np.add.reduceat(np.where(d_alt < 0, -d_alt, 0.0), starts)
    lap_dist = s.distance_cm[lap_last] - s.distance_cm[starts]
    lap_timer = (moving_t[lap_last] - moving_t[starts]) * 1000
    lap_elapsed = (ts[lap_last] - ts[starts]) * 1000
    lap_vals = {
        "timestamp": ts[lap_last], "start_time": ts[starts],
        "total_elapsed_time": lap_elapsed, "total_timer_time": lap_timer,
        "total_distance": lap_dist,
        "total_cycles": np.round(lap_timer / 1000.0 / 60.0 * cad_avg).astype(np.int64),
        "enhanced_avg_speed": np.round(lap_dist * 10.0 / np.maximum(lap_timer / 1000.0, 1.0)).astype(np.int64),
        "enhanced_max_speed": sp_max,
        "message_index": np.arange(n_laps), "total_calories": np.round(lap_dist / 100000.0 * 68.0).astype(np.int64),
        "total_ascent": np.round(up).astype(np.int64), "total_descent": np.round(down).astype(np.int64),
        "event": EV_LAP, "event_type": ET_STOP,
        "avg_heart_rate": hr_avg, "max_heart_rate": hr_max,
        "avg_cadence": cad_avg, "max_cadence": cad_max,
        "intensity": 0, "lap_trigger": np.where(np.arange(n_laps) == n_laps - 1, 7, 2),
        "sport": SPORTS[sport],
        "avg_fractional_cadence": None if cycling else cad_frac,
    }
    if s.has_gps:
        lap_vals.update({
            "start_position_lat": s.lat_semi[starts], "start_position_long": s.lon_semi[starts],
            "end_position_lat": s.lat_semi[lap_last], "end_position_long": s.lon_semi[lap_last],
        })
    w.define(L_LAP, LAP)
    laps = w.encode(L_LAP, lap_vals, n_laps)

    # Interleave: after record k come the lap ending there and/or the pause events.
    inserts: dict[int, list[bytes]] = {}
    for i, k in enumerate(lap_last[:-1].tolist()):
        inserts.setdefault(k, []).append(laps[i : i + 1].tobytes())
    for k, dur in s.pauses:
        stop = w.encode(L_EVENT, {"timestamp": int(ts[k]), "data": 0, "event": EV_TIMER,
                                  "event_type": ET_STOP_ALL, "event_group": 0})
        start = w.encode(L_EVENT, {"timestamp": int(ts[k]) + dur, "data": 0, "event": EV_TIMER,
                                   "event_type": ET_START, "event_group": 0})
        inserts.setdefault(k, []).extend([stop.tobytes(), start.tobytes()])
    records_offset = 14 + w.size
    shift = np.zeros(n, dtype=np.int64)  # bytes of inserted messages before each record
    prev = 0
    for k in sorted(inserts):
        w.write_raw(raw_records[prev * stride : (k + 1) * stride])
        extra = 0
        for chunk in inserts[k]:
            w.write_raw(chunk)
            extra += len(chunk)
        shift[k + 1 :] += extra
        prev = k + 1
    w.write_raw(raw_records[prev * stride :])
    record_offsets = records_offset + np.arange(n, dtype=np.int64) * stride + shift

    w.write(L_EVENT, {"timestamp": t_end, "data": 0, "event": EV_TIMER, "event_type": ET_STOP_ALL,
                      "event_group": 0})
    w.write_raw(laps[n_laps - 1 :].tobytes())

    all_idx = np.array([0])
    s_avg, s_frac, s_max = _cadence_summary(s, all_idx, cycling)
    timer_ms = int(moving_t[-1]) * 1000
    total_cm = int(s.distance_cm[-1])
    ascent, descent = s.ascent_descent_m()
    w.define(L_SESSION, SESSION)
    session = {
        "timestamp": t_end, "start_time": t0,
        "total_elapsed_time": (t_end - t0) * 1000, "total_timer_time": timer_ms,
        "total_distance": total_cm,
        "total_cycles": int(round(timer_ms / 60000.0 * float(s_avg[0]))),
        "enhanced_avg_speed": int(round(total_cm * 10.0 / max(timer_ms / 1000.0, 1.0))),
        "enhanced_max_speed": int(s.speed_mmps.max()),
        "message_index": 0, "total_calories": int(round(total_cm / 100000.0 * 68.0)),
        "total_ascent": int(round(ascent)), "total_descent": int(round(descent)),
        "first_lap_index": 0, "num_laps": n_laps,
        "event": EV_SESSION, "event_type": ET_STOP, "sport": SPORTS[sport], "sub_sport": SUB_SPORTS[sub_sport],
        "avg_heart_rate": int(round(float(s.hr_bpm.mean()))), "max_heart_rate": int(s.hr_bpm.max()),
        "avg_cadence": int(s_avg[0]), "max_cadence": int(s_max[0]),
        "trigger": 0, "avg_fractional_cadence": None if cycling else int(s_frac[0]),
    }
    if s.has_gps:
        session["start_position_lat"] = int(s.lat_semi[0])
        session["start_position_long"] = int(s.lon_semi[0])
    w.write(L_SESSION, session)
    w.define(L_ACTIVITY, ACTIVITY)
    w.write(L_ACTIVITY, {"timestamp": t_end, "total_timer_time": timer_ms, "local_timestamp": t_end + utc_offset_s,
                         "num_sessions": 1, "type": 0, "event": EV_ACTIVITY, "event_type": ET_STOP})
    bounds = list(zip(starts.tolist(), lap_last.tolist()))
    return FitActivity(w.to_bytes(), record_offsets, rec_size, n_laps, bounds)


def _current_values(s: Samples, device: DeviceInfo, t0: int, cycling: bool) -> dict[str, np.ndarray | int | None]:
    """A current Garmin's extra record fields, raw: power, temperature, running dynamics, undocumented bytes."""
    rng = np.random.default_rng([device.serial, t0])
    n = s.n
    speed = s.speed_mps
    mass_kg = 58.0 + device.serial % 25
    climb = np.clip(np.gradient(s.altitude_m) if n > 1 else np.zeros(n), -0.5, 0.5)  # m/s (one record a second)
    moving = speed > 0.3
    power = np.where(moving, mass_kg * (1.04 * speed + 0.8 * 9.81 * climb), 0.0) * rng.normal(1.0, 0.03, n)
    temp = 27.0 + 3.0 * np.tanh(np.arange(n) / 900.0) + rng.normal(0.0, 0.4, n)
    out: dict[str, np.ndarray | int | None] = {
        "unknown_140": s.speed_mmps, "unknown_87": 0, "unknown_107": 0,
        "temperature": np.round(temp).astype(np.int64), "activity_type": 2 if cycling else 1,
        "unknown_135": rng.integers(40, 70, n), "unknown_136": s.hr_bpm, "unknown_137": 63, "unknown_138": 63,
        "unknown_143": rng.integers(20, 50, n),
    }
    if cycling:
        out["fractional_cadence"] = None  # the running layout: the watch writes it invalid on a ride
        return out
    out["power"] = np.round(np.clip(power, 0.0, 900.0)).astype(np.int64)
    if device.chest_strap:
        spm = np.maximum(s.cadence_spm, 1.0)
        step_mm = np.where(moving, speed / (spm / 60.0) * 1000.0, 0.0)
        vo_mm = np.clip(rng.normal(84.0, 4.0, n) - 4.0 * (speed - 3.0), 55.0, 120.0)
        stance_ms = np.clip(rng.normal(262.0, 6.0, n) - 28.0 * (speed - 3.0), 170.0, 360.0)
        out.update({
            "vertical_oscillation": np.where(moving, np.round(vo_mm * 10.0), 0xFFFF).astype(np.int64),
            "stance_time": np.where(moving, np.round(stance_ms * 10.0), 0xFFFF).astype(np.int64),
            "stance_time_percent": np.where(moving, np.round(stance_ms / (60000.0 / spm) * 10000.0),
                                            0xFFFF).astype(np.int64),
            "vertical_ratio": np.where(moving, np.round(vo_mm / np.maximum(step_mm, 1.0) * 10000.0),
                                       0xFFFF).astype(np.int64),
            "stance_time_balance": np.where(moving, np.round(rng.normal(49.8, 0.6, n) * 100.0),
                                            0xFFFF).astype(np.int64),
            "step_length": np.where(moving, np.round(step_mm * 10.0), 0xFFFF).astype(np.int64),
        })
    return out


def _with_trailers(w: FitWriter, s: Samples, cols: dict[str, object], rows: np.ndarray, device: DeviceInfo,
                   t0: int) -> np.ndarray:
    """Each record followed by what a current Garmin writes after it: [hrv,] gps_metadata and message 233.

    The last two swap places after about one record in twelve, as in a real Forerunner 955 file.
    """
    rng = np.random.default_rng([device.serial, t0, 233])
    n = s.n
    parts = []
    if device.chest_strap:
        w.define(L_HRV, HRV)
        beats = np.clip(np.round(s.hr_bpm / 60.0 + rng.uniform(-0.5, 0.5, n)), 1, 5).astype(np.int64)
        rr_ms = np.round(60000.0 / np.maximum(s.hr_bpm, 30)[:, None] * rng.normal(1.0, 0.02, (n, 5)))
        rr_ms = np.where(np.arange(5)[None, :] < beats[:, None], rr_ms, 0xFFFF).astype(np.int64)
        parts.append(w.encode(L_HRV, {"time": rr_ms}, n).view(np.uint8).reshape(n, -1))
    w.define(L_233, MESG_233)
    m233 = np.tile(np.array([10, 0, 0, 200]), (n, 1))
    tail = [w.encode(L_233, {"unknown_2": m233}, n).view(np.uint8).reshape(n, -1)]
    if s.has_gps:
        w.define(L_GPS_META, GPS_METADATA)
        gps = w.encode(L_GPS_META, {"enhanced_altitude": cols["enhanced_altitude"],
                                     "enhanced_speed": cols["enhanced_speed"]}, n).view(np.uint8).reshape(n, -1)
        swap = (rng.uniform(size=n) < 1 / 12)[:, None]
        tail = [np.where(swap, np.hstack([tail[0], gps]), np.hstack([gps, tail[0]]))]
    return np.hstack([rows, *parts, *tail])
