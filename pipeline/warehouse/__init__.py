"""The DuckDB warehouse: the only place the project imports ``duckdb``.

:class:`Warehouse` is the locked read-write store the ingest writes and the
reports read; :func:`run_readonly_query` serves the coach's ``pipeline sql``
against the published snapshot. Tables and views are documented in
``docs/warehouse.md``.
"""

from pipeline.warehouse.query import run_readonly_query
from pipeline.warehouse.store import Warehouse

__all__ = ["Warehouse", "run_readonly_query"]
