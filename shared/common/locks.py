"""One writer at a time: an exclusive lock on a file inside the store or folder being written.

``fcntl.flock`` locks belong to the open file, so the OS releases them when the process dies: a run killed with
kill -9 leaves the lock file behind but never a stale lock. The file holds the holder's pid and host so that the
second writer can say who it waits for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from synthprobe.common.files import InputError, os_reason

LOCK_FILE = ".synthprobe.lock"
POLL_SECONDS = 0.2


@contextlib.contextmanager
def exclusive_writer(
    folder: str | os.PathLike, wait: bool = False, hint: str = "or rerun with --wait"
) -> Iterator[None]:
    """Hold ``folder``'s writer lock for the block; another holder is an InputError naming it, or with ``wait`` a
    wait until it is gone."""
    path = Path(folder) / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open for the lock's lifetime)
    except OSError as exc:
        raise InputError(f"cannot write to {folder}: {os_reason(exc)}") from exc
    with handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    message = f"{folder} is being written by {holder(handle)}; wait for it to finish, {hint}"
                    raise InputError(message) from None
                time.sleep(POLL_SECONDS)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def holder(handle) -> str:
    """Who holds the lock, as its file says ("another process" before it has written its name)."""
    handle.seek(0)
    return handle.read().strip() or "another process"
