"""The warehouse write lock: an exclusive ``fcntl.flock`` on ``<warehouse>.lock``.

DuckDB has its own file lock, but its error says nothing about *who* holds
it. This lock is taken first, holds the owner's pid, and lets a second ingest
either fail at once (:class:`~pipeline.errors.WarehouseLocked` naming the
pid) or wait for its turn. The lock file is never deleted: removing a flock
file while another process waits on it would let two processes "own" it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

from pipeline.errors import WarehouseError, WarehouseLocked

__all__ = ["WriteLock"]

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

    def acquire(self, *, wait: bool = False, timeout_s: float = 1.0) -> None:
        """Take the lock, or raise :class:`WarehouseLocked`.

        Parameters
        ----------
        wait
            False: one attempt, fail at once when another process holds it.
            True: retry every 50 ms for up to ``timeout_s`` seconds
            (``float("inf")`` waits for ever).
        timeout_s
            How long ``wait=True`` waits.
        """
        if self._fd is not None:
            raise WarehouseError(f"{self.path}: lock already held by this object")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WarehouseError(f"{self.path}: cannot create the lock file: {exc}") from exc
        deadline = time.monotonic() + timeout_s if wait else time.monotonic()
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as exc:
                    if time.monotonic() >= deadline:
                        holder = _read_pid(fd)
                        who = f"pid {holder}" if holder else "another process (pid not yet written)"
                        waited = f" after waiting {timeout_s:g} s" if wait else ""
                        raise WarehouseLocked(
                            f"warehouse is locked by {who}{waited}: another ingest is running "
                            f"(lock file {self.path}); wait for it to finish or use --wait"
                        ) from exc
                    time.sleep(_POLL_S)
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


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
