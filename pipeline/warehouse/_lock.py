"""The warehouse write lock: an exclusive ``fcntl.flock`` on ``<warehouse>.lock``.

DuckDB has its own file lock, but its error says nothing about *who* holds
it. This lock is taken first, holds the owner's pid, and lets a second ingest
either fail at once (:class:`~pipeline.errors.WarehouseLocked` naming the
pid) or wait for its turn. The lock file is never deleted: removing a flock
file while another process waits on it would let two processes "own" it.

A killed ingest cannot leave a stale lock: the kernel drops a ``flock`` with
the last descriptor of its holder, so only the *text* (the dead pid) stays
behind, and the next owner overwrites it. The descriptor is not inherited
by child processes (Python opens it close-on-exec), so a decoder worker that
outlives its parent does not keep the lock either. When the lock is held but
the pid in the file is no longer running, the message says so.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

from pipeline.errors import WarehouseError, WarehouseLocked

__all__ = ["WriteLock", "check_unlocked", "lock_path_for"]

log = logging.getLogger(__name__)

_POLL_S = 0.05


class WriteLock:
    """An exclusive, process-wide lock on ``path`` (a ``.lock`` file).

    Parameters
    ----------
    path
        The lock file; created if missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, wait: bool = False, timeout_s: float | None = None) -> None:
        """Take the lock, or raise :class:`WarehouseLocked`.

        Parameters
        ----------
        wait
            False: one attempt, fail at once when another process holds it.
            True: retry every 50 ms for up to ``timeout_s`` seconds.
        timeout_s
            How long ``wait=True`` waits; None (the default) waits for ever.
        """
        if self._fd is not None:
            raise WarehouseError(f"{self.path}: lock already held by this object")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WarehouseError(f"{self.path}: cannot create the lock file: {exc}") from exc
        if not wait:
            deadline = time.monotonic()
        elif timeout_s is None:
            deadline = float("inf")
        else:
            deadline = time.monotonic() + timeout_s
        try:
            announced = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as exc:
                    if not announced and wait:
                        log.info("waiting for pid %s to release %s", _read_pid(fd) or "?", self.path)
                        announced = True
                    if time.monotonic() >= deadline:
                        waited = f" after waiting {timeout_s:g} s" if wait and timeout_s is not None else ""
                        raise WarehouseLocked(_locked_message(self.path, _read_pid(fd), waited)) from exc
                    time.sleep(_POLL_S)
            stale = _read_pid(fd)
            if stale is not None and stale != os.getpid():
                log.info("%s: taking over from pid %d, which ended without releasing it", self.path, stale)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        log.debug("took warehouse lock %s", self.path)

    def release(self) -> None:
        """Drop the lock (idempotent). The file stays; its pid is cleared."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:  # pragma: no cover - the lock still goes with the fd
            log.warning("could not clear the pid in %s", self.path)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        log.debug("released warehouse lock %s", self.path)


def lock_path_for(warehouse_path: Path) -> Path:
    """The lock file of the warehouse at ``warehouse_path``: ``<path>.lock`` beside it."""
    return Path(f"{warehouse_path}.lock")


def check_unlocked(warehouse_path: Path) -> None:
    """Raise :class:`WarehouseLocked` if another process holds the warehouse's write lock now.

    A cheap early check (no DuckDB, nothing created): the CLI calls it before
    importing the heavy libraries, so a second ingest exits in a fraction of
    a second. It does not take the lock; :meth:`WriteLock.acquire` still
    decides (a process that starts in between is caught there).
    """
    path = lock_path_for(warehouse_path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise WarehouseError(f"{path}: cannot read the lock file: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise WarehouseLocked(_locked_message(path, _read_pid(fd), "")) from exc
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _locked_message(path: Path, holder: int | None, waited: str) -> str:
    if holder is None:
        who = "another process (pid not yet written)"
    elif _pid_running(holder):
        who = f"pid {holder}"
    else:
        who = f"pid {holder}, which is no longer running (a process it started may still hold the lock)"
    return (
        f"warehouse is locked by {who}{waited}: another ingest is running "
        f"(lock file {path}); wait for it to finish or use --wait"
    )


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
