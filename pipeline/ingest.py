"""Discover raw files -> decode -> normalise -> load into the warehouse; returns a summary.

The raw folder is the single source of truth and is never written to. Each
file is identified by the SHA-256 of its bytes: a file already in the ledger
is not decoded again, so re-running changes nothing and a new file adds only
its own rows. Every file ends in the ledger (``files``) as ``loaded``,
``duplicate``, ``skipped`` or ``rejected`` with a reason.

Pain logs are re-read on every run (they are small and runners edit them):
every row is joined again to the runs in the warehouse, so a run that arrives
after its pain report still gets matched.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.analysis.onset import TRACK_COLUMNS, join_pain_onsets
from pipeline.config import Settings
from pipeline.errors import InputError, PainRowError, RejectedFile, SkippedFile
from pipeline.normalise import read_activities
from pipeline.schema import (
    ACTIVITY_SCHEMA,
    LAP_SCHEMA,
    PAIN_REPORT_SCHEMA,
    PAUSE_SCHEMA,
    SAMPLE_SCHEMA,
    NormalisedActivity,
    frame_from_rows,
)
from pipeline.sources.archive import ExportIndex, iter_archive, read_export_index
from pipeline.sources.athlete import Athlete, read_athlete
from pipeline.sources.pain import read_pain_log
from pipeline.warehouse import FileLoad, Warehouse
from pipeline.warehouse.overlap import OverlapIndex
from pipeline.workers import Job, run_jobs

__all__ = ["IngestSummary", "ingest", "discover", "RawFile", "ACTIVITY_SUFFIXES"]

log = logging.getLogger(__name__)

#: File name endings the ingest treats as activity files (case-insensitive).
ACTIVITY_SUFFIXES = (".fit", ".gpx", ".tcx", ".fit.gz", ".gpx.gz", ".tcx.gz", ".zip")
#: FIT first: when the same run comes as FIT and GPX, the richer file is kept.
_FORMAT_ORDER = {"fit": 0, "tcx": 1, "gpx": 2, "zip": 3}

Progress = Callable[[int, int, str], None]
#: Decoded files that may wait to be loaded, per worker (bounds the ingest's memory). Half a
#: batch per worker: the workers go on decoding while a batch is written (at 8 they stood idle
#: through most of each write: 469,000 instead of 354,000 records/s end to end, docs/performance.md).
_WINDOW_PER_WORKER = 32
#: Files per load transaction (Warehouse.load_files), and the samples that close a batch early:
#: one Arrow append per table per batch instead of a transaction per file.
_BATCH_FILES = 64
_BATCH_SAMPLES = 1_000_000


@dataclass(frozen=True)
class RawFile:
    """One activity file found under the raw folder."""

    path: Path
    rel_path: str
    athlete_id: str | None

    @property
    def kind(self) -> str:
        name = self.path.name.lower().removesuffix(".gz")
        return name.rsplit(".", 1)[-1] if "." in name else ""


@dataclass
class IngestSummary:
    """What one ingest did. ``rejected`` lists (path, reason) for this run's new rejections."""

    run_id: str = ""
    files_seen: int = 0
    unchanged: int = 0
    loaded: int = 0
    duplicates: int = 0
    skipped: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    activities_total: int = 0
    runs_total: int = 0
    samples_loaded: int = 0
    pain_reports: int = 0
    pain_status: dict[str, int] = field(default_factory=dict)
    pain_rows_rejected: list[tuple[str, str]] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def pain_matched(self) -> int:
        return self.pain_status.get("matched", 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "files_seen": self.files_seen,
            "unchanged": self.unchanged,
            "loaded": self.loaded,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "rejected": len(self.rejected),
            "activities_total": self.activities_total,
            "runs_total": self.runs_total,
            "samples_loaded": self.samples_loaded,
            "pain_reports": self.pain_reports,
            "pain_status": dict(sorted(self.pain_status.items())),
            "pain_rows_rejected": len(self.pain_rows_rejected),
            "missing_files": len(self.missing_files),
            "seconds": round(self.seconds, 2),
        }


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith((".", "_")) for part in rel.parts)


