"""Scale-free separation measures of one layer and their tests, on prompt units (docs/methods.md).

The analysis sample is ``n`` rows (images) of ``d`` features, each row in one *unit* (the images of one prompt, or
one image: see ``units.py``) and each unit in one synset. Images of a unit are not independent, so:

* the permutation test moves synset labels between units, never between the images of one unit; the permutations are
  restricted to units of the same cross-validation fold, so that every permuted labelling is stratified over the
  folds exactly as the observed one and the probe's folds, fitted once, stay valid: an exact test under exchangeable
  units;
* the probe's folds are grouped by unit (scikit-learn's StratifiedGroupKFold);
* channel selectivity tests unit means.

Fisher ratio, cosine silhouette and probe accuracy are computed over images. Every permuted statistic comes from
per-synset sums (one matrix product per batch of permutations): the sums of the centred rows and of the unit vectors
give Fisher and silhouette, and the sums of the probe's ridge operator give its out-of-fold predictions, because a
ridge fit is linear in the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from synthprobe.separability.probe import Probe, probe_folds

MEASURES = ("fisher", "silhouette", "probe")
RESAMPLE_BATCH = 50  # permutations processed together; bounds the (batch x synsets x rows) temporaries


@dataclass(frozen=True)
class Design:
    """Who is who in the analysis sample."""

    codes: np.ndarray  # (n,) synset index of each row
    units: np.ndarray  # (n,) unit index of each row, 0 .. U-1
    unit_codes: np.ndarray  # (U,) synset index of each unit
    n_synsets: int

    @classmethod
    def of(cls, codes: np.ndarray, units: np.ndarray, n_synsets: int | None = None) -> Design:
        """Renumber ``units`` 0 .. U-1 and check that each unit lies in one synset."""
        _, units = np.unique(units, return_inverse=True)
        unit_codes = np.zeros(units.max() + 1, dtype=np.int64)
        unit_codes[units] = codes
        if (unit_codes[units] != codes).any():
            raise ValueError("a unit spans two synsets")
        k = int(codes.max()) + 1 if n_synsets is None else n_synsets
        return cls(np.asarray(codes), units, unit_codes, k)

    @property
    def n_units(self) -> int:
        return len(self.unit_codes)

    def units_per_synset(self) -> np.ndarray:
        return np.bincount(self.unit_codes, minlength=self.n_synsets)

    def unit_sums(self, values: np.ndarray) -> np.ndarray:
        """(U, ...) sums of ``values`` (n, ...) over each unit's rows."""
        out = np.zeros((self.n_units, *values.shape[1:]))
        np.add.at(out, self.units, values)
        return out

    def unit_means(self, values: np.ndarray) -> np.ndarray:
        sizes = np.bincount(self.units, minlength=self.n_units).astype(np.float64)
        return self.unit_sums(values) / sizes.reshape(-1, *[1] * (values.ndim - 1))


# ---------------------------------------------------------------- permutations over units


def block_permutations(unit_labels: np.ndarray, blocks: np.ndarray, count: int, rng) -> np.ndarray:
    """(count, U) relabellings of the units: each permutes the labels among the units of one block."""
    order = np.argsort(blocks, kind="stable")
    shuffled = np.argsort(blocks[None, :] + rng.random((count, len(blocks))), axis=1)  # random order inside blocks
    labels = np.empty((count, len(blocks)), dtype=unit_labels.dtype)
    labels[:, order] = unit_labels[shuffled]
    return labels


def permutation_p(
    observed: float, null: np.ndarray, observed_tie: float = 0.0, null_tie: np.ndarray | None = None
) -> float:
    """One-sided permutation p-value, (1 + at least as large) / (1 + permutations); NaN if undefined.

    ``null_tie``, continuous, breaks ties of a discrete statistic (probe accuracy): null p-values come out uniform.
    """
    tie = np.zeros(len(null)) if null_tie is None else null_tie
    defined = ~np.isnan(null)
    null, tie = null[defined], tie[defined]
    if np.isnan(observed) or len(null) == 0:
        return float("nan")
    tolerance = 1e-9 * abs(observed)
    as_large = (null > observed + tolerance) | ((np.abs(null - observed) <= tolerance) & (tie >= observed_tie))
    return float((1 + np.count_nonzero(as_large)) / (1 + len(null)))


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
    estimates: dict[str, float]
    p_values: dict[str, float]
    chance: float
    probe_folds: int  # 0 when the probe is undefined
    permutations_within: str  # what the permutations were restricted to


