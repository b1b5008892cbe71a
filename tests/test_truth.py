"""The pipeline recovers what the simulator planted: every pain onset joined to the right run and sample."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import polars as pl
import pytest

from pipeline.warehouse.query import run_readonly_query


def _q(ingested: dict[str, Any], sql: str) -> pl.DataFrame:
    return run_readonly_query(ingested["settings"].snapshot_path, sql, max_rows=None)


def _reports(ingested: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    frame = _q(
        ingested,
        """SELECT p.*, a.source_file AS activity_file
           FROM pain_reports p LEFT JOIN activities a USING (activity_id)
           WHERE p.superseded_utc IS NULL""",
    )
    return {(r["source_file"], r["line"]): r for r in frame.to_dicts()}


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_every_planted_report_is_kept_with_its_expected_status(sim_ingested: dict[str, Any]) -> None:
    truth = sim_ingested["truth"]["pain_reports"]
    got = _reports(sim_ingested)
    assert truth, "the simulator planted no pain reports"
    assert len(got) == len(truth)
    for t in truth:
        row = got[(t["source_file"], t["line"])]
        assert row["status"] == t["expected_status"], (t["source_file"], t["line"], row["status_detail"])
        if t["expected_status"] in {"matched", "after_run", "next_day"}:
            assert row["activity_file"] == t["activity_file"], (t["source_file"], t["line"])


def test_onsets_land_within_1_s_or_10_m_of_the_truth(sim_ingested: dict[str, Any]) -> None:
    truth = [t for t in sim_ingested["truth"]["pain_reports"] if t["expected_status"] == "matched"]
    got = _reports(sim_ingested)
    kinds = set()
    for t in truth:
        row = got[(t["source_file"], t["line"])]
        implied = t["implied"]
        where = f"{t['source_file']}:{t['line']} {t['onset_raw']!r}"
        kinds.add(t["onset_kind"])
        if implied.get("utc"):
            assert abs((row["onset_utc"] - _utc(implied["utc"])).total_seconds()) <= 1, where
        elif implied.get("moving_s") is not None:
            assert abs(row["onset_moving_s"] - implied["moving_s"]) <= 1, where
        elif implied.get("distance_m") is not None:
            assert abs(row["onset_distance_m"] - implied["distance_m"]) <= 10, where
            if t.get("onset_distance_lo_m") is not None:
                assert abs(row["onset_distance_lo_m"] - t["onset_distance_lo_m"]) <= 10, where
                assert abs(row["onset_distance_hi_m"] - t["onset_distance_hi_m"]) <= 10, where
        else:  # the written form is the planted instant itself
            assert abs((row["onset_utc"] - _utc(t["onset_utc"])).total_seconds()) <= 1, where
    assert {"distance", "elapsed"} <= kinds, kinds


def test_exact_forms_hit_the_planted_sample(sim_ingested: dict[str, Any]) -> None:
    """Clock, ISO and elapsed onsets carry the planted instant: the joined sample is that sample."""
    truth = [
        t for t in sim_ingested["truth"]["pain_reports"]
        if t["expected_status"] == "matched" and t["onset_kind"] in {"clock", "instant", "elapsed"}
    ]
    if not truth:
        pytest.skip("this small club planted no clock/elapsed onsets")
    got = _reports(sim_ingested)
    for t in truth:
        row = got[(t["source_file"], t["line"])]
        assert abs((row["sample_t_utc"] - _utc(t["onset_utc"])).total_seconds()) <= 1, t["onset_raw"]


def test_duplicate_and_broken_files_are_in_the_ledger(sim_ingested: dict[str, Any]) -> None:
    ledger = {r["path"]: r for r in _q(sim_ingested, "SELECT path, status, reason, duplicate_of FROM files").to_dicts()}
    for act in sim_ingested["truth"]["activities"]:
        row = ledger[act["file"]]
        if act.get("broken"):
            assert row["status"] == "rejected" and row["reason"], act["file"]
        elif act.get("duplicate_of"):
            assert row["status"] == "duplicate", act["file"]
        else:
            assert row["status"] == "loaded", act["file"]


def test_planted_activity_values_survive_the_warehouse(sim_ingested: dict[str, Any]) -> None:
    acts = {r["source_file"]: r for r in _q(sim_ingested, "SELECT * FROM activities").to_dicts()}
    for t in sim_ingested["truth"]["activities"]:
        if t.get("broken") or t.get("duplicate_of"):
            continue
        a = acts[t["file"]]
        assert a["start_utc"] == _utc(t["start_utc"]), t["file"]
        assert a["sport"] == t["sport"], t["file"]
        assert a["distance_m"] == pytest.approx(t["distance_m"], rel=0.01), t["file"]
        assert a["moving_s"] == pytest.approx(t["moving_s"], abs=2), t["file"]
        assert a["has_gps"] == t["has_gps"], t["file"]
        if t["sport"] == "running" and t.get("avg_cadence_spm"):
            assert a["avg_cadence_spm"] == pytest.approx(t["avg_cadence_spm"], abs=2), t["file"]