def discover(raw_dir: Path) -> tuple[list[RawFile], dict[str, Path]]:
    """Find activity files and athlete folders under ``raw_dir``.

    Folders and files whose name starts with ``.`` or ``_`` are ignored (the
    simulator's ``_truth/`` lives there). Returns the files, ordered so FIT
    comes before TCX and GPX, and ``athlete_id -> folder``.
    """
    athletes: dict[str, Path] = {}
    files: list[RawFile] = []
    if not raw_dir.is_dir():
        return files, athletes
    for entry in sorted(raw_dir.iterdir()):
        if entry.is_dir() and not entry.name.startswith((".", "_")):
            athletes[entry.name] = entry
    for path in sorted(raw_dir.rglob("*")):
        rel = path.relative_to(raw_dir)
        if not path.is_file() or _is_hidden(rel):
            continue
        if not path.name.lower().endswith(ACTIVITY_SUFFIXES):
            continue
        athlete_id = rel.parts[0] if len(rel.parts) > 1 else None
        files.append(RawFile(path=path, rel_path=rel.as_posix(), athlete_id=athlete_id))
    files.sort(key=lambda f: (_FORMAT_ORDER.get(f.kind, 9), f.rel_path))
    return files, athletes


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_file(
    path: str, rel_path: str, athlete_id: str, athlete_tz: str | None, data: bytes | None,
    sport_hint: tuple[str, str | None] | None = None, known: tuple[str, int, int | None] | None = None,
) -> bytes:
    """Worker entry point: one file (or archive member) -> its activities as Arrow IPC bytes.

    ``sport_hint`` is (sport, sub_sport) from the export's ``activities.csv``: it
    replaces a sport the file leaves unknown (``generic``), never one the file states.
    ``known`` is (sha256, size_bytes, mtime_ns) of the bytes the ingest hashed: the
    hash is not computed again for ``data``, or for a file whose size and
    modification time are still those (the ingest's own test for an unchanged file).
    """
    sha256 = None
    if known is not None:
        if data is not None:
            sha256 = known[0]
        else:
            try:
                stat = os.stat(path)
            except OSError:
                stat = None  # read_activities says why
            if stat is not None and (stat.st_size, stat.st_mtime_ns) == known[1:]:
                sha256 = known[0]
    return pack_activities(read_activities(Path(path), rel_path=rel_path, athlete_id=athlete_id,
                                           athlete_tz=athlete_tz, data=data, sport_hint=sport_hint,
                                           sha256=sha256))


_TABLES = (("activities", ACTIVITY_SCHEMA), ("samples", SAMPLE_SCHEMA), ("laps", LAP_SCHEMA),
           ("pauses", PAUSE_SCHEMA))


def pack_activities(activities: list[NormalisedActivity]) -> bytes:
    """A file's activities as four length-prefixed Arrow IPC streams (activities, samples, laps, pauses).

    This is what a decoder process hands back: columns, not pickled Python
    objects, so the parent reads them without copying row by row.
    """
    frames = [frame_from_rows([a.activity for a in activities], ACTIVITY_SCHEMA)]
    for name, schema in _TABLES[1:]:
        parts = [getattr(a, name) for a in activities]
        frames.append(pl.concat(parts, how="vertical") if parts else pl.DataFrame(schema=schema))
    out = io.BytesIO()  # one buffer, one copy out: the samples are ~150 bytes a row
    for frame in frames:
        at = out.tell()
        out.write(bytes(8))
        frame.write_ipc_stream(out, compression="uncompressed")
        end = out.tell()
        out.seek(at)
        out.write(struct.pack("<Q", end - at - 8))
        out.seek(end)
    return out.getvalue()


