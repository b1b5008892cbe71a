"""Every file of the real corpus (../shared/corpus) against MANIFEST.tsv.

The manifest's values come from other decoders (fitparse 1.2.0, fitdecode,
gpxpy, lxml), read independently of our code. Each corpus file is parsed
once per test session (a module-level cache), so the whole module costs
about one pass over the corpus (~20 s on one core, dominated by fitparse).

Every departure from the manifest is listed below with its reason; the
tests check that the reason still holds, so a stale exception fails.
"""

from __future__ import annotations

import csv
import statistics
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from pipeline.errors import InputError, RejectedFile, SkippedFile
from pipeline.normalise import cumulative_distance_m, read_activities
from pipeline.schema import ACTIVITY_SCHEMA, LAP_SCHEMA, PAUSE_SCHEMA, RUNNING_SPORTS, SAMPLE_SCHEMA, NormalisedActivity

pytestmark = pytest.mark.corpus

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
ABSENT = f"corpus not found at {CORPUS} (tests read ../shared/corpus; nothing is copied into the repo)"


def _manifest() -> dict[str, dict[str, str]]:
    path = CORPUS / "MANIFEST.tsv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["file"]: row for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)}


MANIFEST = _manifest()
#: Activity files (the fitparse reference CSVs are checked separately).
FILES = sorted(
    str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*") if p.is_file() and not p.name.endswith(".csv")
) if CORPUS.is_dir() else []

#: Files that load without a date: their times are seconds since the watch was switched on.
#: (FR70 ANT-FS dumps; their only absolute time, activity.local_timestamp, is the same in
#: both files although the runs are 9 days apart: it is the download time.)
DEVICE_CLOCK = {
    "fit/fitparse__compressed-speed-distance.fit": "FR70, footpod distance, 2 timer stops",
    "fit/fitparse__antfs-dump.63.fit": "FR70, heart rate only",
}
#: Files we refuse although they decode, and why (a phrase of the reason).
REJECTED = {
    # FIT SDK example: 3 records without any timestamp (and 47 m/s "running").
    "fit/fitparse__DeveloperData.fit": "no timestamp",
    # FR910XT pool swim: 67 length records without timestamps.
    "fit/php-fit__swim.fit": "no timestamp",
    # gpxpy fixture: times stripped from 291 of 296 points.
    "gpx/gpxpy__cerknicko-without-times.gpx": "without <time>",
}
#: Readable files that hold no activity.
SKIPPED = {
    "fit/fitparse__MonitoringFile.fit": "monitoring_b",
    "fit/fitparse__Settings.fit": "settings",
    "gpx/gpxpy__gpx1.0_with_all_fields.gpx": "single point",
    "gpx/gpxpy__gpx1.1_with_all_fields.gpx": "single point",
    "gpx/goldencheetah__MetadataOnly.gpx": "no track points",
    "tcx/gpsbabel__gtrnctr-readcp.tcx": "course",
}
#: Running files whose cadence median is a walking cadence: they were walked.
#: Checked: their average speed is below 2.0 m/s (8:20 min/km).
WALKED_RUNS = {
    "fit/heartandsole__testdata.fit": "3-minute stop-and-go test file, mostly standing and walking",
    "gpx/heartandsole__testdata.gpx": "same activity as the FIT",
    "tcx/heartandsole__testdata.tcx": "same activity as the FIT",
    "fit/goldencheetah__Move_2020_01_15_19_27_16_Running.fit": "walked at 1.6 m/s, 110 spm throughout",
    "fit/sportslib__2067489619.fit": "run/walk intervals, walking most of the time",
    "gpx/sportslib__2067489619.gpx": "same activity as the FIT",
}
#: Manifest flag differences: (file, flag) -> reason.
FLAG_EXCEPTIONS = {
    # Zwift writes heart_rate=0 on every record when no strap is paired: 0 is "no reading".
    ("fit/fitparse__null_compressed_speed_dist.fit", "has_hr"): "hr is 0 on every record",
}
#: Cross-format groups: the same activity in several formats.
SAME_ACTIVITY = [
    ("fit/heartandsole__testdata.fit", "gpx/heartandsole__testdata.gpx", "tcx/heartandsole__testdata.tcx"),
    ("fit/sportslib__2067489619.fit", "gpx/sportslib__2067489619.gpx"),
    ("fit/goldencheetah__10kUNLP2014-Garmin15.fit", "tcx/goldencheetah__10kUNLP2014-Garmin15.tcx"),
]
#: GPX has no device distance, only the GPS track; for this 160 m stop-and-go
#: file the device's filtered distance (158.7 m) and the raw track (187.5 m)
#: differ by 18 %. The tracks themselves (FIT positions vs GPX points) agree.
GPS_VS_DEVICE = {"heartandsole"}

