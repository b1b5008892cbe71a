"""Bulk-export zip archives (Strava, Garmin Connect) -> their activity files.

A Strava export holds ``activities.csv`` and ``activities/<id>.fit.gz`` /
``.gpx`` / ``.tcx.gz``; a Garmin Connect export nests zips of uploaded
``.fit`` files (``DI_CONNECT/DI-Connect-Uploaded-Files/UploadedFiles_*.zip``).
:func:`iter_archive` yields every FIT/GPX/TCX member (optionally ``.gz``) as
``(name, bytes)``, walking nested zips down to :attr:`ArchiveLimits.max_depth`
levels (the archive itself is level 1). A nested member's name is
``inner.zip!member``. Other members (CSV, JSON, photos) are not activity
files and are passed over (logged at debug level).

:func:`read_export_index` reads what the export says *about* its files: a
Strava export's ``activities.csv`` names each file's activity type, which
GPX files (and TCX files with ``Sport="Other"``) do not carry reliably. The
CSV is optional metadata: whatever is wrong with it (too large, not UTF-8,
no usable header, a broken row) it is not used, a note says why, and the
activity files still load. Columns are matched by header name, not position
(case, spacing and ``_`` do not matter), so older exports (``id``, ``type``,
``filename``) and added or reordered columns are read too; a localised header
is not recognised and the CSV is then not used.

Every zip's directory is checked *before* anything is yielded: member
names may not escape (``..``, absolute paths, drive letters, NUL), and the
member count, each member's size, the total size and the compression ratio
are bounded (a zip bomb is refused, not inflated). Member data are read with
a hard cap, so a directory that lies about sizes cannot blow memory either:
``zipfile`` stops at the declared size and the CRC check fails.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from pipeline.config import Settings
from pipeline.errors import RejectedFile

__all__ = [
    "ArchiveLimits",
    "ACTIVITY_SUFFIXES",
    "ExportIndex",
    "StravaRow",
    "iter_archive",
    "is_activity_name",
    "read_export_index",
    "read_strava_activities",
    "strava_sport",
]

log = logging.getLogger(__name__)

#: Member names (lower-case) that hold an activity.
ACTIVITY_SUFFIXES = (".fit", ".gpx", ".tcx", ".fit.gz", ".gpx.gz", ".tcx.gz")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ArchiveLimits:
    """How far one archive may push the process."""

    #: Members per zip (a 10-year Strava export has a few thousand).
    max_members: int = 50_000
    #: Largest member, inflated.
    max_member_bytes: int = Settings.max_file_bytes
    #: All members read from the archive and its nested zips, inflated.
    max_total_bytes: int = 16 * 1024**3
    #: Inflated/compressed size above which a member is a bomb ...
    max_ratio: float = 100.0
    #: ... once it inflates to at least this many bytes.
    ratio_min_bytes: int = 1024**2
    #: The archive is level 1; a zip inside it level 2.
    max_depth: int = 2
    #: Largest ``activities.csv`` read (ten years of a busy athlete's export is a few MB).
    max_csv_bytes: int = 64 * 1024**2


def is_activity_name(name: str) -> bool:
    """True for FIT/GPX/TCX member names, optionally ``.gz`` (case-insensitive)."""
    return name.lower().endswith(ACTIVITY_SUFFIXES)


def _unsafe_name(name: str) -> str | None:
    """Why a member name could escape the archive (or is no name at all), or None when it is safe."""
    if not name:
        return "member without a name"  # zipfile itself fails on one (ZipInfo.is_dir)
    if "\x00" in name:
        return "NUL byte in member name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or _DRIVE.match(norm):
        return "absolute member path"
    if ".." in PurePosixPath(norm).parts:
        return "member path escapes the archive ('..')"
    return None


def _check_directory(zf: zipfile.ZipFile, where: str, limits: ArchiveLimits) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise RejectedFile(
            f"{len(infos)} members, more than the {limits.max_members} accepted", path=where
        )
    declared = 0
    for info in infos:
        member = f"{where}!{info.filename}"
        why = _unsafe_name(info.filename)
        if why:
            raise RejectedFile(why, path=member)
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise RejectedFile("encrypted member", path=member)
        if info.file_size > limits.max_member_bytes:
            raise RejectedFile(
                f"member inflates to {info.file_size} bytes, above the {limits.max_member_bytes}-byte limit",
                path=member,
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= limits.ratio_min_bytes and ratio > limits.max_ratio:
            raise RejectedFile(
                f"compression ratio {ratio:.0f}:1 above {limits.max_ratio:g}:1 (zip bomb?)", path=member
            )
        declared += info.file_size
    if declared > limits.max_total_bytes:
        raise RejectedFile(
            f"members inflate to {declared} bytes, above the {limits.max_total_bytes}-byte limit", path=where
        )
    return infos


def _read_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, member: str, limits: ArchiveLimits, max_bytes: int | None = None
) -> bytes:
    cap = limits.max_member_bytes if max_bytes is None else max_bytes
    try:
        with zf.open(info) as fh:
            data = fh.read(cap + 1)
    except Exception as exc:  # bad CRC, unsupported method, truncated deflate stream, ...
        raise RejectedFile(f"cannot read member: {type(exc).__name__}: {exc}", path=member) from exc
    if len(data) > cap:  # pragma: no cover - zipfile stops at the declared size
        raise RejectedFile(f"member larger than {cap} bytes", path=member)
    return data


def _walk(
    source: IO[bytes] | Path, where: str, depth: int, limits: ArchiveLimits, budget: list[int]
) -> Iterator[tuple[str, bytes]]:
    try:
        zf = zipfile.ZipFile(source)
    except Exception as exc:  # zipfile raises BadZipFile, NotImplementedError, struct.error, ...
        raise RejectedFile(f"not a readable zip archive: {type(exc).__name__}: {exc}", path=where) from exc
    with zf:
        infos = _check_directory(zf, where, limits)
        for info in infos:
            if info.is_dir():
                continue
            name = info.filename
            member = f"{where}!{name}"
            nested = name.lower().endswith(".zip")
            if not nested and not is_activity_name(name):
                log.debug("not an activity file, passed over: %s", member)
                continue
            if nested and depth >= limits.max_depth:
                raise RejectedFile(
                    f"zip nested deeper than {limits.max_depth} levels", path=member
                )
            budget[0] += info.file_size
            if budget[0] > limits.max_total_bytes:
                raise RejectedFile(
                    f"archive inflates to more than {limits.max_total_bytes} bytes", path=member
                )
            data = _read_member(zf, info, member, limits)
            if nested:
                for inner_name, inner_data in _walk(io.BytesIO(data), member, depth + 1, limits, budget):
                    yield f"{name}!{inner_name}", inner_data
            else:
                yield name, data


def iter_archive(
    path: Path,
    *,
    rel_path: str | None = None,
    data: bytes | None = None,
    limits: ArchiveLimits | None = None,
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(member name, bytes)`` for each activity file in a zip export.

    Parameters
    ----------
    path
        The zip file (read unless ``data`` is given).
    rel_path
        Name used in errors (default: the file name).
    data
        The archive's bytes when the caller already has them.
    limits
        Size/count/ratio/depth bounds (defaults: :class:`ArchiveLimits`).

    Yields
    ------
    tuple[str, bytes]
        The member's path inside the archive (nested: ``inner.zip!member``)
        and its stored bytes (still gzip for ``.gz`` members).

    Raises
    ------
    RejectedFile
        Not a zip, unsafe member names, too many/too large members, a zip
        bomb, nesting too deep, unreadable members. ``path`` is
        ``archive!member``. The directory of each zip is checked before any
        of its members is yielded.
    """
    where = rel_path or Path(path).name
    source: IO[bytes] | Path = io.BytesIO(data) if data is not None else Path(path)
    yield from _walk(source, where, 1, limits or ArchiveLimits(), [0])


