"""The writer: a store's rows of each batch checked and marked (StoreFeed), gathered into whole shards and appended
to the store on a thread (WriteBuffer)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pandas as pd

from synthprobe.cnn_hooks.hook_points import HookPoint, column_slices
from synthprobe.formats.activation_store import StoreWriter


class WriteBuffer:
    """Batches gathered until ``rows_per_write`` rows, then appended and committed in one go (whole shards).

    The append runs on a writer thread while the next batches compute (compression and file writes
    overlap the forward on a GPU); at most one write is in flight, and commits keep their order.
    """

    def __init__(self, writer: StoreWriter, points: list[HookPoint], pools: tuple[str, ...], retry: dict[str, int]):
        self.writer = writer
        self.pools = pools
        self.retry = retry  # id -> store row of a failed row being retried
        self.columns = column_slices(points)
        self.batches: list[tuple[pd.DataFrame, dict[str, np.ndarray], np.ndarray | None]] = []
        self.rows = 0
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self.pending: Future | None = None

    def __enter__(self) -> WriteBuffer:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                self.flush()
            self.wait()  # an interrupted run still commits what it handed to the writer
        finally:
            self.thread.shutdown()

    def add(self, rows: pd.DataFrame, pooled: dict[str, np.ndarray], logits: np.ndarray | None) -> None:
        self.batches.append((rows, pooled, logits))
        self.rows += len(rows)
        if self.rows >= self.writer.rows_per_write:
            self.flush()

    def flush(self) -> None:
        if not self.batches:
            return
        rows = pd.concat([b[0] for b in self.batches], ignore_index=True)
        blocks = {pool: np.concatenate([b[1][pool] for b in self.batches]) for pool in self.pools}
        logits = None if self.batches[0][2] is None else np.concatenate([b[2] for b in self.batches])
        hooks = {
            name: {pool: blocks[pool][:, columns] for pool in self.pools} for name, columns in self.columns.items()
        }
        self.batches, self.rows = [], 0
        self.wait()
        self.pending = self.thread.submit(self.write, rows, hooks, logits)

    def write(self, rows: pd.DataFrame, hooks: dict[str, dict[str, np.ndarray]], logits: np.ndarray | None) -> None:
        """Retried rows over their failed ones, the rest appended."""
        over = rows["id"].isin(self.retry).to_numpy()
        if over.any():
            self.writer.overwrite(
                rows["id"][over].map(self.retry).to_numpy(),
                rows[over],
                {h: {p: v[over] for p, v in pooled.items()} for h, pooled in hooks.items()},
                None if logits is None else logits[over],
            )
        if not over.all():
            new = ~over
            self.writer.append(
                rows[new].reset_index(drop=True),
                {h: {p: v[new] for p, v in pooled.items()} for h, pooled in hooks.items()},
                None if logits is None else logits[new],
            )

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()  # re-raises the writer's error here


class StoreFeed:
    """One store's share of a run: the rows of the folder it lacks (``need``, a bool per folder row; ``wanted``
    marks them among the rows the run decodes), marked and handed to its WriteBuffer batch by batch."""

    def __init__(
        self, writer: StoreWriter, points: list[HookPoint], folder_rows: pd.DataFrame, need: np.ndarray, retry: dict
    ):
        self.writer = writer
        self.points = points
        self.need = need
        self.retry = retry  # id -> store row of a failed row being retried
        self.todo = folder_rows[need].reset_index(drop=True)
        self.wanted = need
        self.buffer: WriteBuffer | None = None  # while writing
        self.start = 0
        self.failed = 0

    def writing(self, pools: tuple[str, ...]) -> WriteBuffer:
        self.buffer = WriteBuffer(self.writer, self.points, pools, self.retry)
        return self.buffer

    def add(self, digests: list[str], errors: list[str], pooled: dict[str, np.ndarray], logits) -> None:
        """This store's rows of a batch (failed where ``errors`` says so) with their pooled values and logits."""
        rows = self.todo.iloc[self.start : self.start + len(digests)].copy()
        rows["sha256"] = digests
        self.start += len(digests)
        bad = [i for i, error in enumerate(errors) if error]
        rows["status"] = "ok"
        if bad:
            rows.iloc[bad, rows.columns.get_loc("status")] = "failed"
            for values in (*pooled.values(), *(() if logits is None else (logits,))):
                values[bad] = np.nan
        self.failed += len(bad)
        self.buffer.add(rows, pooled, logits)
