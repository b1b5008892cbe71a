"""Warehouse -> HTML: the club overview and one page per athlete.

:func:`render_reports` is the entry point; :mod:`pipeline.report.data` fetches
and analyses each athlete's rows, :mod:`pipeline.report.athlete_page` and
:mod:`pipeline.report.overview` build the pages, and this module writes them.
"""

from __future__ import annotations

import logging
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from pipeline.analysis.links import club_links
from pipeline.report.athlete_page import athlete_page
from pipeline.report.data import Reader, analyse_club, load_athletes, table_names
from pipeline.report.fmt import athlete_dir_name
from pipeline.report.overview import index_page
from pipeline.report.pain_runs import RECENT_PAIN_RUNS, pain_runs, write_year_pages

__all__ = ["render_reports"]

logger = logging.getLogger(__name__)


def _write(path: Path, text: str) -> None:
    """Write ``text`` atomically (a reader never sees half a page)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is for reading
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_reports(
    reader: Reader, reports_dir: Path, *, generated_utc: datetime, recent_pain_runs: int = RECENT_PAIN_RUNS
) -> list[Path]:
    """Write the club overview and one page per athlete.

    Parameters
    ----------
    reader
        Runs SQL on the warehouse (tables ``athletes``, ``activities``,
        ``samples``, ``pain_reports``, ``files``).
    reports_dir
        Where the pages go: ``index.html`` and ``<athlete_id>/index.html``.
    generated_utc
        Timestamp printed on every page and the end of the "last 4 weeks".
    recent_pain_runs
        Runs with pain charted on an athlete's page; older ones go to
        ``<athlete_id>/runs-<year>.html`` (:mod:`pipeline.report.pain_runs`),
        which are rewritten only when what they show changed.

    Returns
    -------
    list of Path
        The pages written, the overview first (year pages kept unchanged are not listed).
    """
    if generated_utc.tzinfo is None:
        generated_utc = generated_utc.replace(tzinfo=timezone.utc)
    generated_utc = generated_utc.astimezone(timezone.utc)
    reports_dir = Path(reports_dir)
    tables = table_names(reader)
    files = reader.query("SELECT * FROM files ORDER BY path")
    bad_rows = (
        reader.query("SELECT * FROM pain_rows_rejected ORDER BY source_file, line")
        if "pain_rows_rejected" in tables
        else pl.DataFrame(schema={"source_file": pl.String(), "line": pl.Int32(), "reason": pl.String()})
    )
    reports = analyse_club(reader, load_athletes(reader), tables=tables)
    paths = []
    runs_by_athlete = {}
    for rep in reports:
        path = reports_dir / athlete_dir_name(rep.athlete.athlete_id) / "index.html"
        runs = pain_runs(rep, recent=recent_pain_runs)
        runs_by_athlete[rep.athlete.athlete_id] = runs
        _write(path, athlete_page(rep, files, generated_utc=generated_utc, runs=runs))
        paths.append(path)
        logger.info("wrote %s", path)
        paths += write_year_pages(rep, runs, path.parent, generated_utc=generated_utc, write=_write)
    factors = [rep.factors for rep in reports if not rep.factors.is_empty()]
    club = club_links(pl.concat(factors, how="vertical_relaxed")) if factors else None
    index = reports_dir / "index.html"
    _write(index, index_page(reports, files, bad_rows, club, generated_utc=generated_utc, runs=runs_by_athlete))
    logger.info("wrote %s", index)
    return [index, *paths]
