"""Which stored activity a new one duplicates: the overlap rule, and an in-memory index of it.

One rule, used by :meth:`pipeline.warehouse.store.Warehouse.find_overlapping`
(a query per call) and by :class:`OverlapIndex` (the ingest's copy of every
activity's span, so a batch of files needs no query per file and sees the
files of its own batch before they are committed).

Two spans of the same athlete are the same activity when they overlap by at
least ``min_overlap`` of the shorter span. A zero-length span overlaps fully
when it lies inside the other. With several matches the largest overlap
fraction wins, then the longer overlap, then the earlier start, then the
smaller id.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pipeline.errors import WarehouseError
from pipeline.schema import as_utc

__all__ = ["best_overlap", "OverlapIndex"]

Span = tuple[datetime, datetime, str]  # start, end (>= start), activity_id


def _span(start_utc: datetime, end_utc: datetime | None) -> tuple[datetime, datetime]:
    start = as_utc(start_utc)
    end = as_utc(end_utc) if end_utc is not None else start
    if end < start:
        raise WarehouseError(f"overlap: end {end} before start {start}")
    return start, end


def best_overlap(
    candidates: Iterable[Span], start_utc: datetime, end_utc: datetime | None, *, min_overlap: float = 0.5
) -> str | None:
    """The id among ``candidates`` that ``[start_utc, end_utc]`` duplicates, or None.

    ``end_utc=None`` is a zero-length span; naive datetimes are UTC.
    """
    if not 0.0 < min_overlap <= 1.0:
        raise WarehouseError(f"min_overlap must be in (0, 1] (got {min_overlap})")
    start, end = _span(start_utc, end_utc)
    best: tuple[float, float, datetime, str] | None = None
    for a_start, a_end, aid in candidates:
        a_start, a_end = as_utc(a_start), as_utc(a_end)
        overlap = (min(end, a_end) - max(start, a_start)).total_seconds()
        if overlap < 0:
            continue
        shorter = min((end - start).total_seconds(), (a_end - a_start).total_seconds())
        fraction = 1.0 if shorter <= 0 else overlap / shorter
        if fraction + 1e-12 < min_overlap:
            continue
        key = (-fraction, -overlap, a_start, aid)
        if best is None or key < best:
            best = key
    return best[3] if best is not None else None


@dataclass
class _AthleteSpans:
    starts: list[datetime] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    longest: timedelta = timedelta(0)


class OverlapIndex:
    """Every activity's span by athlete, sorted by start: :func:`best_overlap` without a query.

    Build it from the warehouse's activities (:meth:`add` each), then
    :meth:`find` and :meth:`add` as files are queued for loading. A lookup
    reads only the spans that can overlap (by start, bounded by the longest
    span of the athlete), so it stays fast over years of history.
    """

    def __init__(self) -> None:
        self._by_athlete: dict[str, _AthleteSpans] = {}

    def __len__(self) -> int:
        return sum(len(a.spans) for a in self._by_athlete.values())

    def add(self, athlete_id: str, activity_id: str, start_utc: datetime | None, end_utc: datetime | None) -> None:
        """Index an activity's span (one without a start, e.g. a device-relative clock, is not indexed)."""
        if start_utc is None:
            return
        start, end = _span(start_utc, end_utc)
        spans = self._by_athlete.setdefault(athlete_id, _AthleteSpans())
        i = bisect.bisect_right(spans.starts, start)
        spans.starts.insert(i, start)
        spans.spans.insert(i, (start, end, activity_id))
        spans.longest = max(spans.longest, end - start)

    def find(
        self, athlete_id: str, start_utc: datetime | None, end_utc: datetime | None, *, min_overlap: float = 0.5
    ) -> str | None:
        """As :meth:`Warehouse.find_overlapping`, over the spans added so far.

        An activity without a start (a device-relative clock) duplicates nothing.
        """
        spans = self._by_athlete.get(athlete_id)
        if start_utc is None:
            return None
        if spans is None:
            return best_overlap((), start_utc, end_utc, min_overlap=min_overlap)
        start, end = _span(start_utc, end_utc)
        lo = bisect.bisect_left(spans.starts, start - spans.longest)
        hi = bisect.bisect_right(spans.starts, end)
        return best_overlap(spans.spans[lo:hi], start, end, min_overlap=min_overlap)
