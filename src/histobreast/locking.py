"""One writer per run folder: a lock file naming its holder (pid, host, start time).

:func:`folder_lock` is taken before anything is written into an experiment folder; a second run
into the same folder is refused with a message naming the holder. A lock whose process is gone
(same host, pid not alive) is stale and is taken over; a lock from another host is respected.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from histobreast.errors import HistobreastError

LOCK_FILE = ".histobreast.lock"


class FolderLockedError(HistobreastError):
    """Another live run holds the folder's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_lock(folder: str | Path) -> dict[str, Any] | None:
    """The holder recorded in ``folder``'s lock file, or None when there is none (or it is unreadable)."""
    try:
        holder = json.loads((Path(folder) / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _is_stale(holder: dict[str, Any] | None) -> bool:
    if holder is None:  # half-written by a killed run: no one can hold it
        return True
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid)


def _try_create(lock: Path, holder: dict[str, Any]) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(holder, fh)
    return True


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold ``folder``'s lock for the block (the folder is created if needed, and removed again
    if the block leaves it empty). Raises :class:`FolderLockedError` naming a live holder."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if not _try_create(lock, me):
        holder = read_lock(folder)
        if not _is_stale(holder):
            assert holder is not None
            raise FolderLockedError(
                f"{folder}: in use by another run (pid {holder.get('pid')} on {holder.get('host')}, started "
                f"{holder.get('started')}); wait for it, or delete {lock} if that run is gone"
            )
        lock.unlink(missing_ok=True)  # stale: its holder died without releasing it
        if not _try_create(lock, me):
            raise FolderLockedError(f"{folder}: another run took the lock {lock} just now")
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()


@contextlib.contextmanager
def folder_locks(folders: Iterable[str | Path]) -> Iterator[None]:
    """Hold the lock of every distinct folder (e.g. the experiment folders ``evaluate`` reads and
    the one it writes), taken in sorted order so that two runs never wait on each other's."""
    with contextlib.ExitStack() as stack:
        for folder in sorted({Path(f).resolve() for f in folders}):
            stack.enter_context(folder_lock(folder))
        yield
