"""HTML reports over a tiny synthetic warehouse, and the pre-onset drift analysis.

The warehouse is an in-memory DuckDB built from polars frames made here, read
through a minimal ``Reader``; no ingest is involved.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.analysis.drift import cadence_speed_fit, drift_summary, onset_drift
from pipeline.report import render_reports
from pipeline.report.charts import MAX_CHART_ROWS, run_profile
from pipeline.schema import ACTIVITY_SCHEMA, PAIN_REPORT_SCHEMA, SAMPLE_SCHEMA, UTC_DT, frame_from_rows

UTC = timezone.utc
GENERATED = datetime(2026, 9, 20, 18, 0, tzinfo=UTC)

EVIL_NOTE = '<script>alert("pwned")</script>'
EVIL_BODY_PART = "calf<img src=x onerror=alert(1)>"
ANN_NAME = "Ann <i>O'Neil</i> & co"


class DuckReader:
    """The Reader protocol over an in-memory DuckDB holding the given frames as tables."""

    def __init__(self, tables: dict[str, pl.DataFrame]) -> None:
        self.con = duckdb.connect()
        for name, frame in tables.items():
            self.con.register("_frame", frame)
            self.con.execute(f"CREATE TABLE {name} AS SELECT * FROM _frame")
            self.con.unregister("_frame")

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
        return self.con.sql(sql, params=params).pl()


# --------------------------------------------------------------------------- synthetic data


def _run(
    activity_id: str,
    athlete_id: str,
    start: datetime,
    *,
    seconds: int,
    speed: float,
    with_samples: bool = True,
    change_at_s: float | None = None,
    sport: str = "running",
) -> tuple[dict[str, Any], pl.DataFrame]:
    """One activity row and its 1 Hz samples; after ``change_at_s`` cadence -6, HR +10, speed 2.5 m/s."""
    activity = {
        "activity_id": activity_id,
        "athlete_id": athlete_id,
        "sport": sport,
        "start_utc": start,
        "end_utc": start + timedelta(seconds=seconds),
        "elapsed_s": float(seconds),
        "moving_s": float(seconds),
        "distance_m": speed * seconds,
        "avg_speed_mps": speed,
        "avg_hr_bpm": 150.0,
        "avg_cadence_spm": 170.0,
        "source_file": f"{athlete_id}/activities/{activity_id}.fit",
        "n_samples": seconds if with_samples else 0,
    }
    if not with_samples:
        return activity, pl.DataFrame(schema=SAMPLE_SCHEMA)
    t = np.arange(seconds, dtype=float)
    changed = t >= change_at_s if change_at_s is not None else np.zeros(seconds, dtype=bool)
    v = np.where(changed, 2.5, speed)
    frame = pl.DataFrame(
        {
            "activity_id": [activity_id] * seconds,
            "t_utc": [start + timedelta(seconds=int(x)) for x in t],
            "elapsed_s": t,
            "moving_s": t,
            "distance_m": np.concatenate([[0.0], np.cumsum(v)[:-1]]),  # distance when the sample was taken
            "altitude_m": 40.0 + 5.0 * np.sin(t / 200.0),
            "speed_mps": v,
            "cadence_spm": np.where(changed, 164.0, 170.0),
            "hr_bpm": np.where(changed, 160.0, 150.0),
        }
    )
    return activity, frame.with_columns(
        [pl.lit(None, dtype).alias(name) for name, dtype in SAMPLE_SCHEMA.items() if name not in frame.columns]
    ).select(list(SAMPLE_SCHEMA)).cast(SAMPLE_SCHEMA)  # type: ignore[arg-type]


def _matched(report_id: str, athlete_id: str, samples: pl.DataFrame, onset_s: int, **extra: Any) -> dict[str, Any]:
    row = samples.filter(pl.col("elapsed_s") == float(onset_s)).row(0, named=True)
    return {
        "report_id": report_id,
        "athlete_id": athlete_id,
        "source_file": f"{athlete_id}/pain.csv",
        "line": 2,
        "date_local": row["t_utc"].date(),
        "onset_raw": f"+{onset_s // 60}:00",
        "onset_kind": "elapsed",
        "onset_approx": False,
        "body_part": "knee",
        "side": "left",
        "severity": 4,
        "status": "matched",
        "activity_id": row["activity_id"],
        "sample_t_utc": row["t_utc"],
        "onset_utc": row["t_utc"],
        "onset_elapsed_s": row["elapsed_s"],
        "onset_moving_s": row["moving_s"],
        "onset_distance_m": row["distance_m"],
        "onset_distance_lo_m": row["distance_m"],
        "onset_distance_hi_m": row["distance_m"],
        **extra,
    }


def _unjoined(report_id: str, athlete_id: str, status: str, day: date, **extra: Any) -> dict[str, Any]:
    return {
        "report_id": report_id,
        "athlete_id": athlete_id,
        "source_file": f"{athlete_id}/pain.csv",
        "line": 3,
        "date_local": day,
        "onset_raw": "6 mi",
        "onset_kind": "distance",
        "body_part": "shin",
        "severity": 3,
        "status": status,
        "status_detail": f"detail for {status}",
        **extra,
    }


ANN_LONG = "a11ce0000000long-0"
BOB_RUN = "b0b000000000pain-0"
ANN_IDS = [ANN_LONG, "a11ce00000short1-0", "a11ce00000short2-0", "a11ce000000bike0-0"]
BOB_IDS = [BOB_RUN, "b0b00000000easy1-0", "b0b00000000easy2-0"]


def _warehouse() -> tuple[DuckReader, dict[str, Any]]:
    acts, samples = [], []
    # Ann: a 25 km run at 1 Hz (7812 samples) with pain 16 km in, two short runs, a ride.
    long_act, long_s = _run(ANN_LONG, "ann", GENERATED - timedelta(days=3), seconds=7812, speed=3.2, change_at_s=4700)
    acts.append(long_act)
    samples.append(long_s)
    for i, days in enumerate((40, 10)):
        start = GENERATED - timedelta(days=days)
        a, _ = _run(ANN_IDS[1 + i], "ann", start, seconds=2500, speed=3.2, with_samples=False)
        acts.append(a)
    ride_start = GENERATED - timedelta(days=2)
    bike, _ = _run(ANN_IDS[3], "ann", ride_start, seconds=3600, speed=8.0, with_samples=False, sport="cycling")
    acts.append(bike)
    # Bob: a run with pain 25 min in, two easy runs.
    bob_act, bob_s = _run(BOB_RUN, "bob", GENERATED - timedelta(days=5), seconds=3000, speed=3.0, change_at_s=1200)
    acts.append(bob_act)
    samples.append(bob_s)
    for i, days in enumerate((6, 8)):
        start = GENERATED - timedelta(days=days)
        a, _ = _run(BOB_IDS[1 + i], "bob", start, seconds=1800, speed=3.0, with_samples=False)
        acts.append(a)

    pains = [
        _matched("rep-ann-1", "ann", long_s, 5000, notes=EVIL_NOTE, body_part=EVIL_BODY_PART),
        _unjoined("rep-ann-2", "ann", "ambiguous", date(2026, 9, 1)),
        _unjoined("rep-ann-3", "ann", "unmatched", date(2026, 9, 2), notes="SUPERSEDED-NOTE",
                  superseded_utc=GENERATED - timedelta(days=1)),
        # written "~3 mi": somewhere in 2.4-3.6 mi (the pipeline placed it at the sample 25 min in)
        _matched("rep-bob-1", "bob", bob_s, 1500, side="right", onset_raw="~3 mi",
                 onset_distance_lo_m=2.4 * 1609.344, onset_distance_hi_m=3.6 * 1609.344),
        _unjoined("rep-bob-2", "bob", "beyond_run", date(2026, 9, 3)),
        _unjoined("rep-carl-1", "carl", "unmatched", date(2026, 9, 4)),  # no athletes row, no runs
    ]
    pain_schema = PAIN_REPORT_SCHEMA | {"superseded_utc": UTC_DT}
    tables = {
        "athletes": pl.DataFrame(
            {
                "athlete_id": ["ann", "bob"],
                "name": [ANN_NAME, "Bob Smith"],
                "timezone": ["Europe/London", "America/New_York"],
                "unit": ["km", "mi"],
                "distance_cap_m": [None, 16093.44],
            },
            schema={"athlete_id": pl.String, "name": pl.String, "timezone": pl.String, "unit": pl.String,
                    "distance_cap_m": pl.Float64},
        ),
        "activities": frame_from_rows(acts, ACTIVITY_SCHEMA),
        "samples": pl.concat(samples),
        "pain_reports": frame_from_rows(pains, pain_schema),
        "files": pl.DataFrame(
            {
                "path": ["ann/activities/broken.fit", "bob/activities/settings.fit", f"ann/activities/{ANN_LONG}.fit"],
                "sha256": ["aa", "bb", "cc"],
                "status": ["rejected", "skipped", "loaded"],
                "reason": ["bad CRC at byte 1234", "settings file, no activity", None],
            }
        ),
        "pain_rows_rejected": pl.DataFrame(
            {"source_file": ["bob/pain.csv"], "line": [7], "reason": ["severity must be 0-10 (got 11)"]}
        ),
    }
    facts = {"long_samples": long_s.height, "ann_onset_m": float(long_s["distance_m"][5000])}
    return DuckReader(tables), facts


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    reader, facts = _warehouse()
    out = tmp_path_factory.mktemp("reports")
    paths = render_reports(reader, out, generated_utc=GENERATED)
    pages = {p.relative_to(out).as_posix(): p.read_text(encoding="utf-8") for p in paths}
    return {"dir": out, "paths": paths, "pages": pages, **facts}


def _specs(page: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="chart-specs">(.*?)</script>', page, re.S)
    assert m, "no chart specs on the page"
    specs: dict[str, Any] = json.loads(m.group(1))
    return specs


# --------------------------------------------------------------------------- pages


def test_pages_exist_for_every_athlete_and_the_club(rendered: dict[str, Any]) -> None:
    assert set(rendered["pages"]) == {"index.html", "ann/index.html", "bob/index.html", "carl/index.html"}
    assert rendered["paths"][0] == rendered["dir"] / "index.html"
    assert all(p.is_file() for p in rendered["paths"])


def test_index_lists_athletes_problems_and_links(rendered: dict[str, Any]) -> None:
    index = rendered["pages"]["index.html"]
    assert html.escape(ANN_NAME) in index and "Bob Smith" in index
    for href in ("ann/index.html", "bob/index.html", "carl/index.html"):
        assert f'href="{href}"' in index
    # every pain report not joined to a sample is listed with its status
    for status in ("ambiguous", "beyond_run", "unmatched"):
        assert f">{status}<" in index
    assert "detail for beyond_run" in index
    # rejected and skipped files are listed with their reason; loaded ones are not
    assert "ann/activities/broken.fit" in index and "bad CRC at byte 1234" in index
    assert "bob/activities/settings.fit" in index
    assert f"ann/activities/{ANN_LONG}.fit" not in index
    assert "bob/pain.csv:7" in index and "severity must be 0-10 (got 11)" in index
    assert "Generated 2026-09-20 18:00 UTC" in index


def test_index_distance_of_the_last_four_weeks(rendered: dict[str, Any]) -> None:
    index = rendered["pages"]["index.html"]
    # Ann: 25 km (3 days ago) + 8 km (10 days ago); the 40-day-old run and the ride do not count
    ann_km = (7812 * 3.2 + 2500 * 3.2) / 1000
    # Bob: three runs in the last 8 days, in miles
    bob_mi = (3000 * 3.0 + 2 * 1800 * 3.0) / 1609.344
    assert f"{ann_km:.1f} km" in index
    assert f"{bob_mi:.1f} mi" in index


def test_superseded_reports_are_not_shown(rendered: dict[str, Any]) -> None:
    for page in rendered["pages"].values():
        assert "SUPERSEDED-NOTE" not in page


def test_athlete_page_shows_reports_with_status(rendered: dict[str, Any]) -> None:
    ann = rendered["pages"]["ann/index.html"]
    bob = rendered["pages"]["bob/index.html"]
    assert ">matched<" in ann and ">ambiguous<" in ann
    assert ">matched<" in bob and ">beyond_run<" in bob
    assert "Garmin-RUNSAFE" in ann and "Nielsen" in ann
    assert "not enough data" in ann  # one onset only
    assert "bad CRC at byte 1234" in ann and "bad CRC at byte 1234" not in bob
    assert "Generated 2026-09-20 18:00 UTC" in ann


def test_units_follow_the_athlete(rendered: dict[str, Any]) -> None:
    ann = rendered["pages"]["ann/index.html"]
    bob = rendered["pages"]["bob/index.html"]
    assert "Distance (km)" in ann and "min/km" in ann
    assert "Distance (mi)" in bob and "min/mi" in bob
    bob_axes = json.dumps(_specs(bob))
    assert "Pace (min/mi" in bob_axes and "Elevation (ft)" in bob_axes and "Distance into the run (mi)" in bob_axes


def test_javascript_is_inlined_once_per_page(rendered: dict[str, Any]) -> None:
    charted = {name for name, page in rendered["pages"].items() if "chart-specs" in page}
    assert charted == {"index.html", "ann/index.html", "bob/index.html"}  # carl has no runs
    for name, page in rendered["pages"].items():
        if name not in charted:
            assert "<script" not in page, name  # no charts, no JavaScript
            continue
        assert page.count("window.vegaEmbed=") == 1, name
        assert len(re.findall(r"<script\b", page)) == 3, name  # specs, bundle, embed call
        assert page.count("vegaEmbed(el, specs[id]") == 1


def test_no_request_leaves_the_page(rendered: dict[str, Any]) -> None:
    loads = re.compile(
        r"<script[^>]*\bsrc\s*=|<link\b|<iframe\b|<img\b|@import|url\("
        r"|\b(?:src|href|action)\s*=\s*[\"']?\s*(?:https?:)?//",
        re.IGNORECASE,
    )
    for name, page in rendered["pages"].items():
        # the markup, with script bodies (the Vega library's own code, the JSON specs) left out
        markup = re.sub(r"(<script[^>]*>).*?(</script>)", r"\1\2", page, flags=re.S)
        assert not loads.search(markup), (name, loads.search(markup))
        # and the browser is told to block any request the library might attempt
        csp = page.find('http-equiv="Content-Security-Policy" content="default-src \'none\';')
        assert 0 < csp < page.find("<body>"), name
        assert "connect-src" not in page[: page.find("</head>")]
        for spec in (_specs(page).values() if "chart-specs" in page else []):
            assert "url" not in json.dumps({k: v for k, v in spec.items() if k != "datasets"})


def test_athlete_page_embeds_no_other_athletes_rows(rendered: dict[str, Any]) -> None:
    ann = rendered["pages"]["ann/index.html"]
    bob = rendered["pages"]["bob/index.html"]
    for activity_id in BOB_IDS:
        assert activity_id not in ann
    for activity_id in ANN_IDS:
        assert activity_id not in bob
    assert "rep-bob" not in ann and "Bob Smith" not in ann and "carl" not in ann
    assert ANN_IDS[0] in ann and BOB_IDS[0] in bob  # the test would find them


def test_chart_datasets_are_small_and_the_onset_exact(rendered: dict[str, Any]) -> None:
    specs = _specs(rendered["pages"]["ann/index.html"])
    assert {"chart-weekly", "chart-run-0"} <= set(specs)
    for chart_id, spec in specs.items():
        rows_in_chart = sum(len(rows) for rows in spec["datasets"].values())
        assert rows_in_chart <= MAX_CHART_ROWS, (chart_id, rows_in_chart)
    run = specs["chart-run-0"]["datasets"]
    assert rendered["long_samples"] > MAX_CHART_ROWS  # the run was downsampled ...
    assert len(run["profile"]) > 500  # ... but not to nothing
    onsets = run["onsets"]
    assert len(onsets) == 1
    assert onsets[0]["onset"] == pytest.approx(rendered["ann_onset_m"] / 1000, abs=1e-4)
    # the shaded band covers the 5 minutes before the onset: 300 s at 2.5 m/s
    assert onsets[0]["onset"] - onsets[0]["pre_start"] == pytest.approx(300 * 2.5 / 1000, abs=1e-3)


def test_no_chart_layer_is_empty(rendered: dict[str, Any]) -> None:
    # Vega warns on the console ("Infinite extent") for a layer without rows: such layers are left out
    for name, page in rendered["pages"].items():
        for chart_id, spec in (_specs(page).items() if "chart-specs" in page else []):
            assert all(rows for rows in spec["datasets"].values()), (name, chart_id)


def test_user_strings_are_escaped(rendered: dict[str, Any]) -> None:
    ann = rendered["pages"]["ann/index.html"]
    for page in rendered["pages"].values():
        assert EVIL_NOTE not in page
        assert "<img src=x" not in page
        assert "<i>O'Neil</i>" not in page
    assert html.escape(EVIL_NOTE) in ann
    assert html.escape(EVIL_BODY_PART) in ann
    # inside the embedded JSON the body part survives as data, not markup
    labels = [row["label"] for row in _specs(ann)["chart-run-0"]["datasets"]["onsets"]]
    assert labels == [f"{EVIL_BODY_PART} (left), severity 4"]


def test_specs_compile_to_svg(rendered: dict[str, Any]) -> None:
    vl_convert = pytest.importorskip("vl_convert")
    for name in ("index.html", "ann/index.html", "bob/index.html"):
        for chart_id, spec in _specs(rendered["pages"][name]).items():
            svg = vl_convert.vegalite_to_svg(spec)
            assert svg.startswith("<svg") and "<path" in svg, (name, chart_id)


def test_pain_free_distance_on_the_page(rendered: dict[str, Any]) -> None:
    ann = rendered["pages"]["ann/index.html"]
    bob = rendered["pages"]["bob/index.html"]
    for page in (ann, bob):
        assert "<h2>Pain-free distance</h2>" in page
        assert "not enough data (1 onset during a run; needs at least 5)" in page  # one onset: no distances
    # the curve is drawn anyway, in the athlete's unit, with Bob's 10 mi cap from athlete.toml
    assert "Distance cap from <code>athlete.toml</code>: 10.0 mi" in bob
    curve = _specs(bob)["chart-km-0"]
    assert curve["datasets"]["marks"] == [{"distance": 10.0, "label": "distance cap 10.0 mi"}]
    assert curve["datasets"]["curve"][0] == {"distance": 0.0, "pain_free_pct": 100.0, "lo_pct": 100.0, "hi_pct": 100.0}
    assert "Distance into the run (mi)" in json.dumps(curve)
    assert "marks" not in _specs(ann)["chart-km-0"]["datasets"]  # Ann has no cap: no empty layer


def test_links_on_the_athlete_pages_and_the_overview(rendered: dict[str, Any]) -> None:
    ann = rendered["pages"]["ann/index.html"]
    index = rendered["pages"]["index.html"]
    assert "<h2>What pain is linked to</h2>" in ann
    assert "Run distance (km): not enough data (1 run with pain; needs at least 5)." in ann
    assert "chart-links" not in ann  # no estimate, no chart
    assert "<h2>Links found</h2>" in index and "<h3>Across the club</h3>" in index
    assert "not enough data (2 runs with pain among athletes" in index
    assert "chart-timeline" in _specs(index)


def test_club_timeline_shows_runs_and_pain_of_every_athlete(rendered: dict[str, Any]) -> None:
    data = _specs(rendered["pages"]["index.html"])["chart-timeline"]["datasets"]
    athletes = {row["athlete"] for row in data["runs"]}
    assert athletes == {ANN_NAME, "Bob Smith"}  # runs of the last 26 weeks
    kinds = {row["kind"] for row in data["runs"]}
    assert kinds <= {"run", "long-run spike"}
    assert {row["kind"] for row in data["pain"]} == {"pain report"}
    assert len(data["pain"]) == 5  # current reports (the superseded one is not shown)


def test_range_onsets_show_their_interval_in_the_run_view(rendered: dict[str, Any]) -> None:
    onsets = _specs(rendered["pages"]["bob/index.html"])["chart-run-0"]["datasets"]["onsets"]
    assert len(onsets) == 1
    assert (onsets[0]["lo"], onsets[0]["hi"]) == (pytest.approx(2.4), pytest.approx(3.6))
    assert onsets[0]["lo"] <= onsets[0]["onset"] <= onsets[0]["hi"]
    assert "'~3 mi'" in onsets[0]["range_label"] and "2.40-3.60 mi" in onsets[0]["range_label"]
    ann = _specs(rendered["pages"]["ann/index.html"])["chart-run-0"]["datasets"]["onsets"][0]
    assert ann["lo"] == ann["hi"] == ann["onset"]  # an exact onset has no band


def test_drift_table_on_the_page(rendered: dict[str, Any]) -> None:
    bob = rendered["pages"]["bob/index.html"]
    # Bob's run: cadence 170 -> 164 spm from 20:00, pain at 25:00 -> the 5 min before are all "after"
    assert '<td class="num">-6.0</td>' in bob and '<td class="num">+10.0</td>' in bob


# --------------------------------------------------------------------------- run profiles


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=4000),
    spacing_m=st.floats(min_value=0.5, max_value=60.0),
    unit=st.sampled_from(["km", "mi"]),
)
def test_run_profile_fits_any_run_in_the_row_budget(n: int, spacing_m: float, unit: str) -> None:
    t = np.arange(n, dtype=float)
    samples = pl.DataFrame(
        {"elapsed_s": t, "moving_s": t, "distance_m": t * spacing_m, "speed_mps": np.full(n, spacing_m),
         "cadence_spm": np.full(n, 170.0), "hr_bpm": np.full(n, 150.0), "altitude_m": np.zeros(n)}
    )
    profile, title = run_profile(samples, unit=unit)  # type: ignore[arg-type]
    assert 0 < profile.height <= MAX_CHART_ROWS - 100
    assert title == f"Distance into the run ({unit})"
    # bins (10 m, or wider multiples of 10 m) average the samples: the profile spans the run
    per = 1000.0 if unit == "km" else 1609.344
    span = (n - 1) * spacing_m
    width = max(10.0, math.ceil(span / (MAX_CHART_ROWS - 101) / 10.0) * 10.0)
    assert profile["x"].min() * per <= width + 1e-6
    assert profile["x"].max() * per >= span - width - 1e-6


def test_run_profile_derives_pace_without_recorded_speed() -> None:
    t = np.arange(1800, dtype=float)
    samples = pl.DataFrame(
        {"elapsed_s": t, "moving_s": t, "distance_m": t * 3.0, "speed_mps": [None] * 1800,
         "cadence_spm": [0.0] * 900 + [170.0] * 900, "hr_bpm": np.full(1800, 150.0), "altitude_m": np.zeros(1800)},
        schema_overrides={"speed_mps": pl.Float64},
    )
    profile, _ = run_profile(samples, unit="km")
    pace = profile["pace"].drop_nulls()
    assert pace.len() > 0.9 * profile.height
    assert pace.to_list() == pytest.approx([1000 / 3.0 / 60] * pace.len(), abs=1e-3)  # 5:33 min/km
    assert profile["pace_label"].drop_nulls().unique().to_list() == ["5:33"]
    # cadence readings of 0 are "no reading", not a stop
    assert profile["cadence_spm"].drop_nulls().unique().to_list() == [170.0]


# --------------------------------------------------------------------------- drift analysis


def _samples(seconds: int, *, change_at: int | None, pause: tuple[int, int] | None = None) -> pl.DataFrame:
    start = datetime(2026, 5, 1, 7, tzinfo=UTC)
    rows, moving, dist = [], 0.0, 0.0
    for t in range(seconds):
        if pause and pause[0] <= t < pause[1]:
            continue  # the watch records nothing while paused
        changed = change_at is not None and t >= change_at
        v = 2.5 if changed else 3.0
        rows.append(
            {"activity_id": "run", "t_utc": start + timedelta(seconds=t), "elapsed_s": float(t),
             "moving_s": moving, "distance_m": dist, "speed_mps": v,
             "cadence_spm": 164.0 if changed else 170.0, "hr_bpm": 160.0 if changed else 150.0}
        )
        moving += 1.0
        dist += v
    return frame_from_rows(rows, SAMPLE_SCHEMA)


def _report(samples: pl.DataFrame, elapsed_s: float, report_id: str = "r1") -> pl.DataFrame:
    row = samples.filter(pl.col("elapsed_s") == elapsed_s).row(0, named=True)
    return frame_from_rows(
        [{"report_id": report_id, "athlete_id": "ann", "status": "matched", "activity_id": "run",
          "sample_t_utc": row["t_utc"], "onset_utc": row["t_utc"], "onset_elapsed_s": row["elapsed_s"],
          "onset_moving_s": row["moving_s"], "onset_distance_m": row["distance_m"], "body_part": "knee",
          "severity": 5}],
        PAIN_REPORT_SCHEMA,
    )


def test_drift_compares_five_minutes_before_onset_with_the_baseline() -> None:
    samples = _samples(2400, change_at=1200)
    out = onset_drift(samples, _report(samples, 1500.0)).row(0, named=True)
    assert out["status"] == "ok" and out["basis"] == "moving_s"
    assert out["base_n"] == 600 and out["pre_n"] == 300
    assert out["d_cadence_spm"] == pytest.approx(-6.0)
    assert out["d_hr_bpm"] == pytest.approx(10.0)
    assert out["d_pace_s_per_km"] == pytest.approx(1000 / 2.5 - 1000 / 3.0)


def test_drift_uses_timer_time_across_a_pause() -> None:
    # running 0-1000 s at 170 spm, paused until 1600 s, then 164 spm; pain at 1800 s wall clock
    samples = _samples(2400, change_at=1000, pause=(1000, 1600))
    out = onset_drift(samples, _report(samples, 1800.0)).row(0, named=True)
    assert out["onset_s"] == pytest.approx(1200.0)  # timer time
    # 5 timer minutes = 100 s before the pause (170) + 200 s after it (164)
    assert out["pre_cadence_spm"] == pytest.approx((100 * 170 + 200 * 164) / 300)


def test_drift_early_onset_and_missing_samples() -> None:
    samples = _samples(2400, change_at=None)
    early = onset_drift(samples, _report(samples, 900.0)).row(0, named=True)
    assert early["status"] == "onset_in_baseline" and early["d_cadence_spm"] is None
    other = _report(samples, 1500.0).with_columns(activity_id=pl.lit("another-run"))
    assert onset_drift(samples, other)["status"].to_list() == ["no_samples"]


def test_drift_ignores_zero_readings() -> None:
    samples = _samples(2400, change_at=None).with_columns(
        cadence_spm=pl.when(pl.col("elapsed_s").is_between(1300, 1399)).then(0.0).otherwise(pl.col("cadence_spm"))
    )
    out = onset_drift(samples, _report(samples, 1500.0)).row(0, named=True)
    assert out["pre_cadence_spm"] == pytest.approx(170.0)


def test_drift_summary_needs_three_onsets() -> None:
    metrics = ("d_cadence_spm", "d_cadence_matched_spm", "d_pace_s_per_km", "d_hr_bpm", "d_decoupling_pct")

    def frame(values: list[float]) -> pl.DataFrame:
        return pl.DataFrame(
            {"status": ["ok"] * len(values)} | dict.fromkeys(metrics, values),
            schema={"status": pl.String} | dict.fromkeys(metrics, pl.Float64),
        )

    two = drift_summary(frame([1.0, 2.0])).row(0, named=True)
    assert two["n"] == 2 and two["mean"] is None and "not enough data" in two["note"]
    out = drift_summary(frame([1.0, 2.0, 3.0, 4.0]))
    four = out.row(0, named=True)
    assert (four["comparison"], four["metric"]) == ("baseline", "cadence_spm")
    sd = (sum((x - 2.5) ** 2 for x in (1, 2, 3, 4)) / 3) ** 0.5
    half = 3.1824 * sd / 2  # t(0.975, 3 df) from the published tables
    assert four["mean"] == pytest.approx(2.5)
    assert four["ci_lo"] == pytest.approx(2.5 - half, abs=1e-3)
    assert four["ci_hi"] == pytest.approx(2.5 + half, abs=1e-3)
    # the pain-free comparison has no r_* columns here: not enough data, never an error
    pain_free = out.filter(pl.col("comparison") == "pain_free")
    assert pain_free.height == 5 and pain_free["mean"].null_count() == 5


def _reference_runs(n_runs: int, *, slope: float, seconds: int = 2400) -> pl.DataFrame:
    """Pain-free runs at different steady speeds; cadence = 100 + slope * speed (+ a small wobble)."""
    frames = []
    for i in range(n_runs):
        speed = 2.6 + 0.1 * i
        t = np.arange(seconds, dtype=float)
        frames.append(pl.DataFrame({
            "activity_id": [f"free-{i}"] * seconds, "t_utc": [datetime(2026, 4, 1 + i, 7, tzinfo=UTC)] * seconds,
            "elapsed_s": t, "moving_s": t, "distance_m": t * speed, "speed_mps": np.full(seconds, speed),
            "cadence_spm": 100.0 + slope * speed + np.sin(t / 7.0), "hr_bpm": np.full(seconds, 140.0 + 5 * i),
        }))
    return pl.concat(frames).cast({"t_utc": UTC_DT})


def test_cadence_speed_fit_recovers_the_slope() -> None:
    fit = cadence_speed_fit(_reference_runs(6, slope=12.0))
    assert fit is not None and fit.n_runs == 6
    assert fit.slope_spm_per_mps == pytest.approx(12.0, abs=0.05)
    assert fit.intercept_spm == pytest.approx(100.0, abs=0.2)
    # one steady speed: no slope can be fitted
    assert cadence_speed_fit(_reference_runs(1, slope=12.0)) is None


def test_drift_at_matched_speed_and_against_pain_free_runs() -> None:
    # the pain run: 3.0 m/s and 170 spm, from 1200 s 2.5 m/s and 164 spm (-6 spm, of which 12 * -0.5 = -6 speed)
    samples = _samples(2400, change_at=1200)
    reference = _reference_runs(6, slope=12.0, seconds=3000)
    fit = cadence_speed_fit(reference)
    out = onset_drift(samples, _report(samples, 1500.0), reference=reference, cadence_speed=fit).row(0, named=True)
    assert out["d_cadence_spm"] == pytest.approx(-6.0)
    # slowing by 0.5 m/s explains -6 spm on this athlete's line: nothing is left at matched speed
    assert out["d_cadence_matched_spm"] == pytest.approx(0.0, abs=0.05)
    # decoupling: beats per metre went from 150/3.0 to 160/2.5 per minute -> +28 %
    assert out["d_decoupling_pct"] == pytest.approx(((160 / 2.5) / (150 / 3.0) - 1) * 100)
    # pain-free runs that went past the onset distance (4350 m): 2.6..3.1 m/s x 3000 s >= 7800 m, all six
    assert out["ref_runs"] == 6
    ref_cad = float(np.mean([100 + 12 * (2.6 + 0.1 * i) for i in range(6)]))
    assert out["ref_cadence_spm"] == pytest.approx(ref_cad, abs=0.3)
    assert out["r_cadence_spm"] == pytest.approx(164.0 - ref_cad, abs=0.3)
    ref_speed = float(np.mean([2.6 + 0.1 * i for i in range(6)]))
    assert out["r_cadence_matched_spm"] == pytest.approx(164.0 - ref_cad - 12.0 * (2.5 - ref_speed), abs=0.3)
    # a reference that never gets that far gives no comparison
    short = reference.filter(pl.col("distance_m") < 4000.0)
    none = onset_drift(samples, _report(samples, 1500.0), reference=short, cadence_speed=fit).row(0, named=True)
    assert none["ref_runs"] == 0 and none["r_cadence_spm"] is None


def test_drift_leaves_wide_range_onsets_out_of_the_summary() -> None:
    samples = _samples(2400, change_at=1200)
    report = _report(samples, 1500.0)
    d = report["onset_distance_m"][0]
    wide = report.with_columns(onset_distance_lo_m=pl.lit(d - 800.0), onset_distance_hi_m=pl.lit(d + 800.0))
    out = onset_drift(samples, wide)
    assert out["status"].to_list() == ["onset_uncertain"]
    assert out["d_cadence_spm"][0] == pytest.approx(-6.0)  # shown ...
    assert drift_summary(out, min_n=1).row(0, named=True)["n"] == 0  # ... but not summarised


# --------------------------------------------------------------------------- performance


def _club(n_athletes: int, n_runs: int, *, all_samples: bool = False) -> DuckReader:
    acts, samples, pains = [], [], []
    for a in range(n_athletes):
        athlete = f"ath{a}"
        for i in range(n_runs):
            start = GENERATED - timedelta(days=2 * (n_runs - i), hours=a)
            with_samples = i % 4 == 3 or all_samples
            act, s = _run(f"{athlete}-{i:03d}", athlete, start, seconds=3000 + 60 * (i % 7), speed=3.0,
                          with_samples=with_samples, change_at_s=1500)
            acts.append(act)
            if with_samples:
                samples.append(s)
            if i % 4 == 3:
                pains.append(_matched(f"p-{athlete}-{i}", athlete, s, 2000))
    return DuckReader(
        {
            "athletes": pl.DataFrame({"athlete_id": [f"ath{a}" for a in range(n_athletes)],
                                      "name": [f"Runner {a}" for a in range(n_athletes)],
                                      "timezone": ["Europe/London"] * n_athletes,
                                      "unit": ["km", "mi"] * (n_athletes // 2) + ["km"] * (n_athletes % 2),
                                      "distance_cap_m": [None] * n_athletes},
                                     schema_overrides={"distance_cap_m": pl.Float64}),
            "activities": frame_from_rows(acts, ACTIVITY_SCHEMA),
            "samples": pl.concat(samples),
            "pain_reports": frame_from_rows(pains, PAIN_REPORT_SCHEMA | {"superseded_utc": UTC_DT}),
            "files": pl.DataFrame(schema=dict.fromkeys(("path", "sha256", "status", "reason"), pl.String)),
        }
    )


@pytest.mark.slow
def test_four_athletes_forty_runs_render_in_seconds(tmp_path: Path) -> None:
    reader = _club(4, 40)
    t0 = time.perf_counter()  # includes building the JS bundle (~3 s) unless an earlier test did
    paths = render_reports(reader, tmp_path / "reports", generated_utc=GENERATED)
    elapsed = time.perf_counter() - t0
    assert len(paths) == 5
    assert elapsed < 12.0, f"rendering took {elapsed:.1f} s"


def test_older_runs_with_pain_go_to_a_page_per_year_rewritten_only_when_changed(tmp_path: Path) -> None:
    reader = _club(1, 150)  # a run every 2 days back to November 2025; every 4th has pain and samples
    out = tmp_path / "reports"
    paths = render_reports(reader, out, generated_utc=GENERATED, recent_pain_runs=3)
    assert sorted(p.relative_to(out).as_posix() for p in paths) == [
        "ath0/index.html", "ath0/runs-2025.html", "ath0/runs-2026.html", "index.html"]
    pain_runs = [f"ath0-{i:03d}" for i in range(150) if i % 4 == 3]  # oldest first
    year_of = {run: (GENERATED - timedelta(days=2 * (150 - int(run[-3:])))).year for run in pain_runs}

    def sections(name: str) -> list[str]:
        text = (out / "ath0" / name).read_text(encoding="utf-8")
        return re.findall(r'<section class="run" id="run-([^"]+)">', text)

    assert sections("index.html") == pain_runs[-3:]
    for year in (2025, 2026):
        assert sections(f"runs-{year}.html") == [r for r in pain_runs[:-3] if year_of[r] == year]
        assert len(_specs((out / "ath0" / f"runs-{year}.html").read_text(encoding="utf-8"))) == len(
            sections(f"runs-{year}.html"))
    athlete_page = (out / "ath0" / "index.html").read_text(encoding="utf-8")
    oldest = pain_runs[0]
    assert f'href="runs-{year_of[oldest]}.html#run-{oldest}"' in athlete_page  # from the pain-report table
    assert f'href="#run-{pain_runs[-1]}"' in athlete_page
    assert f'href="ath0/index.html#run-{pain_runs[-1]}"' in (out / "index.html").read_text(encoding="utf-8")

    # nothing changed: the year pages are kept as they are, the athlete page is rewritten
    stamps = {y: (out / "ath0" / f"runs-{y}.html").stat().st_mtime_ns for y in (2025, 2026)}
    again = render_reports(reader, out, generated_utc=GENERATED + timedelta(hours=1), recent_pain_runs=3)
    assert sorted(p.relative_to(out).as_posix() for p in again) == ["ath0/index.html", "index.html"]
    assert {y: (out / "ath0" / f"runs-{y}.html").stat().st_mtime_ns for y in (2025, 2026)} == stamps
    # one more run on the athlete page: the 2026 page loses a run and is rewritten, 2025 is kept
    again = render_reports(reader, out, generated_utc=GENERATED, recent_pain_runs=4)
    assert "ath0/runs-2026.html" in {p.relative_to(out).as_posix() for p in again}
    assert "ath0/runs-2025.html" not in {p.relative_to(out).as_posix() for p in again}
    assert sections("index.html") == pain_runs[-4:]
    # all of them on the athlete page: the year pages go
    render_reports(reader, out, generated_utc=GENERATED, recent_pain_runs=len(pain_runs))
    assert sorted(p.name for p in (out / "ath0").iterdir()) == ["index.html"]
    assert sections("index.html") == pain_runs


def test_the_club_analysis_reads_the_samples_once_and_agrees_with_each_athlete() -> None:
    from polars.testing import assert_frame_equal

    from pipeline.report.data import analyse_athlete, analyse_club, load_athletes, table_names

    reader = _club(3, 30, all_samples=True)  # every run has samples: pain-free ones are the reference
    tables = table_names(reader)
    athletes = load_athletes(reader)
    club = analyse_club(reader, athletes, tables=tables)
    assert [r.athlete.athlete_id for r in club] == [a.athlete_id for a in athletes]
    for athlete, together in zip(athletes, club, strict=True):
        alone = analyse_athlete(reader, athlete, tables=tables)
        for name in ("activities", "pain", "samples", "drift", "factors", "links", "weekly"):
            # float sums in another order may differ in the last bits
            assert_frame_equal(getattr(together, name), getattr(alone, name), check_exact=False, rel_tol=1e-9,
                               abs_tol=1e-9)
        assert together.samples["activity_id"].is_in(alone.activities["activity_id"].implode()).all()
        assert together.n_reference_runs == alone.n_reference_runs > 0
