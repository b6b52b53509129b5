"""Scale-free separation measures of one layer and their tests, on prompt units (docs/methods.md).

The analysis sample is ``n`` rows (images) of ``d`` features, each row in one *unit* (the images of one prompt, or
one image: see ``units.py``) and each unit in one synset. Images of a unit are not independent, so:

* the permutation test moves synset labels between units, never between the images of one unit, and only among units
  of the same block (template) and cross-validation fold (``design.py``), so that every permuted labelling keeps the
  template mix of each synset and is stratified over the folds exactly as the observed one, and the probe's folds,
  fitted once, stay valid: an exact test when units are exchangeable within blocks;
* the probe's folds keep blocks, or else units, whole (``design.probe_folds``);
* channel selectivity tests unit means within blocks (``selectivity.py``).

Fisher ratio, cosine silhouette and probe accuracy are computed over images. Every permuted statistic comes from
per-synset sums (one matrix product per batch of permutations): the sums of the centred rows and of the unit vectors
give Fisher and silhouette, and the per-fold sums of the probe's principal scores give its out-of-fold predictions,
because a ridge fit is linear in the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csc_matrix

from synthprobe.common.stats import permutation_p
from synthprobe.separability.design import (
    Design,
    block_permutations,
    can_move,
    permutation_strata,
    probe_folds,
)
from synthprobe.separability.probe import Probe

MEASURES = ("fisher", "silhouette", "probe")
RESAMPLE_BATCH = 25  # permutations processed together: their (batch x synsets x rows) temporaries stay in cache
# The silhouette's similarities are float32 products (half the time of float64): a relabelling within this of the
# observed value, the same labelling among them, is a tie.
SILHOUETTE_ROUND_OFF = 1e-6


# ---------------------------------------------------------------- Fisher ratio and silhouette from sums


def unit_vectors(z: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.where(norm > 0, norm, 1.0)


def fisher_from_sums(class_sums: np.ndarray, total_sq: float, counts: np.ndarray) -> np.ndarray:
    """Calinski-Harabasz ratio [tr(B)/(K-1)] / [tr(W)/(n-K)] from per-synset sums (R, K, d) and counts (R, K).

    ``total_sq`` is the sum of the rows' squared norms; NaN when n <= K or the within scatter is zero.
    """
    n, k = counts[0].sum(), counts.shape[1]
    grand = (class_sums.sum(axis=1) ** 2).sum(axis=-1) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.where(counts > 0, (class_sums**2).sum(axis=-1) / counts, 0.0).sum(axis=-1) - grand
    within = total_sq - grand - between
    if n <= k:
        return np.full(len(between), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(within > 1e-12 * total_sq, (between / (k - 1)) / (within / (n - k)), np.nan)


def silhouette_from_sums(unit: np.ndarray, unit_sums: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean silhouette on cosine distance, from per-synset sums (R, K, d) of unit vectors.

    The mean cosine distance from row i to synset k is 1 - u_i . U_k / n_k, or (n_k - u_i . U_k) / (n_k - 1) within
    its own synset (its own distance is 0); a row alone in its synset scores 0, as in scikit-learn. ``labels`` (R, n),
    ``counts`` (R, K). Dividing the sums by the counts before the product, and taking the nearest other synset as the
    largest mean similarity with the own one masked, keeps the (R, K, n) work to the product and one reduction.
    """
    r, k, d = unit_sums.shape
    n = unit.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        centroids = (unit_sums / counts[..., None]).astype(unit.dtype)
    empty = counts == 0
    centroids[empty] = 0.0
    similarity = (centroids.reshape(r * k, d) @ unit.T).reshape(r, k, n)  # one BLAS call
    similarity[empty] = -np.inf  # a synset no row holds is no neighbour
    flat = ((np.arange(r)[:, None] * k + labels) * n + np.arange(n)).ravel()
    own_n = np.take_along_axis(counts, labels, axis=1).astype(unit.dtype)
    own = similarity.reshape(-1)[flat].reshape(r, n) * own_n
    similarity.reshape(-1)[flat] = -np.inf
    b = 1.0 - similarity.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (own_n - own) / (own_n - 1)
        s = (b - a) / np.maximum(a, b)
    s[(own_n <= 1) | np.isnan(s)] = 0.0
    return s.mean(axis=1, dtype=np.float64)


# ---------------------------------------------------------------- all three with their tests


@dataclass
class LayerTests:
    estimates: dict[str, float]  # per measure, and the probe's balanced accuracy
    p_values: dict[str, float]
    null: dict[str, np.ndarray]  # per measure: its value under each relabelling (float32, in the run's order)
    probe_folds: int  # 0 when the probe is undefined


@dataclass
class Relabelled:
    values: dict[str, np.ndarray]  # (R,) per measure, and the probe's balanced accuracy
    hits: np.ndarray  # (R, n) the probe's out-of-fold hits (NaN without a probe)
    margins: np.ndarray  # (R, n) the probe's own score minus the mean score (its tie-breaker)