def scale_free_tests(
    z: np.ndarray, x: np.ndarray, design: Design, permutations: int, n_folds: int, dims: int, seed: int
) -> LayerTests:
    """Fisher ratio and cosine silhouette of ``z`` (n, d) (the centred, reduced sample), the probe on ``x``
    (n, channels) (the raw sample), and their permutation p-values over units.

    The same relabellings (from ``seed``) serve every measure and every layer of a run.
    """
    k, d, n = design.n_synsets, z.shape[1], len(z)
    unit = unit_vectors(z)
    probe = Probe.build(x, design, probe_folds(design, n_folds, seed), dims)
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
        }, margins.mean(axis=1)

    observed, observed_margin = statistics(design.unit_codes[None, :])
    estimates = {m: float(observed[m][0]) for m in MEASURES}
    blocks = probe.fold_of_unit if probe else np.zeros(design.n_units, dtype=np.int64)
    rng = np.random.default_rng(seed)
    null = {m: [] for m in (*MEASURES, "margin")}
    for start in range(0, permutations, RESAMPLE_BATCH):
        batch = block_permutations(design.unit_codes, blocks, min(RESAMPLE_BATCH, permutations - start), rng)
        values, margins = statistics(batch)
        for m in MEASURES:
            null[m].append(values[m])
        null["margin"].append(margins)
    null = {m: np.concatenate(v) if v else np.zeros(0) for m, v in null.items()}
    p_values = {m: permutation_p(estimates[m], null[m]) for m in MEASURES if m != "probe"}
    p_values["probe"] = permutation_p(estimates["probe"], null["probe"], float(observed_margin[0]), null["margin"])
    counts = np.bincount(design.codes, minlength=k)
    return LayerTests(
        estimates,
        p_values,
        chance=float(counts.max() / n),
        probe_folds=len(probe.folds) if probe else 0,
        permutations_within="cross-validation folds" if probe else "all units",
    )


# ---------------------------------------------------------------- per-channel selectivity on unit means

EXACT_BELOW = 8  # units on the smaller side under which the Mann-Whitney p-value is exact (scipy's rule)


def channel_selectivity(x: np.ndarray, design: Design) -> dict[str, np.ndarray]:
    """One-sided one-vs-rest tests on unit means for every (synset, channel), each (K, C).

    ``p_value``: Mann-Whitney U, the synset's unit means greater than the
    other units' (scipy; exact below EXACT_BELOW units on a side, else normal
    with tie and continuity corrections); NaN where a channel's unit means are
    all equal. ``auroc``: U / (n_synset n_rest) on unit means. ``d_prime``:
    difference of the unit means' means over their pooled standard deviation,
    NaN where a side has fewer than two units.
    """
    means = design.unit_means(x)
    constant = np.ptp(means, axis=0) == 0
    k, channels = design.n_synsets, x.shape[1]
    out = {key: np.full((k, channels), np.nan) for key in ("auroc", "d_prime", "p_value")}
    for j in range(k):
        inside, outside = means[design.unit_codes == j], means[design.unit_codes != j]
        if len(inside) == 0 or len(outside) == 0:
            continue
        method = "exact" if min(len(inside), len(outside)) < EXACT_BELOW else "asymptotic"
        test = sps.mannwhitneyu(inside, outside, alternative="greater", axis=0, method=method)
        out["p_value"][j] = np.where(constant, np.nan, test.pvalue)
        out["auroc"][j] = test.statistic / (len(inside) * len(outside))
        if len(inside) > 1 and len(outside) > 1:
            pooled = np.sqrt((inside.var(axis=0, ddof=1) + outside.var(axis=0, ddof=1)) / 2)
            with np.errstate(divide="ignore", invalid="ignore"):
                out["d_prime"][j] = np.where(pooled > 0, (inside.mean(axis=0) - outside.mean(axis=0)) / pooled, np.nan)
    return out


FDR_METHODS = ("bh", "by")


def q_values(p_values: np.ndarray, method: str = "bh") -> np.ndarray:
    """Benjamini-Hochberg (or -Yekutieli) adjusted p-values over every non-NaN entry: one family."""
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    if tested.any():
        q[tested] = sps.false_discovery_control(p[tested], method=method)
    return q
