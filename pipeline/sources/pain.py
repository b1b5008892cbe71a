"""Pain-log CSV reader: one file -> parsed reports + per-row errors.

The format and every rule below are documented, with examples, in
``docs/pain-log.md``. In short: UTF-8 (optional BOM), comma, semicolon or tab
delimiter sniffed from the header, header names case-insensitive; required
columns ``date, onset, body_part, severity``; optional ``side, notes, run,
athlete``. A malformed row becomes a :class:`~pipeline.errors.PainRowError`
(``pain.csv:14: severity must be 0-10 (got 11)``) and the other rows load; a
file that cannot be read at all raises :class:`~pipeline.errors.RejectedFile`.

This module only *parses*. Joining an onset to a run and a sample is
:func:`pipeline.analysis.onset.join_pain_onsets`, which re-reads ``onset_raw``
with :func:`parse_onset`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from pipeline.errors import PainRowError, RejectedFile
from pipeline.schema import PAIN_REPORT_SCHEMA, frame_from_rows

if TYPE_CHECKING:
    from pipeline.sources.athlete import Athlete

__all__ = [
    "PainLog",
    "Onset",
    "OnsetKind",
    "read_pain_log",
    "parse_onset",
    "parse_distance_m",
    "normalise_body_part",
    "approx_half_width_m",
    "METRES_PER_MILE",
    "METRES_PER_UNIT",
    "APPROX_FRACTION",
    "APPROX_MIN_HALF_WIDTH_M",
    "BODY_PARTS",
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
]

logger = logging.getLogger(__name__)

#: International mile, metres.
METRES_PER_MILE = 1609.344

#: Metres per distance unit as canonical unit name.
METRES_PER_UNIT: dict[str, float] = {"mi": METRES_PER_MILE, "km": 1000.0, "m": 1.0}

#: "~6 mi": the uncertainty half-width is this fraction of the distance ...
APPROX_FRACTION = 0.10
#: ... or this many metres (by the unit written), whichever is larger.
APPROX_MIN_HALF_WIDTH_M: dict[str, float] = {"mi": 0.5 * METRES_PER_MILE, "km": 800.0, "m": 800.0}

REQUIRED_COLUMNS = ("date", "onset", "body_part", "severity")
OPTIONAL_COLUMNS = ("side", "notes", "run", "athlete")
_ALL_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
_DELIMITERS = (",", ";", "\t")
_SEP_LINE_RE = re.compile(r"sep=([,;\t])\r?\n", re.IGNORECASE)
_ATHLETE_ID_RE = re.compile(r"[a-z0-9_-]+")

OnsetKind = Literal["clock", "instant", "elapsed", "distance", "after", "next_day"]

# --------------------------------------------------------------------------- body parts

#: Vocabulary term -> the words (after normalisation: lower case, punctuation
#: and ``-``/``_`` to spaces, whitespace collapsed) that map to it. The term
#: itself always maps to itself.
BODY_PARTS: dict[str, tuple[str, ...]] = {
    "knee": ("knees", "kneecap", "knee cap", "patella", "patellar tendon"),
    "hamstring": ("hamstrings", "hammy", "hammies", "ham string", "back of thigh"),
    "quadriceps": ("quad", "quads", "quadricep", "front of thigh"),
    "calf": ("calves", "calf muscle", "calf muscles", "soleus", "gastrocnemius", "gastroc"),
    "shin": ("shins", "shin splints", "tibia"),
    "achilles": ("achilles tendon", "achilles tendons", "achilles heel", "achiles"),
    "foot": ("feet", "arch", "forefoot", "ball of foot", "metatarsal", "metatarsals", "top of foot"),
    "plantar_fascia": ("plantar fascia", "plantar fasciitis", "plantar"),
    "heel": ("heels",),
    "toe": ("toes", "big toe"),
    "ankle": ("ankles",),
    "hip": ("hips",),
    "hip_flexor": ("hip flexor", "hip flexors", "psoas"),
    "glute": ("glutes", "gluteus", "buttock", "buttocks", "bum", "butt"),
    "piriformis": (),
    "it_band": ("it band", "itb", "i t band", "iliotibial band", "itbs", "it bands"),
    "groin": ("adductor", "adductors", "inner thigh"),
    "lower_back": ("lower back", "low back", "lumbar"),
    "upper_back": ("upper back", "thoracic"),
    "neck": (),
    "shoulder": ("shoulders",),
}

_BODY_PART_LOOKUP: dict[str, str] = {}
for _term, _words in BODY_PARTS.items():
    _BODY_PART_LOOKUP[_term.replace("_", " ")] = _term
    for _word in _words:
        _BODY_PART_LOOKUP[_word] = _term

_SIDE_WORDS = {
    "left": "left",
    "l": "left",
    "right": "right",
    "r": "right",
    "both": "both",
    "bilateral": "both",
}
_SIDE_PREFIX_RE = re.compile(r"^(left|right|both)\s+(.+)$")


def _body_key(text: str) -> str:
    key = text.lower().replace("'", "").replace("\u2019", "")
    key = re.sub(r"[-_./]", " ", key)
    return " ".join(key.split())


#: Words around a body part that do not change which part it is: "outer knee",
#: "back of the knee", "knee pain" -> knee. Tried only when the whole phrase is
#: not in the vocabulary ("lower back", "back of thigh" are).
_QUALIFIERS = frozenset(
    {"outer", "inner", "outside", "inside", "front", "back", "upper", "lower", "top", "bottom",
     "medial", "lateral", "side", "of", "the", "my", "mid", "middle", "deep"}
)  # fmt: skip
_NOISE = frozenset(
    {"pain", "ache", "aching", "sore", "soreness", "tight", "tightness", "niggle", "injury",
     "joint", "area", "region", "strain"}
)  # fmt: skip


def normalise_body_part(text: str) -> str:
    """Map what the runner wrote to the vocabulary of :data:`BODY_PARTS`.

    The whole phrase is looked up first; then trailing words like "pain",
    "tightness" are dropped and leading position words ("outer", "back of
    the") stripped one at a time. Unknown phrases are returned as written,
    lower-cased and with whitespace collapsed (never dropped). ``"IT band"`` ->
    ``"it_band"``, ``"Hammy"`` -> ``"hamstring"``, ``"outer knee"`` -> ``"knee"``.
    """
    words = _body_key(text).split()
    while words and " ".join(words) not in _BODY_PART_LOOKUP and words[-1] in _NOISE:
        words = words[:-1]
    while words:
        key = " ".join(words)
        if key in _BODY_PART_LOOKUP:
            return _BODY_PART_LOOKUP[key]
        if words[0] not in _QUALIFIERS:
            break
        words = words[1:]
    return " ".join(text.strip().lower().split())


# --------------------------------------------------------------------------- onset grammar

_NUM = r"(?:\d+(?:\.\d+)?|\.\d+)"
_UNIT_WORDS: dict[str, str] = {
    "mi": "mi", "mile": "mi", "miles": "mi",
    "km": "km", "kms": "km", "k": "km", "kilometre": "km", "kilometres": "km",
    "kilometer": "km", "kilometers": "km",
    "m": "m", "metre": "m", "metres": "m", "meter": "m", "meters": "m",
}  # fmt: skip
_UNIT = "(?:" + "|".join(sorted(_UNIT_WORDS, key=len, reverse=True)) + ")"
_APPROX = r"(?:~|≈|about\s+|approx\.?\s*|around\s+|ca\.?\s*)"
_DIST_RE = re.compile(rf"^(?P<approx>{_APPROX})?\s*(?P<a>{_NUM})\s*(?P<u>{_UNIT})\.?$")
_RANGE_RE = re.compile(
    rf"^(?P<approx>{_APPROX})?\s*(?P<a>{_NUM})\s*(?P<ua>{_UNIT})?\s*(?:-|–|—|to)\s*"
    rf"(?P<b>{_NUM})\s*(?P<u>{_UNIT})\.?$"
)
_COLON_ELAPSED_RE = re.compile(r"^\+\s*(?P<a>\d+):(?P<b>\d{2})(?::(?P<c>\d{2}))?$")
_MIN_WORDS = r"(?:min|mins|minute|minutes)"
_MINUTES_RE = re.compile(
    rf"^\+?\s*(?P<m>{_NUM})\s*{_MIN_WORDS}\.?(?:\s*(?P<s>\d{{1,2}})\s*(?:s|sec|secs|seconds?))?$"
)
_HOURS_RE = re.compile(
    rf"^\+?\s*(?P<h>{_NUM})\s*(?:h|hr|hrs|hour|hours)\.?\s*(?:(?P<m>\d{{1,2}})\s*(?:m|{_MIN_WORDS})?\.?)?$"
)
_SECONDS_RE = re.compile(rf"^\+?\s*(?P<s>{_NUM})\s*(?:s|sec|secs|second|seconds)\.?$")
_CLOCK_RE = re.compile(r"^(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?$")
_ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}", re.IGNORECASE)
_AFTER_WORDS = frozenset({"after", "after run", "after the run", "post run", "postrun"})
_NEXT_DAY_WORDS = frozenset({"next day", "nextday", "the next day", "next morning", "day after"})
_DECIMAL_COMMA_RE = re.compile(r"\d,\d")
#: "47m" below this many metres is refused as a likely "47 min" (write "47 metres").
_MIN_BARE_METRES = 100.0

_ONSET_HELP = (
    "use a clock time (14:32), an ISO instant with offset (2026-10-03T07:41:10+01:00), "
    "an elapsed time (+47:30, +1:05:00, 47 min, 1h05), a distance (6 mi, 9.6 km, ~6 mi, 5-6 mi), "
    "'after' or 'next day'"
)


@dataclass(frozen=True)
class Onset:
    """A parsed ``onset`` cell.

    Attributes
    ----------
    kind : str
        ``clock | instant | elapsed | distance | after | next_day``.
    approx : bool
        Written with ``~`` (``~6 mi``). A range ``5-6 mi`` is not "approximate":
        its uncertainty is the range itself (``distance_lo_m``/``distance_hi_m``).
    clock : datetime.time or None
        Local wall-clock time (``clock``).
    instant : datetime or None
        Aware instant (``instant``).
    moving_s : float or None
        Elapsed onsets: timer (moving) seconds into the run.
    distance_m, distance_lo_m, distance_hi_m : float or None
        Distance onsets: point estimate and uncertainty interval (equal when exact).
    """

    kind: OnsetKind
    approx: bool = False
    clock: time | None = None
    instant: datetime | None = None
    moving_s: float | None = None
    distance_m: float | None = None
    distance_lo_m: float | None = None
    distance_hi_m: float | None = None


def _clean(text: str | None) -> str:
    if text is None:
        return ""
    text = text.replace("\u00a0", " ").replace("\u202f", " ").replace("\u2009", " ")
    return " ".join(text.split())


def approx_half_width_m(distance_m: float, unit: str) -> float:
    """Half-width of the uncertainty interval of ``~distance``, metres.

    ``max(APPROX_FRACTION * distance, APPROX_MIN_HALF_WIDTH_M[unit])``: ``~6 mi``
    is 6 mi ± 0.6 mi, ``~3 km`` is 3 km ± 0.8 km.
    """
    return max(APPROX_FRACTION * distance_m, APPROX_MIN_HALF_WIDTH_M[unit])


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise PainRowError(f"not a number: {text!r}")
    return value


def parse_distance_m(text: str) -> float:
    """An exact distance with a unit (``"9 mi"``, ``"14.5 km"``, ``"800 m"``) in metres.

    Raises
    ------
    PainRowError
        Not that form (no path/line: the caller adds them).
    """
    cleaned = _clean(text).lower()
    if _DECIMAL_COMMA_RE.search(cleaned):
        raise PainRowError(f"decimal comma in {text!r}: use a dot ({_dot(cleaned)})")
    m = _DIST_RE.match(cleaned)
    if m is None or m.group("approx"):
        raise PainRowError(f"{text!r} is not a distance with a unit (e.g. '9 mi', '14.5 km')")
    return _number(m.group("a")) * METRES_PER_UNIT[_UNIT_WORDS[m.group("u")]]


def _dot(text: str) -> str:
    return re.sub(r"(\d),(\d)", r"\1.\2", text)


def parse_onset(text: str) -> Onset:
    """Parse an ``onset`` cell (see ``docs/pain-log.md`` for every form).

    Parameters
    ----------
    text : str
        The cell as written.

    Returns
    -------
    Onset

    Raises
    ------
    PainRowError
        With the reason only (the caller adds file and line).
    """
    cleaned = _clean(text)
    if not cleaned:
        raise PainRowError(f"onset is required: {_ONSET_HELP}")
    low = cleaned.lower()
    if _DECIMAL_COMMA_RE.search(low):
        raise PainRowError(f"decimal comma in onset {cleaned!r}: use a dot ({_dot(cleaned)})")

    if low in _AFTER_WORDS or low.replace("-", " ") in _AFTER_WORDS:
        return Onset(kind="after")
    if low in _NEXT_DAY_WORDS or low.replace("-", " ") in _NEXT_DAY_WORDS:
        return Onset(kind="next_day")

    if _ISO_RE.match(low):
        return _parse_instant(cleaned)

    m = _CLOCK_RE.match(low)
    if m:
        hour, minute, second = int(m["h"]), int(m["m"]), int(m["s"] or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise PainRowError(f"onset {cleaned!r} is not a valid clock time (00:00-23:59:59)")
        return Onset(kind="clock", clock=time(hour, minute, second))

    elapsed = _parse_elapsed(low, cleaned)
    if elapsed is not None:
        return Onset(kind="elapsed", moving_s=elapsed)

    distance = _parse_distance_onset(low, cleaned)
    if distance is not None:
        return distance

    if re.fullmatch(rf"[~≈]?\s*{_NUM}", low):
        raise PainRowError(
            f"onset {cleaned!r} has no unit: write e.g. '{low.lstrip('~≈ ')} mi', "
            f"'{low.lstrip('~≈ ')} km' or '{low.lstrip('~≈ ')} min'"
        )
    if low.startswith(("~", "≈")):
        raise PainRowError(
            f"'~' (approximately) is only allowed on a distance, e.g. '~6 mi' (got {cleaned!r})"
        )
    raise PainRowError(f"unknown onset form {cleaned!r}: {_ONSET_HELP}")


def _parse_instant(cleaned: str) -> Onset:
    try:
        value = datetime.fromisoformat(cleaned.upper().replace(" ", "T", 1))
    except ValueError as exc:
        raise PainRowError(f"onset {cleaned!r} is not a valid ISO 8601 date-time") from exc
    if value.tzinfo is None:
        raise PainRowError(
            f"ISO onset {cleaned!r} has no UTC offset: add one (e.g. +01:00 or Z) "
            f"or write just the clock time ({value.time().isoformat()})"
        )
    return Onset(kind="instant", instant=value)


def _parse_elapsed(low: str, cleaned: str) -> float | None:
    m = _COLON_ELAPSED_RE.match(low)
    if m:
        a, b, c = int(m["a"]), int(m["b"]), m["c"]
        if c is None:  # +MM:SS (minutes may exceed 59)
            if b > 59:
                raise PainRowError(f"elapsed onset {cleaned!r}: seconds must be 00-59")
            return float(a * 60 + b)
        if b > 59 or int(c) > 59:
            raise PainRowError(f"elapsed onset {cleaned!r}: minutes and seconds must be 00-59")
        return float(a * 3600 + b * 60 + int(c))
    m = _MINUTES_RE.match(low)
    if m:
        seconds = int(m["s"]) if m["s"] else 0
        if seconds > 59:
            raise PainRowError(f"elapsed onset {cleaned!r}: seconds must be 0-59")
        if m["s"] and "." in m["m"]:
            raise PainRowError(f"elapsed onset {cleaned!r}: use whole minutes with seconds")
        return _number(m["m"]) * 60.0 + seconds
    m = _HOURS_RE.match(low)
    if m:
        minutes = int(m["m"]) if m["m"] else 0
        if minutes > 59:
            raise PainRowError(f"elapsed onset {cleaned!r}: minutes must be 0-59")
        if m["m"] and "." in m["h"]:
            raise PainRowError(f"elapsed onset {cleaned!r}: use whole hours with minutes (1h05)")
        return _number(m["h"]) * 3600.0 + minutes * 60.0
    m = _SECONDS_RE.match(low)
    if m:
        return _number(m["s"])
    return None


def _parse_distance_onset(low: str, cleaned: str) -> Onset | None:
    m = _DIST_RE.match(low)
    if m:
        unit = _UNIT_WORDS[m["u"]]
        d = _number(m["a"]) * METRES_PER_UNIT[unit]
        if m["u"] == "m" and d < _MIN_BARE_METRES:
            raise PainRowError(
                f"onset {cleaned!r} reads as {m['a']} metres: for minutes write '{m['a']} min', "
                f"for metres write '{m['a']} metres'"
            )
        if m["approx"]:
            half = approx_half_width_m(d, unit)
            return Onset(
                kind="distance",
                approx=True,
                distance_m=d,
                distance_lo_m=max(0.0, d - half),
                distance_hi_m=d + half,
            )
        return Onset(kind="distance", distance_m=d, distance_lo_m=d, distance_hi_m=d)
    m = _RANGE_RE.match(low)
    if m:
        unit = _UNIT_WORDS[m["u"]]
        if m["ua"] and _UNIT_WORDS[m["ua"]] != unit:
            raise PainRowError(f"distance range {cleaned!r} mixes units: use one unit (e.g. '5-6 mi')")
        lo = _number(m["a"]) * METRES_PER_UNIT[unit]
        hi = _number(m["b"]) * METRES_PER_UNIT[unit]
        if hi < lo:
            raise PainRowError(f"distance range {cleaned!r} ends before it starts")
        return Onset(
            kind="distance",
            approx=bool(m["approx"]),
            distance_m=(lo + hi) / 2.0,
            distance_lo_m=lo,
            distance_hi_m=hi,
        )
    return None


# --------------------------------------------------------------------------- row fields

_ISO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SEVERITY_RE = re.compile(r"^[+-]?\d+(?:\s*/\s*10)?$")


def _parse_date(raw: str) -> date:
    if not _ISO_DATE_RE.match(raw):
        if re.match(r"^\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}$", raw):
            raise PainRowError(
                f"date {raw!r} is not YYYY-MM-DD (day/month order is not guessed): use YYYY-MM-DD"
            )
        raise PainRowError(f"date {raw!r} is not a date: use YYYY-MM-DD")
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise PainRowError(f"date {raw!r} is not a real date: use YYYY-MM-DD") from exc


def _parse_severity(raw: str) -> int:
    if not raw:
        raise PainRowError("severity is required (an integer 0-10)")
    if not _SEVERITY_RE.match(raw):
        raise PainRowError(f"severity must be an integer 0-10 (got {raw!r})")
    value = int(raw.split("/")[0].strip())
    if not 0 <= value <= 10:
        raise PainRowError(f"severity must be 0-10 (got {value})")
    return value


def _parse_side(raw: str) -> str | None:
    if not raw:
        return None
    side = _SIDE_WORDS.get(raw.lower())
    if side is None:
        raise PainRowError(f"side must be left, right or both (got {raw!r})")
    return side


# --------------------------------------------------------------------------- the reader


@dataclass(frozen=True)
class PainLog:
    """One pain-log file, parsed.

    Attributes
    ----------
    reports : polars.DataFrame
        :data:`~pipeline.schema.PAIN_REPORT_SCHEMA`; join columns and ``status`` null.
    errors : list of PainRowError
        One per malformed row (``path`` = the file's relative path, ``line``).
    """

    reports: pl.DataFrame
    errors: list[PainRowError] = field(default_factory=list)


def _sniff_header(text: str, rel_path: str, *, forced: str | None, line: int) -> tuple[str, list[str]]:
    """The delimiter and the normalised header names of the header row starting ``text``."""
    best: tuple[int, str, list[str]] | None = None
    for delim in (forced,) if forced else _DELIMITERS:
        try:
            first = next(csv.reader(io.StringIO(text, newline=""), delimiter=delim), [])
        except csv.Error as exc:
            raise RejectedFile(f"cannot read the header row: {exc}", path=rel_path, line=line) from exc
        names = [_header_name(n) for n in first]
        found = sum(1 for c in REQUIRED_COLUMNS if c in names)
        if best is None or found > best[0] or (found == best[0] and len(names) > len(best[2])):
            best = (found, delim, names)
    assert best is not None
    found, delim, names = best
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise RejectedFile(
            f"missing required column(s): {', '.join(missing)} "
            f"(header has: {', '.join(n for n in names if n) or 'nothing'})",
            path=rel_path,
            line=line,
        )
    duplicates = sorted({n for n in names if n and names.count(n) > 1})
    if duplicates:
        raise RejectedFile(f"duplicate column(s): {', '.join(duplicates)}", path=rel_path, line=line)
    return delim, names


def _header_name(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", _clean(name).lower())


def read_pain_log(path: Path, *, rel_path: str, athlete: Athlete) -> PainLog:
    """Read one pain-log CSV.

    Parameters
    ----------
    path : Path
        The file.
    rel_path : str
        Its path relative to the raw folder: ``source_file`` and the place in errors.
    athlete : Athlete
        The folder's athlete (an ``athlete`` column may override it per row).

    Returns
    -------
    PainLog
        Parsed rows in file order (join columns null) and one
        :class:`~pipeline.errors.PainRowError` per malformed row.

    Raises
    ------
    RejectedFile
        Unreadable, not UTF-8, empty, a required column missing, or broken CSV.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RejectedFile(f"cannot read: {exc.strerror or exc}", path=rel_path) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RejectedFile(
            "not UTF-8 text (save the pain log as UTF-8 CSV)", path=rel_path, offset=exc.start
        ) from exc
    if not text.strip():
        raise RejectedFile("empty pain log (no header row)", path=rel_path)

    # Excel may write a first line "sep=;" naming the delimiter; the header follows it
    sep = _SEP_LINE_RE.match(text)
    header_record = 1 if sep else 0
    delim, names = _sniff_header(
        text[sep.end() :] if sep else text,
        rel_path,
        forced=sep.group(1) if sep else None,
        line=header_record + 1,
    )
    unknown = [n for n in names if n and n not in _ALL_COLUMNS]
    if unknown:
        logger.warning("%s: ignoring unknown column(s): %s", rel_path, ", ".join(unknown))

    rows: list[dict[str, Any]] = []
    errors: list[PainRowError] = []
    seen: dict[str, int] = {}
    # newline="": only \n, \r, \r\n end a line (not \u2028 & co. as str.splitlines would)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    last_line = 0
    try:
        for record_no, cells in enumerate(reader):
            line = last_line + 1
            last_line = reader.line_num
            if record_no <= header_record:
                continue  # "sep=" line, header
            if not any(_clean(c) for c in cells):
                continue  # blank line / only delimiters: nothing was written
            try:
                row = _parse_row(cells, names, athlete=athlete, rel_path=rel_path, line=line)
            except PainRowError as exc:
                errors.append(PainRowError(exc.reason, path=rel_path, line=line))
                continue
            first = seen.get(row["report_id"])
            if first is not None:
                errors.append(
                    PainRowError(f"duplicate of line {first} (same row content)", path=rel_path, line=line)
                )
                continue
            seen[row["report_id"]] = line
            rows.append(row)
    except csv.Error as exc:
        raise RejectedFile(f"broken CSV: {exc}", path=rel_path, line=last_line + 1) from exc

    for err in errors:
        logger.info("%s", err.message)
    logger.debug("%s: %d report(s), %d bad row(s)", rel_path, len(rows), len(errors))
    return PainLog(reports=frame_from_rows(rows, PAIN_REPORT_SCHEMA), errors=errors)


def _parse_row(
    cells: list[str], names: list[str], *, athlete: Athlete, rel_path: str, line: int
) -> dict[str, Any]:
    if len(cells) > len(names):
        if "onset" in names and len(cells) == len(names) + 1:
            i = names.index("onset")
            a, b = _clean(cells[i]), _clean(cells[i + 1])
            if re.search(r"\d$", a) and re.match(r"^\d", b):
                raise PainRowError(
                    f"row has {len(cells)} fields but the header has {len(names)}: "
                    f"onset '{a},{b}' has a decimal comma: use a dot ({a}.{b})"
                )
        raise PainRowError(
            f"row has {len(cells)} fields but the header has {len(names)} "
            "(an unquoted comma inside a field? quote it, and write decimals with a dot)"
        )
    values: dict[str, str] = {}
    for name, cell in zip(names, cells):
        if name in _ALL_COLUMNS:
            values[name] = _clean(cell)
    for name in _ALL_COLUMNS:
        values.setdefault(name, "")

    athlete_id = athlete.athlete_id
    if values["athlete"]:
        athlete_id = values["athlete"].lower()
        if not _ATHLETE_ID_RE.fullmatch(athlete_id):
            raise PainRowError(
                f"athlete {values['athlete']!r} is not an athlete id (lower-case letters, digits, '_', '-')"
            )

    onset = parse_onset(values["onset"])
    if values["date"]:
        day = _parse_date(values["date"])
        if onset.instant is not None:
            gap = abs((onset.instant.date() - day).days)
            if gap > 1:
                raise PainRowError(
                    f"date {values['date']} and onset {values['onset']!r} are {gap} days apart"
                )
    elif onset.instant is not None:
        day = onset.instant.date()  # the local date in the offset the runner wrote
    else:
        raise PainRowError("date is required (YYYY-MM-DD)")

    severity = _parse_severity(values["severity"])
    side = _parse_side(values["side"])

    body_raw = values["body_part"]
    if not body_raw:
        raise PainRowError("body_part is required")
    body_text = body_raw
    prefix = _SIDE_PREFIX_RE.match(body_raw.lower())
    if prefix:  # "left knee": the side written into the body part
        written_side = prefix.group(1)
        if side is not None and side != written_side:
            raise PainRowError(f"side {side!r} contradicts body_part {body_raw!r}")
        side = written_side
        body_text = body_raw[len(prefix.group(1)) :].strip()
    body_part = normalise_body_part(body_text)

    content = {name: values[name] for name in _ALL_COLUMNS}
    digest = hashlib.sha256(
        json.dumps([athlete_id, rel_path, content], sort_keys=True, ensure_ascii=False).encode("utf-8")
    ).hexdigest()[:16]

    return {
        "report_id": digest,
        "athlete_id": athlete_id,
        "source_file": rel_path,
        "line": line,
        "date_local": day,
        "onset_raw": values["onset"],
        "onset_kind": onset.kind,
        "onset_approx": onset.approx,
        "body_part": body_part,
        "body_part_raw": body_raw,
        "side": side,
        "severity": severity,
        "notes": values["notes"] or None,
        "run_hint": values["run"] or None,
    }
