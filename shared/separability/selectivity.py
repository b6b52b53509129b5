"""Per-channel concept selectivity on unit means, within blocks, and its false-discovery control
(docs/methods.md)."""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from synthprobe.separability.design import Design, block_means

EXACT_BELOW = 8  # units on the smaller side under which the Mann-Whitney p-value is exact (scipy's rule)
FDR_METHODS = ("bh", "by")


def channel_selectivity(x: np.ndarray, design: Design) -> dict[str, np.ndarray]:
    """One-sided one-vs-rest tests on unit means for every (synset, channel), each (K, C).

    ``p_value``: the synset's unit means greater than the other units' of the same block. With one block,
    Mann-Whitney U (scipy; exact below EXACT_BELOW units on a side, else normal with tie and continuity
    corrections); with several, van Elteren's stratified rank-sum test (each block's U weighted by 1 / (N_b + 1),
    normal approximation with tie correction). NaN where a channel's unit means are all equal or no block holds
    the synset and another. ``auroc``: the chance that a unit of the synset beats another unit of its block
    (sum of the blocks' U over sum of n_b m_b). ``d_prime``: on unit means less their block's mean, the
    difference of the two sides' means over their pooled standard deviation, NaN where a side has fewer than two
    units.
    """
    means = design.unit_means(x)
    ranked = [ranks_with_ties(means[design.unit_blocks == b]) for b in range(design.n_blocks)]
    u_sum, pairs, z = van_elteren(means, design, ranked)
    if design.n_blocks == 1:
        p = mann_whitney_p(means, design, *ranked[0])
    else:
        p = sps.norm.sf(z)
    untestable = (np.ptp(means, axis=0)[None, :] == 0) | (pairs[:, None] == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        auroc = u_sum / pairs[:, None]
    return {
        "auroc": np.where(pairs[:, None] > 0, auroc, np.nan),
        "d_prime": d_prime(means - block_means(means, design.unit_blocks), design),
        "p_value": np.where(untestable, np.nan, p),
    }


def van_elteren(
    means: np.ndarray, design: Design, ranked: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (synset, channel): the blocks' Mann-Whitney U summed (K, C), the pairs they count (K,), and van
    Elteren's standardised statistic (K, C) (NaN where its variance is zero); ``ranked``: each block's
    ``ranks_with_ties``."""
    k, channels = design.n_synsets, means.shape[1]
    u_sum, weighted, variance = np.zeros((k, channels)), np.zeros((k, channels)), np.zeros((k, channels))
    pairs = np.zeros(k)
    for b in range(design.n_blocks):
        members = design.unit_blocks == b
        size = int(members.sum())
        if size < 2:
            continue
        ranks, ties = ranked[b]
        onehot = (design.unit_codes[members][None, :] == np.arange(k)[:, None]).astype(np.float64)
        n = onehot.sum(axis=1)
        block_pairs = n * (size - n)
        u = onehot @ ranks - (n * (n + 1) / 2)[:, None]
        u_var = block_pairs[:, None] / 12 * ((size + 1) - ties[None, :] / (size * (size - 1)))
        u_sum += u
        pairs += block_pairs
        weighted += (u - block_pairs[:, None] / 2) / (size + 1)
        variance += u_var / (size + 1) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(variance > 0, weighted / np.sqrt(variance), np.nan)
    return u_sum, pairs, z


def mann_whitney_p(means: np.ndarray, design: Design, ranks: np.ndarray, ties: np.ndarray) -> np.ndarray:
    """(K, C) one-sided Mann-Whitney p-values of each synset's unit means against the rest's, as scipy's
    ``mannwhitneyu(alternative="greater")`` gives them: exact where a side has fewer than EXACT_BELOW units, else
    the normal approximation with tie and continuity corrections, here for every channel from one ranking (``ranks``
    and ``ties`` of ``ranks_with_ties``)."""
    size = len(means)
    onehot = (design.unit_codes[None, :] == np.arange(design.n_synsets)[:, None]).astype(np.float64)
    n = onehot.sum(axis=1)[:, None]
    m = size - n
    u = onehot @ ranks - n * (n + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.sqrt(n * m / 12 * ((size + 1) - ties[None, :] / (size * (size - 1))))
        p = sps.norm.sf((u - n * m / 2 - 0.5) / sd)
    for j in np.nonzero((np.minimum(n, m)[:, 0] < EXACT_BELOW) & (n[:, 0] > 0) & (m[:, 0] > 0))[0]:
        inside, outside = means[design.unit_codes == j], means[design.unit_codes != j]
        p[j] = sps.mannwhitneyu(inside, outside, alternative="greater", axis=0, method="exact").pvalue
    p[(n[:, 0] == 0) | (m[:, 0] == 0)] = np.nan
    return p


def ranks_with_ties(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, C) average ranks (from 1, as ``scipy.stats.rankdata``) of each column of ``values`` and (C,) the sum over
    its tie groups of t^3 - t, from one sort (three ``rankdata`` calls sort three times), of the transposed values so
    that every pass runs along contiguous memory."""
    columns = np.ascontiguousarray(values.T)
    n = columns.shape[1]
    order = np.argsort(columns, axis=1)
    ordered = np.take_along_axis(columns, order, axis=1)
    position = np.arange(n)
    starts = np.ones(columns.shape, dtype=bool)  # each sorted position that opens a tie group
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(columns.shape, dtype=bool)  # ... and each that closes one
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, position, n)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(columns.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=1)
    size = last - first + 1
    return ranks.T, (size**2 - 1).sum(axis=1)  # each of a group's t members adds t^2 - 1


def d_prime(means: np.ndarray, design: Design) -> np.ndarray:
    """(K, C) difference of a synset's and the rest's unit means over their pooled standard deviation."""
    out = np.full((design.n_synsets, means.shape[1]), np.nan)
    for j in range(design.n_synsets):
        inside, outside = means[design.unit_codes == j], means[design.unit_codes != j]
        if len(inside) > 1 and len(outside) > 1:
            pooled = np.sqrt((inside.var(axis=0, ddof=1) + outside.var(axis=0, ddof=1)) / 2)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[j] = np.where(pooled > 0, (inside.mean(axis=0) - outside.mean(axis=0)) / pooled, np.nan)
    return out


def q_values(p_values: np.ndarray, method: str = "bh") -> np.ndarray:
    """Benjamini-Hochberg (or -Yekutieli) adjusted p-values over every non-NaN entry: one family."""
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    if tested.any():
        q[tested] = sps.false_discovery_control(p[tested], method=method)
    return q
