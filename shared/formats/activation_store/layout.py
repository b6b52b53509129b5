"""The activation store's layout, constants and the checks shared by its reader and writer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from synthprobe.common.files import InputError, error_line

STORE_SCHEMA = 2
# sha256 of the image file, or ""; prompt and template from the manifest record ("" for ImageFolder rows).
ROW_FIELDS = ("id", "synset", "group", "target", "path", "status", "sha256", "prompt", "template")
MIN_CHUNK_BYTES = 1 << 20
ROWS_PER_WRITE = 1024
# Fill values: what a missing chunk reads as. NaN for numbers and U+FFFF (a Unicode noncharacter, never in
# text) for strings, so readers can tell a deleted chunk from data (zarr reads a missing chunk silently).
# Not NUL: numpy compares "\x00" equal to "", so zarr would skip writing chunks of empty strings.
FILL_TEXT = "\uffff"
REBUILD_HINT = "rerun cnn-hooks with --rebuild to rebuild it"


def rows_per_chunk(channels: int, itemsize: int, min_bytes: int = MIN_CHUNK_BYTES) -> int:
    """Whole rows per chunk, a power of two, so that a chunk holds at least ``min_bytes``."""
    return 1 << max(0, math.ceil(math.log2(min_bytes / (channels * itemsize))))


def rows_per_shard(chunk_rows: int, rows_per_write: int) -> int:
    """The smallest whole number of chunks that holds ``rows_per_write`` rows."""
    return chunk_rows * max(1, math.ceil(rows_per_write / chunk_rows))


def array_keys(group, hook_points, pools) -> list[str]:
    """Every array of a store: the row table, the logits if any, each hook point's pooled values."""
    keys = [f"rows/{name}" for name in ROW_FIELDS]
    if "logits" in group:
        keys.append("logits/logits")
    return keys + [f"hooks/{hook}/{pool}" for hook in hook_points for pool in pools]


def check_schema(attrs, path: Path) -> None:
    """A store of another schema is refused: its layout is not this version's."""
    if attrs.get("schema") != STORE_SCHEMA:
        raise InputError(
            f"{path / 'zarr.json'}: activation store schema {attrs.get('schema')!r}, but this version reads schema "
            f"{STORE_SCHEMA}; {REBUILD_HINT}"
        )


def committed_count(attrs, path: Path) -> int:
    value = attrs.get("rows_committed", 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputError(f"{path / 'zarr.json'}: rows_committed is {value!r}, not a row count; {REBUILD_HINT}")
    return value


def open_store_group(path: Path, mode: str):
    """The store's zarr group; an unreadable zarr.json is one line naming it."""
    import zarr

    try:
        return zarr.open_group(str(path), mode=mode)
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError and zarr's metadata errors are ValueErrors
        raise InputError(
            f"{path / 'zarr.json'}: not a readable activation store ({error_line(exc)}); {REBUILD_HINT}"
        ) from None


def row_span(rows: np.ndarray) -> str:
    """'rows 0-127' for the first run of consecutive row numbers, and how many more there are."""
    rows = np.asarray(rows)
    run = 1
    while run < len(rows) and rows[run] == rows[run - 1] + 1:
        run += 1
    span = f"row {rows[0]}" if run == 1 else f"rows {rows[0]}-{rows[run - 1]}"
    return span + (f" (and {len(rows) - run} more)" if len(rows) > run else "")


def read_rows(array, path: Path, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of one array; a chunk that fails its checksum or cannot be decoded is one line."""
    try:
        return np.asarray(array[start:stop])
    except (ValueError, RuntimeError, IndexError) as exc:
        reason = "a chunk fails its checksum: truncated or edited?" if "checksum" in str(exc) else error_line(exc)
        raise InputError(
            f"{path}: {array.path} rows {start}-{stop - 1} are damaged ({reason}); {REBUILD_HINT}"
        ) from None


def read_text_column(group, path: Path, name: str, n_rows: int) -> np.ndarray:
    """The first ``n_rows`` values of ``rows/<name>`` as str; rows that read as the fill value are an error."""
    key = f"rows/{name}"
    # zarr returns numpy's variable-width StringDType, which does not cast to "<U"; go through object.
    values = read_rows(group[key], path, 0, n_rows).astype(object).astype(str)
    missing = values == FILL_TEXT
    if missing.any():
        raise InputError(
            f"{path}: {key} {row_span(np.flatnonzero(missing))} are missing (chunk deleted?); {REBUILD_HINT}"
        )
    return values


def run_all(coroutines) -> list:
    """Run zarr coroutines together in one round trip to zarr's event loop, their results in order (one round trip
    each costs ~0.5 ms, and a store has ~200 arrays). Exceptions are returned in place of results."""
    import asyncio

    from zarr.core.sync import sync

    async def gathered():
        return await asyncio.gather(*coroutines, return_exceptions=True)

    return sync(gathered())


def open_arrays(group, path: Path, keys: list[str]) -> dict:
    """The arrays of ``keys`` by key, opened together; a missing or unreadable one is one line naming it."""
    import zarr

    arrays = {}
    for key, found in zip(keys, run_all([group._async_group.getitem(key) for key in keys])):
        if isinstance(found, KeyError):
            raise InputError(f"{path}: {key} is missing; {REBUILD_HINT}")
        if isinstance(found, (ValueError, TypeError)):  # its zarr.json is damaged
            raise InputError(f"{path / key / 'zarr.json'}: not readable ({error_line(found)}); {REBUILD_HINT}")
        if isinstance(found, BaseException):
            raise found
        if not isinstance(found, zarr.AsyncArray):
            raise InputError(f"{path}: {key} is a group, not an array; {REBUILD_HINT}")
        arrays[key] = zarr.Array(found)
    return arrays


def check_lengths(arrays: dict, path: Path, n_rows: int) -> None:
    """Every array (``open_arrays``) must hold at least the committed rows (longer ones hold an interrupted batch).

    Number arrays must have NaN as their fill value, else a deleted chunk would read as data.
    """
    for key, array in arrays.items():
        if array.shape[0] < n_rows:
            raise InputError(
                f"{path}: {key} holds {array.shape[0]} rows but rows_committed is {n_rows}; {REBUILD_HINT}"
            )
        if array.dtype.kind == "f" and not np.isnan(array.fill_value):
            raise InputError(
                f"{path}: {key} has the fill value {array.fill_value}, not NaN, so its deleted chunks would read as "
                f"data, not as missing; {REBUILD_HINT}"
            )


def grouped_aliases(aliases: dict[str, str]) -> dict[str, list[str]]:
    """``attrs["hook_aliases"]`` ({alias: canonical}) as {canonical: [aliases]}."""
    grouped: dict[str, list[str]] = {}
    for alias, canonical in aliases.items():
        grouped.setdefault(canonical, []).append(alias)
    return grouped
