"""Which layers tell concepts apart, and which channels prefer which concept.

Two kinds of numbers, computed one layer at a time:

* The original study's metrics (1-4), exact over every selected row, from
  per-synset sufficient statistics gathered in one chunked pass over the layer
  (count, sum and sum of squares per channel, and a running top-m of rows per
  channel).
* Scale-free measures (Fisher ratio, cosine silhouette, linear probe), their
  label-permutation p-values and bootstrap intervals, and per-channel
  selectivity, computed on the layer's *analysis sample*: every selected row
  when there are at most ``sample`` of them, else a synset-stratified random
  subset. The measures use the sample centred on its mean and, for layers
  wider than ``dims`` channels, projected on its top ``dims`` principal axes.
  Memory and cost of this part are bounded by ``sample`` and ``dims``, not by
  the number of images.

Every resampling is vectorised: the permutation and bootstrap statistics come
from per-synset sums (one matrix product per batch of resamples), the probe is
a ridge classifier whose out-of-fold predictions are linear in the labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import __version__
from .cli import select_by_globs
from .files import InputError, atomic_write, begin_outputs
from .plots import pyplot, save_png
from .stats import benjamini_hochberg

# Resamples processed together; bounds the temporary arrays (batch x rows x synsets).
RESAMPLE_BATCH = 50
RIDGE_ALPHA = 1.0  # RidgeClassifier's default, on standardised features


@dataclass(frozen=True)
class Params:
    groups: tuple[str, ...] = ("concept",)
    layers: tuple[str, ...] = ("*",)
    pool: str = "mean"
    top_layers: int = 6
    top_synsets: int = 5
    top_neurons: int = 10
    top_images: int = 5
    permutations: int = 1000
    bootstrap: int = 1000
    sample: int = 1000
    dims: int = 64
    folds: int = 5
    alpha: float = 0.05
    seed: int = 0


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
        raise InputError(f"need at least two synsets to compare, found {n_synsets} among {len(chosen)} ok rows "
                         f"of group {','.join(groups)}")
    return chosen


def select_layers(hook_points: list[str], patterns: tuple[str, ...]) -> list[str]:
    """Hook points matching any glob, in the store's depth order."""
    shown = ", ".join(hook_points[:8]) + (" ..." if len(hook_points) > 8 else "")
    return select_by_globs(hook_points, patterns, more=f"; the store has: {shown or 'none'}")


