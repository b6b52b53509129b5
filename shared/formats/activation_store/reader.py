"""Reading an activation store: structure checked on open, values checked on read."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from synthprobe.common.files import InputError
from synthprobe.formats.activation_store.checksums import blocks_of, check_file_crcs, unbound_block
from synthprobe.formats.activation_store.layout import (
    REBUILD_HINT,
    ROW_FIELDS,
    array_keys,
    check_lengths,
    check_schema,
    committed_count,
    grouped_aliases,
    open_arrays,
    open_store_group,
    read_rows,
    read_text_column,
    row_span,
)

log = logging.getLogger("synthprobe")


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

    def __reduce__(self):
        """Pickled as its path: a worker process opens (and checks) the store again."""
        return type(self), (self.path, self.allow_incomplete)

    def __post_init__(self):
        self.path = Path(self.path)
        if not (self.path / "zarr.json").is_file():
            raise InputError(f"{self.path} is not an activation store (no zarr.json); make one with cnn-hooks")
        self.group = open_store_group(self.path, "r")
        self.attrs = dict(self.group.attrs)
        check_schema(self.attrs, self.path)
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
        keys = array_keys(self.group, self.hook_points, self.pools)
        check_lengths(open_arrays(self.group, self.path, keys), self.path, self.n_rows)
        self._ok_rows = None
        self._bound_blocks: set[tuple[str, int]] = set()

    def _check_bound(self, array, start: int, stop: int) -> None:
        """The files of rows ``start:stop`` are the ones written there (checksums.py), each checked once."""
        blocks = [b for b in blocks_of(array, start, stop) if (array.path, b) not in self._bound_blocks]
        check_file_crcs(self.path, array, blocks, unbound_block(array, self.n_rows, self.warning is None))
        self._bound_blocks.update((array.path, b) for b in blocks)

    def _text_column(self, name: str) -> np.ndarray:
        self._check_bound(self.group[f"rows/{name}"], 0, self.n_rows)
        return read_text_column(self.group, self.path, name, self.n_rows)

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
        return pd.DataFrame({name: self._text_column(name) for name in ROW_FIELDS})

    def ok_rows(self) -> np.ndarray:
        """Which committed rows hold values; ``--skip-bad`` failed rows are NaN on purpose."""
        if self._ok_rows is None:
            self._ok_rows = self._text_column("status") == "ok"
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
        array = self.group["logits/logits"]
        self._check_bound(array, 0, self.n_rows)
        values = read_rows(array, self.path, 0, self.n_rows).astype(np.float32)
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
            self._check_bound(array, start, stop)
            block = read_rows(array, self.path, start, stop).astype(np.float64)
            self._check_values(array.path, start, block)
            yield index, block[index - start]

    def read_layer(self, hook: str, pool: str = "mean", rows: np.ndarray | None = None) -> np.ndarray:
        """One layer's values for ``rows`` (all committed rows by default), as float64."""
        blocks = [values for _, values in self.iter_layer(hook, pool, rows)]
        if not blocks:
            return np.zeros((0, self.channels(hook, pool)))
        return np.concatenate(blocks)