# --------------------------------------------------------------------------- export metadata

#: Strava activity types (display names as in ``activities.csv``, and the API's
#: CamelCase names) -> (FIT sport, FIT sub_sport). Keys are lower-case with
#: spaces, ``-`` and ``_`` removed. A type not listed keeps its own name.
_STRAVA_TYPES: dict[str, tuple[str, str | None]] = {
    "run": ("running", None),
    "trailrun": ("running", "trail"),
    "virtualrun": ("running", "virtual_activity"),
    "treadmill": ("running", "treadmill"),
    "treadmillrun": ("running", "treadmill"),
    "ride": ("cycling", None),
    "virtualride": ("cycling", "virtual_activity"),
    "ebikeride": ("cycling", "e_bike_fitness"),
    "emountainbikeride": ("cycling", "e_bike_mountain"),
    "mountainbikeride": ("cycling", "mountain"),
    "gravelride": ("cycling", "gravel_cycling"),
    "handcycle": ("cycling", "hand_cycling"),
    "velomobile": ("cycling", None),
    "walk": ("walking", None),
    "hike": ("hiking", None),
    "swim": ("swimming", None),
    "alpineski": ("alpine_skiing", None),
    "backcountryski": ("alpine_skiing", "backcountry"),
    "nordicski": ("cross_country_skiing", None),
    "rowing": ("rowing", None),
    "virtualrow": ("rowing", "indoor_rowing"),
    "elliptical": ("fitness_equipment", "elliptical"),
    "stairstepper": ("fitness_equipment", "stair_climbing"),
    "weighttraining": ("training", "strength_training"),
    "yoga": ("training", "yoga"),
}
#: Header names (normalised: lower-case, ``_`` as a space, spaces collapsed) of the columns read.
_ID_HEADERS = ("activity id", "id")
_TYPE_HEADERS = ("activity type", "type")
_FILE_HEADERS = ("filename", "file name")
_CSV_NAME = "activities.csv"


