"""Bulk-export zip archives (Strava, Garmin Connect) -> their activity files.

A Strava export holds ``activities.csv`` and ``activities/<id>.fit.gz`` /
``.gpx`` / ``.tcx.gz``; a Garmin Connect export nests zips of uploaded
``.fit`` files (``DI_CONNECT/DI-Connect-Uploaded-Files/UploadedFiles_*.zip``).
:func:`iter_archive` yields every FIT/GPX/TCX member (optionally ``.gz``) as
``(name, bytes)``, walking nested zips down to :attr:`ArchiveLimits.max_depth`
levels (the archive itself is level 1). A nested member's name is
``inner.zip!member``. Other members (CSV, JSON, photos) are not activity
files and are passed over (logged at debug level).

Every zip's directory is checked *before* anything is yielded: member
names may not escape (``..``, absolute paths, drive letters, NUL), and the
member count, each member's size, the total size and the compression ratio
are bounded (a zip bomb is refused, not inflated). Member data are read with
a hard cap, so a directory that lies about sizes cannot blow memory either:
``zipfile`` stops at the declared size and the CRC check fails.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from pipeline.config import Settings
from pipeline.errors import RejectedFile

__all__ = ["ArchiveLimits", "ACTIVITY_SUFFIXES", "iter_archive", "is_activity_name"]

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


def is_activity_name(name: str) -> bool:
    """True for FIT/GPX/TCX member names, optionally ``.gz`` (case-insensitive)."""
    return name.lower().endswith(ACTIVITY_SUFFIXES)


def _unsafe_name(name: str) -> str | None:
    """Why a member name could escape the archive, or None when it is safe."""
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


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, member: str, limits: ArchiveLimits) -> bytes:
    try:
        with zf.open(info) as fh:
            data = fh.read(limits.max_member_bytes + 1)
    except Exception as exc:  # bad CRC, unsupported method, truncated deflate stream, ...
        raise RejectedFile(f"cannot read member: {type(exc).__name__}: {exc}", path=member) from exc
    if len(data) > limits.max_member_bytes:  # pragma: no cover - zipfile stops at the declared size
        raise RejectedFile(f"member larger than {limits.max_member_bytes} bytes", path=member)
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
