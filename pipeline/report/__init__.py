"""Reports: warehouse -> self-contained HTML pages. The only altair / vl_convert imports.

``render_reports(reader, reports_dir, generated_utc=...)`` writes
``reports/index.html`` (the club overview) and ``reports/<athlete_id>/index.html``
(one page per athlete) and returns their paths, the overview first.
"""

from pipeline.report.data import Reader
from pipeline.report.fmt import athlete_dir_name
from pipeline.report.render import render_reports

__all__ = ["Reader", "render_reports", "athlete_dir_name"]