def stratified_sample(codes: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Positions of at most about ``cap`` rows, each synset in proportion (at least 2 when it has them)."""
    if len(codes) <= cap:
        return np.arange(len(codes))
    rng = np.random.default_rng(seed)
    picked = []
    for k in np.unique(codes):
        members = np.flatnonzero(codes == k)
        take = min(len(members), max(2, round(cap * len(members) / len(codes))))
        picked.append(rng.choice(members, take, replace=False))
    return np.sort(np.concatenate(picked))


# ---------------------------------------------------------------- one pass over a layer

@dataclass
class LayerScan:
    counts: np.ndarray          # (K,) images per synset
    sums: np.ndarray            # (K, C)
    sq_dev: np.ndarray          # (K, C) sum of squared deviations from ``shift``
    shift: np.ndarray           # (C,) a per-channel offset that keeps the sums of squares well conditioned
    top_values: np.ndarray      # (m, C) the m largest values of each channel, descending
    top_positions: np.ndarray   # (m, C) their positions among the selected rows
    sample: np.ndarray          # (n_sample, C) the analysis sample's rows

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


def scan_layer(store, hook: str, pool: str, store_rows: np.ndarray, codes: np.ndarray, n_synsets: int,
               sample_positions: np.ndarray, top_m: int, row_ids: np.ndarray) -> LayerScan:
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
    return LayerScan(counts, sums, sq_dev, shift, np.take_along_axis(top_values, order, axis=0),
                     np.take_along_axis(top_positions, order, axis=0), sample)


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
    keep. A layer of at most ``dims`` channels, or a sample of at most ``dims``
    rows (its rank is below n), loses nothing: Fisher ratio, cosine silhouette
    and probe are invariant to the rotation, so they equal those on the
    centred full vectors. The axes come from the smaller of the two Gram
    matrices (rows x rows or channels x channels), which is exact and
    deterministic.
    """
    from scipy.linalg import eigh

    centred = sample - sample.mean(axis=0)
    n, channels = centred.shape
    if channels <= dims:
        return centred, 1.0
    by_rows = n <= channels
    gram = centred @ centred.T if by_rows else centred.T @ centred
    size, kept = len(gram), min(dims, n)
    values, vectors = eigh(gram, subset_by_index=[size - kept, size - 1])
    values = np.maximum(values, 0.0)
    scores = vectors * np.sqrt(values) if by_rows else centred @ vectors
    total = float(np.trace(gram))
    return scores, (float(values.sum() / total) if total > 0 else 1.0)


def _unit(z: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.where(norm > 0, norm, 1.0)


def _onehot(labels: np.ndarray, k: int) -> np.ndarray:
    """(R*K, n) indicator rows, synset-major within each of the R label vectors (R, n)."""
    r, n = labels.shape
    return (labels[:, None, :] == np.arange(k)[None, :, None]).reshape(r * k, n).astype(np.float64)


def _fisher(class_sums: np.ndarray, total_sq: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Calinski-Harabasz ratio [tr(B)/(K-1)] / [tr(W)/(n-K)] from per-synset sums (R, K, d) of centred rows.

    ``total_sq`` (R,) is the sum of squared norms; NaN when n <= K or the within scatter is zero.
    """
    n, k = counts.sum(), len(counts)
    grand = (class_sums.sum(axis=1) ** 2).sum(axis=-1) / n
    between = ((class_sums**2).sum(axis=-1) / counts).sum(axis=-1) - grand
    within = total_sq - grand - between
    if n <= k:
        return np.full(len(between), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(within > 1e-12 * total_sq, (between / (k - 1)) / (within / (n - k)), np.nan)


def _silhouette(unit: np.ndarray, unit_sums: np.ndarray, labels: np.ndarray, counts: np.ndarray,
                weights: np.ndarray | None = None) -> np.ndarray:
    """Mean silhouette on cosine distance, from per-synset sums of unit vectors.

    The mean cosine distance from row i to synset k is (n_k - u_i . U_k) / n_k,
    or / (n_k - 1) within its own synset (its own distance is 0); a row alone in
    its synset scores 0, as in scikit-learn. ``unit_sums`` is (R, K, d) for R
    resamples, ``labels`` (R, n), and ``weights`` (R, n) the bootstrap copies of each row.
    """
    r, k, d = unit_sums.shape
    dots = (unit_sums.reshape(r * k, d) @ unit.T).reshape(r, k, -1)  # (R, K, n); one 2-D product is a BLAS call
    own = np.take_along_axis(dots, labels[:, None, :], axis=1)[:, 0]
    own_n = counts[labels]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (own_n - own) / (own_n - 1)
    other = (counts[:, None] - dots) / counts[:, None]
    np.put_along_axis(other, labels[:, None, :], np.inf, axis=1)
    b = other.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.nan_to_num(np.where(own_n > 1, (b - a) / np.maximum(a, b), 0.0), nan=0.0)
    if weights is None:
        return s.mean(axis=1)
    return (s * weights).sum(axis=1) / weights.sum(axis=1)


@dataclass
class Probe:
    """Stratified k-fold cross-validation of a ridge classifier, for many label vectors at once.

    A ridge fit is linear in the labels: the weights are A @ Y with A fixed by
    the training features. So the weights for any relabelling are per-synset
    sums of A's columns, which come from the same matrix product as the
    Fisher and silhouette sums (``design`` holds, per fold, A's rows, zero
    outside the training rows, and the training-row indicator).
    """

    features: np.ndarray                        # (n, d) standardised
    folds: list[tuple[np.ndarray, np.ndarray]]
    design: np.ndarray                          # (n, folds * (d + 1))

    @classmethod
    def build(cls, z: np.ndarray, codes: np.ndarray, n_folds: int, seed: int) -> "Probe | None":
        from sklearn.model_selection import StratifiedKFold

        smallest = int(np.bincount(codes).min())
        if smallest < 2:
            return None
        std = z.std(axis=0)
        features = (z - z.mean(axis=0)) / np.where(std > 0, std, 1.0)
        folds = list(StratifiedKFold(min(n_folds, smallest), shuffle=True, random_state=seed).split(features, codes))
        d = features.shape[1]
        design = np.zeros((len(codes), len(folds) * (d + 1)))
        for f, (train, _) in enumerate(folds):
            x = features[train] - features[train].mean(axis=0)
            design[train, f * (d + 1):f * (d + 1) + d] = np.linalg.solve(x.T @ x + RIDGE_ALPHA * np.eye(d), x.T).T
            design[train, f * (d + 1) + d] = 1.0
        return cls(features, folds, design)

    def hits(self, sums: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(R, n) out-of-fold hits from the per-synset sums (R, K, width) of ``design`` under ``labels`` (R, n)."""
        d = self.features.shape[1]
        hits = np.zeros(labels.shape, dtype=bool)
        for f, (train, test) in enumerate(self.folds):
            weights = np.ascontiguousarray(sums[..., f * (d + 1):f * (d + 1) + d])  # (R, K, d); BLAS needs contiguity
            offset = sums[..., f * (d + 1) + d] / len(train) - weights @ self.features[train].mean(axis=0)
            r, k = offset.shape
            scores = (weights.reshape(r * k, d) @ self.features[test].T).reshape(r, k, -1) + offset[..., None]
            hits[:, test] = scores.argmax(axis=1) == labels[:, test]
        return hits


@dataclass
class ScaleFree:
    estimates: dict[str, float]
    chance: float
    p_values: dict[str, float]
    intervals: dict[str, tuple[float, float]]


MEASURES = ("fisher", "silhouette", "probe")


def permutation_p(observed: float, null: np.ndarray) -> float:
    """One-sided (greater or equal) permutation p-value, (1 + hits) / (1 + permutations); NaN if undefined."""
    null = null[~np.isnan(null)]
    if np.isnan(observed) or len(null) == 0:
        return float("nan")
    return float((1 + np.count_nonzero(null >= observed - 1e-9 * abs(observed))) / (1 + len(null)))


def recentred_interval(estimate: float, draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the bootstrap draws moved so that their median sits on the estimate.

    Resampling with replacement duplicates rows, which shrinks within-synset
    scatter and so inflates Fisher ratios and silhouettes; the plain
    percentile interval can then miss the estimate altogether. Removing the
    draws' median bias keeps the interval's width and shape but centres it on
    the estimate.
    """
    draws = draws[~np.isnan(draws)]
    if len(draws) == 0 or np.isnan(estimate):
        return float("nan"), float("nan")
    low, middle, high = np.quantile(draws, [(1 - level) / 2, 0.5, (1 + level) / 2])
    return float(estimate + low - middle), float(estimate + high - middle)


def scale_free_measures(z: np.ndarray, codes: np.ndarray, permutations: int, n_boot: int, n_folds: int,
                        seed: int) -> ScaleFree:
    """Fisher ratio, cosine silhouette and probe accuracy of ``z`` (n, d), with p-values and 95% intervals.

    Permutations shuffle the labels over all rows (the same shuffles for every
    layer, from ``seed``), keeping the probe's folds; the bootstrap resamples
    rows within each synset so that synset sizes stay fixed; the probe's
    interval resamples its out-of-fold hits (the folds are not refitted).
    """
    k, d = int(codes.max()) + 1, z.shape[1]
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    unit = _unit(z)
    sq_norms = (z**2).sum(axis=1)
    probe = Probe.build(z, codes, n_folds, seed)
    columns = np.hstack([z, unit] + ([probe.design] if probe else []))

    def permuted(labels):
        sums = (_onehot(labels, k) @ columns).reshape(len(labels), k, -1)
        fisher = _fisher(sums[..., :d], np.full(len(labels), sq_norms.sum()), counts)
        silhouette = _silhouette(unit, np.ascontiguousarray(sums[..., d:2 * d]), labels, counts)
        hits = probe.hits(sums[..., 2 * d:], labels) if probe else np.full(labels.shape, np.nan)
        return {"fisher": fisher, "silhouette": silhouette, "probe": hits.mean(axis=1)}, hits

    observed, observed_hits = permuted(codes[None, :])
    estimates = {m: float(observed[m][0]) for m in MEASURES}

    rng = np.random.default_rng(seed)
    null = {m: [] for m in MEASURES}
    for start in range(0, permutations, RESAMPLE_BATCH):
        labels = rng.permuted(np.tile(codes, (min(RESAMPLE_BATCH, permutations - start), 1)), axis=1)
        for m, values in permuted(labels)[0].items():
            null[m].append(values)

    rng = np.random.default_rng(seed + 1)
    draws = {m: [] for m in MEASURES}
    members = [np.flatnonzero(codes == j) for j in range(k)]
    both = columns[:, :2 * d]
    for start in range(0, n_boot, RESAMPLE_BATCH):
        batch = min(RESAMPLE_BATCH, n_boot - start)
        weights = np.zeros((batch, len(codes)))
        for rows in members:
            picks = rows[rng.integers(0, len(rows), (batch, len(rows)))]
            np.add.at(weights, (np.arange(batch)[:, None], picks), 1.0)
        sums = np.stack([weights[:, rows] @ both[rows] for rows in members], axis=1)
        labels = np.broadcast_to(codes, weights.shape)
        draws["fisher"].append(_fisher(sums[..., :d], weights @ sq_norms, counts))
        draws["silhouette"].append(_silhouette(unit, np.ascontiguousarray(sums[..., d:]), labels, counts, weights))
        draws["probe"].append(weights @ observed_hits[0] / len(codes))

    def joined(parts):
        return np.concatenate(parts) if parts else np.zeros(0)

    return ScaleFree(estimates=estimates, chance=float(counts.max() / counts.sum()),
                     p_values={m: permutation_p(estimates[m], joined(null[m])) for m in MEASURES},
                     intervals={m: recentred_interval(estimates[m], joined(draws[m])) for m in MEASURES})


# ---------------------------------------------------------------- per-channel selectivity (8)

SELECTIVITY_BLOCK = 256  # channels ranked together; bounds the (rows x channels) temporaries


def channel_selectivity(sample: np.ndarray, codes: np.ndarray, n_synsets: int) -> dict[str, np.ndarray]:
    """One-vs-rest AUROC, d' and two-sided Mann-Whitney p-value for every (synset, channel), each (K, C).

    The p-value is the normal approximation with tie and continuity
    corrections (scipy's ``mannwhitneyu(method="asymptotic")``); NaN where a
    channel is constant. d' is NaN where a side has fewer than two rows. The
    q-values are Benjamini-Hochberg over all (synset, channel) pairs of the layer.
    """
    n = len(sample)
    counts = np.bincount(codes, minlength=n_synsets).astype(np.float64)[:, None]
    rest = n - counts
    onehot = np.zeros((n, n_synsets))
    onehot[np.arange(n), codes] = 1.0
    blocks = [_selectivity_block(sample[:, start:start + SELECTIVITY_BLOCK], onehot, counts, rest)
              for start in range(0, sample.shape[1], SELECTIVITY_BLOCK)]
    result = {key: np.hstack([b[key] for b in blocks]) for key in ("auroc", "d_prime", "p_value")}
    result["q_value"] = benjamini_hochberg(result["p_value"])
    return result


def _selectivity_block(x: np.ndarray, onehot: np.ndarray, counts: np.ndarray, rest: np.ndarray) -> dict:
    n, channels = x.shape
    u = onehot.T @ sps.rankdata(x, axis=0) - counts * (counts + 1) / 2
    auroc = u / (counts * rest)

    ordered = np.sort(x, axis=0)
    starts = np.vstack([np.ones((1, channels), bool), ordered[1:] != ordered[:-1]])
    group = np.cumsum(starts, axis=0) - 1 + np.arange(channels) * n
    sizes = np.bincount(group.ravel(), minlength=n * channels).reshape(channels, n).astype(np.float64)
    ties = (sizes**3 - sizes).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.sqrt(counts * rest / 12 * ((n + 1) - ties / (n * (n - 1))))
        z = (np.abs(u - counts * rest / 2) - 0.5) / sigma
        p = np.where(sigma > 0, np.minimum(2 * sps.norm.sf(z), 1.0), np.nan)

    mean_in = onehot.T @ x / counts
    mean_out = (x.sum(axis=0) - mean_in * counts) / rest
    sq_in = onehot.T @ x**2
    with np.errstate(divide="ignore", invalid="ignore"):
        var_in = (sq_in - counts * mean_in**2) / (counts - 1)
        var_out = ((x**2).sum(axis=0) - sq_in - rest * mean_out**2) / (rest - 1)
        pooled = np.sqrt(np.maximum((var_in + var_out) / 2, 0))
        d_prime = np.where((counts > 1) & (rest > 1) & (pooled > 0), (mean_in - mean_out) / pooled, np.nan)
    return {"auroc": auroc, "d_prime": d_prime, "p_value": p}


# ---------------------------------------------------------------- the whole analysis

@dataclass
class Result:
    layers: pd.DataFrame
    synset_max: pd.DataFrame
    top_synsets: pd.DataFrame
    top_neurons: pd.DataFrame
    top_images: pd.DataFrame
    selective: pd.DataFrame
    synset_counts: dict[str, int]
    n_sample: int
    notes: list[str]


def analyse(store, params: Params, progress=lambda items, **_: items) -> Result:
    """Run every measure over the chosen layers of ``store`` (an ActivationStore)."""
    chosen = select_rows(store.rows(), params.groups)
    store_rows = chosen.index.to_numpy()
    synsets, codes = np.unique(chosen["synset"].to_numpy(), return_inverse=True)
    counts = np.bincount(codes, minlength=len(synsets))
    row_ids, paths = chosen["id"].to_numpy(), chosen["path"].to_numpy()
    layers = select_layers(store.hook_points, params.layers)
    sample_positions = stratified_sample(codes, params.sample, params.seed)
    sample_codes = codes[sample_positions]
    notes = [f"synset {s} has one image: its standard deviations and d' are undefined (NaN)"
             for s in synsets[counts == 1]]
    if np.bincount(sample_codes).min() < 2:
        notes.append("a synset has fewer than two rows in the sample: the linear probe is undefined (NaN)")
    if len(sample_positions) <= len(synsets):
        notes.append("no synset has two rows: the Fisher ratio is undefined (NaN)")

    layer_rows, max_rows, neuron_rows, image_rows, selective_parts = [], [], [], [], []
    for depth, hook in enumerate(progress(layers, desc="layers", unit="layer")):
        scan = scan_layer(store, hook, params.pool, store_rows, codes, len(synsets), sample_positions,
                          params.top_images, row_ids)
        centroids = scan.centroids
        peak, peak_channel = max_activation(centroids)
        max_rows += [{"layer": hook, "synset": s, "max_activation": float(v), "n_images": int(n), "channel": int(c)}
                     for s, v, n, c in zip(synsets, peak, counts, peak_channel)]
        std = scan.channel_std()
        for rank, channel in enumerate(top_channels(centroids, params.top_neurons), 1):
            neuron_rows += [{"layer": hook, "rank": rank, "channel": int(channel),
                             "max_centroid": float(centroids[:, channel].max()), "synset": s,
                             "mean": float(centroids[j, channel]), "std": float(std[j, channel]),
                             "n_images": int(counts[j])} for j, s in enumerate(synsets)]
            for image_rank, (value, position) in enumerate(
                    zip(scan.top_values[:, channel], scan.top_positions[:, channel]), 1):
                image_rows.append({"layer": hook, "rank": rank, "channel": int(channel), "image_rank": image_rank,
                                   "id": row_ids[position], "path": paths[position],
                                   "synset": synsets[codes[position]], "activation": float(value)})

        z, explained = reduce_sample(scan.sample, params.dims)
        measures = scale_free_measures(z, sample_codes, params.permutations, params.bootstrap, params.folds,
                                       params.seed)
        selectivity = channel_selectivity(scan.sample, sample_codes, len(synsets))
        selected = (selectivity["q_value"] < params.alpha) & (selectivity["auroc"] > 0.5)
        synset_index, channel_index = np.nonzero(selected)
        selective_parts.append(pd.DataFrame({
            "layer": hook, "channel": channel_index, "synset": synsets[synset_index],
            **{key: selectivity[key][synset_index, channel_index]
               for key in ("auroc", "d_prime", "p_value", "q_value")},
            "n_synset": np.bincount(sample_codes, minlength=len(synsets))[synset_index],
            "n_rest": len(sample_codes) - np.bincount(sample_codes, minlength=len(synsets))[synset_index]}))
        row = {"layer": hook, "depth": depth, "channels": centroids.shape[1], "n_images": len(codes),
               "avg_centroid_distance": avg_centroid_distance(centroids)}
        for m in MEASURES:
            row[m if m != "probe" else "probe_accuracy"] = measures.estimates[m]
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = measures.intervals[m]
            row[f"{m}_p"] = measures.p_values[m]
        row.update({"probe_chance": measures.chance, "n_sample": len(sample_codes), "dims": z.shape[1],
                    "explained_variance": explained, "n_selective_channels": int(selected.any(axis=0).sum())})
        layer_rows.append(row)

    table = pd.DataFrame(layer_rows)
    table.insert(5, "distance_rank", table["avg_centroid_distance"].rank(ascending=False, method="first").astype(int))
    synset_max = pd.DataFrame(max_rows)
    return Result(layers=table, synset_max=synset_max,
                  top_synsets=top_synsets_table(table, synset_max, params.top_layers, params.top_synsets),
                  top_neurons=pd.DataFrame(neuron_rows), top_images=pd.DataFrame(image_rows),
                  selective=pd.concat(selective_parts, ignore_index=True),
                  synset_counts={str(s): int(n) for s, n in zip(synsets, counts)},
                  n_sample=len(sample_codes), notes=notes)


def top_layers(layers: pd.DataFrame, n: int) -> list[str]:
    """Metric 2's top-K: layers by average centroid distance, largest first."""
    return layers.sort_values("distance_rank")["layer"].head(n).tolist()


def top_synsets_table(layers: pd.DataFrame, synset_max: pd.DataFrame, n_layers: int, n_synsets: int) -> pd.DataFrame:
    """Metric 3: for each top layer, its synsets with the highest max activation."""
    parts = []
    for layer_rank, layer in enumerate(top_layers(layers, n_layers), 1):
        rows = synset_max[synset_max["layer"] == layer].sort_values(["max_activation", "synset"],
                                                                    ascending=[False, True]).head(n_synsets)
        parts.append(rows.assign(layer_rank=layer_rank, rank=range(1, len(rows) + 1)))
    columns = ["layer_rank", "layer", "rank", "synset", "max_activation", "n_images"]
    return pd.concat(parts, ignore_index=True)[columns]


# ---------------------------------------------------------------- outputs

SUMMARY_SCHEMA = 1
FIGURES = {"heatmap": "max_activation_heatmap.png", "depth": "separability_by_depth.png"}
TABLES = {
    "layers": ("layers.csv", "one row per layer in depth order: metric 2 (avg_centroid_distance, distance_rank) "
               "and the scale-free measures with 95% bootstrap intervals and permutation p-values"),
    "synset_max_activation": ("synset_max_activation.csv", "metric 1: the largest channel value of each synset's "
                              "centroid per layer, the images it averages and that channel"),
    "top_synsets": ("top_synsets.csv", "metric 3: per top layer (by distance), the synsets with the highest "
                    "max activation"),
    "top_neurons": ("top_neurons.csv", "metric 4: per layer, the channels with the highest centroid value, each "
                    "synset's mean, standard deviation (ddof 1) and image count"),
    "top_images": ("top_images.csv", "metric 4: the images (row id, path) that activate each top channel most"),
    "selective_channels": ("selective_channels.csv", "(layer, channel, synset) with one-vs-rest AUROC > 0.5 and "
                           "Benjamini-Hochberg q below alpha"),
}


def write_outputs(result: Result, params: Params, store, out_dir) -> dict:
    """Write the tables, the figures and, last, summary.json (the stage's completion marker)."""
    out = begin_outputs(out_dir, "summary.json")
    frames = {"layers": result.layers, "synset_max_activation": result.synset_max, "top_synsets": result.top_synsets,
              "top_neurons": result.top_neurons, "top_images": result.top_images,
              "selective_channels": result.selective}
    for key, frame in frames.items():
        with atomic_write(out / TABLES[key][0]) as handle:
            frame.to_csv(handle, index=False, float_format="%.6g", lineterminator="\n")
    plot_heatmap(result, top_layers(result.layers, params.top_layers), out / FIGURES["heatmap"])
    plot_depth(result.layers, out / FIGURES["depth"])

    def best(column):
        ranked = result.layers.dropna(subset=[column]).sort_values([column, "depth"], ascending=[False, True])
        return ranked["layer"].head(params.top_layers).tolist()

    summary = {
        "schema": SUMMARY_SCHEMA,
        "tool": "separability",
        "version": __version__,
        "parameters": {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in params.__dict__.items()},
                       "ridge_alpha": RIDGE_ALPHA, "ci_level": 0.95},
        "store": {"path": str(store.path), **store.provenance(),
                  "n_hook_points": len(store.hook_points)},
        "n_images": int(sum(result.synset_counts.values())),
        "n_synsets": len(result.synset_counts),
        "synsets": result.synset_counts,
        "n_sample": result.n_sample,
        "layers": result.layers["layer"].tolist(),
        "top_layers": top_layers(result.layers, params.top_layers),
        "best_layers": {"probe_accuracy": best("probe_accuracy"), "fisher": best("fisher"),
                        "silhouette": best("silhouette")},
        "notes": result.notes,
        "tables": {key: {"file": name, "rows": len(frames[key]), "description": text}
                   for key, (name, text) in TABLES.items()},
        "figures": dict(FIGURES),
    }
    with atomic_write(out / "summary.json") as handle:
        json.dump(summary, handle, indent=2, default=_json_default)
        handle.write("\n")
    return summary


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def plot_heatmap(result: Result, layers: list[str], path) -> None:
    """Metric 5: max activation, synsets (rows) by top layers (columns)."""
    plt = pyplot()

    grid = result.synset_max.pivot(index="synset", columns="layer", values="max_activation")[layers]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(layers), 1.2 + 0.35 * len(grid)))
    image = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right")
    ax.set_yticks(range(len(grid)), grid.index)
    if grid.size <= 200:
        for (i, j), value in np.ndenumerate(grid.to_numpy()):
            ax.text(j, i, f"{value:.3g}", ha="center", va="center", color="w", fontsize=7)
    ax.set_xlabel("layer (top by average centroid distance)")
    ax.set_ylabel("synset")
    ax.set_title("Max activation of each synset's centroid")
    fig.colorbar(image, ax=ax, label="max activation")
    save_png(fig, path)


def plot_depth(layers: pd.DataFrame, path) -> None:
    """Scale-free measures with their 95% intervals by depth, beside the raw centroid distance."""
    plt = pyplot()

    panels = [("fisher", "fisher", "Fisher ratio (log)"), ("silhouette", "silhouette", "silhouette (cosine)"),
              ("probe_accuracy", "probe", "linear-probe accuracy"), ("avg_centroid_distance", None,
                                                                     "avg centroid distance (raw)")]
    depth = layers["depth"].to_numpy()
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(max(8, 0.12 * len(depth) + 4), 11))
    for ax, (column, prefix, label) in zip(axes, panels):
        ax.plot(depth, layers[column], marker="o", markersize=3, color="C0" if prefix else "C3")
        if prefix:
            ax.fill_between(depth, layers[f"{prefix}_ci_low"], layers[f"{prefix}_ci_high"], alpha=0.25,
                            color="C0", label="95% bootstrap interval")
        if column == "fisher" and (layers[column] > 0).any():
            ax.set_yscale("log")
        if column == "probe_accuracy":
            ax.plot(depth, layers["probe_chance"], linestyle="--", color="grey", label="chance")
        if prefix:
            ax.legend(loc="best", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    step = max(1, len(depth) // 40)
    axes[-1].set_xticks(depth[::step], layers["layer"].iloc[::step], rotation=90, fontsize=7)
    axes[-1].set_xlabel("layer (depth order)")
    axes[0].set_title("Separability by depth: scale-free measures vs the raw centroid distance")
    save_png(fig, path)
