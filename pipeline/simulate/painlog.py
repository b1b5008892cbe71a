"""Pain-log rows as the athletes write them, and the truth behind each row.

Each report is built from a simulated activity and a planted onset sample.
The CSV row holds what the runner wrote (athlete-local date and clock, their
preferred unit, rounded or approximate distances); the truth holds the exact
planted onset (UTC instant, elapsed and moving seconds, device distance,
sample index) *and* what the written form implies (``implied``), so a test
can check both that the pipeline reads the row right and that it lands on the
right sample.

Onset forms written, by kind:

==================  ==================  =====================================================
form                example             implied
==================  ==================  =====================================================
``km``              ``9.6 km``          distance 9600 m, lo = hi (exact; runner rounded to 0.1 km)
``mi_approx``       ``~6 mi``           6 mi, lo/hi = 5.4-6.6 mi (± max(10 %, 0.5 mi), docs/pain-log.md)
``mi_range``        ``5-6 mi``          lo 5 mi, hi 6 mi, centre 5.5 mi
``mi_exact``        ``13 mi``           13 mi (planted at the first sample past it)
``clock``           ``08:34:12``        local wall-clock instant on ``date`` (exact second)
``clock_hm``        ``10:41``           local wall-clock minute (planted on that whole minute)
``elapsed``         ``+47:31``          timer (moving) time into the run (exact second)
``minutes``         ``47 min``          timer minutes (planted on that whole minute)
``instant``         ``2026-10-03T08:34:12+01:00``  exact instant; the ``date`` cell is left empty
``after``           ``after``           after the run on ``date``: no sample (status ``after_run``)
``next_day``        ``next day``        ``date`` is the day after the run: no sample (status ``next_day``)
==================  ==================  =====================================================
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np

__all__ = ["MILE_M", "PainRow", "OnsetPoint", "distance_form", "time_form", "write_csv", "CSV_COLUMNS"]

MILE_M = 1609.344
#: ``~`` intervals as docs/pain-log.md defines them: distance ± max(10 %, 0.5 mi) for miles.
APPROX_FRACTION = 0.10
APPROX_MIN_HALF_WIDTH_MI_M = 0.5 * MILE_M
CSV_COLUMNS = ("date", "run", "onset", "body_part", "side", "severity", "notes")


@dataclass(frozen=True)
class OnsetPoint:
    """The planted onset sample of an activity."""

    sample_index: int | None  # None: not a sample (``after`` / ``next day`` use the run's end)
    utc: datetime
    elapsed_s: float
    moving_s: float
    distance_m: float | None


@dataclass
class PainRow:
    """One CSV row plus its truth; ``sort_key`` orders the log."""

    sort_key: datetime
    date: str
    run: str
    onset: str
    body_part_raw: str
    body_part: str
    side: str
    severity: int
    notes: str
    truth: dict[str, Any] = field(default_factory=dict)
    activity: Any = None  # the simulated activity it reports on (None: no run)

    def cells(self) -> list[str]:
        return [self.date, self.run, self.onset, self.body_part_raw, self.side, str(self.severity), self.notes]


def _fmt_num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def distance_form(form: str, distance_m: float) -> tuple[str, dict[str, Any]]:
    """Written onset for a distance ``form`` and what it implies (metres, rounded to mm)."""
    text, implied = _distance_form(form, distance_m)
    implied["form"] = form
    return text, implied


def _distance_form(form: str, distance_m: float) -> tuple[str, dict[str, Any]]:
    if form == "km":
        km = round(distance_m / 100.0) / 10.0
        value = km * 1000.0
        return f"{km:.1f} km", {"kind": "distance", "approx": False, "distance_m": value,
                                "lo_m": value, "hi_m": value, "precision_m": 50.0}
    miles = distance_m / MILE_M
    if form == "mi_approx":
        m = round(miles)
        half = max(APPROX_FRACTION * m * MILE_M, APPROX_MIN_HALF_WIDTH_MI_M)
        return f"~{m} mi", {"kind": "distance", "approx": True, "distance_m": m * MILE_M,
                            "lo_m": max(m * MILE_M - half, 0.0), "hi_m": m * MILE_M + half,
                            "precision_m": MILE_M / 2}
    if form == "mi_range":
        a = math.floor(miles)
        return f"{a}-{a + 1} mi", {"kind": "distance", "approx": False, "distance_m": (a + 0.5) * MILE_M,
                                   "lo_m": a * MILE_M, "hi_m": (a + 1) * MILE_M, "precision_m": MILE_M / 2}
    if form == "mi_exact":
        m = round(miles)
        return f"{m} mi", {"kind": "distance", "approx": False, "distance_m": m * MILE_M,
                           "lo_m": m * MILE_M, "hi_m": m * MILE_M, "precision_m": 0.0}
    raise ValueError(f"unknown distance form {form!r}")


def time_form(form: str, onset: OnsetPoint, start_utc: datetime, tz: Any) -> tuple[str, dict[str, Any]]:
    """Written onset for a time ``form`` (clock, clock_hm, elapsed, minutes, instant)."""
    text, implied = _time_form(form, onset, start_utc, tz)
    implied["form"] = form
    return text, implied


def _time_form(form: str, onset: OnsetPoint, start_utc: datetime, tz: Any) -> tuple[str, dict[str, Any]]:
    local = onset.utc.astimezone(tz)
    if form == "clock":
        return local.strftime("%H:%M:%S"), {"kind": "clock", "approx": False, "utc": onset.utc}
    if form == "clock_hm":
        return local.strftime("%H:%M"), {"kind": "clock", "approx": False, "utc": onset.utc}
    if form == "instant":
        return local.isoformat(), {"kind": "instant", "approx": False, "utc": onset.utc}
    sec = int(round(onset.moving_s))  # elapsed forms are timer time, as the watch shows it
    if form == "elapsed":
        h, rem = divmod(sec, 3600)
        m, s = divmod(rem, 60)
        text = f"+{h}:{m:02d}:{s:02d}" if h else f"+{m}:{s:02d}"
        return text, {"kind": "elapsed", "approx": False, "moving_s": float(sec)}
    if form == "minutes":
        return f"{sec // 60} min", {"kind": "elapsed", "approx": False, "moving_s": float(sec // 60 * 60)}
    raise ValueError(f"unknown time form {form!r}")


def iso_z(value: datetime | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SSZ`` for an aware instant (None stays None)."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def truth_entry(
    *,
    athlete_id: str,
    source_file: str,
    row: PainRow,
    expected_status: str,
    effect: str,
    activity_file: str | None,
    activity_date_local: date | None,
    onset: OnsetPoint | None,
    implied: dict[str, Any],
) -> dict[str, Any]:
    """The truth of one report (``line`` is filled in when the CSV is written)."""
    lo = implied.get("lo_m")
    hi = implied.get("hi_m")
    return {
        "athlete_id": athlete_id,
        "source_file": source_file,
        "line": None,
        "date": row.date,
        "run": row.run,
        "onset_raw": row.onset,
        "onset_kind": implied.get("kind"),
        "onset_form": implied.get("form"),
        "onset_approx": bool(implied.get("approx", False)),
        "body_part": row.body_part,
        "body_part_raw": row.body_part_raw,
        "side": row.side or None,
        "severity": row.severity,
        "effect": effect,
        "expected_status": expected_status,
        "activity_file": activity_file,
        "activity_date_local": activity_date_local.isoformat() if activity_date_local else None,
        "onset_utc": iso_z(onset.utc) if onset else None,
        "onset_elapsed_s": onset.elapsed_s if onset else None,
        "onset_moving_s": onset.moving_s if onset else None,
        "onset_distance_m": onset.distance_m if onset else None,
        "sample_index": onset.sample_index if onset else None,
        "onset_distance_lo_m": round(lo, 3) if lo is not None else None,
        "onset_distance_hi_m": round(hi, 3) if hi is not None else None,
        "implied": {
            "distance_m": round(implied["distance_m"], 3) if "distance_m" in implied else None,
            "distance_precision_m": round(implied["precision_m"], 3) if "precision_m" in implied else None,
            "moving_s": implied.get("moving_s"),
            "utc": iso_z(implied.get("utc")),
        },
    }


def write_csv(rows: list[PainRow]) -> tuple[bytes, list[PainRow]]:
    """The CSV bytes (header + rows by ``sort_key``) and the rows in written order, lines set."""
    ordered = sorted(rows, key=lambda r: (r.sort_key, r.onset))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for line, row in enumerate(ordered, start=2):
        writer.writerow(row.cells())
        row.truth["line"] = line
    return buf.getvalue().encode("utf-8"), ordered


def onset_point(start_utc: datetime, elapsed_s: np.ndarray, distance_cm: np.ndarray | None, i: int) -> OnsetPoint:
    """The onset at sample ``i`` of an activity (moving time = sample index at 1 Hz)."""
    el = float(elapsed_s[i])
    return OnsetPoint(
        sample_index=int(i),
        utc=start_utc + timedelta(seconds=el),
        elapsed_s=el,
        moving_s=float(i),
        distance_m=float(distance_cm[i]) / 100.0 if distance_cm is not None else None,
    )