_CACHE: dict[str, list[NormalisedActivity] | InputError] = {}


def outcome(rel: str) -> list[NormalisedActivity] | InputError:
    """read_activities on a corpus file, once per session."""
    if not CORPUS.is_dir():
        pytest.skip(ABSENT)
    if rel not in _CACHE:
        try:
            _CACHE[rel] = read_activities(
                CORPUS / rel, rel_path=rel, athlete_id="corpus", athlete_tz="Europe/London"
            )
        except InputError as exc:
            _CACHE[rel] = exc
    return _CACHE[rel]


def loaded(rel: str) -> list[NormalisedActivity]:
    got = outcome(rel)
    if isinstance(got, InputError):
        pytest.fail(f"{rel} did not load: {got}")
    return got


def is_running(row: dict[str, str]) -> bool:
    sport = row["sport"].lower()
    return "running" in sport or sport == "9"


def expected_to_load(rel: str) -> bool:
    return not rel.startswith("broken/") and rel not in REJECTED and rel not in SKIPPED


def _param(files: list[str]) -> list[str] | list[object]:
    return files or [pytest.param("", marks=pytest.mark.skip(reason=ABSENT))]


LOADING = [f for f in FILES if expected_to_load(f)]


# --------------------------------------------------------------------------- the corpus itself


def test_corpus_is_present_and_matches_the_manifest() -> None:
    if not CORPUS.is_dir():
        pytest.skip(ABSENT)
    assert FILES, f"no files under {CORPUS}"
    assert set(FILES) <= set(MANIFEST), "files missing from MANIFEST.tsv"
    for name in list(REJECTED) + list(SKIPPED) + list(WALKED_RUNS) + list(DEVICE_CLOCK):
        assert name in MANIFEST, f"stale exception: {name}"


# --------------------------------------------------------------------------- outcome per file


@pytest.mark.parametrize("rel", _param(FILES))
def test_outcome(rel: str) -> None:
    got = outcome(rel)
    name = Path(rel).name
    if rel.startswith("broken/") or rel in REJECTED:
        assert isinstance(got, RejectedFile), f"{rel} should be rejected, got {got!r}"
        assert name in str(got) and got.reason
        if rel in REJECTED:
            assert REJECTED[rel] in got.reason
    elif rel in SKIPPED:
        assert isinstance(got, SkippedFile), f"{rel} should be skipped, got {got!r}"
        assert name in str(got) and SKIPPED[rel] in got.reason
    else:
        assert not isinstance(got, InputError), f"{rel}: {got}"
        assert got and all(isinstance(a, NormalisedActivity) for a in got)


@pytest.mark.parametrize("rel", _param([f for f in FILES if f in MANIFEST and is_running(MANIFEST[f]) and not f.startswith("broken/")]))
def test_every_running_file_loads(rel: str) -> None:
    got = outcome(rel)
    assert rel not in REJECTED, f"a running file is refused: {rel}"
    assert not isinstance(got, InputError), f"{rel}: {got}"
    sports = {a.activity["sport"] for a in got}
    assert sports & RUNNING_SPORTS


# --------------------------------------------------------------------------- values against the manifest


def _manifest_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


