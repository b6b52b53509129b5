"""File handling shared by every stage: atomic writes and ``-`` for stdin/stdout."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO


class InputError(Exception):
    """Bad input from the user: a file, a line or a value. The message is one line."""


def error_line(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__


def os_reason(exc: OSError) -> str:
    """An OSError's reason for a one-line message; mkdir's "File exists" means a file is where a folder must be."""
    if isinstance(exc, FileExistsError) and exc.filename:
        return f"{exc.filename} is a file, not a folder"
    return exc.strerror or str(exc)


def cache_root() -> Path:
    """The user cache folder; ``SYNTHPROBE_CACHE`` overrides it."""
    env = os.environ.get("SYNTHPROBE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "synthprobe"


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8", mode_bits: int = 0o644
) -> Iterator[IO]:
    """Write to a temp file beside ``path`` and rename it into place on success.

    A crash or an exception leaves either the old file or none, never a
    half-written one that looks complete.
    """
    path = Path(path)
    if path.is_dir():  # else the rename fails naming the temp file
        raise InputError(f"cannot write {path}: it is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {os_reason(exc)}") from exc
    binary = "b" in mode
    with temp_file_for(path, tmp):
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode_bits)
        os.replace(tmp, path)


@contextlib.contextmanager
def temp_file_for(path: str | os.PathLike, tmp: str | os.PathLike) -> Iterator[None]:
    """The block writes ``tmp`` and renames it to ``path``: on any failure ``tmp`` is deleted, and a failed write
    that names no file (a full disk) becomes one line naming ``path``."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            raise InputError(f"cannot write {path}: {os_reason(exc)}") from exc
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode_bits: int = 0o644) -> None:
    with atomic_write(path, "wb", mode_bits=mode_bits) as handle:
        handle.write(data)


def read_json(path: str | os.PathLike):
    """A JSON file's value; an unreadable, non-UTF-8 or invalid file is one line naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text (a binary file?)") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {os_reason(exc)}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


@contextlib.contextmanager
def open_output(path: str | os.PathLike) -> Iterator[IO[str]]:
    """Text output to ``path`` written atomically, or to stdout when ``path`` is ``-``."""
    if str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic_write(path) as handle:
        yield handle


@contextlib.contextmanager
def open_input(path: str | os.PathLike) -> Iterator[IO[str]]:
    """Text input from ``path``, or from stdin when ``path`` is ``-``."""
    if str(path) == "-":
        yield io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8") if hasattr(sys.stdin, "buffer") else sys.stdin
        return
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {os_reason(exc)}") from exc
    with handle:
        yield handle


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


class Sha256Memo:
    """sha256 of files, remembered by (inode, size, mtime, ctime) so that a rerun reads only files that changed.

    Kept in a JSON file (``None``: in memory only). Losing it, or a concurrent process's save winning,
    only means hashing again. Entries of files that are gone are dropped when it is saved.
    """

    def __init__(self, file: Path | None = None):
        self.file = file
        self.entries: dict[str, list] = {}
        self.changed = False
        if file is not None:
            with contextlib.suppress(OSError, ValueError):
                loaded = json.loads(file.read_text(encoding="utf-8"))
                self.entries = loaded if isinstance(loaded, dict) else {}

    @staticmethod
    def stamp(path: str | os.PathLike) -> list[int]:
        """What a change of the file changes. The ctime too: a file rewritten in place with its size kept and its
        mtime set back (os.utime) has a new ctime, which no user can set."""
        stat = os.stat(path)
        return [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]

    def sha256(self, path: str | os.PathLike) -> str:
        stamp = self.stamp(path)
        entry = self.entries.get(str(path))
        if isinstance(entry, list) and entry[:-1] == stamp:  # entries of older versions lack the ctime: hashed again
            return entry[-1]
        digest = sha256_file(path)
        self.remember(path, digest, stamp)
        return digest

    def remember(self, path: str | os.PathLike, digest: str, stamp: list[int] | None = None) -> None:
        """Record the hash of a file just written or read; ``stamp`` taken before reading it, if it was read."""
        self.entries[str(path)] = [*(stamp or self.stamp(path)), digest]
        self.changed = True

    def forget(self, path: str | os.PathLike) -> None:
        self.changed |= self.entries.pop(str(path), None) is not None

    def save(self) -> None:
        if self.file is None or not self.changed:
            return
        self.entries = {path: entry for path, entry in self.entries.items() if os.path.exists(path)}
        with contextlib.suppress(OSError, InputError):  # a read-only place just means hashing again next time
            with atomic_write(self.file) as handle:
                json.dump(self.entries, handle, separators=(",", ":"))
            self.changed = False


TEMP_SUFFIX = ".tmp"  # of every temp file a synthprobe write leaves beside its target until the rename
STALE_TEMP_SECONDS = 24 * 3600


def remove_stale_temp_files(folder: str | os.PathLike, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Remove the temp files (``.NAME.*.tmp``) that writes killed mid-way left in ``folder``, if older than
    ``older_than`` seconds (a younger one may be another process's write in progress); how many were removed."""
    removed = 0
    limit = time.time() - older_than
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < limit:
                        os.unlink(entry.path)
                        removed += 1
    return removed


def begin_outputs(folder: str | os.PathLike, *markers: str) -> Path:
    """Make ``folder`` writable and remove its completion markers (and stale temp files) before a stage rewrites it.

    A stage writes its marker last; removing the old one first means a crash
    never leaves new files beside a marker that says they are complete.
    """
    folder = check_writable_dir(folder)
    remove_stale_temp_files(folder)
    for marker in markers:
        (folder / marker).unlink(missing_ok=True)
    return folder


def check_writable_dir(path: str | os.PathLike, what: str = "folder", hint: str = "") -> Path:
    """Create ``path`` if needed and make sure files can be written in it; ``what`` and ``hint`` shape the error."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise InputError(f"cannot write to {what} {path}: {os_reason(exc)}{hint}") from exc
    return path
