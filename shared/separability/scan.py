"""separability's reading of a store: which rows and layers, the analysis sample, one chunked pass per layer
(per-synset sufficient statistics, top rows per channel, the sample), the original study's metrics (1-4) and
the sample's reduction for the scale-free measures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from synthprobe.common.files import InputError
from synthprobe.common.globs import select_by_globs
from synthprobe.separability.probe import principal_axes

# ---------------------------------------------------------------- row and layer choice


def select_rows(rows: pd.DataFrame, groups: tuple[str, ...]) -> pd.DataFrame:
    """Rows with status ok whose group is one of ``groups``; index = row number in the store."""
    known = sorted(set(rows["group"]))
    unknown = [g for g in groups if g not in known]
    if unknown:
        raise InputError(f"unknown --group {', '.join(unknown)}; this store has: {', '.join(known) or 'no rows'}")
    chosen = rows[rows["group"].isin(groups) & (rows["status"] == "ok")]
    n_synsets = chosen["synset"].nunique()
    if n_synsets < 2:
        raise InputError(
            f"need at least two synsets to compare, found {n_synsets} among {len(chosen)} ok rows "
            f"of group {','.join(groups)}"
        )
    return chosen


def select_layers(
    hook_points: list[str], patterns: tuple[str, ...], aliases: dict[str, str] | None = None
) -> list[str]:
    """Hook points matching any glob, in the store's depth order; an alias ({alias: canonical}) selects its
    canonical hook point, which the store holds once."""
    aliases = aliases or {}
    shown = ", ".join(hook_points[:8]) + (" ..." if len(hook_points) > 8 else "")
    matched = select_by_globs(hook_points + list(aliases), patterns, more=f"; the store has: {shown or 'none'}")
    chosen = {aliases.get(name, name) for name in matched}
    return [hook for hook in hook_points if hook in chosen]


def unit_sample(
    codes: np.ndarray, units: np.ndarray, cap: int, seed: int, blocks: np.ndarray | None = None
) -> np.ndarray:
    """Positions of about ``cap`` rows made of whole units, each synset in proportion (at least 2 units where it
    has them). With ``blocks`` (per row; templates), a synset's units are taken in turns over its blocks, in one
    random block order shared by every synset: the synsets keep the same templates, so the sample stays crossed."""
    if len(codes) <= cap:
        return np.arange(len(codes))
    rng = np.random.default_rng(seed)
    blocks = np.zeros(len(codes), dtype=np.int64) if blocks is None else blocks
    n_blocks = int(blocks.max()) + 1
    block_turn = rng.permutation(n_blocks) if n_blocks > 1 else np.zeros(1, dtype=np.int64)
    picked = []
    for k in np.unique(codes):
        members = np.flatnonzero(codes == k)
        unit_ids, first = np.unique(units[members], return_index=True)
        shuffle = rng.permutation(len(unit_ids))
        unit_ids, unit_blocks = unit_ids[shuffle], blocks[members][first][shuffle]
        # the i-th unit of a block (in the shuffled order) comes in round i, blocks in their shared turn
        rounds = np.zeros(len(unit_ids), dtype=np.int64)
        for b in np.unique(unit_blocks):
            rounds[unit_blocks == b] = np.arange(np.count_nonzero(unit_blocks == b))
        unit_ids = unit_ids[np.argsort(rounds * n_blocks + block_turn[unit_blocks], kind="stable")]
        sizes = np.array([np.count_nonzero(units[members] == u) for u in unit_ids])
        wanted = cap * len(members) / len(codes)
        take = max(min(2, len(unit_ids)), int(np.searchsorted(np.cumsum(sizes), wanted, side="right")))
        picked.append(members[np.isin(units[members], unit_ids[:take])])
    return np.sort(np.concatenate(picked))


# ---------------------------------------------------------------- one pass over a layer


@dataclass
class LayerScan:
    counts: np.ndarray  # (K,) images per synset
    sums: np.ndarray  # (K, C)
    sq_dev: np.ndarray  # (K, C) sum of squared deviations from ``shift``
    shift: np.ndarray  # (C,) a per-channel offset that keeps the sums of squares well conditioned
    top_values: np.ndarray  # (m, C) the m largest values of each channel, descending
    top_positions: np.ndarray  # (m, C) their positions among the selected rows
    sample: np.ndarray  # (n_sample, C) the analysis sample's rows

    @property
    def centroids(self) -> np.ndarray:
        return self.sums / self.counts[:, None]

    def channel_std(self) -> np.ndarray:
        """(K, C) per-synset standard deviation (ddof 1); NaN for a synset with one image."""
        n = self.counts[:, None]
        mean_dev = self.sums / n - self.shift
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (self.sq_dev - n * mean_dev**2) / (n - 1)
        var = np.where(n > 1, np.maximum(var, 0.0), np.nan)
        return np.sqrt(var)


def scan_layer(
    store,
    hook: str,
    pool: str,
    store_rows: np.ndarray,
    codes: np.ndarray,
    n_synsets: int,
    sample_positions: np.ndarray,
    top_m: int,
    row_ids: np.ndarray,
) -> LayerScan:
    """Read one layer chunk by chunk and keep only per-synset statistics, top rows and the sample."""
    channels = store.channels(hook, pool)
    counts = np.bincount(codes, minlength=n_synsets).astype(np.float64)
    sums = np.zeros((n_synsets, channels))
    sq_dev = np.zeros((n_synsets, channels))
    shift = None
    top_values = np.zeros((0, channels))
    top_positions = np.zeros((0, channels), dtype=np.int64)
    sample = np.empty((len(sample_positions), channels))
    in_sample = np.full(len(store_rows), -1)
    in_sample[sample_positions] = np.arange(len(sample_positions))
    for index, block in store.iter_layer(hook, pool, rows=store_rows):
        positions = np.searchsorted(store_rows, index)
        bad = ~np.isfinite(block)
        if bad.any():
            row = positions[np.flatnonzero(bad.any(axis=1))[0]]
            raise InputError(f"layer {hook} has a NaN or infinite value in row {row_ids[row]}")
        if shift is None:
            shift = block.mean(axis=0)
        onehot = np.zeros((len(positions), n_synsets))
        onehot[np.arange(len(positions)), codes[positions]] = 1.0
        sums += onehot.T @ block
        sq_dev += onehot.T @ (block - shift) ** 2
        candidates = np.vstack([top_values, block])
        candidate_positions = np.vstack([top_positions, np.broadcast_to(positions[:, None], block.shape)])
        kept = min(top_m, len(candidates))
        keep = np.argpartition(-candidates, kept - 1, axis=0)[:kept]
        top_values = np.take_along_axis(candidates, keep, axis=0)
        top_positions = np.take_along_axis(candidate_positions, keep, axis=0)
        wanted = in_sample[positions] >= 0
        sample[in_sample[positions[wanted]]] = block[wanted]
    order = np.lexsort((top_positions, -top_values), axis=0)
    return LayerScan(
        counts,
        sums,
        sq_dev,
        shift,
        np.take_along_axis(top_values, order, axis=0),
        np.take_along_axis(top_positions, order, axis=0),
        sample,
    )


# ---------------------------------------------------------------- the original study's metrics (1-4)


def max_activation(centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Metric 1: each synset's largest centroid value, and the channel holding it."""
    channel = centroids.argmax(axis=1)
    return centroids[np.arange(len(centroids)), channel], channel