@pytest.mark.parametrize("rel", _param(LOADING))
def test_start_time(rel: str) -> None:
    first = loaded(rel)[0].activity
    if rel in DEVICE_CLOCK:
        # the manifest gives the raw device-relative start_time: no date, and none invented
        assert MANIFEST[rel]["start_time"].isdigit()
        assert first["device_time_s"] == int(MANIFEST[rel]["start_time"]) < 0x10000000
        assert first["start_utc"] is None and first["end_utc"] is None
        assert (first["tz_source"], first["utc_offset_s"], first["timezone"]) == ("none", None, None)
        return
    assert first["start_utc"] == _manifest_time(MANIFEST[rel]["start_time"])
    assert first["start_utc"].tzinfo is not None
    assert first["device_time_s"] is None


@pytest.mark.parametrize("rel", _param(sorted(DEVICE_CLOCK) if CORPUS.is_dir() else []))
def test_device_clock_files_keep_their_durations(rel: str) -> None:
    """Elapsed time as the manifest has it; every instant of the activity null, the time axis kept."""
    (a,) = loaded(rel)
    assert a.activity["elapsed_s"] == pytest.approx(float(MANIFEST[rel]["duration_s"]), abs=1.0)
    assert a.activity["moving_s"] <= a.activity["elapsed_s"]
    assert a.samples["t_utc"].null_count() == a.samples.height > 0
    assert a.samples["elapsed_s"].is_sorted() and a.samples["elapsed_s"][0] >= 0.0
    assert a.samples["elapsed_s"][-1] <= a.activity["elapsed_s"]
    for frame in (a.laps, a.pauses):
        assert frame["start_utc"].null_count() == frame["end_utc"].null_count() == frame.height
    assert a.laps.height == int(MANIFEST[rel]["notes"].split(" laps")[0].rsplit(" ", 1)[-1])


@pytest.mark.parametrize("rel", _param(LOADING))
def test_distance_within_one_percent(rel: str) -> None:
    expected = MANIFEST[rel]["distance_m"]
    acts = loaded(rel)
    if not expected:
        assert all(a.activity["distance_source"] == "none" for a in acts), "the manifest knows no distance"
        return
    total = sum(a.activity["distance_m"] or 0.0 for a in acts)
    assert total == pytest.approx(float(expected), rel=0.01, abs=0.5)


@pytest.mark.parametrize("rel", _param(LOADING))
def test_sample_count_equals_record_count(rel: str) -> None:
    acts = loaded(rel)
    assert sum(a.samples.height for a in acts) == int(MANIFEST[rel]["record_count"])
    assert all(a.samples.height == a.activity["n_samples"] for a in acts)


@pytest.mark.parametrize("rel", _param(LOADING))
def test_flags(rel: str) -> None:
    acts = loaded(rel)
    samples = pl.concat([a.samples for a in acts])
    flags = {
        "has_gps": samples["lat_deg"].drop_nulls().len() > 0,
        "has_hr": samples["hr_bpm"].drop_nulls().len() > 0,
        "has_cadence": samples["cadence_spm"].drop_nulls().len() > 0,
        "has_power": samples["power_w"].drop_nulls().len() > 0,
    }
    for flag, ours in flags.items():
        theirs = MANIFEST[rel][flag] == "1"
        if (rel, flag) in FLAG_EXCEPTIONS:
            assert ours != theirs, f"stale exception {(rel, flag)}"
            continue
        assert ours == theirs, f"{flag}: ours {ours}, manifest {theirs}"
    assert any(a.activity["has_gps"] for a in acts) == flags["has_gps"]


@pytest.mark.parametrize("rel", _param([f for f in LOADING if MANIFEST[f]["has_cadence"] == "1" and is_running(MANIFEST[f])]))
def test_running_cadence_is_steps_per_minute(rel: str) -> None:
    for a in loaded(rel):
        if a.activity["sport"] not in RUNNING_SPORTS:
            continue
        cadence = [c for c in a.samples["cadence_spm"].to_list() if c]
        if not cadence:
            continue
        median = statistics.median(cadence)
        if rel in WALKED_RUNS:
            speed = a.activity["distance_m"] / a.activity["moving_s"]
            assert speed < 2.0 and median < 140, f"stale walked-run exception ({speed:.2f} m/s, {median} spm)"
        else:
            assert 140 <= median <= 210, f"median cadence {median} spm"


