"""The activation store (docs/formats.md): a Zarr v3 group written by cnn-hooks.

Layout::

    STORE.zarr/                 attrs: provenance, ordered hook points, committed row count
      rows/{id,synset,group,target,path,status,sha256,prompt,template}   (image,) strings: the row table
      logits/logits             (image, class) float32, when the model is a classifier
      hooks/<hook point>/mean   (image, channel), and /max when asked for

Rows are appended in batches; ``attrs["rows_committed"]`` is raised only after
every array of a batch is written, so it is the resume point: arrays longer
than it hold an interrupted batch and are cut back on reopen. Zarr's local
store writes every file through a temp file and a rename, so a kill -9 never
leaves a half-written shard or attribute file behind.

Chunks (the unit of reading) hold whole rows, at least 1 MB, a power of two
rows long. Shards (the unit of writing, one file each) hold ``rows_per_write``
rows where a chunk is shorter than that, so a writer that appends that many
rows at a time writes whole shards and never rewrites one; narrower layers get
one chunk per shard, rewritten a few times while it fills.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .files import InputError, error_line, os_reason

log = logging.getLogger("synthprobe")

STORE_SCHEMA = 1
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


def _normalized(value):
    """Attributes as they read back from zarr.json (tuples become lists, and so on)."""
    return json.loads(json.dumps(value))


def _brief(value) -> str:
    """A value for a one-line message: long lists by their length and ends."""
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f"{len(value)} names, {value[0]!r} ... {value[-1]!r}"
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def _append_all(pairs: list) -> None:
    """Append to many arrays at once: one event-loop round trip instead of one per array (~40% faster)."""
    import asyncio

    from zarr.core.sync import sync

    async def append_all():
        await asyncio.gather(*(array.async_array.append(data, axis=0) for array, data in pairs))

    sync(append_all())


def _compressors() -> list:
    from zarr.codecs import Crc32cCodec, ZstdCodec

    # Pooled floats compress ~15% at any zstd level; level 3 is 3x slower. The crc32c of every chunk
    # makes a truncated or edited shard fail its read instead of decoding into other numbers.
    return [ZstdCodec(level=1), Crc32cCodec()]


def array_keys(group, hook_points, pools, row_fields=ROW_FIELDS) -> list[str]:
    """Every array of a store: the row table, the logits if any, each hook point's pooled values."""
    keys = [f"rows/{name}" for name in row_fields]
    if "logits" in group:
        keys.append("logits/logits")
    return keys + [f"hooks/{hook}/{pool}" for hook in hook_points for pool in pools]


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
    if name in ("id", "status"):  # never empty, so an older store's "" fill is caught too
        missing |= values == ""
    if missing.any():
        raise InputError(
            f"{path}: {key} {row_span(np.flatnonzero(missing))} are missing (chunk deleted?); {REBUILD_HINT}"
        )
    return values


def check_lengths(group, path: Path, n_rows: int, keys: list[str]) -> None:
    """Every array must hold at least the committed rows (longer ones hold an interrupted batch).

    Number arrays must have NaN as their fill value: in a store from before it, a deleted chunk reads as zeros.
    """
    for key in keys:
        try:
            array = group[key]
            length = array.shape[0]
        except KeyError:
            raise InputError(f"{path}: {key} is missing; {REBUILD_HINT}") from None
        except (ValueError, TypeError) as exc:  # its zarr.json is damaged
            raise InputError(f"{path / key / 'zarr.json'}: not readable ({error_line(exc)}); {REBUILD_HINT}") from None
        if length < n_rows:
            raise InputError(f"{path}: {key} holds {length} rows but rows_committed is {n_rows}; {REBUILD_HINT}")
        if array.dtype.kind == "f" and not np.isnan(array.fill_value):
            raise InputError(
                f"{path}: {key} comes from an older cnn-hooks, whose deleted chunks read as "
                f"{array.fill_value}, not as missing; {REBUILD_HINT}"
            )


