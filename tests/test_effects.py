"""Acceptance: on the simulator's cohorts the analysis behind the reports recovers the planted effects.

Planted (docs/simulator.md, truth in ``_truth/truth.json``):

* ``knee``: right-knee pain at a distance drawn per run from Normal(9.6 km,
  0.35 km), preceded by a cadence drop (6-8 steps/min, ramped over the 300 s
  before the onset) -> the median pain-free distance's 95 % CI holds 9.6 km,
  and the mean cadence change before onset has a CI below 0;
* ``spike``: pain after long-run spikes only -> the spike flag is a link found;
* ``control``: no effect -> no link claimed, over several seeds (slow).

Sizes: the ingest is fitparse-bound (about 15 000 samples/s on this machine's
two workers; ~3 000 records/s per core). The knee effect needs 8 weeks
(13 onsets); the spike link needs 5 spikes, one per 35 days, so 24 weeks of
the spike athlete alone. Each cohort is simulated with ``athletes=3`` (the
minimum) and only the athlete under test is ingested: an athlete's files
depend only on the seed, its index and the period, so leaving the others
out changes nothing about it.
"""

from __future__ import annotations

import json
import shutil
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from pipeline.config import Settings
from pipeline.ingest import ingest
from pipeline.report import render_reports
from pipeline.report.data import AthleteReport, analyse_athlete, load_athletes, table_names
from pipeline.simulate import simulate
from pipeline.warehouse.query import run_readonly_query

SEED = 7
END = date(2026, 11, 15)


class SnapshotReader:
    """The reports' read path: read-only queries on the published snapshot."""

    def __init__(self, snapshot: Path) -> None:
        self.snapshot = snapshot

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
        return run_readonly_query(self.snapshot, sql, params=params, timeout_s=120.0, max_rows=None)


def _cohort(root: Path, *, keep: str, weeks: int, seed: int = SEED) -> dict[str, Any]:
    """Simulate 3 athletes, keep one, ingest it; its truth and report analysis."""
    raw = root / "raw"
    simulate(raw, athletes=3, weeks=weeks, seed=seed, end_date=END)
    truth = json.loads((raw / "_truth" / "truth.json").read_text(encoding="utf-8"))
    for folder in raw.iterdir():
        if folder.is_dir() and folder.name not in (keep, "_truth"):
            shutil.rmtree(folder)
    settings = Settings(raw_dir=raw, warehouse_dir=root / "warehouse", reports_dir=root / "reports", workers=2)
    ingest(settings)
    reader = SnapshotReader(settings.snapshot_path)
    tables = table_names(reader)
    (athlete,) = [a for a in load_athletes(reader) if a.athlete_id == keep]
    return {"truth": truth, "reader": reader, "settings": settings,
            "report": analyse_athlete(reader, athlete, tables=tables)}


