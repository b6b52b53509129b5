"""The content-addressed image cache (docs/formats.md).

An entry is ``ROOT/<key[:2]>/<key>.png`` plus ``<key>.json`` holding the
PNG's size, sha256 and the fields that made the key. The key is the sha256 of
the canonical JSON of everything that changes the pixels. Both files are
written to a temp file and renamed; the JSON is written last, so an entry
counts only once its PNG is complete. Two processes storing the same key write
the same bytes and the last rename wins, so concurrent shards never clobber
each other.

The cache trusts no file: PNGs are written read-only, every hit is checked
against its record's size and sha256 (hashes memoised by inode, size, mtime and
ctime in ``ROOT/sha256-memo.json``, so a rerun reads only files that changed), and an
entry that fails the check is evicted and made again. Output images are
reflinks or copies, never hard links, so editing an output cannot reach the
cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from synthprobe.common.files import (
    TEMP_SUFFIX,
    Sha256Memo,
    atomic_write,
    atomic_write_bytes,
    cache_root,
    check_writable_dir,
    remove_stale_temp_files,
    temp_file_for,
)

log = logging.getLogger("synthprobe")

CACHE_SCHEMA = 2  # 2: generator families (family and call arguments in the key); caches of 1 are not reused
FICLONE = 0x40049409  # Linux ioctl: share the source's blocks (btrfs, XFS); copy-on-write on either side


def default_image_cache() -> Path:
    """``$SYNTHPROBE_CACHE/images``, else the user cache folder's ``synthprobe/images``."""
    return cache_root() / "images"


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(fields: dict) -> str:
    """The sha256 of the canonical JSON of ``fields``: equal fields give equal keys on any machine."""
    return hashlib.sha256(canonical_json({"cache_schema": CACHE_SCHEMA, **fields}).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    key: str
    png: Path
    sha256: str


class ImageCache:
    """``writable=False`` (``--dry-run``) reports damaged entries as missing but does not evict them.

    The hash memo is read here and written only by ``save_memo``, which a dry run never calls.
    """

    def __init__(self, root: str | os.PathLike, writable: bool = True):
        self.root = Path(root)
        self.writable = writable
        self.memo = Sha256Memo(self.root / "sha256-memo.json")

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / key[:2]
        return folder / f"{key}.png", folder / f"{key}.json"

    def lookup(self, key: str) -> CacheEntry | None:
        """The entry under ``key`` if its PNG still matches its record; a damaged entry is evicted."""
        png, meta = self._paths(key)
        try:
            record = json.loads(meta.read_text(encoding="utf-8"))
            sha, size = record["sha256"], record["size"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            intact = png.stat().st_size == size and self.memo.sha256(png) == sha
        except OSError:
            intact = False
        if intact:
            return CacheEntry(key, png, sha)
        if png.exists() or meta.exists():
            log.warning(
                "image cache: %s does not match its record (edited, truncated or deleted); %s",
                png,
                "evicting it and generating it again" if self.writable else "it would be generated again",
            )
            if self.writable:
                self.evict(key)
        return None

    def adopt(self, key: str, sha256: str) -> CacheEntry:
        """The entry another process (a Dask worker) has just stored, with the hash it computed: remembered,
        not read again."""
        png = self._paths(key)[0]
        self.memo.remember(png, sha256)
        return CacheEntry(key, png, sha256)

    def evict(self, key: str) -> None:
        for path in self._paths(key)[::-1]:  # the record first: without it the entry no longer counts
            path.unlink(missing_ok=True)
            self.memo.forget(path)

    def store(self, key: str, png_bytes: bytes, fields: dict) -> CacheEntry:
        """Add one PNG (read-only) under ``key``; ``fields`` (what made the key) go beside it for inspection."""
        png, meta = self._paths(key)
        sha = hashlib.sha256(png_bytes).hexdigest()
        atomic_write_bytes(png, png_bytes, mode_bits=0o444)
        self.memo.remember(png, sha)
        with atomic_write(meta) as handle:
            json.dump(
                {"key": key, "sha256": sha, "size": len(png_bytes), "fields": fields}, handle, indent=1, sort_keys=True
            )
        return CacheEntry(key, png, sha)

    def export(self, entry: CacheEntry, dest: Path) -> None:
        """Put the entry's PNG at ``dest`` unless an intact copy is there already (checked through the memo)."""
        with contextlib.suppress(OSError):
            if self.memo.sha256(dest) == entry.sha256:
                return
        reflink_or_copy(entry.png, dest)
        self.memo.remember(dest, entry.sha256)

    def save_memo(self) -> None:
        self.memo.save()

    def check_writable(self) -> None:
        """Before a run stores images: the cache can be written, and the temp files of killed writes are gone."""
        check_writable_dir(self.root, "the image cache", " (pick another with --cache or SYNTHPROBE_CACHE)")
        for folder in [self.root, *(p for p in self.root.iterdir() if p.is_dir())]:
            remove_stale_temp_files(folder)


def reflink_or_copy(source: Path, dest: Path) -> None:
    """Put a writable copy of ``source`` at ``dest`` atomically: a reflink where the file system shares blocks.

    Never a hard link: an edit of ``dest`` in place would then change ``source`` too.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}{TEMP_SUFFIX}")
    with temp_file_for(dest, tmp):
        with open(source, "rb") as src, open(tmp, "wb") as out:
            try:
                import fcntl

                fcntl.ioctl(out.fileno(), FICLONE, src.fileno())
            except (ImportError, OSError):  # ext4, tmpfs, other file systems (or no fcntl): a plain copy
                shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, dest)
