"""Settings: paths and limits, with repo-layout defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings", "REPO_ROOT", "DEFAULT_SEED"]

#: The checkout this package lives in (``pipeline/..``).
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Seed of the bundled sample data (``make run`` generates ``data/raw`` with it).
DEFAULT_SEED = 42


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value) if value else default


@dataclass(frozen=True)
class Settings:
    """Where things live and how far a single file may push the process.

    Every path defaults to the repository layout and can be overridden by the
    CLI options ``--raw``, ``--warehouse``, ``--reports`` or the environment
    variables ``PIPELINE_RAW``, ``PIPELINE_WAREHOUSE``, ``PIPELINE_REPORTS``.
    """

    raw_dir: Path = field(default_factory=lambda: _env_path("PIPELINE_RAW", REPO_ROOT / "data" / "raw"))
    warehouse_dir: Path = field(
        default_factory=lambda: _env_path("PIPELINE_WAREHOUSE", REPO_ROOT / "data" / "warehouse")
    )
    reports_dir: Path = field(
        default_factory=lambda: _env_path("PIPELINE_REPORTS", REPO_ROOT / "reports")
    )
    #: Seconds one file may take to parse before it is rejected.
    parse_timeout_s: float = 120.0
    #: Address-space limit of a parser worker, bytes.
    parse_memory_bytes: int = 2 * 1024**3
    #: Largest activity file accepted (after decompression), bytes.
    max_file_bytes: int = 256 * 1024**2
    #: Worker processes used to decode files (0 = in-process).
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    #: ``after`` pain onsets link to a run that ended at most this long before, hours.
    after_window_h: float = 12.0

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB file the ingest writes."""
        return self.warehouse_dir / "pipeline.duckdb"

    @property
    def snapshot_path(self) -> Path:
        """The read-only copy published for the coach after each ingest."""
        return self.warehouse_dir / "snapshot.duckdb"