def avg_centroid_distance(centroids: np.ndarray) -> float:
    """Metric 2: mean Euclidean distance over all pairs of synset centroids."""
    k = len(centroids)
    squared = (centroids**2).sum(axis=1)
    gram = centroids @ centroids.T
    dist = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * gram, 0.0))
    return float(dist[np.triu_indices(k, 1)].mean())


def top_channels(centroids: np.ndarray, n: int) -> np.ndarray:
    """Metric 4: channels ordered by their highest centroid value over synsets (ties by channel index)."""
    best = centroids.max(axis=0)
    return np.lexsort((np.arange(len(best)), -best))[:n]


# ---------------------------------------------------------------- scale-free measures (6-7)


def reduce_sample(sample: np.ndarray, dims: int) -> tuple[np.ndarray, float]:
    """The sample centred and, if wider than ``dims``, projected on its top principal axes.

    Returns the (n, d) scores and the fraction of the sample's variance they
    keep. Fisher ratio and cosine silhouette of centred rows do not change
    under a rotation, so a layer of at most ``dims`` channels, or a sample of
    at most ``dims`` rows, loses nothing.
    """
    centred = sample - sample.mean(axis=0)
    if centred.shape[1] <= dims:
        return centred, 1.0
    values, scores, total = principal_axes(centred, dims)
    return scores, (float(values.sum() / total) if total > 0 else 1.0)
