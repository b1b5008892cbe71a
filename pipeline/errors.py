"""One exception tree for the whole package.

::

    PipelineError                 base of everything this package raises on purpose
     +-- InputError               a user's file or row is wrong; never a traceback
     |    +-- RejectedFile        an activity/pain file that cannot be loaded (names file + offset/line)
     |    +-- SkippedFile         a readable file that holds no activity (settings, monitoring, course)
     |    +-- PainRowError        one malformed pain-log row (names file:line)
     +-- WarehouseError           the DuckDB store
     |    +-- WarehouseLocked     another ingest holds the write lock
     +-- QueryRefused             ``pipeline sql`` refused a statement (write, file access, ...)

Every error carries the place it is about, so the CLI can print one line a
person can act on (``pain.csv:14: severity must be 0-10 (got 11)``).
Third-party exceptions are wrapped with ``raise ... from exc`` so
``__cause__`` keeps the original.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "PipelineError",
    "InputError",
    "RejectedFile",
    "SkippedFile",
    "PainRowError",
    "WarehouseError",
    "WarehouseLocked",
    "QueryRefused",
]


class PipelineError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(PipelineError):
    """A user's input is wrong. ``path`` and an optional place (``offset`` or ``line``)."""

    def __init__(
        self,
        reason: str,
        *,
        path: str | Path | None = None,
        offset: int | None = None,
        line: int | None = None,
    ) -> None:
        self.reason = reason
        self.path = str(path) if path is not None else None
        self.offset = offset
        self.line = line
        super().__init__(self.message)

    @property
    def where(self) -> str:
        if self.path is None:
            return ""
        if self.line is not None:
            return f"{self.path}:{self.line}"
        if self.offset is not None:
            return f"{self.path} (byte {self.offset})"
        return self.path

    @property
    def message(self) -> str:
        return f"{self.where}: {self.reason}" if self.where else self.reason


class RejectedFile(InputError):
    """An activity or pain file that cannot be loaded; the batch goes on."""


class SkippedFile(InputError):
    """A readable file that holds nothing to load (FIT settings/monitoring, TCX course, ...)."""


class PainRowError(InputError):
    """One malformed pain-log row; the other rows load."""


class WarehouseError(PipelineError):
    """The DuckDB warehouse could not do what was asked."""


class WarehouseLocked(WarehouseError):
    """Another process holds the warehouse write lock."""


class QueryRefused(PipelineError):
    """``pipeline sql`` refused a statement."""
