"""Links between candidate factors and pain: per-run factors, per-athlete and club models, guards."""

from __future__ import annotations

import math
import re
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import polars as pl
import pytest
from scipy import stats
from scipy.stats.contingency import odds_ratio
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from pipeline.analysis import links
from pipeline.analysis.links import FACTORS, LINK_SCHEMA, athlete_links, club_links, run_factors
from pipeline.schema import ACTIVITY_SCHEMA, PAIN_REPORT_SCHEMA, frame_from_rows

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 7, tzinfo=UTC)


def _activity(i: int, athlete: str, start: datetime, km: float, *, speed: float = 3.0, cadence: float = 170.0,
              ascent: float = 20.0, sport: str = "running") -> dict[str, Any]:
    seconds = km * 1000 / speed
    return {"activity_id": f"{athlete}-{i:03d}", "athlete_id": athlete, "sport": sport, "start_utc": start,
            "end_utc": start + timedelta(seconds=seconds), "moving_s": seconds, "elapsed_s": seconds,
            "distance_m": km * 1000, "avg_speed_mps": speed, "avg_cadence_spm": cadence, "total_ascent_m": ascent}


def _pain(activity_id: str, status: str = "matched") -> dict[str, Any]:
    return {"report_id": f"p-{activity_id}", "athlete_id": activity_id.split("-")[0], "activity_id": activity_id,
            "status": status, "body_part": "knee"}


def test_run_factors_per_run() -> None:
    acts = [
        _activity(0, "ann", T0, 10.0, speed=3.0, cadence=170.0, ascent=50.0),
        _activity(1, "ann", T0 + timedelta(days=2), 5.0, speed=3.3, cadence=0.0, ascent=5.0),
        _activity(2, "ann", T0 + timedelta(days=9), 12.0, speed=2.7, cadence=168.0),  # > 1.1 x 10 km: spike
        _activity(3, "ann", T0 + timedelta(days=10), 40.0, speed=8.0, sport="cycling"),  # a ride is no run
        _activity(4, "ann", T0 + timedelta(days=12), 0.3, speed=3.0),
    ]
    frame = frame_from_rows(acts, ACTIVITY_SCHEMA)
    pain = frame_from_rows([_pain("ann-002", "after_run"), {"report_id": "x", "status": "unmatched"}],
                           PAIN_REPORT_SCHEMA)
    out = run_factors(frame, pain)
    assert out["activity_id"].to_list() == ["ann-000", "ann-001", "ann-002", "ann-004"]
    rows = {r["activity_id"]: r for r in out.iter_rows(named=True)}
    assert [rows[k]["pain"] for k in sorted(rows)] == [False, False, True, False]
    assert rows["ann-002"]["spike"] and not rows["ann-001"]["spike"] and not rows["ann-000"]["spike"]
    # usual pace = the median run speed (3.0 m/s): 3.3 m/s is 10 % faster
    assert rows["ann-001"]["faster_than_usual_pct"] == pytest.approx(10.0)
    assert rows["ann-001"]["cadence_spm"] is None  # 0 = no reading
    assert rows["ann-000"]["climb_m_per_km"] == pytest.approx(5.0)
    assert rows["ann-004"]["climb_m_per_km"] is None  # under 0.5 km
    # rest from the end of the previous run (the ride does not count)
    end_prev = acts[2]["end_utc"]
    rest_days = (acts[4]["start_utc"] - end_prev).total_seconds() / 86400
    assert rows["ann-004"]["days_since_last_run"] == pytest.approx(rest_days)
    assert rows["ann-000"]["days_since_last_run"] is None
    # the 7 days up to run 2 (day 9, 07:00) hold 12 km; the 7 before, days 0 and 2 at 07:00, 15 km
    assert rows["ann-002"]["ramp"] == pytest.approx(12 / 15 - 1) and rows["ann-002"]["ramp_flag"] is False
    assert rows["ann-004"]["ramp"] == pytest.approx(12.3 / 15 - 1)
    assert rows["ann-000"]["ramp"] is None and rows["ann-000"]["ramp_flag"] is None  # nothing before