@pytest.mark.parametrize("rel", _param(LOADING))
def test_frames_follow_the_schema(rel: str) -> None:
    for i, a in enumerate(loaded(rel)):
        row = a.activity
        assert list(row) == list(ACTIVITY_SCHEMA)
        assert a.activity_frame().height == 1
        assert a.samples.schema == pl.Schema(SAMPLE_SCHEMA)
        assert a.laps.schema == pl.Schema(LAP_SCHEMA)
        assert a.pauses.schema == pl.Schema(PAUSE_SCHEMA)
        assert row["session_index"] == i
        assert row["activity_id"] == f"{MANIFEST[rel]['sha256'][:16]}-{i}"
        assert row["source_sha256"] == MANIFEST[rel]["sha256"]
        assert row["source_file"] == rel and row["athlete_id"] == "corpus"
        assert row["source_format"] in {"fit", "gpx", "tcx"} and rel.split("/")[0] == row["source_format"]
        assert (row["start_utc"] is None) == (rel in DEVICE_CLOCK) == (row["device_time_s"] is not None)
        assert row["start_utc"] is None or row["start_utc"] <= row["end_utc"]
        assert row["tz_source"] in {"fit_local_timestamp", "gps", "athlete", "file_offset", "none"}
        assert row["distance_source"] in {"device", "gps", "none"}
        s = a.samples
        if s.height and rel in DEVICE_CLOCK:
            assert s["t_utc"].null_count() == s.height and s["elapsed_s"].is_sorted()
        elif s.height:
            assert s["t_utc"].is_sorted()
            assert s["t_utc"].min() >= datetime(2000, 1, 1, tzinfo=timezone.utc)
            assert (s["moving_s"] <= s["elapsed_s"] + 1e-6).all()
            lat, lon = s["lat_deg"].drop_nulls(), s["lon_deg"].drop_nulls()
            assert lat.len() == lon.len() and (lat.abs() <= 90).all() and (lon.abs() <= 180).all()
            hr = s["hr_bpm"].drop_nulls()
            assert ((hr >= 20) & (hr <= 250)).all()
            cad = s["cadence_spm"].drop_nulls()
            assert ((cad >= 0) & (cad <= 260)).all()


@pytest.mark.parametrize("rel", _param([f for f in LOADING if f.startswith("fit/")]))
def test_fit_pauses_account_for_stopped_time(rel: str) -> None:
    """Timer stop->start pauses add up to elapsed - timer time (the device's own totals)."""
    for a in loaded(rel):
        row = a.activity
        stopped = row["elapsed_s"] - row["moving_s"]
        paused = a.pauses["duration_s"].sum() if a.pauses.height else 0.0
        assert paused == pytest.approx(stopped, abs=max(5.0, 0.05 * row["elapsed_s"]))


def test_fit_local_offsets_agree_with_the_gps_zone() -> None:
    """Where a FIT file has both, the device's local offset is the offset of the GPS time zone."""
    checked = 0
    for rel in LOADING:
        for a in loaded(rel):
            row = a.activity
            if row["tz_source"] == "fit_local_timestamp" and row["has_gps"]:
                assert row["timezone"] is not None, f"{rel}: offset {row['utc_offset_s']} disagrees with the GPS zone"
                checked += 1
    if not CORPUS.is_dir():
        pytest.skip(ABSENT)
    assert checked >= 15


# --------------------------------------------------------------------------- fitparse's reference values

REFERENCE = {
    "fit/fitparse__garmin-fenix-5-run-records.csv": "fit/fitparse__garmin-fenix-5-run.fit",
    "fit/fitparse__garmin-fenix-5-walk-records.csv": "fit/fitparse__garmin-fenix-5-walk.fit",
    "fit/fitparse__garmin-edge-820-bike-records.csv": "fit/fitparse__garmin-edge-820-bike.fit",
}


