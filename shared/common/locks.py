"""One writer at a time: an exclusive lock on a file inside the store or folder being written.

``fcntl.flock`` locks belong to the open file, so the OS releases them when the process dies: a run killed with
kill -9 leaves at most the lock file behind, never a stale lock. The file holds the holder's pid and host so that
the second writer can say who it waits for; the holder deletes it when done (and the folder, if it made the folder
and left nothing else in it), so a refused run leaves nothing behind.
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
    folder: str | os.PathLike, wait: bool = False, hint: str = "or rerun with --wait", name: str = LOCK_FILE
) -> Iterator[None]:
    """Hold ``folder``'s writer lock ``name`` for the block (writers of disjoint parts of a folder, such as
    sd-generate's shards, take a lock each); another holder is an InputError naming it, or with ``wait`` a wait
    until it is gone."""
    folder = Path(folder)
    made_folder = not folder.exists()
    handle = _locked_file(folder / name, wait, hint)
    try:
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        # Deleted while still locked: a waiter that then gets the lock on the old file sees it is gone and retries.
        with contextlib.suppress(OSError):
            (folder / name).unlink()
            if made_folder:
                folder.rmdir()  # only if empty: a run that wrote nothing leaves nothing
        handle.close()


def _locked_file(path: Path, wait: bool, hint: str):
    """``path`` opened and exclusively locked, the lock file still the one at ``path``."""
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open for the lock's lifetime)
        except OSError as exc:
            raise InputError(f"cannot write to {path.parent}: {os_reason(exc)}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = holder(handle)
            handle.close()
            if not wait:
                raise InputError(f"{path.parent} is being written by {other}; wait for it to finish, {hint}") from None
            time.sleep(POLL_SECONDS)
            continue
        if _same_file(handle, path):
            handle.seek(0)
            handle.truncate()
            return handle
        handle.close()  # its holder deleted it as we got the lock: lock the new one


def _same_file(handle, path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def holder(handle) -> str:
    """Who holds the lock, as its file says ("another process" before it has written its name)."""
    handle.seek(0)
    return handle.read().strip() or "another process"


class KeyClaims:
    """Claims on keys (one lock file each under ``folder``, deleted on release), so that processes sharing a cache
    make each key once: a key another process holds is left to it, and waited for once this process has nothing
    else to do, holding no claim meanwhile."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.held: dict[str, object] = {}

    def take(self, key: str) -> bool:
        """Claim ``key``: True once held; False while another process holds it."""
        try:
            self.held[key] = _locked_file(self.folder / f"{key}.lock", False, "")
        except InputError:
            return False
        return True

    def wait_for(self, key: str) -> None:
        """Wait until no other process holds ``key`` (holding nothing meanwhile, so waits never deadlock)."""
        handle = _locked_file(self.folder / f"{key}.lock", True, "")
        self._drop(key, handle)

    def release(self) -> None:
        for key, handle in self.held.items():
            self._drop(key, handle)
        self.held.clear()

    def _drop(self, key: str, handle) -> None:
        with contextlib.suppress(OSError):
            (self.folder / f"{key}.lock").unlink()  # a waiter on the deleted file retries on the new one
        handle.close()

    def __enter__(self) -> KeyClaims:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