def unpack_activities(payload: bytes) -> list[NormalisedActivity]:
    """The inverse of :func:`pack_activities`."""
    view, pos, frames = memoryview(payload), 0, []
    for _name, _schema in _TABLES:
        (size,) = struct.unpack_from("<Q", view, pos)
        frames.append(pl.read_ipc_stream(io.BytesIO(view[pos + 8:pos + 8 + size])))
        pos += 8 + size
    acts, samples, laps, pauses = frames

    def part(frame: pl.DataFrame, aid: str) -> pl.DataFrame:
        return frame if acts.height == 1 else frame.filter(pl.col("activity_id") == aid)

    return [
        NormalisedActivity(activity=row, samples=part(samples, row["activity_id"]),
                           laps=part(laps, row["activity_id"]), pauses=part(pauses, row["activity_id"]))
        for row in acts.iter_rows(named=True)
    ]


@dataclass(frozen=True)
class _Unit:
    """One thing to decode: a plain file or one member of an archive."""

    rel_path: str
    path: Path
    athlete_id: str
    sha256: str
    size_bytes: int
    data: bytes | None  # only for archive members
    sport_hint: tuple[str, str | None] | None = None  # from the export's activities.csv
    mtime_ns: int | None = None  # of a file on disk (not of an archive member)


def _units(
    raw: RawFile, athlete_id: str, data: bytes, index: ExportIndex | None = None, mtime_ns: int | None = None
) -> Iterator[_Unit]:
    if raw.kind == "zip":
        hints = index.sports if index is not None else {}
        for member, member_data in iter_archive(raw.path):
            rel = f"{raw.rel_path}!{member}"
            yield _Unit(rel, raw.path, athlete_id, _sha256(member_data), len(member_data), member_data,
                        hints.get(member))
    else:
        yield _Unit(raw.rel_path, raw.path, athlete_id, _sha256(data), len(data), None, mtime_ns=mtime_ns)


def _ledger(unit: _Unit, *, run_id: str, fmt: str | None, status: str, reason: str | None = None,
            activity_ids: list[str] | None = None, duplicate_of: str | None = None) -> dict[str, Any]:
    return {
        "path": unit.rel_path,
        "sha256": unit.sha256,
        "size_bytes": unit.size_bytes,
        "format": fmt,
        "status": status,
        "reason": reason,
        "activity_ids": activity_ids or [],
        "duplicate_of": duplicate_of,
        "run_id": run_id,
        "mtime_ns": unit.mtime_ns,
    }


def _format_of(rel_path: str) -> str:
    name = rel_path.rsplit("!", 1)[-1].lower().removesuffix(".gz")
    return name.rsplit(".", 1)[-1] if "." in name else "unknown"


def ingest(
    settings: Settings,
    *,
    wait: bool = False,
    command: str = "ingest",
    progress: Progress | None = None,
    after_load: Callable[[Warehouse, IngestSummary], None] | None = None,
) -> IngestSummary:
    """Load every new file under ``settings.raw_dir`` into the warehouse.

    Parameters
    ----------
    settings
        Paths and limits.
    wait
        Wait for another ingest holding the warehouse lock instead of failing
        with :class:`~pipeline.errors.WarehouseLocked`.
    command
        Recorded in ``_ingest_runs`` (``ingest`` or ``nightly``).
    progress
        Called as ``progress(done, total, path)`` after each file.
    after_load
        Called with the open warehouse before the snapshot is published (the
        nightly job renders reports there, under the same lock).
    """
    started = time.monotonic()
    summary = IngestSummary()
    files, athlete_dirs = discover(settings.raw_dir)
    summary.files_seen = len(files)

    athletes: dict[str, Athlete] = {}
    athlete_errors: list[tuple[Path, InputError]] = []
    for athlete_id, folder in athlete_dirs.items():
        try:
            athletes[athlete_id] = read_athlete(folder, athlete_id=athlete_id)
        except InputError as exc:
            # the athlete's runs still load, with default settings; the file is named as rejected
            athlete_errors.append((folder / "athlete.toml", exc))
            athletes[athlete_id] = Athlete(athlete_id=athlete_id, name=athlete_id)

    with Warehouse.open(settings.warehouse_path, wait=wait) as wh:
        run_id = wh.begin_run(command=command)
        summary.run_id = run_id
        try:
            for path, exc in athlete_errors:
                data = path.read_bytes() if path.is_file() else b""
                unit = _Unit(path.relative_to(settings.raw_dir).as_posix(), path, "", _sha256(data), len(data), None)
                reason = _describe(exc) + " (default settings used)"
                wh.record_file(ledger=_ledger(unit, run_id=run_id, fmt="toml", status="rejected", reason=reason))
                summary.rejected.append((unit.rel_path, reason))
                log.warning("%s: %s", unit.rel_path, reason)
            _ingest_activities(wh, settings, files, athletes, summary, run_id, progress)
            _ingest_pain(wh, settings, athletes, summary, run_id)
            wh.upsert_athletes(_athletes_frame(athletes))
            present = {f.rel_path for f in files}
            summary.missing_files = [
                p for p in wh.missing_files(present) if p.split("!", 1)[0] not in present
            ]
            for path in summary.missing_files:
                log.warning("%s: in the warehouse but no longer in the raw folder (kept)", path)
            acts = wh.activities()
            summary.activities_total = acts.height
            summary.runs_total = wh.activities(running_only=True).height
            summary.seconds = time.monotonic() - started
            if after_load is not None:
                after_load(wh, summary)
            summary.seconds = time.monotonic() - started
            status = "rejections" if summary.rejected else "ok"
            wh.finish_run(run_id, status=status, summary=summary.as_dict())
        except BaseException as exc:
            wh.finish_run(run_id, status="failed", summary={"error": repr(exc)})
            raise
        wh.publish_snapshot(settings.snapshot_path)
    return summary