class StoreWriter:
    """Create or reopen a store and append batches of rows to it."""

    def __init__(
        self,
        path: str | Path,
        attrs: dict,
        hook_channels: dict[str, int],
        pools: tuple[str, ...],
        dtype: str = "float32",
        n_classes: int | None = None,
        min_chunk_bytes: int = MIN_CHUNK_BYTES,
        rows_per_write: int = ROWS_PER_WRITE,
        rebuild: bool = False,
    ):
        import zarr

        self.path = Path(path)
        self.pools = tuple(pools)
        self.hook_channels = dict(hook_channels)
        self.rows_per_write = rows_per_write
        identity = {**attrs, "hook_points": list(hook_channels), "pooling": list(self.pools), "dtype": dtype}
        if rebuild and (self.path / "zarr.json").is_file():
            log.info("--rebuild: deleting %s to start it again", self.path)
            shutil.rmtree(self.path)
        if (self.path / "zarr.json").is_file():
            self.group = open_store_group(self.path, "r+")
            self._check_compatible(identity)
            n_rows = committed_count(self.group.attrs, self.path)
            # An array shorter than the committed rows lost data; growing it back would make fill-value rows.
            check_lengths(
                self.group, self.path, n_rows, array_keys(self.group, self.hook_channels, self.pools, self.row_fields)
            )
            self._truncate(n_rows)
            # Provenance that may change between runs (source manifest, versions) follows the latest run.
            self.group.attrs.update({**_normalized(identity), "complete": False})
            return
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise InputError(f"{self.path} exists and is not an activation store; choose a new path for --out")
        self.group = zarr.open_group(str(self.path), mode="w")
        self.group.attrs.update({"schema": STORE_SCHEMA, **identity, "rows_committed": 0, "complete": False})
        rows = self.group.require_group("rows")
        for name in ROW_FIELDS:
            rows.create_array(
                name,
                shape=(0,),
                dtype=str,
                chunks=(8192,),
                fill_value=FILL_TEXT,
                compressors=_compressors(),
                dimension_names=("image",),
            )
        if n_classes:
            self._create(
                self.group.require_group("logits"),
                "logits",
                n_classes,
                "float32",
                ("image", "class"),
                min_chunk_bytes,
                rows_per_write,
            )
        for hook, channels in self.hook_channels.items():
            group = self.group.require_group(f"hooks/{hook}")
            for pool in self.pools:
                self._create(group, pool, channels, dtype, ("image", "channel"), min_chunk_bytes, rows_per_write)

    @staticmethod
    def _create(
        group, name: str, width: int, dtype: str, dims: tuple[str, str], min_chunk_bytes: int, rows_per_write: int
    ) -> None:
        chunk = rows_per_chunk(width, np.dtype(dtype).itemsize, min_chunk_bytes)
        group.create_array(
            name,
            shape=(0, width),
            dtype=dtype,
            chunks=(chunk, width),
            shards=(rows_per_shard(chunk, rows_per_write), width),
            fill_value=np.nan,
            compressors=_compressors(),
            dimension_names=dims,
        )

    # Keys whose difference makes appended rows incomparable with the stored ones.
    IDENTITY_KEYS = ("model", "weights", "preprocessing", "precision", "hook_points", "pooling", "dtype")

    def _check_compatible(self, identity: dict) -> None:
        stored = dict(self.group.attrs)
        for key in self.IDENTITY_KEYS:
            if key in identity and stored.get(key) != _normalized(identity[key]):
                raise InputError(
                    f"{self.path} was made with another {key} ({_brief(stored.get(key))}, now "
                    f"{_brief(identity[key])}); write to a new store or delete this one"
                )

    @property
    def row_fields(self) -> list[str]:
        """ROW_FIELDS this store has: a store made before a field existed keeps its layout when resumed."""
        return [name for name in ROW_FIELDS if f"rows/{name}" in self.group]

    def _arrays(self) -> Iterator:
        for key in array_keys(self.group, self.hook_channels, self.pools, self.row_fields):
            yield self.group[key]

    def _truncate(self, n_rows: int) -> None:
        for array in self._arrays():
            if array.shape[0] != n_rows:
                array.resize((n_rows, *array.shape[1:]))

    @property
    def rows_committed(self) -> int:
        return int(self.group.attrs["rows_committed"])

    def committed_rows(self, fields: tuple[str, ...] = ("id", "sha256")) -> pd.DataFrame:
        n = self.rows_committed
        return pd.DataFrame(
            {name: list(read_text_column(self.group, self.path, name, n)) if n else [] for name in fields}
        )

    def append(
        self, rows: pd.DataFrame, hooks: dict[str, dict[str, np.ndarray]], logits: np.ndarray | None = None
    ) -> None:
        """Append one batch: row table, logits and every hook's pooled values; then commit."""
        try:
            _append_all(self._row_values(rows, hooks, logits))
        except OSError as exc:  # a full disk: zarr's error names a temp file or none
            raise InputError(f"cannot write {self.path}: {os_reason(exc)}") from exc
        self.group.attrs["rows_committed"] = self.rows_committed + len(rows)

    def overwrite(
        self,
        index: np.ndarray,
        rows: pd.DataFrame,
        hooks: dict[str, dict[str, np.ndarray]],
        logits: np.ndarray | None = None,
    ) -> None:
        """Write rows over committed ones at ``index`` (failed rows retried); the status goes last, so a kill
        leaves those rows failed."""
        status = self.group["rows/status"].path
        for array, values in sorted(self._row_values(rows, hooks, logits), key=lambda pair: pair[0].path == status):
            array.oindex[np.asarray(index)] = values

    def _row_values(
        self, rows: pd.DataFrame, hooks: dict[str, dict[str, np.ndarray]], logits: np.ndarray | None
    ) -> list:
        """(array, values) for every array of the store, for one batch of rows."""
        n = len(rows)
        pairs = []
        for name in self.row_fields:
            column = rows[name].astype(str) if name in rows else pd.Series([""] * n)
            pairs.append((self.group[f"rows/{name}"], column.to_numpy(dtype=object)))
        if "logits" in self.group:
            pairs.append((self.group["logits/logits"], np.asarray(logits, dtype=np.float32).reshape(n, -1)))
        for hook in self.hook_channels:
            for pool in self.pools:
                array = self.group[f"hooks/{hook}/{pool}"]
                pairs.append((array, np.asarray(hooks[hook][pool], dtype=array.dtype)))
        return pairs

    def finish(self, **attrs) -> None:
        self.group.attrs.update({**attrs, "complete": True})