def strava_sport(activity_type: str | None) -> tuple[str, str | None] | None:
    """A Strava activity type -> (FIT sport, FIT sub_sport); None for an empty type.

    ``Run``, ``Trail Run``, ``Virtual Run`` -> ``running`` (sub_sport ``trail``,
    ``virtual_activity``); ``Ride``, ``Virtual Ride``, ``E-Bike Ride``,
    ``Gravel Ride``, ``Mountain Bike Ride`` -> ``cycling``; ``Walk``, ``Hike``,
    ``Swim`` -> ``walking``, ``hiking``, ``swimming``; see :data:`_STRAVA_TYPES`.
    Any other type is kept lower-case with ``_`` for spaces (``Kitesurf`` ->
    ``kitesurf``, ``Weight Training`` -> ``training``/``strength_training``).
    """
    if activity_type is None or not activity_type.strip():
        return None
    text = activity_type.strip().lower()
    key = re.sub(r"[\s\-_]+", "", text)
    if key in _STRAVA_TYPES:
        return _STRAVA_TYPES[key]
    return re.sub(r"[\s\-]+", "_", text), None


@dataclass(frozen=True)
class StravaRow:
    """What one row of ``activities.csv`` says (empty text where a column is missing)."""

    line: int
    activity_id: str
    activity_type: str
    filename: str


def _header_index(header: list[str], names: tuple[str, ...]) -> int | None:
    normalised = [" ".join(h.replace("_", " ").split()).lower() for h in header]
    for name in names:  # the first column of that name (Strava repeats some headers)
        if name in normalised:
            return normalised.index(name)
    return None