def _athletes_frame(athletes: dict[str, Athlete]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "athlete_id": [a.athlete_id for a in athletes.values()],
            "name": [a.name for a in athletes.values()],
            "timezone": [a.timezone for a in athletes.values()],
            "unit": [a.unit for a in athletes.values()],
            "distance_cap_m": [a.distance_cap_m for a in athletes.values()],
        },
        schema={
            "athlete_id": pl.String(),
            "name": pl.String(),
            "timezone": pl.String(),
            "unit": pl.String(),
            "distance_cap_m": pl.Float64(),
        },
    )


def _ingest_activities(
    wh: Warehouse,
    settings: Settings,
    files: list[RawFile],
    athletes: dict[str, Athlete],
    summary: IngestSummary,
    run_id: str,
    progress: Progress | None,
) -> None:
    units: dict[str, _Unit] = {}
    jobs: list[Job[str]] = []
    done = 0

    def reject(unit: _Unit, reason: str, *, status: str = "rejected") -> None:
        wh.record_file(ledger=_ledger(unit, run_id=run_id, fmt=_format_of(unit.rel_path),
                                      status=status, reason=reason))
        if status == "rejected":
            summary.rejected.append((unit.rel_path, reason))
            log.warning("%s: %s", unit.rel_path, reason)
        else:
            summary.skipped += 1
            summary.skipped_files.append((unit.rel_path, reason))
            log.info("%s: skipped: %s", unit.rel_path, reason)

    ledger = wh.ledger()
    seen_pairs = set(zip(ledger["path"].to_list(), ledger["sha256"].to_list()))
    # content already in the warehouse under some path: sha256 -> that path
    kept_by_sha: dict[str, str] = {}
    for row in ledger.filter(pl.col("status").is_in(["loaded", "duplicate"])).iter_rows(named=True):
        kept_by_sha.setdefault(row["sha256"], row["path"])

    # Ledgered after the loads: the first copy may still be waiting to load, and a 'duplicate'
    # row for its content would make load_file skip it (and a killed run lose it).
    same_bytes_rows: list[tuple[_Unit, str]] = []

    def same_bytes(unit: _Unit, first: str) -> None:
        same_bytes_rows.append((unit, first))
        summary.duplicates += 1
        log.info("%s: same bytes as %s", unit.rel_path, first)

    batch_by_sha: dict[str, str] = {}
    archives: list[tuple[_Unit, int, ExportIndex]] = []
    # A file whose path, size and modification time match a ledger row is not read again
    # (a nightly run over years of history would otherwise re-hash gigabytes).
    known_stats = {
        (row["path"], row["size_bytes"], row["mtime_ns"])
        for row in ledger.select("path", "size_bytes", "mtime_ns").iter_rows(named=True)
        if row["mtime_ns"] is not None
    }
    for raw in files:
        try:
            stat = raw.path.stat()
        except OSError:
            stat = None  # read_bytes below says why
        if stat is not None and (raw.rel_path, stat.st_size, stat.st_mtime_ns) in known_stats:
            summary.unchanged += 1
            continue
        data = raw.path.read_bytes()
        mtime_ns = stat.st_mtime_ns if stat is not None else None
        placeholder = _Unit(raw.rel_path, raw.path, raw.athlete_id or "", _sha256(data), len(data), None,
                            mtime_ns=mtime_ns)
        if (placeholder.rel_path, placeholder.sha256) in seen_pairs:
            summary.unchanged += 1
            continue
        if raw.athlete_id is None:
            reject(placeholder, "not inside an athlete folder: move it to data/raw/<athlete>/")
            continue
        index = read_export_index(raw.path, rel_path=raw.rel_path, data=data) if raw.kind == "zip" else None
        try:
            unit_list = list(_units(raw, raw.athlete_id, data, index, mtime_ns))
        except InputError as exc:
            reject(placeholder, _describe(exc))
            continue
        if index is not None:
            # the archive itself is ledgered so an unchanged archive is not reopened, but only
            # after its members (below): a run killed in between must read the archive again
            archives.append((placeholder, len(unit_list), index))
        for unit in unit_list:
            if (unit.rel_path, unit.sha256) in seen_pairs:
                summary.unchanged += 1
                continue
            first = kept_by_sha.get(unit.sha256) or batch_by_sha.get(unit.sha256)
            if first is not None:
                same_bytes(unit, first)
                continue
            batch_by_sha[unit.sha256] = unit.rel_path
            units[unit.rel_path] = unit
            athlete = athletes.get(unit.athlete_id)
            jobs.append(
                Job(
                    unit.rel_path,
                    decode_file,
                    (str(unit.path), unit.rel_path, unit.athlete_id,
                     athlete.timezone if athlete else None, unit.data, unit.sport_hint,
                     (unit.sha256, unit.size_bytes, unit.mtime_ns)),
                )
            )

    total = len(jobs)
    workers = settings.workers if total > 1 else 0
    overlaps = wh.overlap_index()
    pending: list[FileLoad] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal pending_rows
        wh.load_files(pending)
        pending.clear()
        pending_rows = 0

    with wh.loading():
        # Results come back in discovery order (FIT first, so duplicates resolve the same way every
        # run) and are loaded as they come, _BATCH_FILES files per transaction; at most `window`
        # decoded files wait in memory.
        for result in run_jobs(jobs, workers=workers, timeout_s=settings.parse_timeout_s,
                               memory_bytes=settings.parse_memory_bytes, window=_WINDOW_PER_WORKER * max(1, workers)):
            done += 1
            if progress is not None:
                progress(done, total, result.key)
            unit = units[result.key]
            if result.timed_out:
                reject(unit, f"parsing took longer than {settings.parse_timeout_s:g} s")
                continue
            if result.error is not None:
                reason, status = _error_reason(result.error)
                reject(unit, reason, status=status)
                continue
            load = _file_load(unit, unpack_activities(result.value), overlaps, summary, run_id=run_id)
            pending.append(load)
            pending_rows += sum(a.samples.height for a in load.activities)
            if len(pending) >= _BATCH_FILES or pending_rows >= _BATCH_SAMPLES:
                flush()
        if pending:
            flush()
    for unit, first in same_bytes_rows:
        wh.record_file(ledger=_ledger(unit, run_id=run_id, fmt=_format_of(unit.rel_path), status="duplicate",
                                      reason=f"same bytes as {first}", duplicate_of=first))
    for archive, n_members, index in archives:
        reason = f"archive: {n_members} members read"
        if index.other_members:
            reason += f"; {index.other_members} other files passed over (not activity files)"
        if index.note:
            reason += f"; {index.note}"
        wh.record_file(ledger=_ledger(archive, run_id=run_id, fmt="zip", status="skipped", reason=reason))