def grouped_aliases(aliases: dict[str, str]) -> dict[str, list[str]]:
    """``attrs["hook_aliases"]`` ({alias: canonical}) as {canonical: [aliases]}."""
    grouped: dict[str, list[str]] = {}
    for alias, canonical in aliases.items():
        grouped.setdefault(canonical, []).append(alias)
    return grouped


@dataclass
class ActivationStore:
    """Read access to a store; layers are read one at a time, in chunks.

    Opening checks the structure (complete, every array holds the committed rows); reading checks the
    values: a committed row that reads as the fill value (a deleted chunk) or fails its checksum stops
    the reader with one line naming the array and rows. ``allow_incomplete`` reads an unfinished store's
    committed rows with a warning (also in ``provenance()``, so it reaches each summary.json).
    """

    path: Path
    allow_incomplete: bool = False

    def __post_init__(self):
        self.path = Path(self.path)
        if not (self.path / "zarr.json").is_file():
            raise InputError(f"{self.path} is not an activation store (no zarr.json); make one with cnn-hooks")
        self.group = open_store_group(self.path, "r")
        self.attrs = dict(self.group.attrs)
        self.n_rows = committed_count(self.attrs, self.path)
        if "rows" not in self.group:
            raise InputError(f"{self.path} has no row table (rows/); {REBUILD_HINT}")
        self.warning = None
        if self.attrs.get("complete") is not True:
            if not self.allow_incomplete:
                raise InputError(
                    f"{self.path} is not complete (cnn-hooks stopped after {self.n_rows} rows); rerun "
                    "cnn-hooks to finish it, or pass --allow-incomplete to analyse the committed rows"
                )
            self.warning = f"the store is not complete: only its {self.n_rows} committed rows were analysed"
            log.warning("%s: %s", self.path, self.warning)
        row_fields = [name for name in ROW_FIELDS if name in ("id", "status") or f"rows/{name}" in self.group]
        check_lengths(
            self.group, self.path, self.n_rows, array_keys(self.group, self.hook_points, self.pools, row_fields)
        )
        self._ok_rows = None

    def provenance(self) -> dict:
        """The attrs that say how the store was made, without the long per-class and per-layer lists."""
        attrs = {k: v for k, v in self.attrs.items() if k not in ("classes", "class_names", "hook_points")}
        return {**attrs, "warning": self.warning} if self.warning else attrs

    @property
    def hook_points(self) -> list[str]:
        return list(self.attrs.get("hook_points", []))

    def aliases(self) -> dict[str, list[str]]:
        """{canonical: [aliases]}: hook points cnn-hooks found equal to a stored one, in forward order."""
        return grouped_aliases(self.attrs.get("hook_aliases", {}))

    @property
    def pools(self) -> list[str]:
        return list(self.attrs.get("pooling", ["mean"]))

    def rows(self) -> pd.DataFrame:
        table = {
            name: read_text_column(self.group, self.path, name, self.n_rows)
            for name in ROW_FIELDS
            if f"rows/{name}" in self.group
        }
        return pd.DataFrame(table)

    def ok_rows(self) -> np.ndarray:
        """Which committed rows hold values; ``--skip-bad`` failed rows are NaN on purpose."""
        if self._ok_rows is None:
            self._ok_rows = read_text_column(self.group, self.path, "status", self.n_rows) == "ok"
        return self._ok_rows

    def _check_values(self, key: str, start: int, block: np.ndarray) -> None:
        """NaN in an ok row means the chunk was never written or was deleted."""
        bad = self.ok_rows()[start : start + len(block)] & np.isnan(block).any(axis=1)
        if bad.any():
            raise InputError(
                f"{self.path}: {key} {row_span(start + np.flatnonzero(bad))} are missing "
                f"(chunk deleted?); {REBUILD_HINT}"
            )

    def has_logits(self) -> bool:
        return "logits" in self.group

    def logits(self) -> np.ndarray:
        if not self.has_logits():
            raise InputError(f"{self.path} has no logits; rerun cnn-hooks with a classifier model")
        values = read_rows(self.group["logits/logits"], self.path, 0, self.n_rows).astype(np.float32)
        self._check_values("logits/logits", 0, values)
        return values

    def layer_array(self, hook: str, pool: str = "mean"):
        key = f"hooks/{hook}/{pool}"
        if key not in self.group:
            raise InputError(f"{self.path} has no hook point {hook!r} with {pool} pooling")
        return self.group[key]

    def channels(self, hook: str, pool: str = "mean") -> int:
        return int(self.layer_array(hook, pool).shape[1])

    def iter_layer(
        self, hook: str, pool: str = "mean", rows: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (row indices, float64 values) one chunk of rows at a time, restricted to ``rows`` if given."""
        array = self.layer_array(hook, pool)
        step = array.chunks[0]
        wanted = None if rows is None else np.sort(np.asarray(rows))
        for start in range(0, self.n_rows, step):
            stop = min(start + step, self.n_rows)
            index = np.arange(start, stop) if wanted is None else wanted[(wanted >= start) & (wanted < stop)]
            if len(index) == 0:
                continue
            block = read_rows(array, self.path, start, stop).astype(np.float64)
            self._check_values(array.path, start, block)
            yield index, block[index - start]

    def read_layer(self, hook: str, pool: str = "mean", rows: np.ndarray | None = None) -> np.ndarray:
        """One layer's values for ``rows`` (all committed rows by default), as float64."""
        blocks = [values for _, values in self.iter_layer(hook, pool, rows)]
        if not blocks:
            return np.zeros((0, self.channels(hook, pool)))
        return np.concatenate(blocks)
