"""docs/queries.sql: every coach question runs on the simulated club and gives the right answer.

Each query runs through ``run_readonly_query`` (the sealed session of ``pipeline sql``) on the
``sim_ingested`` snapshot. The checks come from elsewhere: the simulator's planted truth (the
long-run spike, the knee's cadence drop, the broken files, the unmatched report) and polars
computations over the warehouse's raw tables, written here independently of the SQL.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from pipeline.cli import EXIT_USAGE, cli
from pipeline.warehouse import run_readonly_query
from pipeline.warehouse.named import NamedQuery, parse_named_queries, read_named_queries

REPO = Path(__file__).resolve().parents[1]
QUERIES = REPO / "docs" / "queries.sql"
RUNNING = ["running", "trail_running", "treadmill_running"]
NAMED = read_named_queries(QUERIES)


@pytest.fixture(scope="module")
def snap(sim_ingested: dict[str, Any]) -> Path:
    return sim_ingested["settings"].snapshot_path


def run(snap: Path, name: str, **params: str) -> pl.DataFrame:
    query = NAMED[name]
    return run_readonly_query(snap, query.sql, params={**query.params, **params} or None)


def table(snap: Path, sql: str) -> pl.DataFrame:
    return run_readonly_query(snap, sql, max_rows=None)


def local_runs(snap: Path) -> pl.DataFrame:
    """Running activities with their local start (UTC + the recorded offset), computed in polars."""
    acts = table(snap, "SELECT * FROM activities")
    return acts.filter(pl.col("sport").is_in(RUNNING)).with_columns(
        start_local=(pl.col("start_utc").dt.replace_time_zone(None)
                     + pl.duration(seconds=pl.col("utc_offset_s").fill_null(0))),
    ).with_columns(date_local=pl.col("start_local").dt.date())


def current_pain(snap: Path) -> pl.DataFrame:
    return table(snap, "SELECT * FROM pain_reports").filter(pl.col("superseded_utc").is_null())


# ---------------------------------------------------------------------- the file itself


def test_the_file_holds_at_least_ten_named_questions() -> None:
    text = QUERIES.read_text(encoding="utf-8")
    names = re.findall(r"^-- name: (\S+)$", text, flags=re.M)
    assert len(names) >= 10
    assert list(NAMED) == names  # every block parsed, none merged into another
    for query in NAMED.values():
        assert query.question.endswith("?"), query.name
        assert query.sql.endswith(";") and "-- name:" not in query.sql
        used = set(re.findall(r"\$([A-Za-z_]\w*)", query.sql))
        assert used == set(query.params), f"{query.name}: parameters {used} vs examples {query.params}"


def test_every_query_has_its_own_test() -> None:
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert set(NAMED) <= tested, sorted(set(NAMED) - tested)


def test_the_parser_names_the_line_of_a_bad_block() -> None:
    from pipeline.errors import InputError

    good = "-- name: a\n-- question: A?\nSELECT 1;\n"
    assert parse_named_queries(good)["a"] == NamedQuery("a", "A?", "SELECT 1;", {}, 1)
    for text, message in [
        (good + "-- name: a\n-- question: again?\nSELECT 2;\n", "used twice"),
        ("\n-- name: b\nSELECT 1;\n", "no '-- question:'"),
        ("-- name: c\n-- question: C?\n-- params: x\nSELECT $x;\n", "name=value"),
        ("-- name: d\n-- question: D?\nSELECT 1\n", "must end with ';'"),
        ("-- name: bad-name\n-- question: E?\nSELECT 1;\n", "a word"),
    ]:
        with pytest.raises(InputError, match=message) as info:
            parse_named_queries(text, where="q.sql")
        assert info.value.path == "q.sql" and info.value.line is not None


# ---------------------------------------------------------------------- one test per query


def test_onsets_with_cadence(snap: Path, sim_ingested: dict[str, Any]) -> None:
    got = run(snap, "onsets_with_cadence")
    assert {"run_start_local", "onset_km", "first10_cadence_spm", "pre5_cadence_spm",
            "cadence_change_spm"} <= set(got.columns)
    pain = current_pain(snap).filter((pl.col("status") == "matched") & (pl.col("body_part") == "knee"))
    assert got.height == pain.height > 3  # the simulated club spans 4 weeks: every knee onset is in
    assert set(got["athlete_id"]) == {"knee"}
    # the planted effect: cadence drops before the knee starts hurting
    assert (got["cadence_change_spm"] < 0).all()
    # one row against the samples, in polars: mean non-zero cadence in the 5 minutes up to the onset
    row = got.row(0, named=True)
    report = pain.filter(pl.col("activity_id") == row["activity_id"]).row(0, named=True)
    samples = table(snap, f"SELECT * FROM samples WHERE activity_id = '{row['activity_id']}'")
    onset = report["sample_t_utc"]
    window = samples.filter(pl.col("t_utc").is_between(onset - timedelta(minutes=5), onset)
                            & (pl.col("cadence_spm") > 0))
    assert row["pre5_cadence_spm"] == pytest.approx(window["cadence_spm"].mean(), abs=0.051)
    start = samples["t_utc"].min()
    first = samples.filter((pl.col("t_utc") <= start + timedelta(minutes=10)) & (pl.col("cadence_spm") > 0))
    assert row["first10_cadence_spm"] == pytest.approx(first["cadence_spm"].mean(), abs=0.051)
    # the parameters do what they say
    assert set(run(snap, "onsets_with_cadence", body_part="hamstring")["athlete_id"]) == {"spike"}
    latest = local_runs(snap).filter(pl.col("athlete_id") == "knee")["start_utc"].max()
    recent = pain.filter(pl.col("onset_utc") >= latest - timedelta(weeks=1)).height
    assert run(snap, "onsets_with_cadence", weeks="1").height == recent < got.height


def test_weekly_distance_vs_pain(snap: Path) -> None:
    got = run(snap, "weekly_distance_vs_pain")
    assert {"week_start_local", "distance_km", "change_vs_last_week_pct", "pain_reported"} <= set(got.columns)
    runs = local_runs(snap).with_columns(week=pl.col("date_local").dt.truncate("1w"))
    weekly = runs.group_by("athlete_id", "week").agg(km=pl.col("distance_m").sum() / 1000, n=pl.len())
    expected = {(r["athlete_id"], r["week"]): (round(r["km"], 1), r["n"]) for r in weekly.iter_rows(named=True)}
    have = {(r["athlete_id"], r["week_start_local"]): (r["distance_km"], r["runs"]) for r in got.iter_rows(named=True)}
    assert have.keys() == expected.keys()
    for key, (km, n) in expected.items():
        assert have[key][0] == pytest.approx(km, abs=0.051) and have[key][1] == n, key
    # week-on-week change where the week before had runs
    for r in got.iter_rows(named=True):
        before = have.get((r["athlete_id"], r["week_start_local"] - timedelta(days=7)))
        if before is None:
            assert r["change_vs_last_week_pct"] is None
        else:
            assert r["change_vs_last_week_pct"] == pytest.approx(100 * (r["distance_km"] / before[0] - 1), abs=1.5)
    dated = current_pain(snap).filter(pl.col("date_local").is_not_null())
    assert got["pain_reported"].sum() == dated.height


def test_long_run_spikes(snap: Path, sim_ingested: dict[str, Any]) -> None:
    got = run(snap, "long_run_spikes")
    assert {"distance_km", "longest_30d_km", "ratio", "pain_reports_within_2_days"} <= set(got.columns)
    planted = {a["file"] for a in sim_ingested["truth"]["activities"] if a.get("is_spike")}
    assert planted, "the simulated club should plant a spike"
    ids = dict(table(snap, "SELECT activity_id, source_file FROM activities").iter_rows())
    assert {ids[a] for a in got["activity_id"]} == planted
    # the same in polars: a run over 1.3 x the longest run of the 30 days before it
    runs = local_runs(snap).sort("start_utc")
    flagged = set()
    for r in runs.iter_rows(named=True):
        before = runs.filter((pl.col("athlete_id") == r["athlete_id"]) & (pl.col("start_utc") < r["start_utc"])
                             & (pl.col("start_utc") >= r["start_utc"] - timedelta(days=30)))
        if before.height and r["distance_m"] > 1.3 * before["distance_m"].max():
            flagged.add(r["activity_id"])
    assert set(got["activity_id"]) == flagged
    assert (got["ratio"] > 1.3).all() and (got["pain_reports_within_2_days"] >= 1).all()  # the spike hurt


def test_pain_free_distance(snap: Path) -> None:
    got = run(snap, "pain_free_distance")
    assert {"run_km", "pain_free_km", "onsets"} <= set(got.columns)
    runs = local_runs(snap).filter(pl.col("athlete_id") == "knee")
    assert got.height == runs.height
    onsets = current_pain(snap).filter(pl.col("status") == "matched").group_by("activity_id").agg(
        first_m=pl.col("onset_distance_m").min())
    first = dict(onsets.iter_rows())
    hurt = 0
    for r in got.iter_rows(named=True):
        if r["activity_id"] in first:
            hurt += 1
            assert r["onsets"] >= 1 and r["pain_free_km"] == pytest.approx(first[r["activity_id"]] / 1000, abs=0.006)
            assert r["pain_free_km"] < r["run_km"]
        else:
            assert r["onsets"] == 0 and r["pain_free_km"] == r["run_km"]
    assert hurt >= 5
    assert set(run(snap, "pain_free_distance", athlete="control")["onsets"]) == {0}


def test_unmatched_pain_reports(snap: Path, sim_ingested: dict[str, Any]) -> None:
    got = run(snap, "unmatched_pain_reports")
    assert {"status", "status_detail", "source_file", "line"} <= set(got.columns)
    expected = {(p["source_file"], p["line"], p["expected_status"])
                for p in sim_ingested["truth"]["pain_reports"] if p["expected_status"] != "matched"}
    assert expected, "the simulated club should plant a report that matches no run"
    assert set(zip(got["source_file"], got["line"], got["status"])) == expected
    assert got["status_detail"].null_count() == 0


def test_rejected_input(snap: Path, sim_ingested: dict[str, Any]) -> None:
    got = run(snap, "rejected_input")
    assert {"kind", "source", "line", "status", "reason", "athlete_id"} <= set(got.columns)
    broken = {a["file"] for a in sim_ingested["truth"]["activities"] if a.get("broken")}
    files = got.filter(pl.col("kind") == "file")
    assert set(files["source"]) == broken
    assert set(files["athlete_id"]) == {f.split("/")[0] for f in broken}
    assert files["reason"].str.contains("FIT").all()
    assert got.filter(pl.col("kind") == "pain row").height == table(
        snap, "SELECT count(*) AS n FROM pain_rows_rejected")["n"][0]


def test_onset_distance_by_body_part(snap: Path, sim_ingested: dict[str, Any]) -> None:
    got = run(snap, "onset_distance_by_body_part")
    assert {"onsets", "min_km", "median_km", "max_km", "median_fraction_of_run"} <= set(got.columns)
    knee = got.filter(pl.col("body_part") == "knee").row(0, named=True)
    params = sim_ingested["truth"]["athletes"]["knee"]["params"]
    lo, hi = params["onset_clip_km"]
    assert lo - 0.3 <= knee["min_km"] <= knee["median_km"] <= knee["max_km"] <= hi + 0.3
    assert abs(knee["median_km"] - params["onset_mean_km"]) < 3 * params["onset_sd_km"]
    pain = current_pain(snap).filter((pl.col("status") == "matched") & (pl.col("body_part") == "knee"))
    assert knee["onsets"] == pain.height
    assert knee["median_km"] == pytest.approx(pain["onset_distance_m"].median() / 1000, abs=0.006)
    assert 0 < knee["median_fraction_of_run"] < 1


def test_hr_drift(snap: Path) -> None:
    got = run(snap, "hr_drift")
    assert {"hr_first_half_bpm", "hr_second_half_bpm", "hr_drift_pct", "pace_first_half_s_per_km"} <= set(got.columns)
    long_runs = local_runs(snap).filter((pl.col("moving_s") >= 2400) & pl.col("avg_hr_bpm").is_not_null())
    assert set(got["activity_id"]) == set(long_runs["activity_id"])
    # one run in polars: mean heart rate of each half by timer time
    aid = got["activity_id"][0]
    act = long_runs.filter(pl.col("activity_id") == aid).row(0, named=True)
    s = table(snap, f"SELECT * FROM samples WHERE activity_id = '{aid}' AND hr_bpm > 0").with_columns(
        t=pl.coalesce("moving_s", "elapsed_s"))
    first = s.filter(pl.col("t") < act["moving_s"] / 2)["hr_bpm"].mean()
    second = s.filter(pl.col("t") >= act["moving_s"] / 2)["hr_bpm"].mean()
    row = got.row(0, named=True)
    assert row["hr_first_half_bpm"] == pytest.approx(first, abs=0.051)
    assert row["hr_second_half_bpm"] == pytest.approx(second, abs=0.051)
    assert row["hr_drift_pct"] == pytest.approx(100 * (second / first - 1), abs=0.051)
    assert got["hr_drift_pct"].to_list() == sorted(got["hr_drift_pct"].to_list(), reverse=True)


def test_runs_over_cap(snap: Path, sim_ingested: dict[str, Any]) -> None:
    got = run(snap, "runs_over_cap")
    assert {"distance_km", "cap_km", "over_km"} <= set(got.columns)
    caps = {a: info["distance_cap"] for a, info in sim_ingested["truth"]["athletes"].items()}
    assert caps["knee"] == "9 mi"
    cap_m = 9 * 1609.344
    over = local_runs(snap).filter((pl.col("athlete_id") == "knee") & (pl.col("distance_m") > cap_m))
    assert over.height > 0
    assert set(got["activity_id"]) == set(over["activity_id"])  # no other athlete has a cap
    assert (got["cap_km"] == round(cap_m / 1000, 2)).all() and (got["over_km"] > 0).all()


def test_fade_before_onset(snap: Path) -> None:
    got = run(snap, "fade_before_onset")
    assert {"pace_change_s_per_km", "cadence_change_spm", "hr_change_bpm",
            "onsets_with_cadence_drop"} <= set(got.columns)
    knee = got.filter(pl.col("athlete_id") == "knee").row(0, named=True)
    # planted: the knee runner's cadence drops and the pace fades before the pain
    assert knee["cadence_change_spm"] < 0 and knee["pace_change_s_per_km"] > 0
    assert knee["onsets_with_cadence_drop"] == knee["onsets"]
    onsets = table(snap, "SELECT * FROM pain_onsets").filter(pl.col("athlete_id") == "knee")
    assert knee["cadence_change_spm"] == pytest.approx(onsets["cadence_change_spm"].mean(), abs=0.051)


def test_acute_chronic_load(snap: Path) -> None:
    got = run(snap, "acute_chronic_load")
    assert {"acute_7d_km", "chronic_weekly_km", "acute_chronic_ratio", "chronic_weeks"} <= set(got.columns)
    runs = local_runs(snap).sort("start_utc")
    assert got.height == runs.height
    for r in got.sample(5, seed=1).iter_rows(named=True):
        mine = runs.filter(pl.col("athlete_id") == r["athlete_id"])
        t = mine.filter(pl.col("activity_id") == r["activity_id"])["start_utc"][0]
        week = mine.filter(pl.col("start_utc").is_between(t - timedelta(days=7), t))["distance_m"].sum() / 1000
        month = mine.filter(pl.col("start_utc").is_between(t - timedelta(days=28), t))["distance_m"].sum() / 1000
        assert r["acute_7d_km"] == pytest.approx(week, abs=0.051)
        assert r["chronic_weekly_km"] == pytest.approx(month / 4, abs=0.051)


def test_recorded_twice(snap: Path, sim_ingested: dict[str, Any]) -> None:
    got = run(snap, "recorded_twice")
    assert {"kept_file", "duplicate_file", "difference_m"} <= set(got.columns)
    pairs = {(a["duplicate_of"], a["file"]) for a in sim_ingested["truth"]["activities"] if a.get("duplicate_of")}
    assert pairs, "the simulated club should record one run twice"
    assert set(zip(got["kept_file"], got["duplicate_file"])) == pairs
    assert (got["difference_m"].abs() < 200).all()  # the same run, two recordings


def test_recent_ingests(snap: Path, sim_ingested: dict[str, Any]) -> None:
    got = run(snap, "recent_ingests")
    assert {"started_utc", "command", "status", "loaded", "rejected"} <= set(got.columns)
    summary = sim_ingested["summary"]
    assert got.height == 1
    row = got.row(0, named=True)
    assert row["status"] == "rejections" and row["command"] == "ingest"
    assert int(row["loaded"]) == summary.loaded and int(row["rejected"]) == len(summary.rejected)


# ---------------------------------------------------------------------- through the CLI


def test_named_queries_through_the_cli(sim_ingested: dict[str, Any]) -> None:
    runner = CliRunner()
    warehouse = str(sim_ingested["settings"].warehouse_dir)
    listing = runner.invoke(cli, ["sql", "--warehouse", warehouse, "--file", str(QUERIES)])
    assert listing.exit_code == 0, listing.output
    for query in NAMED.values():
        assert query.name in listing.output and query.question in listing.output

    snap = sim_ingested["settings"].snapshot_path
    out = runner.invoke(cli, ["sql", "--warehouse", warehouse, "-f", str(QUERIES), "-n", "runs_over_cap",
                              "--format", "csv"])
    assert out.exit_code == 0, out.output
    assert out.output == run(snap, "runs_over_cap").write_csv()
    fewer = runner.invoke(cli, ["sql", "--warehouse", warehouse, "-f", str(QUERIES), "-n", "onsets_with_cadence",
                                "-p", "weeks", "1", "--format", "json"])
    assert fewer.exit_code == 0, fewer.output
    assert fewer.output.count('"activity_id"') == run(snap, "onsets_with_cadence", weeks="1").height

    unknown = runner.invoke(cli, ["sql", "--warehouse", warehouse, "-f", str(QUERIES), "-n", "nope"])
    assert unknown.exit_code == EXIT_USAGE and "no query named 'nope'" in unknown.output
    both = runner.invoke(cli, ["sql", "--warehouse", warehouse, "-f", str(QUERIES), "-n", "hr_drift", "SELECT 1"])
    assert both.exit_code == EXIT_USAGE and "not both" in both.output
    lonely = runner.invoke(cli, ["sql", "--warehouse", warehouse, "-n", "hr_drift"])
    assert lonely.exit_code == EXIT_USAGE and "--file" in lonely.output