def _error_reason(exc: BaseException) -> tuple[str, str]:
    """(reason, ledger status) for a file its decoder process could not read."""
    if isinstance(exc, SkippedFile):
        return exc.reason, "skipped"
    if isinstance(exc, InputError):
        return _describe(exc), "rejected"
    if isinstance(exc, MemoryError):
        return str(exc), "rejected"
    return f"could not be read ({type(exc).__name__}: {exc})", "rejected"


def _file_load(
    unit: _Unit, activities: list[NormalisedActivity], overlaps: OverlapIndex, summary: IngestSummary, *, run_id: str
) -> FileLoad:
    """One decoded file as a load: its activities that repeat a known one are duplicates (a file
    whose activities all repeat is a duplicate file), the others join ``overlaps``."""
    duplicates: dict[str, str] = {}
    for act in activities:
        row = act.activity
        other = overlaps.find(row["athlete_id"], row["start_utc"], row["end_utc"])
        if other is not None and other != act.activity_id:
            duplicates[act.activity_id] = other
    ids = [a.activity_id for a in activities]
    fmt = activities[0].activity["source_format"] if activities else _format_of(unit.rel_path)
    if activities and len(duplicates) == len(activities):
        status, reason = "duplicate", "same activity as " + ", ".join(sorted(set(duplicates.values())))
        summary.duplicates += 1
    else:
        status, reason = "loaded", None
        summary.loaded += 1
        summary.samples_loaded += sum(a.samples.height for a in activities if a.activity_id not in duplicates)
    for act in activities:
        if act.activity_id not in duplicates:
            row = act.activity
            overlaps.add(row["athlete_id"], act.activity_id, row["start_utc"], row["end_utc"])
    return FileLoad(
        ledger=_ledger(unit, run_id=run_id, fmt=fmt, status=status, reason=reason, activity_ids=ids,
                       duplicate_of=next(iter(duplicates.values()), None) if status == "duplicate" else None),
        activities=activities,
        duplicates=duplicates,
    )


