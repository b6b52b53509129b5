"""The store's files checked without zarr: each chunk's crc32c (zarr's own codec) read without decoding, and each
shard file's CRC-32 recorded at write time in its array's attrs, which binds a file to its array and position.

zarr's chunk checksums say a chunk is intact, not that it belongs where it lies: a shard file copied over another
(of another array, or another row range of the same one) decodes as data. The recorded CRC-32 of every file makes
such a file damage, for the readers and for a resuming writer.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from synthprobe.common.files import InputError, os_reason
from synthprobe.formats.activation_store.layout import REBUILD_HINT, run_all

SHARD_CRC_ATTR = "file_crc32"  # array attr: hex CRC-32 of each shard file (row block) in order, null for none
PENDING = "pending"  # a block being written over (a retried row): its file is checked by its chunks' checksums only
EMPTY_CHUNK = (1 << 64) - 1  # a shard index's offset and size of a chunk never written


def rows_per_file(array) -> int:
    return (array.shards or array.chunks)[0]


def shard_file(path: Path, array, index: int) -> Path:
    """The file of row block ``index`` (zarr's default chunk keys: c/<row block>/0 for a 2-D array)."""
    return path / array.path / "c" / "/".join([str(index)] + ["0"] * (array.ndim - 1))


def _crc32c(data: bytes) -> int:
    import google_crc32c

    return google_crc32c.value(data)


def _file_crc(file: Path) -> str | None:
    """A file's CRC-32 (zlib's polynomial). Not crc32c: the files hold crc32c values of their own chunks, and a
    crc32c run over bytes followed by their crc32c forgets them (the register holds a constant after them), so the
    crc32c of every shard file would be that of its index alone."""
    try:
        data = file.read_bytes()
    except FileNotFoundError:  # zarr writes no file for a block that is all fill (failed rows)
        return None
    return f"{zlib.crc32(data):08x}"


def record_file_crcs(path: Path, array, blocks, pending: bool = False) -> None:
    """After a write: the CRC-32 of the files of row ``blocks`` into the array's attrs (before the commit, so a
    committed row's file always has its record). ``pending``: before a write over committed rows, which a kill
    could leave different from their record."""
    array.attrs[SHARD_CRC_ATTR] = _with_file_crcs(path, array, blocks, pending)


def record_all_file_crcs(path: Path, written: list[tuple]) -> None:
    """record_file_crcs for each (array, blocks) of ``written``, their attrs saved together."""
    saves = [
        array.async_array.update_attributes({SHARD_CRC_ATTR: _with_file_crcs(path, array, blocks)})
        for array, blocks in written
    ]
    for result in run_all(saves):
        if isinstance(result, BaseException):
            raise result


def _with_file_crcs(path: Path, array, blocks, pending: bool = False) -> list:
    crcs = list(array.attrs.get(SHARD_CRC_ATTR, []))
    for index in sorted(set(blocks)):
        crcs.extend([None] * (index + 1 - len(crcs)))
        crcs[index] = PENDING if pending else _file_crc(shard_file(path, array, index))
    return crcs


def blocks_of(array, start: int, stop: int) -> range:
    n = rows_per_file(array)
    return range(start // n, -(-stop // n))


def check_file_crcs(path: Path, array, blocks, unbound: int | None = None) -> None:
    """Each file of row ``blocks`` must be the one written there. ``unbound``: a block a killed write may have
    rewritten after its record (the last, partly committed one of an unfinished store); a store written before
    the records were kept has none and is not checked."""
    recorded = array.attrs.get(SHARD_CRC_ATTR)
    if recorded is None:
        return
    n = rows_per_file(array)
    for index in blocks:
        if index == unbound or (index < len(recorded) and recorded[index] == PENDING):
            continue
        file = shard_file(path, array, index)
        expected = recorded[index] if index < len(recorded) else "none recorded"
        actual = _file_crc(file)
        if actual is not None and actual != expected:  # a deleted file reads as fill values, which readers refuse
            raise InputError(
                f"{path}: {array.path} rows {index * n}-{(index + 1) * n - 1} are damaged ({file.relative_to(path)} "
                f"is not the file written there: copied from elsewhere, or edited?); {REBUILD_HINT}"
            )


def verify_committed_files(path: Path, array, ok: np.ndarray, unbound: int | None) -> None:
    """Check, without decoding, that the files holding an array's committed rows (``ok``: which hold values) exist,
    pass their crc32c checksums (each chunk's, and a shard's index) and are the files written there, so that a
    resume never skips rows a truncated, edited, deleted or replaced file has lost. Reads the bytes at disk speed."""
    n = rows_per_file(array)
    for index in range(-(-len(ok) // n)):
        file = shard_file(path, array, index)
        first, last = index * n, min(len(ok), (index + 1) * n) - 1
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            if not ok[first : last + 1].any():
                continue
            raise InputError(
                f"{path}: {array.path} rows {first}-{last} are missing (file deleted?); {REBUILD_HINT}"
            ) from None
        except OSError as exc:
            raise InputError(f"cannot read {file}: {os_reason(exc)}") from None
        chunks = _shard_chunks(data, n // array.chunks[0]) if array.shards else [(0, len(data))]
        if chunks is None or not all(_crc_ok(data[start : start + size]) for start, size in chunks):
            raise InputError(
                f"{path}: {array.path} rows {first}-{last} are damaged (a chunk fails its checksum: truncated or "
                f"edited?); {REBUILD_HINT}"
            )
    check_file_crcs(path, array, range(-(-len(ok) // n)), unbound)


def _shard_chunks(data: bytes, n_chunks: int) -> list[tuple[int, int]] | None:
    """(offset, size) of a shard's written chunks from its index (at the end, with its own crc32c); None if the
    index is damaged or points past the data."""
    index_size = 16 * n_chunks + 4
    if len(data) < index_size or not _crc_ok(data[-index_size:]):
        return None
    entries = np.frombuffer(data[-index_size:-4], dtype="<u8").reshape(n_chunks, 2)
    chunks = [(int(start), int(size)) for start, size in entries if start != EMPTY_CHUNK]
    return chunks if all(start + size <= len(data) - index_size for start, size in chunks) else None


def _crc_ok(block: bytes) -> bool:
    """Whether ``block`` ends with the crc32c of the rest (zarr's crc32c codec)."""
    return len(block) >= 4 and _crc32c(block[:-4]) == int.from_bytes(block[-4:], "little")


def unbound_block(array, n_rows: int, complete: bool) -> int | None:
    """The row block that may differ from its record: the partly committed last one of an unfinished store."""
    n = rows_per_file(array)
    return None if complete or n_rows % n == 0 else n_rows // n
