"""The content-addressed image cache (docs/formats.md).

An entry is ``ROOT/<key[:2]>/<key>.png`` plus ``<key>.json`` holding the
PNG's sha256 and the fields that made the key. The key is the sha256 of the
canonical JSON of everything that changes the pixels. Both files are written
to a temp file and renamed; the JSON is written last, so an entry counts only
once its PNG is complete. Two processes storing the same key write the same
bytes and the last rename wins, so concurrent shards never clobber each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .files import atomic_write, atomic_write_bytes, cache_root, check_writable_dir

CACHE_SCHEMA = 1


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
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / key[:2]
        return folder / f"{key}.png", folder / f"{key}.json"

    def lookup(self, key: str) -> CacheEntry | None:
        png, meta = self._paths(key)
        try:
            sha = json.loads(meta.read_text(encoding="utf-8"))["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return CacheEntry(key, png, sha) if png.is_file() else None

    def store(self, key: str, png_bytes: bytes, fields: dict) -> CacheEntry:
        """Add one PNG under ``key``; ``fields`` (what made the key) go beside it for inspection."""
        png, meta = self._paths(key)
        sha = hashlib.sha256(png_bytes).hexdigest()
        atomic_write_bytes(png, png_bytes)
        with atomic_write(meta) as handle:
            json.dump({"key": key, "sha256": sha, "fields": fields}, handle, indent=1, sort_keys=True)
        return CacheEntry(key, png, sha)

    def check_writable(self) -> None:
        check_writable_dir(self.root, "the image cache", " (pick another with --cache or SYNTHPROBE_CACHE)")


def link_or_copy(source: Path, dest: Path) -> None:
    """Put ``source`` at ``dest`` as a hard link (a copy across file systems), replacing ``dest`` atomically."""
    with contextlib.suppress(OSError):
        if os.path.samefile(source, dest):
            return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.link")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.link(source, tmp)
    except OSError:
        atomic_write_bytes(tmp, source.read_bytes())
    os.replace(tmp, dest)