def _describe(exc: InputError) -> str:
    """The reason with its place, without repeating the path (the ledger row has it)."""
    if exc.line is not None:
        return f"line {exc.line}: {exc.reason}"
    if exc.offset is not None:
        return f"{exc.reason} (at byte {exc.offset})"
    return exc.reason


def _ingest_pain(
    wh: Warehouse,
    settings: Settings,
    athletes: dict[str, Athlete],
    summary: IngestSummary,
    run_id: str,
) -> None:
    frames: list[pl.DataFrame] = []
    errors: list[PainRowError | RejectedFile] = []
    for athlete_id, athlete in sorted(athletes.items()):
        folder = settings.raw_dir / athlete_id
        for path in sorted(folder.glob("pain*.csv")):
            rel = path.relative_to(settings.raw_dir).as_posix()
            try:
                log_ = read_pain_log(path, rel_path=rel, athlete=athlete)
            except RejectedFile as exc:
                errors.append(exc)
                continue
            frames.append(log_.reports)
            errors.extend(log_.errors)
    reports = pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=PAIN_REPORT_SCHEMA)
    timezones = {a.athlete_id: a.timezone for a in athletes.values()}
    joined = join_pain_onsets(
        reports,
        wh.activities(running_only=True),
        functools.partial(wh.samples_for, columns=TRACK_COLUMNS),
        timezones=timezones,
        after_window_h=settings.after_window_h,
    )
    rejected_rows = pl.DataFrame(
        {
            "source_file": [e.path or "" for e in errors],
            "line": [e.line for e in errors],
            "reason": [e.reason for e in errors],
        },
        schema={"source_file": pl.String(), "line": pl.Int32(), "reason": pl.String()},
    )
    wh.replace_pain(reports=joined, rejected_rows=rejected_rows)
    summary.pain_reports = joined.height
    summary.pain_status = dict(Counter(joined["status"].to_list())) if joined.height else {}
    summary.pain_rows_rejected = [(e.where, e.reason) for e in errors]
    for e in errors:
        log.warning("%s", e.message)


def utc_now() -> datetime:
    """Now, aware UTC (one place, so tests can reason about it)."""
    return datetime.now(timezone.utc)