@pytest.fixture(scope="module")
def knee(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _cohort(tmp_path_factory.mktemp("knee"), keep="knee", weeks=8)


@pytest.fixture(scope="module")
def spike(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _cohort(tmp_path_factory.mktemp("spike"), keep="spike", weeks=24)


def test_knee_pain_free_distance_holds_the_planted_onset(knee: dict[str, Any]) -> None:
    params = knee["truth"]["athletes"]["knee"]["params"]
    planted_m = params["onset_mean_km"] * 1000.0
    rep: AthleteReport = knee["report"]
    (result,) = [r for r in rep.pain_free if r.body_part == "knee"]
    onsets = [a["knee_onset"] for a in knee["truth"]["activities"] if a.get("knee_onset")]
    assert result.n_events == params["n_onsets"] == len(onsets) >= 8
    median = result.quantile(0.5)
    assert median is not None and median.lo_m is not None and median.hi_m is not None
    assert median.lo_m <= planted_m <= median.hi_m
    # and the interval is informative: narrower than the clip range of the planted draws (8.7-10.5 km)
    assert median.hi_m - median.lo_m < 1800.0
    # the 80 % distance sits below the median, near the planted 20th percentile (9.6 - 0.84 * 0.35 km)
    q80 = result.quantile(0.8)
    assert q80 is not None and q80.value_m is not None and q80.value_m <= median.value_m  # type: ignore[operator]
    assert q80.lo_m is not None and q80.lo_m <= 9600.0 - 0.84 * 350.0 + 400.0
    # the physio's cap (9 mi, athlete.toml) is marked
    assert rep.athlete.distance_cap_m == pytest.approx(9 * 1609.344)


def test_knee_cadence_drop_before_onset_is_detected(knee: dict[str, Any]) -> None:
    rep: AthleteReport = knee["report"]
    summary = {(r["comparison"], r["metric"]): r for r in rep.drift_summary.iter_rows(named=True)}
    drops = [a["knee_onset"]["cadence_drop_spm"] for a in knee["truth"]["activities"] if a.get("knee_onset")]
    for metric in ("cadence_spm", "cadence_matched_spm"):
        row = summary[("baseline", metric)]
        assert row["n"] >= 5, row
        assert row["ci_hi"] < 0.0, row  # the interval excludes 0: a drop
        # over the 5 min before onset the planted drop ramps from 0 to its full size: about half on average
        assert -max(drops) <= row["mean"] <= -0.25 * min(drops), row
    assert rep.cadence_speed is not None and rep.cadence_speed.slope_spm_per_mps > 0


def test_spike_link_is_found_for_the_spike_athlete(spike: dict[str, Any]) -> None:
    rep: AthleteReport = spike["report"]
    planted = [a for a in spike["truth"]["activities"] if a.get("is_spike")]
    assert len(planted) >= 5
    row = rep.links.filter(pl.col("factor") == "spike").row(0, named=True)
    assert row["n_events"] >= 5 and row["status"] == "ok"
    assert row["link_found"] and row["ci_lo"] > 1.0, row
    # the other factors are not claimed beyond what a spike run also is (long, and rested before)
    claimed = set(rep.links.filter(pl.col("link_found"))["factor"].to_list())
    assert claimed <= {"spike", "distance", "rest", "pace"}, claimed


def test_the_pages_say_so(knee: dict[str, Any], spike: dict[str, Any], tmp_path: Path) -> None:
    """The rendered pages carry the recovered numbers (the knee athlete's unit is the mile)."""
    generated = datetime(2026, 11, 16, 8, tzinfo=timezone.utc)
    render_reports(knee["reader"], tmp_path / "knee", generated_utc=generated)
    page = (tmp_path / "knee" / "knee" / "index.html").read_text(encoding="utf-8")
    median = knee["report"].pain_free[0].quantile(0.5)
    assert f"<td class=\"num\">{median.value_m / 1609.344:.2f}</td>" in page
    assert "Distance cap from <code>athlete.toml</code>: 9.0 mi" in page
    render_reports(spike["reader"], tmp_path / "spike", generated_utc=generated)
    page = (tmp_path / "spike" / "spike" / "index.html").read_text(encoding="utf-8")
    found = page[page.index("<h2>What pain is linked to</h2>"):]
    assert '<tr class="flag"><td>Long-run spike' in found


def _random_pain_log(raw: Path, athlete: str, truth: dict[str, Any], seed: int, share: float) -> int:
    """A pain log for ``athlete`` with pain on a random ``share`` of runs, unrelated to anything: ``NN min`` in."""
    rng = np.random.default_rng(seed)
    rows = ["date,run,onset,body_part,side,severity,notes"]
    for act in truth["activities"]:
        if act["athlete_id"] != athlete or act["sport"] != "running" or act.get("broken") or act.get("duplicate_of"):
            continue
        if rng.random() >= share:
            continue
        local = datetime.fromisoformat(act["start_local"])
        minutes = int(rng.uniform(0.3, 0.9) * act["moving_s"] / 60)
        rows.append(f"{local.date()},{local.strftime('%H:%M')},{minutes} min,knee,left,3,random")
    (raw / athlete / "pain.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return len(rows) - 1


@pytest.mark.slow
def test_control_cohort_claims_no_link_over_seeds(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No planted effect -> no link claimed: the control as simulated (no pain at all) and with random pain.

    The random pain (a quarter of the runs, chosen by coin, onset at a random
    minute) is unrelated to every factor, so any claim is a false positive;
    Holm keeps the chance of one per athlete under 5 %, so at most one of the
    five seeds may claim anything.
    """
    false_claims = 0
    for seed in range(1, 6):
        root = tmp_path_factory.mktemp(f"control-{seed}")
        raw = root / "raw"
        simulate(raw, athletes=3, weeks=16, seed=seed, end_date=END)
        truth = json.loads((raw / "_truth" / "truth.json").read_text(encoding="utf-8"))
        for folder in raw.iterdir():
            if folder.is_dir() and folder.name not in ("control", "_truth"):
                shutil.rmtree(folder)
        settings = Settings(raw_dir=raw, warehouse_dir=root / "warehouse", reports_dir=root / "reports", workers=2)
        ingest(settings)
        reader = SnapshotReader(settings.snapshot_path)
        (athlete,) = load_athletes(reader)
        quiet = analyse_athlete(reader, athlete, tables=table_names(reader))
        assert not quiet.links["link_found"].any()
        assert set(quiet.links["status"].to_list()) == {"not_enough_data"}
        assert quiet.pain_free == []
        # the same runs with random pain
        n = _random_pain_log(raw, "control", truth, seed, share=0.25)
        assert n >= 8
        ingest(settings)
        noisy = analyse_athlete(reader, athlete, tables=table_names(reader))
        assert (noisy.links["n_events"].max() or 0) >= 5
        false_claims += int(noisy.links["link_found"].any())
    assert false_claims <= 1
