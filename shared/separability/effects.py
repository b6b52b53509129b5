"""How large a layer's separation is, beside how significant: summaries of each measure's permutation null, and
family-wise p-values over layers by Westfall and Young's max-T on the relabellings every layer shares
(docs/methods.md)."""

from __future__ import annotations

import numpy as np


def null_summary(observed: float, null: np.ndarray) -> dict[str, float]:
    """The null's mean and 95th percentile, and the standardised effect (observed - null mean) / null SD; NaN
    without a null (no permutations, or none could move a label) or where the null does not vary."""
    null = np.asarray(null, dtype=np.float64)
    null = null[~np.isnan(null)]
    if len(null) == 0:
        return {"null_mean": np.nan, "null_p95": np.nan, "effect": np.nan}
    mean, sd = float(null.mean()), float(null.std(ddof=1)) if len(null) > 1 else 0.0
    return {
        "null_mean": mean,
        "null_p95": float(np.quantile(null, 0.95)),
        "effect": (observed - mean) / sd if sd > 0 else np.nan,
    }


def max_t_p(observed: np.ndarray, nulls: np.ndarray, p_values: np.ndarray) -> np.ndarray:
    """Westfall-Young single-step max-T adjusted p-values (L,) of L layers, from observed statistics (L,) and their
    nulls (L, R) under the same R relabellings.

    Each layer's statistic is standardised by its own null mean and SD, so that no layer dominates the maximum by
    its scale; p_fwer = (1 + #{r: max over layers of the standardised null >= the layer's}) / (1 + R), at least the
    layer's own p. Layers without a usable null (NaN) take no part and get NaN.
    """
    observed, nulls = np.asarray(observed, dtype=np.float64), np.asarray(nulls, dtype=np.float64)
    out = np.full(len(observed), np.nan)
    if nulls.ndim != 2 or nulls.shape[1] == 0:
        return out
    defined = ~np.isnan(observed) & ~np.isnan(nulls).any(axis=1)
    sd = np.zeros(len(observed))
    sd[defined] = nulls[defined].std(axis=1, ddof=1) if nulls.shape[1] > 1 else 0.0
    usable = defined & (sd > 0)
    if not usable.any():
        return out
    mean = nulls[usable].mean(axis=1)
    standard = (nulls[usable] - mean[:, None]) / sd[usable, None]
    t_observed = (observed[usable] - mean) / sd[usable]
    largest = standard.max(axis=0)  # (R,)
    tolerance = 1e-9 * np.maximum(1.0, np.abs(t_observed))
    exceed = (largest[None, :] >= (t_observed - tolerance)[:, None]).sum(axis=1)
    out[usable] = np.maximum((1 + exceed) / (1 + nulls.shape[1]), p_values[usable])
    return out