@pytest.mark.parametrize("csv_rel", _param(sorted(REFERENCE) if CORPUS.is_dir() else []))
def test_records_match_fitparse_reference_csv(csv_rel: str) -> None:
    with (CORPUS / csv_rel).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    a = loaded(REFERENCE[csv_rel])[0]
    s = a.samples
    assert s.height == len(rows) == int(MANIFEST[csv_rel]["record_count"])
    pdt = timezone(timedelta(hours=-7))  # the CSVs print US Pacific daylight time
    foot = a.activity["sport"] in {"running", "walking"}
    for i, ref in enumerate(rows):
        stamp = datetime.strptime(ref["timestamp"].replace(" PDT", ""), "%a %b %d %H:%M:%S %Y").replace(tzinfo=pdt)
        assert s["t_utc"][i] == stamp
        assert s["hr_bpm"][i] == float(ref["heart_rate"])
        assert s["distance_m"][i] == pytest.approx(float(ref["distance"]))
        assert s["speed_mps"][i] == pytest.approx(float(ref["speed"]))
        assert s["altitude_m"][i] == pytest.approx(float(ref["altitude"]))
        assert s["temperature_c"][i] == float(ref["temperature"])
        assert s["lat_deg"][i] == pytest.approx(int(ref["position_lat"]) * 180 / 2**31)
        assert s["lon_deg"][i] == pytest.approx(int(ref["position_long"]) * 180 / 2**31)
        strides = float(ref["cadence"])
        cadence = s["cadence_spm"][i]
        if foot:
            assert strides * 2 <= cadence < (strides + 1) * 2  # + fractional_cadence
        else:
            assert cadence == strides


# --------------------------------------------------------------------------- the same activity in several formats


@pytest.mark.parametrize("group", SAME_ACTIVITY, ids=lambda g: Path(g[0]).stem)
def test_cross_format_duplicates_overlap(group: tuple[str, ...]) -> None:
    if not CORPUS.is_dir():
        pytest.skip(ABSENT)
    acts = [loaded(rel)[0] for rel in group]
    rows = [a.activity for a in acts]
    base = rows[0]
    for rel, row in zip(group[1:], rows[1:]):
        inter = (min(base["end_utc"], row["end_utc"]) - max(base["start_utc"], row["start_utc"])).total_seconds()
        union = (max(base["end_utc"], row["end_utc"]) - min(base["start_utc"], row["start_utc"])).total_seconds()
        assert inter / union > 0.9, f"{rel}: overlap {inter / union:.3f}"
        assert row["sport"] == base["sport"]
        if any(tag in rel for tag in GPS_VS_DEVICE) and row["distance_source"] != base["distance_source"]:
            assert row["distance_m"] != pytest.approx(base["distance_m"], rel=0.03), "stale GPS-vs-device exception"
            tracks = [_track_length(a) for a in (acts[0], acts[group.index(rel)])]
            assert tracks[1] == pytest.approx(tracks[0], rel=0.03)
        else:
            assert row["distance_m"] == pytest.approx(base["distance_m"], rel=0.03), rel


def _track_length(a: NormalisedActivity) -> float:
    dist = cumulative_distance_m(a.samples["lat_deg"].to_list(), a.samples["lon_deg"].to_list())
    known = [d for d in dist if d is not None]
    assert known
    return known[-1]


def test_corpus_exception_lists_are_current() -> None:
    """Every documented exception names a file that exists; none contradicts another list."""
    if not CORPUS.is_dir():
        pytest.skip(ABSENT)
    for name in (*REJECTED, *SKIPPED, *WALKED_RUNS, *DEVICE_CLOCK, *(f for f, _ in FLAG_EXCEPTIONS)):
        assert (CORPUS / name).is_file(), name
    assert not set(REJECTED) & set(SKIPPED)
    assert all(expected_to_load(f) for f in DEVICE_CLOCK)
    assert all(expected_to_load(f) for f in WALKED_RUNS)