def read_strava_activities(data: bytes, *, path: str) -> list[StravaRow]:
    """The rows of a Strava export's ``activities.csv``.

    UTF-8 with or without a byte-order mark. Columns are found by header name
    (``Activity ID``/``id``, ``Activity Type``/``type``, ``Filename``); the
    others are ignored, and a row shorter than the header has empty values.

    Raises
    ------
    RejectedFile
        Not UTF-8, not CSV (NUL bytes, a field over the csv module's limit),
        no ``Activity Type`` column, or neither a ``Filename`` nor an
        ``Activity ID`` column. ``line`` names the place.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
        raise RejectedFile(f"not UTF-8 text ({exc.reason})", path=path, offset=exc.start + bom) from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise RejectedFile("empty CSV file", path=path)
        i_type = _header_index(header, _TYPE_HEADERS)
        i_file = _header_index(header, _FILE_HEADERS)
        i_id = _header_index(header, _ID_HEADERS)
        if i_type is None:
            raise RejectedFile(
                f"no 'Activity Type' column (header: {', '.join(header[:6])}{', ...' if len(header) > 6 else ''})",
                path=path, line=1,
            )
        if i_file is None and i_id is None:
            raise RejectedFile("neither a 'Filename' nor an 'Activity ID' column", path=path, line=1)
        rows: list[StravaRow] = []
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue

            def cell(i: int | None) -> str:
                return fields[i].strip() if i is not None and i < len(fields) else ""

            rows.append(StravaRow(reader.line_num, cell(i_id), cell(i_type), cell(i_file)))
    except csv.Error as exc:
        raise RejectedFile(f"not a readable CSV file: {exc}", path=path, line=reader.line_num) from exc
    return rows


@dataclass(frozen=True)
class ExportIndex:
    """What an export archive says about its own members.

    ``sports`` maps a member name (as :func:`iter_archive` yields it) to the
    (FIT sport, FIT sub_sport) of its row in Strava's ``activities.csv``.
    ``other_members`` counts the archive's top-level files that are neither
    activity files nor nested zips (CSV, JSON, photos): they are passed over.
    ``note`` is one line for the archive's ledger row: how the CSV was used,
    or why it was not; None when there is no CSV.
    """

    sports: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    other_members: int = 0
    note: str | None = None


def _csv_member(infos: list[zipfile.ZipInfo]) -> zipfile.ZipInfo | None:
    """``activities.csv`` at the top of the archive or in one top folder (the shallowest)."""
    found = [
        info for info in infos
        if not info.is_dir() and PurePosixPath(info.filename).name.lower() == _CSV_NAME
        and len(PurePosixPath(info.filename).parts) <= 2
    ]
    return min(found, key=lambda i: (len(PurePosixPath(i.filename).parts), i.filename)) if found else None


def read_export_index(
    path: Path,
    *,
    rel_path: str | None = None,
    data: bytes | None = None,
    limits: ArchiveLimits | None = None,
) -> ExportIndex:
    """Read the export's own metadata (Strava's ``activities.csv``); never fails.

    A file's sport comes from its row's ``Activity Type`` (see
    :func:`strava_sport`); the row is matched to a member by its
    ``Filename`` (relative to the folder holding the CSV), else by an
    activity file named ``<Activity ID>.<ext>``. A CSV that cannot be used
    is logged as a warning and described in ``note``; an archive that is
    not a readable zip gives an empty index (:func:`iter_archive` reports it).
    """
    limits = limits or ArchiveLimits()
    where = rel_path or Path(path).name
    source: IO[bytes] | Path = io.BytesIO(data) if data is not None else Path(path)
    try:
        zf = zipfile.ZipFile(source)
    except Exception:  # the archive itself is judged by iter_archive
        return ExportIndex()
    with zf:
        infos = zf.infolist()
        files = [i.filename for i in infos if not i.is_dir()]
        activity_names = [n for n in files if is_activity_name(n)]
        other = sum(1 for n in files if not is_activity_name(n) and not n.lower().endswith(".zip"))
        info = _csv_member(infos)
        if info is None:
            return ExportIndex(other_members=other)
        member = f"{where}!{info.filename}"
        try:
            why = _unsafe_name(info.filename)
            if why:
                raise RejectedFile(why, path=member)
            if info.file_size > limits.max_csv_bytes:
                raise RejectedFile(
                    f"{info.file_size} bytes, above the {limits.max_csv_bytes}-byte limit", path=member
                )
            rows = read_strava_activities(_read_member(zf, info, member, limits, limits.max_csv_bytes), path=member)
        except RejectedFile as exc:
            place = f" (line {exc.line})" if exc.line is not None else ""
            place = f" (byte {exc.offset})" if exc.offset is not None and not place else place
            note = f"{info.filename} not used: {exc.reason}{place}"
            log.warning("%s: %s; the activity files load without it", where, note)
            return ExportIndex(other_members=other, note=note)
    folder = str(PurePosixPath(info.filename).parent)
    prefix = "" if folder == "." else folder + "/"
    members = set(activity_names)
    by_stem = {PurePosixPath(n).name.split(".", 1)[0]: n for n in activity_names}
    sports: dict[str, tuple[str, str | None]] = {}
    for row in rows:
        sport = strava_sport(row.activity_type)
        if sport is None:
            continue
        name = prefix + str(PurePosixPath(row.filename.replace("\\", "/"))).lstrip("/") if row.filename else ""
        if name not in members:
            name = by_stem.get(row.activity_id, "") if row.activity_id else ""
        if name:
            sports[name] = sport
    note = f"{info.filename}: {len(rows)} rows, a type for {len(sports)} of {len(members)} activity files"
    log.info("%s: %s", where, note)
    return ExportIndex(sports=sports, other_members=other, note=note)