@dataclass
class LayerMeasures:
    """Every measure of one layer under many unit labellings at once, from per-synset sums of per-unit columns: the
    centred rows (Fisher), their unit vectors (silhouette), the probe's scores and ones (the counts).

    The sums are taken per probe fold, since the probe needs each fold's test sums, with one sparse product: a unit
    adds its columns to one (fold, relabelling, synset) row, so a batch costs (units x columns) per relabelling.
    """

    design: Design
    unit: np.ndarray  # (n, d) the rows as unit vectors, float32
    fold_of_unit: np.ndarray  # (U,) the probe fold testing each unit (0 without a probe)
    per_unit: np.ndarray  # (U, 2 d + probe width + 1) column sums of each unit
    total_sq: float
    probe: Probe | None

    @classmethod
    def build(cls, z: np.ndarray, x: np.ndarray, design: Design, folds, dims: int) -> LayerMeasures:
        """Measures of ``z`` (n, d), the centred, reduced sample, and the probe of ``x`` (n, channels) on ``folds``."""
        unit = unit_vectors(z)
        probe = Probe.build(x, design, folds, dims)
        per_unit = design.unit_sums(np.hstack([z, unit] + ([probe.scores] if probe else []) + [np.ones((len(z), 1))]))
        fold_of_unit = probe.fold_of_unit if probe else np.zeros(design.n_units, dtype=np.int64)
        return cls(design, unit.astype(np.float32), fold_of_unit, per_unit, float((z**2).sum()), probe)

    def __call__(self, unit_labels: np.ndarray) -> Relabelled:
        """Every measure for (R, U) unit labellings."""
        r, u = unit_labels.shape
        k, d, n_folds = self.design.n_synsets, self.unit.shape[1], int(self.fold_of_unit.max()) + 1
        rows = (self.fold_of_unit[None, :] * r + np.arange(r)[:, None]) * k + unit_labels
        onehot = csc_matrix((np.ones(r * u), rows.T.ravel(), np.arange(0, r * u + 1, r)), shape=(n_folds * r * k, u))
        per_fold = (onehot @ self.per_unit).reshape(n_folds, r, k, -1)
        total = per_fold.sum(axis=0)
        counts = total[..., -1]
        labels = unit_labels[:, self.design.units]
        if self.probe:
            hits, margins = self.probe.hits(per_fold[..., 2 * d :], total[..., 2 * d :], labels)
        else:
            hits = margins = np.full(labels.shape, np.nan)
        values = {
            "fisher": fisher_from_sums(total[..., :d], self.total_sq, counts),
            "silhouette": silhouette_from_sums(self.unit, total[..., d : 2 * d], labels, counts),
            "probe": hits.mean(axis=1),
            "probe_balanced": balanced_accuracy(hits, labels, k),
        }
        return Relabelled(values, hits, margins)


def scale_free_tests(
    z: np.ndarray, x: np.ndarray, design: Design, permutations: int, n_folds: int, dims: int, seed: int
) -> LayerTests:
    """Fisher ratio and cosine silhouette of ``z`` (n, d) (the centred, reduced sample), the probe on ``x``
    (n, channels), and their permutation p-values over units, relabelled within blocks and probe folds.

    The same relabellings (from ``seed`` and the design) serve every measure and every layer of a run; where no
    stratum holds two synsets none can differ from the observed labels, and the p-values are NaN.
    """
    folds = probe_folds(design, n_folds, seed)
    measures = LayerMeasures.build(z, x, design, folds, dims)
    observed = measures(design.unit_codes[None, :])
    estimates = {m: float(v[0]) for m, v in observed.values.items()}
    strata = permutation_strata(design, folds)
    rng = np.random.default_rng(seed)
    null = {m: [] for m in (*MEASURES, "margin")}
    for start in range(0, permutations if can_move(design.unit_codes, strata) else 0, RESAMPLE_BATCH):
        relabelled = measures(
            block_permutations(design.unit_codes, strata, min(RESAMPLE_BATCH, permutations - start), rng)
        )
        for m in MEASURES:
            null[m].append(relabelled.values[m])
        null["margin"].append(relabelled.margins.mean(axis=1))
    null = {m: np.concatenate(v) if v else np.zeros(0) for m, v in null.items()}
    p_values = {
        "fisher": permutation_p(estimates["fisher"], null["fisher"]),
        "silhouette": permutation_p(estimates["silhouette"], null["silhouette"], atol=SILHOUETTE_ROUND_OFF),
    }
    observed_margin = float(observed.margins.mean())
    p_values["probe"] = permutation_p(estimates["probe"], null["probe"], observed_margin, null["margin"])
    return LayerTests(
        estimates,
        p_values,
        null={m: null[m].astype(np.float32) for m in MEASURES},
        probe_folds=len(folds) if measures.probe else 0,
    )


def balanced_accuracy(hits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(R,) mean over synsets of the share of their rows predicted right, from (R, n) hits and labels."""
    r = len(labels)
    if np.isnan(hits).any():  # no probe
        return np.full(r, np.nan)
    cells = (np.arange(r)[:, None] * k + labels).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.bincount(cells, hits.ravel(), r * k) / np.bincount(cells, minlength=r * k)
    return np.nanmean(recall.reshape(r, k), axis=1)  # a synset without rows has no recall
