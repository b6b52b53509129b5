"""Do the channels that prefer a synset on generated images prefer it on photos?

Per source, each (synset, channel) is tested one-vs-rest on unit means: the synset's units against the other
units (one-sided Mann-Whitney U, normal approximation with tie and continuity corrections, as scipy's
``mannwhitneyu(method="asymptotic")``). One ranking per channel serves every synset, since each one-vs-rest split
cuts the same pooled sample. A channel is *selective* for a synset on a source where its Benjamini-Hochberg
q-value, over that layer's synsets and channels on that source, is below alpha. These p-values only choose the
sets; none is printed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


def unit_means(x: np.ndarray, units: np.ndarray, n_units: int) -> np.ndarray:
    if n_units == len(units) and (units == np.arange(n_units)).all():  # each row its own unit, in order
        return x
    from scipy.sparse import csr_matrix

    members = csr_matrix((np.ones(len(units)), (units, np.arange(len(units)))), shape=(n_units, len(units)))
    return (members @ x) / np.bincount(units, minlength=n_units)[:, None]


def tied_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) down each column, and each column's tie term sum(t^3 - t) over groups of ties.

    Ranked in float32 (what stores hold; twice as fast to sort): unit means that differ by less than a float32
    step rank as ties.
    """
    columns = np.ascontiguousarray(values.T, dtype=np.float32)
    c, n = columns.shape
    order = np.argsort(columns, axis=1)
    ordered = np.take_along_axis(columns, order, axis=1)
    new_group = np.empty(ordered.shape, dtype=bool)
    new_group[:, 0] = True
    np.not_equal(ordered[:, 1:], ordered[:, :-1], out=new_group[:, 1:])
    group = (np.cumsum(new_group.ravel()) - 1).reshape(c, n)  # numbered over all columns in turn
    starts = np.flatnonzero(new_group)  # flat position of each group's first member
    sizes = np.diff(np.r_[starts, c * n])
    average = starts % n + (sizes + 1) / 2
    ranks = np.empty((c, n))
    np.put_along_axis(ranks, order, average[group], axis=1)
    ties = np.bincount(starts // n, weights=sizes.astype(np.float64) ** 3 - sizes, minlength=c)
    return ranks.T, ties


@dataclass
class Selectivity:
    auroc: np.ndarray  # (K, C) P(a unit of the synset > a unit of the rest), ties counted half
    p_value: np.ndarray  # (K, C) one-sided, NaN for a constant channel or a synset without units on a side
    selective: np.ndarray  # (K, C) bool, q < alpha


def selectivity(x: np.ndarray, units: np.ndarray, unit_codes: np.ndarray, n_synsets: int, alpha: float):
    means = unit_means(x, units, len(unit_codes))
    n = len(means)
    ranks, ties = tied_ranks(means)
    onehot = np.eye(n_synsets)[unit_codes]  # (U, K)
    n_in = onehot.sum(axis=0)[:, None]
    n_out = n - n_in
    u = onehot.T @ ranks - n_in * (n_in + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        auroc = u / (n_in * n_out)
        variance = n_in * n_out / 12 * ((n + 1) - ties[None, :] / (n * (n - 1)))
        z = (u - n_in * n_out / 2 - 0.5) / np.sqrt(variance)
    p = np.where((variance > 0) & (n_in > 0) & (n_out > 0), sps.norm.sf(z), np.nan)
    tested = ~np.isnan(p)
    q = np.full(p.shape, np.nan)
    if tested.any():
        q[tested] = sps.false_discovery_control(p[tested], method="bh")
    return Selectivity(auroc, p, np.nan_to_num(q, nan=1.0) < alpha)


def overlap(generated: np.ndarray, photos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per synset: Jaccard index of the two selective sets (NaN where both are empty), and its expectation for
    two random sets of those sizes among the layer's channels."""
    a, b = generated.sum(axis=1).astype(float), photos.sum(axis=1).astype(float)
    both = (generated & photos).sum(axis=1)
    channels = generated.shape[1]
    expected = a * b / channels
    with np.errstate(divide="ignore", invalid="ignore"):
        jaccard = np.where(a + b > 0, both / (a + b - both), np.nan)
        chance = np.where(a + b > 0, expected / (a + b - expected), np.nan)
    return jaccard, chance


def photo_preference(generated: np.ndarray, photo_auroc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per synset: the mean photo AUROC (synset vs other photos) of the channels selective for it on generated
    images, and of the other channels. 0.5: no preference on photos."""
    with np.errstate(invalid="ignore"):
        chosen = np.where(generated, photo_auroc, np.nan)
        rest = np.where(generated, np.nan, photo_auroc)
        return nanmean_rows(chosen), nanmean_rows(rest)


def nanmean_rows(values: np.ndarray) -> np.ndarray:
    counts = (~np.isnan(values)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.nansum(values, axis=1) / counts, np.nan)
