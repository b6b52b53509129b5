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
give Fisher and silhouette, and the sums of the probe's ridge operator give its out-of-fold predictions, because a
ridge fit is linear in the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
RESAMPLE_BATCH = 50  # permutations processed together; bounds the (batch x synsets x rows) temporaries


# ---------------------------------------------------------------- permutations over units


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

    The mean cosine distance from row i to synset k is (n_k - u_i . U_k) / n_k,
    or / (n_k - 1) within its own synset (its own distance is 0); a row alone in
    its synset scores 0, as in scikit-learn. ``labels`` (R, n), ``counts`` (R, K).
    """
    r, k, d = unit_sums.shape
    dots = (unit_sums.reshape(r * k, d) @ unit.T).reshape(r, k, -1)  # (R, K, n); one 2-D product is a BLAS call
    own = np.take_along_axis(dots, labels[:, None, :], axis=1)[:, 0]
    own_n = np.take_along_axis(counts, labels, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (own_n - own) / (own_n - 1)
        other = (counts[..., None] - dots) / counts[..., None]
    other = np.where(counts[..., None] > 0, other, np.inf)
    np.put_along_axis(other, labels[:, None, :], np.inf, axis=1)
    b = other.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.nan_to_num(np.where(own_n > 1, (b - a) / np.maximum(a, b), 0.0), nan=0.0)
    return s.mean(axis=1)


# ---------------------------------------------------------------- all three with their tests


@dataclass
class LayerTests:
    estimates: dict[str, float]  # per measure, and the probe's balanced accuracy
    p_values: dict[str, float]
    null: dict[str, np.ndarray]  # per measure: its value under each relabelling (float32, in the run's order)
    probe_folds: int  # 0 when the probe is undefined


def scale_free_tests(
    z: np.ndarray, x: np.ndarray, design: Design, permutations: int, n_folds: int, dims: int, seed: int
) -> LayerTests:
    """Fisher ratio and cosine silhouette of ``z`` (n, d) (the centred, reduced sample), the probe on ``x``
    (n, channels), and their permutation p-values over units, relabelled within blocks and probe folds.

    The same relabellings (from ``seed`` and the design) serve every measure and every layer of a run; where no
    stratum holds two synsets none can differ from the observed labels, and the p-values are NaN.
    """
    k, d, n = design.n_synsets, z.shape[1], len(z)
    unit = unit_vectors(z)
    folds = probe_folds(design, n_folds, seed)
    probe = Probe.build(x, design, folds, dims)
    per_row = np.hstack([z, unit, np.ones((n, 1))] + ([probe.columns(n)] if probe else []))
    per_unit = design.unit_sums(per_row)
    total_sq = float((z**2).sum())

    def statistics(unit_labels: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Every measure for (R, U) unit labellings, and the probe's mean margin (its tie-breaker)."""
        r = len(unit_labels)
        onehot = (unit_labels[:, None, :] == np.arange(k)[None, :, None]).reshape(r * k, -1).astype(np.float64)
        sums = (onehot @ per_unit).reshape(r, k, -1)
        counts = sums[..., 2 * d]
        labels = unit_labels[:, design.units]
        hits, margins = probe.hits(sums[..., 2 * d + 1 :], labels) if probe else (np.full(labels.shape, np.nan),) * 2
        return {
            "fisher": fisher_from_sums(sums[..., :d], total_sq, counts),
            "silhouette": silhouette_from_sums(unit, np.ascontiguousarray(sums[..., d : 2 * d]), labels, counts),
            "probe": hits.mean(axis=1),
            "probe_balanced": balanced_accuracy(hits, labels, k),
        }, margins.mean(axis=1)

    observed, observed_margin = statistics(design.unit_codes[None, :])
    estimates = {m: float(v[0]) for m, v in observed.items()}
    strata = permutation_strata(design, folds)
    rng = np.random.default_rng(seed)
    null = {m: [] for m in (*MEASURES, "margin")}
    for start in range(0, permutations if can_move(design.unit_codes, strata) else 0, RESAMPLE_BATCH):
        batch = block_permutations(design.unit_codes, strata, min(RESAMPLE_BATCH, permutations - start), rng)
        values, margins = statistics(batch)
        for m in MEASURES:
            null[m].append(values[m])
        null["margin"].append(margins)
    null = {m: np.concatenate(v) if v else np.zeros(0) for m, v in null.items()}
    p_values = {m: permutation_p(estimates[m], null[m]) for m in MEASURES if m != "probe"}
    p_values["probe"] = permutation_p(estimates["probe"], null["probe"], float(observed_margin[0]), null["margin"])
    return LayerTests(
        estimates,
        p_values,
        null={m: null[m].astype(np.float32) for m in MEASURES},
        probe_folds=len(folds) if probe else 0,
    )


def balanced_accuracy(hits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(R,) mean over synsets of the share of their rows predicted right, from (R, n) hits and labels."""
    onehot = labels[:, None, :] == np.arange(k)[None, :, None]  # (R, K, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = (onehot & hits[:, None, :].astype(bool)).sum(axis=2) / onehot.sum(axis=2)
    return np.where(np.isnan(hits).any(axis=1), np.nan, np.nanmean(recall, axis=1))
