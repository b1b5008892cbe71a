"""The DuckDB warehouse: the only place the project imports ``duckdb``.

:class:`Warehouse` is the locked read-write store the ingest writes and the
reports read; :func:`run_readonly_query` serves the coach's ``pipeline sql``
against the published snapshot; :func:`check_unlocked` is the cheap early
lock check of the CLI. Tables and views are documented in
``docs/warehouse.md``.

The names are imported on first use (PEP 562), so ``check_unlocked`` runs
without loading DuckDB and polars: a second ingest is told at once that the
warehouse is locked.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.warehouse._lock import check_unlocked
    from pipeline.warehouse.query import run_readonly_query
    from pipeline.warehouse.loads import FileLoad
    from pipeline.warehouse.store import Warehouse

__all__ = ["Warehouse", "FileLoad", "run_readonly_query", "check_unlocked"]

_HOMES = {
    "Warehouse": "pipeline.warehouse.store",
    "FileLoad": "pipeline.warehouse.loads",
    "run_readonly_query": "pipeline.warehouse.query",
    "check_unlocked": "pipeline.warehouse._lock",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