def _club(
    seed: int, n_runs: int, *, athlete: str, effect: float, base: float = -1.5
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Runs with random distance; P(pain) = logistic(base + effect * (km - 10))."""
    rng = np.random.default_rng(seed)
    acts, pains = [], []
    for i in range(n_runs):
        km = float(rng.uniform(5, 15))
        acts.append(_activity(i, athlete, T0 + timedelta(days=2 * i, hours=int(rng.integers(0, 5))), km,
                              speed=float(rng.uniform(2.6, 3.4)), cadence=float(rng.normal(168, 4)),
                              ascent=km * float(rng.uniform(0, 15))))  # climb per km independent of km
        if rng.random() < 1 / (1 + math.exp(-(base + effect * (km - 10)))):
            pains.append(_pain(acts[-1]["activity_id"]))
    return acts, pains


def _frames(acts: list[dict[str, Any]], pains: list[dict[str, Any]]) -> pl.DataFrame:
    return run_factors(frame_from_rows(acts, ACTIVITY_SCHEMA), frame_from_rows(pains, PAIN_REPORT_SCHEMA))


def test_a_planted_distance_effect_is_found_and_its_interval_covers_the_truth() -> None:
    acts, pains = _club(3, 400, athlete="ann", effect=0.4)
    out = athlete_links(_frames(acts, pains))
    assert out.schema == pl.Schema(LINK_SCHEMA)
    row = out.filter(pl.col("factor") == "distance").row(0, named=True)
    assert row["status"] == "ok" and row["method"] == "logistic" and row["link_found"]
    assert row["ci_lo"] <= math.exp(0.4) <= row["ci_hi"]  # odds ratio per km, planted
    assert row["sentence"].startswith("Each extra 1 km of run distance went with")
    assert f"{row['n_runs']} runs, {row['n_events']} with pain" in row["sentence"]
    # unrelated factors are not claimed
    others = out.filter(pl.col("factor").is_in(["cadence", "hills", "pace"]))
    assert not others["link_found"].any()


def test_distance_step_follows_the_athlete_unit() -> None:
    acts, pains = _club(3, 400, athlete="ann", effect=0.4)
    km = athlete_links(_frames(acts, pains)).filter(pl.col("factor") == "distance").row(0, named=True)
    mi = athlete_links(_frames(acts, pains), unit="mi").filter(pl.col("factor") == "distance").row(0, named=True)
    assert mi["odds_ratio"] == pytest.approx(km["odds_ratio"] ** 1.609344, rel=1e-6)
    assert "Each extra 1 mi of run distance" in mi["sentence"]


def test_a_flag_uses_the_exact_odds_ratio_of_its_2x2_table() -> None:
    acts, pains = _club(5, 60, athlete="ann", effect=0.0, base=-2.0)
    factors = _frames(acts, pains)
    # plant: three extra spike runs, all with pain
    extra = [_activity(100 + i, "ann", T0 + timedelta(days=41 + 40 * i, hours=12), 30.0) for i in range(3)]
    factors = _frames(acts + extra, pains + [_pain(a["activity_id"]) for a in extra])
    row = athlete_links(factors).filter(pl.col("factor") == "spike").row(0, named=True)
    x, y = factors["spike"].to_numpy(), factors["pain"].to_numpy()
    table = [[int((x & y).sum()), int((x & ~y).sum())], [int((~x & y).sum()), int((~x & ~y).sum())]]
    expected = odds_ratio(table, kind="conditional")
    ci = expected.confidence_interval(confidence_level=0.95)
    assert row["method"] == "exact"
    assert (row["odds_ratio"], row["ci_lo"], row["ci_hi"]) == pytest.approx((expected.statistic, ci.low, ci.high))
    assert row["p_value"] == pytest.approx(stats.fisher_exact(table).pvalue)
    assert f"{table[0][0]} of {table[0][0] + table[0][1]} runs more than 10 % longer" in row["sentence"]


def test_separation_is_reported_not_raised() -> None:
    # every run over 10 km hurts, none under: logistic regression has no finite estimate
    acts = [_activity(i, "ann", T0 + timedelta(days=2 * i), 5.0 + i) for i in range(12)]
    pains = [_pain(a["activity_id"]) for a in acts if a["distance_m"] > 10000]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may leak out of the model code
        row = athlete_links(_frames(acts, pains)).filter(pl.col("factor") == "distance").row(0, named=True)
    assert row["status"] == "unreliable" and row["odds_ratio"] is None and not row["link_found"]
    assert "complete separation" in row["detail"] and "11 km or more" in row["detail"]


def test_warnings_from_a_fit_make_it_unreliable() -> None:
    def warns() -> None:
        warnings.warn("Maximum Likelihood optimization failed to converge", ConvergenceWarning, stacklevel=1)

    with pytest.raises(links._Unreliable, match="ConvergenceWarning"):
        links._fit_quietly(warns)

    def singular() -> None:
        np.linalg.inv(np.zeros((2, 2)))

    with pytest.raises(links._Unreliable, match="LinAlgError"):
        links._fit_quietly(singular)


def test_below_five_runs_with_pain_there_is_no_number() -> None:
    acts = [_activity(i, "ann", T0 + timedelta(days=2 * i), 5.0 + i % 7) for i in range(30)]
    pains = [_pain(acts[i]["activity_id"]) for i in (3, 9, 15, 22)]
    out = athlete_links(_frames(acts, pains))
    assert set(out["status"].to_list()) == {"not_enough_data"}
    assert out["odds_ratio"].null_count() == out.height and not out["link_found"].any()
    distance = out.filter(pl.col("factor") == "distance")["sentence"][0]
    assert distance == "Run distance (km): not enough data (4 runs with pain; needs at least 5)."
    assert all(re.search(r"not enough data \(\d runs? with pain; needs at least 5\)", s) for s in out["sentence"])
    assert [r["factor"] for r in out.iter_rows(named=True)] == [f.name for f in FACTORS]


def test_noise_is_not_claimed_after_holm() -> None:
    # seven factors, no effect, several seeds: Holm keeps the family-wise error at 5 %
    claims = 0
    for seed in range(8):
        acts, pains = _club(100 + seed, 120, athlete="ann", effect=0.0, base=-1.0)
        claims += int(athlete_links(_frames(acts, pains))["link_found"].any())
    assert claims <= 1


def test_club_model_compares_within_athletes_and_skips_athletes_without_pain() -> None:
    acts, pains = [], []
    for k in range(6):
        a, p = _club(20 + k, 100, athlete=f"a{k}", effect=0.5, base=-1.0 + 0.2 * k)
        acts, pains = acts + a, pains + p
    quiet, _ = _club(13, 80, athlete="cat", effect=0.0)  # no pain at all: no within-athlete contrast
    out = club_links(_frames(acts + quiet, pains))
    row = out.filter(pl.col("factor") == "distance").row(0, named=True)
    assert row["scope"] == "club" and row["method"] == "gee"
    assert row["n_athletes"] == 6 and row["n_runs"] == 600
    assert row["ci_lo"] <= math.exp(0.5) <= row["ci_hi"] and row["ci_lo"] > 1.0 and row["link_found"]
    assert row["sentence"].startswith("Across the club, each extra 1 km of run distance (within each athlete)")
    others = out.filter(pl.col("factor").is_in(["pace", "cadence", "hills"]))
    assert not others["link_found"].any()
    flag = out.filter(pl.col("factor") == "spike").row(0, named=True)
    assert flag["method"] == "mantel-haenszel"


def test_club_with_one_athlete_defers_to_the_athlete_page() -> None:
    a1, p1 = _club(11, 150, athlete="ann", effect=0.5)
    out = club_links(_frames(a1, p1))
    assert set(out["status"].to_list()) == {"not_enough_data"}
    assert "only one athlete" in out["detail"][0]


def test_statistics_libraries_are_imported_only_in_the_analysis_stage() -> None:
    import ast
    from pathlib import Path

    package = Path(links.__file__).resolve().parents[1]
    owners = {"lifelines", "statsmodels", "scipy"}
    offenders = []
    for path in package.rglob("*.py"):
        stage = path.relative_to(package).parts[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            offenders += [f"{path.relative_to(package)}: {n}" for n in names
                          if n.split(".")[0] in owners and stage != "analysis"]
    assert not offenders, offenders
    assert any((package / "analysis").rglob("survival.py"))  # the scan sees the package
