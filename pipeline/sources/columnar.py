"""Samples as columns: what the fast readers hand to :mod:`pipeline.normalise`.

:class:`SampleColumns` holds one session's samples as numpy arrays (times as
int64 microseconds since the Unix epoch, UTC; values as float64 with NaN for
"absent"). It is also a read-only sequence of the same sample dicts the
classic readers produce (materialised on access), so any code written for
``RawSession.samples`` lists still works on it, only slower; the normaliser
takes its vectorised path when it sees this type.

The kernels below are the per-sample loops of the normaliser written with
numpy, with the same arithmetic in the same order, so both paths give
bit-identical floats (a golden test in ``tests/test_fastfit.py`` holds them
to that).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, overload

import numpy as np
import polars as pl

__all__ = [
    "SampleColumns",
    "columns_frame",
    "UNIX_EPOCH",
    "datetime_from_us",
    "us_from_datetime",
    "first_backward_step_us",
    "screen_mask",
    "first_sustained_run",
    "moving_seconds_us",
]

#: 1970-01-01T00:00:00Z.
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def datetime_from_us(us: int) -> datetime:
    """Microseconds since the Unix epoch -> aware UTC datetime (exact)."""
    return UNIX_EPOCH + timedelta(microseconds=int(us))


def us_from_datetime(value: datetime) -> int:
    """Aware datetime -> integer microseconds since the Unix epoch (exact)."""
    delta = value - UNIX_EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


class SampleColumns(Sequence[dict[str, Any]]):
    """One session's samples as columns.

    Parameters
    ----------
    t_us
        Sample times, int64 microseconds since 1970-01-01 UTC.
    index
        Position of each sample's record/point in its file (int64).
    values
        ``key -> float64 array`` for the keys of
        :class:`~pipeline.sources.RawSession` samples (NaN = absent).
    keys
        The value keys every materialised dict carries (None when absent);
        keys of ``values`` outside ``keys`` appear only when present.
    segment
        GPX/TCX segment number per sample (int64), or None.
    """

    __slots__ = ("t_us", "index", "values", "keys", "segment")

    def __init__(
        self,
        t_us: np.ndarray,
        index: np.ndarray,
        values: dict[str, np.ndarray],
        *,
        keys: tuple[str, ...] = (),
        segment: np.ndarray | None = None,
    ) -> None:
        self.t_us = np.asarray(t_us, dtype=np.int64)
        self.index = np.asarray(index, dtype=np.int64)
        self.values = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
        self.keys = keys
        self.segment = None if segment is None else np.asarray(segment, dtype=np.int64)
        n = len(self.t_us)
        if len(self.index) != n or any(len(v) != n for v in self.values.values()):
            raise ValueError("SampleColumns: columns of different lengths")
        if self.segment is not None and len(self.segment) != n:
            raise ValueError("SampleColumns: segment column of a different length")

    def __len__(self) -> int:
        return len(self.t_us)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(i, slice):
            return [self._row(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        return self._row(i)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for j in range(len(self)):
            yield self._row(j)

    def _row(self, j: int) -> dict[str, Any]:
        row: dict[str, Any] = {"index": int(self.index[j])}
        if self.segment is not None:
            row["segment"] = int(self.segment[j])
        row["t_utc"] = datetime_from_us(int(self.t_us[j]))
        for key in self.keys:
            col = self.values.get(key)
            v = None if col is None else float(col[j])
            row[key] = None if v is None or v != v else v
        for key, col in self.values.items():
            if key not in self.keys:
                v = float(col[j])
                if v == v:
                    row[key] = v
        return row

    def take(self, rows: np.ndarray) -> SampleColumns:
        """The samples at ``rows`` (an index or boolean array), in that order."""
        return SampleColumns(
            self.t_us[rows],
            self.index[rows],
            {k: v[rows] for k, v in self.values.items()},
            keys=self.keys,
            segment=None if self.segment is None else self.segment[rows],
        )

    def column(self, key: str) -> np.ndarray:
        """``values[key]``, or an all-NaN column when the key is absent."""
        col = self.values.get(key)
        return col if col is not None else np.full(len(self), np.nan)

    def __repr__(self) -> str:
        return f"SampleColumns(n={len(self)}, keys={sorted(self.values)})"


# --------------------------------------------------------------------------- kernels


def first_backward_step_us(t_us: np.ndarray, jitter_us: int) -> int | None:
    """Index of the first time more than ``jitter_us`` before the latest earlier one, else None."""
    if len(t_us) < 2:
        return None
    latest = np.maximum.accumulate(t_us[:-1])
    bad = np.flatnonzero(latest - t_us[1:] > jitter_us)
    return int(bad[0]) + 1 if len(bad) else None


def screen_mask(values: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, int]:
    """``(out of range mask, present count)`` of a NaN-for-absent column."""
    present = ~np.isnan(values)
    bad = present & ((values < lo) | (values > hi))
    return bad, int(np.count_nonzero(present))


def first_sustained_run(over: np.ndarray, length: int) -> int | None:
    """Index where the first run of ``length`` consecutive True values starts, else None."""
    if length <= 0 or len(over) < length:
        return None
    csum = np.concatenate(([0], np.cumsum(over, dtype=np.int64)))
    full = np.flatnonzero(csum[length:] - csum[:-length] == length)
    return int(full[0]) if len(full) else None


def moving_seconds_us(t_us: np.ndarray, start_us: int, pauses_us: Sequence[tuple[int, int]]) -> np.ndarray:
    """Timer seconds at each (sorted) time: elapsed since start minus the pauses before it.

    The same sums in the same order as :func:`pipeline.normalise.moving_seconds`:
    completed pauses are added in order, then the pauses in progress.
    """
    elapsed = (t_us - start_us) / 1e6
    if not pauses_us:
        return elapsed - 0.0
    ordered = sorted(pauses_us)
    starts = np.array([a for a, _ in ordered], dtype=np.int64)
    ends = np.array([b for _, b in ordered], dtype=np.int64)
    durations = [(b - a) / 1e6 for a, b in ordered]
    done = [0.0]
    for d in durations:
        done.append(done[-1] + d)
    # j(t): the first pause (in start order) whose end is after t (ends are scanned as a prefix)
    j = np.searchsorted(np.maximum.accumulate(ends), t_us, side="right")
    # k(t): the first pause starting at or after t
    k = np.searchsorted(starts, t_us, side="left")
    paused = np.asarray(done, dtype=np.float64)[j]
    for p in range(len(ordered)):
        active = (j <= p) & (p < k)
        if active.any():
            partial = (np.minimum(t_us[active], ends[p]) - starts[p]) / 1e6
            paused[active] = paused[active] + partial
    return elapsed - paused


def columns_frame(
    schema: dict[str, pl.DataType], *, activity_id: str, t_us: np.ndarray, columns: dict[str, np.ndarray | None]
) -> pl.DataFrame:
    """A frame with exactly ``schema``: ``activity_id`` repeated, ``t_utc`` from microseconds,
    every other column from ``columns`` (NaN -> null; absent -> all null)."""
    n = len(t_us)
    out = []
    for name, dtype in schema.items():
        if name == "activity_id":
            out.append(pl.repeat(activity_id, n, dtype=pl.String(), eager=True).alias(name))
        elif name == "t_utc":
            out.append(pl.Series(name, t_us, dtype=pl.Int64()).cast(dtype))
        else:
            values = columns.get(name)
            out.append(pl.Series(name, values if values is not None else np.full(n, np.nan), dtype=dtype,
                                 nan_to_null=True))
    return pl.DataFrame(out)
