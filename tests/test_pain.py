"""Pain-log CSV parsing and athlete.toml (pipeline.sources.pain / .athlete)."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import PainRowError, RejectedFile
from pipeline.schema import PAIN_REPORT_SCHEMA
from pipeline.sources.athlete import Athlete, read_athlete
from pipeline.sources.pain import (
    APPROX_FRACTION,
    APPROX_MIN_HALF_WIDTH_M,
    PainLog,
    parse_onset,
    read_pain_log,
)

MILE = 1609.344
ANN = Athlete(athlete_id="ann", name="Ann", timezone="Europe/London", unit="mi", distance_cap_m=None)
HEADER = "date,onset,body_part,side,severity,notes"


def write(tmp_path: Path, text: str, *, name: str = "pain.csv", bom: bool = False) -> Path:
    path = tmp_path / name
    data = text.encode("utf-8")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def load(tmp_path: Path, text: str, *, bom: bool = False, athlete: Athlete = ANN) -> PainLog:
    path = write(tmp_path, text, bom=bom)
    return read_pain_log(path, rel_path="ann/pain.csv", athlete=athlete)


# --------------------------------------------------------------------------- onset forms

DISTANCE_FORMS = [
    ("6 mi", 6 * MILE),
    ("6mi", 6 * MILE),
    ("6 miles", 6 * MILE),
    ("0.5 mile", 0.5 * MILE),
    ("9.6 km", 9600.0),
    ("9.6 KM", 9600.0),
    ("10k", 10000.0),
    ("9600 m", 9600.0),
    ("9600 metres", 9600.0),
    ("150 m", 150.0),
]


@pytest.mark.parametrize(("text", "metres"), DISTANCE_FORMS)
def test_exact_distance_forms(text: str, metres: float) -> None:
    onset = parse_onset(text)
    assert onset.kind == "distance"
    assert not onset.approx
    assert onset.distance_m == pytest.approx(metres)
    assert onset.distance_lo_m == onset.distance_hi_m == onset.distance_m


def test_approximate_distance_uses_ten_percent_or_the_minimum() -> None:
    six = parse_onset("~6 mi")
    assert six.kind == "distance" and six.approx
    assert six.distance_m == pytest.approx(6 * MILE)
    # 10 % of 6 mi = 0.6 mi > 0.5 mi
    assert six.distance_lo_m == pytest.approx(5.4 * MILE)
    assert six.distance_hi_m == pytest.approx(6.6 * MILE)
    three = parse_onset("~3 km")
    # 10 % of 3 km = 300 m < 800 m minimum
    assert (three.distance_lo_m, three.distance_hi_m) == (pytest.approx(2200.0), pytest.approx(3800.0))
    near_start = parse_onset("~0.3 km")
    assert near_start.distance_lo_m == 0.0  # never negative
    assert APPROX_FRACTION == 0.10
    assert APPROX_MIN_HALF_WIDTH_M["mi"] == pytest.approx(0.5 * MILE)
    assert APPROX_MIN_HALF_WIDTH_M["km"] == 800.0


@pytest.mark.parametrize("text", ["5-6 mi", "5 - 6 mi", "5–6 miles", "5 to 6 mi", "5mi-6mi"])
def test_distance_range_midpoint_and_ends(text: str) -> None:
    onset = parse_onset(text)
    assert onset.kind == "distance"
    assert not onset.approx  # the range is its own uncertainty
    assert onset.distance_m == pytest.approx(5.5 * MILE)
    assert onset.distance_lo_m == pytest.approx(5 * MILE)
    assert onset.distance_hi_m == pytest.approx(6 * MILE)


ELAPSED_FORMS = [
    ("+47:30", 47 * 60 + 30),
    ("+5:07", 5 * 60 + 7),
    ("+75:00", 75 * 60),
    ("+1:05:00", 3900),
    ("+0:00:09", 9),
    ("47 min", 47 * 60),
    ("47 mins", 47 * 60),
    ("47.5 min", 47 * 60 + 30),
    ("+47 min", 47 * 60),
    ("47 min 30 s", 47 * 60 + 30),
    ("1h05", 3900),
    ("1h05m", 3900),
    ("1 h 5 min", 3900),
    ("1h", 3600),
    ("1.5 h", 5400),
    ("90 s", 90),
]


@pytest.mark.parametrize(("text", "seconds"), ELAPSED_FORMS)
def test_elapsed_forms(text: str, seconds: float) -> None:
    onset = parse_onset(text)
    assert onset.kind == "elapsed"
    assert onset.moving_s == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("14:32", time(14, 32)), ("14:32:10", time(14, 32, 10)), ("7:05", time(7, 5)), ("00:00", time(0, 0))],
)
def test_clock_forms(text: str, expected: time) -> None:
    onset = parse_onset(text)
    assert onset.kind == "clock"
    assert onset.clock == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-10-03T07:41:10+01:00", datetime(2026, 10, 3, 6, 41, 10, tzinfo=timezone.utc)),
        ("2026-10-03T07:41:10Z", datetime(2026, 10, 3, 7, 41, 10, tzinfo=timezone.utc)),
        ("2026-10-03 07:41:10-04:00", datetime(2026, 10, 3, 11, 41, 10, tzinfo=timezone.utc)),
    ],
)
def test_iso_instant(text: str, expected: datetime) -> None:
    onset = parse_onset(text)
    assert onset.kind == "instant"
    assert onset.instant == expected


@pytest.mark.parametrize("text", ["after", "After", "after run", "post-run"])
def test_after(text: str) -> None:
    assert parse_onset(text).kind == "after"


@pytest.mark.parametrize("text", ["next day", "Next Day", "next-day", "the next day"])
def test_next_day(text: str) -> None:
    assert parse_onset(text).kind == "next_day"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("9,6 km", "decimal comma in onset '9,6 km': use a dot (9.6 km)"),
        ("6", "onset '6' has no unit: write e.g. '6 mi', '6 km' or '6 min'"),
        ("47m", "onset '47m' reads as 47 metres: for minutes write '47 min', for metres write '47 metres'"),
        ("25:00", "onset '25:00' is not a valid clock time (00:00-23:59:59)"),
        ("+47:75", "elapsed onset '+47:75': seconds must be 00-59"),
        ("6 mi - 5 mi", "distance range '6 mi - 5 mi' ends before it starts"),
        ("5 mi-6 km", "distance range '5 mi-6 km' mixes units: use one unit (e.g. '5-6 mi')"),
        ("~14:32", "'~' (approximately) is only allowed on a distance, e.g. '~6 mi' (got '~14:32')"),
        (
            "2026-10-03T07:41:10",
            "ISO onset '2026-10-03T07:41:10' has no UTC offset: add one (e.g. +01:00 or Z) "
            "or write just the clock time (07:41:10)",
        ),
    ],
)
def test_bad_onsets_say_why(text: str, reason: str) -> None:
    with pytest.raises(PainRowError) as info:
        parse_onset(text)
    assert info.value.reason == reason


def test_unknown_onset_lists_the_forms() -> None:
    with pytest.raises(PainRowError) as info:
        parse_onset("halfway up the hill")
    assert info.value.reason.startswith("unknown onset form 'halfway up the hill': use a clock time (14:32)")
    assert "'next day'" in info.value.reason


# --------------------------------------------------------------------------- round trips

_UNIT_SPELLINGS = {"mi": ["mi", "miles", " mi", "MI"], "km": ["km", " km", "k"], "m": [" m", "metres"]}


@settings(max_examples=150, deadline=None)
@given(
    unit=st.sampled_from(["mi", "km", "m"]),
    whole=st.integers(min_value=0, max_value=60000),
    frac_digits=st.integers(min_value=0, max_value=3),
    frac=st.integers(min_value=0, max_value=999),
    spelling=st.integers(min_value=0, max_value=3),
    approx=st.booleans(),
)
def test_distance_round_trip(unit: str, whole: int, frac_digits: int, frac: int, spelling: int, approx: bool) -> None:
    factor = {"mi": MILE, "km": 1000.0, "m": 1.0}[unit]
    if unit == "m":
        whole += 100  # "47 m" is refused as a likely "47 min"
    number = str(whole) if frac_digits == 0 else f"{whole}.{frac % 10**frac_digits:0{frac_digits}d}"
    spellings = _UNIT_SPELLINGS[unit]
    text = ("~" if approx else "") + number + spellings[spelling % len(spellings)]
    onset = parse_onset(text)
    expected = float(number) * factor
    assert onset.kind == "distance"
    assert onset.approx is approx
    assert onset.distance_m == pytest.approx(expected, rel=1e-12, abs=1e-9)
    assert onset.distance_lo_m is not None and onset.distance_hi_m is not None
    assert onset.distance_lo_m <= onset.distance_m <= onset.distance_hi_m
    if approx:
        half = max(0.1 * expected, 0.5 * MILE if unit == "mi" else 800.0)
        assert onset.distance_hi_m == pytest.approx(expected + half)
        assert onset.distance_lo_m == pytest.approx(max(0.0, expected - half))


@settings(max_examples=150, deadline=None)
@given(seconds=st.integers(min_value=0, max_value=6 * 3600), form=st.sampled_from(["hms", "ms", "min", "hmin"]))
def test_elapsed_round_trip(seconds: int, form: str) -> None:
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if form == "hms":
        text, expected = f"+{h}:{m:02d}:{s:02d}", seconds
    elif form == "ms":
        text, expected = f"+{seconds // 60}:{s:02d}", seconds
    elif form == "min":
        text, expected = f"{seconds // 60} min", seconds // 60 * 60
    else:
        text, expected = f"{h}h{m:02d}", h * 3600 + m * 60
    onset = parse_onset(text)
    assert onset.kind == "elapsed"
    assert onset.moving_s == expected


# --------------------------------------------------------------------------- reading files


def test_reads_every_column_and_form(tmp_path: Path) -> None:
    log = load(
        tmp_path,
        "date,onset,body_part,side,severity,notes,run\n"
        "2026-10-03,6 mi,IT band,left,4,tight on the hill,07:30\n"
        "2026-10-03,14:32,knees,both,3,,\n"
        "2026-10-04,+47:30,Hammy,Right,5,,morning.fit\n"
        ",2026-10-05T07:41:10+01:00,plantar fascia,,2,,\n"
        "2026-10-06,~6 mi,shins,,6,,\n"
        "2026-10-07,5-6 mi,lower back,,1,,\n"
        "2026-10-08,after,achilles tendon,l,7,,\n"
        "2026-10-09,next day,hip pointer,,2,,\n",
    )
    assert log.errors == []
    df = log.reports
    assert df.schema == pl.Schema(PAIN_REPORT_SCHEMA)
    assert df["line"].to_list() == [2, 3, 4, 5, 6, 7, 8, 9]
    assert df["onset_kind"].to_list() == [
        "distance", "clock", "elapsed", "instant", "distance", "distance", "after", "next_day",
    ]  # fmt: skip
    assert df["onset_approx"].to_list() == [False, False, False, False, True, False, False, False]
    assert df["body_part"].to_list() == [
        "it_band", "knee", "hamstring", "plantar_fascia", "shin", "lower_back", "achilles", "hip pointer",
    ]  # fmt: skip
    assert df["body_part_raw"].to_list()[0] == "IT band"
    assert df["side"].to_list() == ["left", "both", "right", None, None, None, "left", None]
    assert df["severity"].to_list() == [4, 3, 5, 2, 6, 1, 7, 2]
    assert df["notes"].to_list()[:2] == ["tight on the hill", None]
    assert df["run_hint"].to_list()[:3] == ["07:30", None, "morning.fit"]
    # an ISO onset with no date takes the date in the offset written
    assert df["date_local"].to_list()[3] == date(2026, 10, 5)
    assert set(df["athlete_id"]) == {"ann"}
    assert set(df["source_file"]) == {"ann/pain.csv"}
    assert df["status"].null_count() == len(df)
    assert df["activity_id"].null_count() == len(df)


def test_bom_semicolons_and_loose_header(tmp_path: Path) -> None:
    log = load(
        tmp_path,
        "  Date ;ONSET;Body Part; Side ;Severity;Notes\r\n"
        "2026-10-03;9,6 km;knee;left;4;decimal comma unquoted\r\n"
        "2026-10-03;9.6 km;knee;left;4;ok, with a comma\r\n",
        bom=True,
    )
    assert [e.message for e in log.errors] == ["ann/pain.csv:2: decimal comma in onset '9,6 km': use a dot (9.6 km)"]
    assert log.reports["line"].to_list() == [3]
    assert log.reports["notes"].to_list() == ["ok, with a comma"]
    assert log.reports["date_local"].to_list() == [date(2026, 10, 3)]


def test_excel_sep_line_names_the_delimiter(tmp_path: Path) -> None:
    log = load(tmp_path, "sep=;\r\ndate;onset;body_part;severity\r\n2026-10-03;9.6 km;knee;4\r\n2026-10-03;x;knee;4\r\n")
    assert log.reports["line"].to_list() == [3]
    assert log.reports["onset_kind"].to_list() == ["distance"]
    assert [(e.line, e.reason.split(":")[0]) for e in log.errors] == [(4, "unknown onset form 'x'")]


def test_quoted_decimal_comma_in_a_comma_file(tmp_path: Path) -> None:
    log = load(
        tmp_path,
        f'{HEADER}\n2026-10-03,"9,6 km",knee,,4,\n2026-10-03,9,6 km,knee,,4,\n2026-10-03,9 km,knee,,4,a,b\n',
    )
    assert [(e.path, e.line, e.reason) for e in log.errors] == [
        ("ann/pain.csv", 2, "decimal comma in onset '9,6 km': use a dot (9.6 km)"),
        (
            "ann/pain.csv",
            3,
            "row has 7 fields but the header has 6: onset '9,6 km' has a decimal comma: use a dot (9.6 km)",
        ),
        (
            "ann/pain.csv",
            4,
            "row has 7 fields but the header has 6 (an unquoted comma inside a field? "
            "quote it, and write decimals with a dot)",
        ),
    ]
    assert len(log.reports) == 0


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("03/10/2026,6 mi,knee,,4,", "date '03/10/2026' is not YYYY-MM-DD (day/month order is not guessed): use YYYY-MM-DD"),
        ("10/03/2026,6 mi,knee,,4,", "date '10/03/2026' is not YYYY-MM-DD (day/month order is not guessed): use YYYY-MM-DD"),
        ("2026-02-30,6 mi,knee,,4,", "date '2026-02-30' is not a real date: use YYYY-MM-DD"),
        ("yesterday,6 mi,knee,,4,", "date 'yesterday' is not a date: use YYYY-MM-DD"),
        (",6 mi,knee,,4,", "date is required (YYYY-MM-DD)"),
        ("2026-10-03,6 mi,knee,,11,", "severity must be 0-10 (got 11)"),
        ("2026-10-03,6 mi,knee,,-1,", "severity must be 0-10 (got -1)"),
        ("2026-10-03,6 mi,knee,,4.5,", "severity must be an integer 0-10 (got '4.5')"),
        ("2026-10-03,6 mi,knee,,,", "severity is required (an integer 0-10)"),
        ("2026-10-03,6 mi,knee,middle,4,", "side must be left, right or both (got 'middle')"),
        ("2026-10-03,6 mi,,,4,", "body_part is required"),
        ("2026-10-03,6 mi,left knee,right,4,", "side 'right' contradicts body_part 'left knee'"),
        (
            "2026-10-03,uphill,knee,,4,",
            "unknown onset form 'uphill': use a clock time (14:32), an ISO instant with offset "
            "(2026-10-03T07:41:10+01:00), an elapsed time (+47:30, +1:05:00, 47 min, 1h05), "
            "a distance (6 mi, 9.6 km, ~6 mi, 5-6 mi), 'after' or 'next day'",
        ),
    ],
)
def test_malformed_row_names_file_line_and_reason(tmp_path: Path, row: str, reason: str) -> None:
    log = load(tmp_path, f"{HEADER}\n2026-10-01,6 mi,knee,,2,good\n{row}\n2026-10-02,+10:00,calf,,3,good\n")
    assert [e.message for e in log.errors] == [f"ann/pain.csv:3: {reason}"]
    assert (log.errors[0].path, log.errors[0].line) == ("ann/pain.csv", 3)
    assert log.reports["line"].to_list() == [2, 4]  # the other rows load


def test_severity_out_of_ten_and_side_words(tmp_path: Path) -> None:
    log = load(
        tmp_path,
        f"{HEADER}\n2026-10-01,6 mi,left knee,,7/10,\n2026-10-01,7 mi,calf,Bilateral,0,\n"
        "2026-10-01,8 mi,Right pinky toe,R,2,\n",
    )
    assert log.errors == []
    assert log.reports["severity"].to_list() == [7, 0, 2]
    assert log.reports["side"].to_list() == ["left", "both", "right"]
    assert log.reports["body_part"].to_list() == ["knee", "calf", "pinky toe"]
    assert log.reports["body_part_raw"].to_list() == ["left knee", "calf", "Right pinky toe"]


def test_line_numbers_count_physical_lines(tmp_path: Path) -> None:
    text = (
        f"{HEADER}\n"
        '2026-10-01,6 mi,knee,,2,"a note\nover two lines"\n'
        "\n"
        "2026-10-02,6 mi,knee,,12,\n"
        "2026-10-03,7 mi,knee,,3,a line\u2028separator is not a line end\r\n"
        "2026-10-04,8 mi,knee,,13,\n"
    )
    log = load(tmp_path, text)
    assert log.reports["line"].to_list() == [2, 6]
    assert log.reports["notes"].to_list() == ["a note over two lines", "a line separator is not a line end"]
    assert [e.message for e in log.errors] == [
        "ann/pain.csv:5: severity must be 0-10 (got 12)",
        "ann/pain.csv:7: severity must be 0-10 (got 13)",
    ]


def test_athlete_column_overrides_the_folder(tmp_path: Path) -> None:
    log = load(
        tmp_path,
        "date,onset,body_part,severity,athlete\n2026-10-01,6 mi,knee,2,\n2026-10-01,6 mi,knee,2,Bob\n"
        "2026-10-01,6 mi,knee,2,Bob Smith\n",
    )
    assert log.reports["athlete_id"].to_list() == ["ann", "bob"]
    assert [e.message for e in log.errors] == [
        "ann/pain.csv:4: athlete 'Bob Smith' is not an athlete id (lower-case letters, digits, '_', '-')"
    ]
    # same row content for another athlete is another report
    assert log.reports["report_id"].n_unique() == 2


def test_duplicate_row_is_reported_not_double_counted(tmp_path: Path) -> None:
    log = load(tmp_path, f"{HEADER}\n2026-10-01,6 mi,knee,,2,x\n2026-10-01, 6 mi ,knee,,2,x\n")
    assert len(log.reports) == 1
    assert [e.message for e in log.errors] == ["ann/pain.csv:3: duplicate of line 2 (same row content)"]


BODY_PART_CASES = [
    ("IT band", "it_band"),
    ("ITB", "it_band"),
    ("it-band", "it_band"),
    ("shins", "shin"),
    ("Plantar Fascia", "plantar_fascia"),
    ("lower back", "lower_back"),
    ("hammy", "hamstring"),
    ("Achilles tendon", "achilles"),
    ("knees", "knee"),
    ("quads", "quadriceps"),
    ("calves", "calf"),
    ("glutes", "glute"),
    ("hip flexor", "hip_flexor"),
    ("groin", "groin"),
    ("upper back", "upper_back"),
    ("ankle", "ankle"),
    ("foot", "foot"),
    ("outer knee", "knee"),
    ("Back of the knee", "knee"),
    ("upper back pain", "upper_back"),
    ("back of thigh", "hamstring"),
    ("calf tightness", "calf"),
    ("  Pinky   Toe  ", "pinky toe"),  # unknown: kept, lower-cased, trimmed
    ("back", "back"),
    ("Sesamoid", "sesamoid"),
]


@pytest.mark.parametrize(("written", "term"), BODY_PART_CASES)
def test_body_part_vocabulary(tmp_path: Path, written: str, term: str) -> None:
    log = load(tmp_path, f'{HEADER}\n2026-10-01,6 mi,"{written}",,2,\n')
    assert log.errors == []
    assert log.reports["body_part"].to_list() == [term]
    assert log.reports["body_part_raw"].to_list() == [" ".join(written.split())]


# --------------------------------------------------------------------------- report ids


def test_report_ids_are_stable_append_only_and_edit_sensitive(tmp_path: Path) -> None:
    rows = ["2026-10-01,6 mi,knee,,2,a", "2026-10-02,+10:00,calf,left,3,b"]
    first = load(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n").reports["report_id"].to_list()
    again = load(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n").reports["report_id"].to_list()
    assert first == again
    assert len(set(first)) == 2 and all(len(i) == 16 for i in first)
    appended = load(tmp_path, HEADER + "\n" + "\n".join([*rows, "2026-10-03,after,hip,,1,c"]) + "\n")
    ids = appended.reports["report_id"].to_list()
    assert ids[:2] == first and ids[2] not in first
    edited = load(tmp_path, HEADER + "\n" + "\n".join([rows[0], rows[1].replace(",3,", ",4,")]) + "\n")
    assert edited.reports["report_id"].to_list()[0] == first[0]
    assert edited.reports["report_id"].to_list()[1] != first[1]
    # same content as semicolons with a BOM and a blank line in front of row 2: same ids
    semi = load(tmp_path, (HEADER + "\n" + rows[0] + "\n\n" + rows[1] + "\n").replace(",", ";"), bom=True)
    assert semi.reports["report_id"].to_list() == first
    # another file or another athlete: other ids
    other = read_pain_log(
        write(tmp_path, HEADER + "\n" + rows[0] + "\n"), rel_path="ann/pain-2025.csv", athlete=ANN
    )
    assert other.reports["report_id"].to_list()[0] != first[0]


# --------------------------------------------------------------------------- file errors


def test_missing_column_rejects_the_file(tmp_path: Path) -> None:
    with pytest.raises(RejectedFile) as info:
        load(tmp_path, "date,onset,body_part,notes\n2026-10-01,6 mi,knee,x\n")
    assert info.value.message == "ann/pain.csv:1: missing required column(s): severity (header has: date, onset, body_part, notes)"


def test_not_utf8_rejects_the_file_with_offset(tmp_path: Path) -> None:
    path = tmp_path / "pain.csv"
    path.write_bytes(f"{HEADER}\n2026-10-01,6 mi,genou,,2,".encode() + "d\u00e9j\u00e0".encode("latin-1") + b"\n")
    with pytest.raises(RejectedFile) as info:
        read_pain_log(path, rel_path="ann/pain.csv", athlete=ANN)
    assert info.value.path == "ann/pain.csv"
    assert info.value.offset == len(f"{HEADER}\n2026-10-01,6 mi,genou,,2,d")
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    with pytest.raises(RejectedFile, match="empty pain log"):
        load(tmp_path, "")
    log = load(tmp_path, HEADER + "\n")
    assert log.errors == [] and log.reports.is_empty()
    assert log.reports.schema == pl.Schema(PAIN_REPORT_SCHEMA)


# --------------------------------------------------------------------------- athlete.toml


def test_athlete_defaults_without_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "ann"
    folder.mkdir()
    assert read_athlete(folder, athlete_id="ann") == Athlete("ann", "ann", None, "km", None)


def test_athlete_file(tmp_path: Path) -> None:
    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "athlete.toml").write_text(
        'name = "Ann Example"\ntimezone = "Europe/London"\nunit = "mi"\ndistance_cap = "9 mi"\n', encoding="utf-8"
    )
    athlete = read_athlete(folder, athlete_id="ann")
    assert athlete == Athlete("ann", "Ann Example", "Europe/London", "mi", pytest.approx(9 * MILE))
    assert math.isclose(athlete.distance_cap_m or 0.0, 14484.096)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('timezone = "Europe/Lndon"\n', "timezone 'Europe/Lndon' is not an IANA time zone name (e.g. \"Europe/London\")"),
        ('unit = "miles"\n', "unit must be \"km\" or \"mi\" (got 'miles')"),
        ("distance_cap = 9\n", "distance_cap must be a distance with a unit, e.g. \"9 mi\" (got 9)"),
        ('distance_cap = "9,5 mi"\n', "distance_cap: decimal comma in '9,5 mi': use a dot (9.5 mi)"),
        ("name = 5\n", "name must be a string (got 5)"),
    ],
)
def test_bad_athlete_file_is_rejected_by_name(tmp_path: Path, content: str, reason: str) -> None:
    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "athlete.toml").write_text(content, encoding="utf-8")
    with pytest.raises(RejectedFile) as info:
        read_athlete(folder, athlete_id="ann")
    assert info.value.message == f"ann/athlete.toml: {reason}"


def test_athlete_file_not_toml(tmp_path: Path) -> None:
    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "athlete.toml").write_text("name = Ann\n", encoding="utf-8")
    with pytest.raises(RejectedFile) as info:
        read_athlete(folder, athlete_id="ann")
    assert info.value.message.startswith("ann/athlete.toml: not valid TOML")
    assert info.value.__cause__ is not None


def test_dates_near_midnight_iso(tmp_path: Path) -> None:
    # date is the run's date; an ISO onset just after midnight is allowed one day later
    log = load(
        tmp_path,
        f"{HEADER}\n2026-10-03,2026-10-04T00:10:00+01:00,knee,,2,\n2026-10-01,2026-10-04T00:10:00+01:00,knee,,2,\n",
    )
    assert log.reports["date_local"].to_list() == [date(2026, 10, 3)]
    assert [e.message for e in log.errors] == [
        "ann/pain.csv:3: date 2026-10-01 and onset '2026-10-04T00:10:00+01:00' are 3 days apart"
    ]
    assert timedelta(days=1) == date(2026, 10, 4) - log.reports["date_local"][0]
