"""The FIT device clock: stand-in instants in the reader, none in the normalised activity.

A FIT file whose times are seconds since the device was switched on (FIT
``date_time`` < 0x10000000, e.g. the Forerunner 70's ANT-FS dumps) holds no
date. Its reader (:mod:`.fit`, :mod:`.fastfit`) marks the session
``device_clock`` and gives every instant as a stand-in,
:func:`device_instant` (``FIT_EPOCH + device seconds``).
:mod:`pipeline.normalise` treats stand-ins like any other times, so elapsed
and moving time, pauses, laps and every range and monotonicity check work as
usual (differences of stand-ins are true durations); it skips only the
calendar check (2000-01-01 .. now) and then calls :func:`undate`, which
removes every instant before anything is stored:

* ``activities``: ``start_utc``, ``end_utc``, ``utc_offset_s`` and
  ``timezone`` null, ``tz_source`` ``none``, ``device_time_s`` the session
  start in seconds since power-on as the file holds it (null for every
  activity with a date);
* ``samples.t_utc``, ``laps.start_utc``/``end_utc`` and
  ``pauses.start_utc``/``end_utc`` null; ``elapsed_s``, ``moving_s``,
  distances, lap and pause durations kept.

No date is ever invented (``activity.local_timestamp`` in such files is the
download time, not the run's), so such an activity joins no pain report and
counts in no date-based analysis. This module imports no decoder.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl

from pipeline.schema import UTC_DT, NormalisedActivity
from pipeline.sources import RawSession

__all__ = ["FIT_EPOCH", "DEVICE_RELATIVE_LIMIT", "device_instant", "undate"]

#: FIT ``date_time`` 0 (1989-12-31T00:00:00Z).
FIT_EPOCH = datetime(1989, 12, 31, tzinfo=timezone.utc)
#: ``date_time`` values below this are seconds since device power-on, not dates.
DEVICE_RELATIVE_LIMIT = 0x10000000


def device_instant(seconds: int | float) -> datetime:
    """The stand-in instant of a device-relative FIT time (``FIT_EPOCH + seconds``; only differences count)."""
    return FIT_EPOCH + timedelta(seconds=seconds)


def undate(raw: RawSession, act: NormalisedActivity) -> NormalisedActivity:
    """``act`` without instants when ``raw`` is on the device clock (else ``act`` itself).

    Parameters
    ----------
    raw
        The session as read (``device_clock`` says whether its instants are stand-ins).
    act
        The session normalised with those stand-ins.

    Returns
    -------
    NormalisedActivity
        The same durations, distances and values; ``device_time_s`` set and
        every instant null (see the module doc).
    """
    if not raw.device_clock:
        return act
    row = dict(act.activity)
    start = row["start_utc"]
    row.update(
        start_utc=None,
        end_utc=None,
        device_time_s=None if start is None else round((start - FIT_EPOCH).total_seconds()),
        utc_offset_s=None,
        timezone=None,
        tz_source="none",
    )
    no_time = pl.lit(None, dtype=UTC_DT)
    return NormalisedActivity(
        activity=row,
        samples=act.samples.with_columns(no_time.alias("t_utc")),
        laps=act.laps.with_columns(no_time.alias("start_utc"), no_time.alias("end_utc")),
        pauses=act.pauses.with_columns(no_time.alias("start_utc"), no_time.alias("end_utc")),
    )
