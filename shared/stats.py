"""Statistics shared by the analyses: bootstrap intervals and multiple-testing correction."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def bootstrap_ci(samples: Sequence[np.ndarray], statistic: Callable[..., float], n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Percentile bootstrap of ``statistic(*samples)``, resampling each sample independently.

    Returns (estimate, low, high); the interval is (nan, nan) when a sample is
    too small to resample (fewer than two values) or ``n_boot`` is 0.
    """
    samples = [np.asarray(s, dtype=np.float64) for s in samples]
    estimate = float(statistic(*samples)) if all(len(s) for s in samples) else float("nan")
    if n_boot <= 0 or any(len(s) < 2 for s in samples):
        return estimate, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        draws[b] = statistic(*(s[rng.integers(0, len(s), len(s))] for s in samples))
    alpha = (1 - level) / 2
    low, high = np.nanquantile(draws, [alpha, 1 - alpha])
    return estimate, float(low), float(high)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), same shape as the input; NaN stays NaN."""
    p = np.asarray(p_values, dtype=np.float64)
    flat = p.ravel()
    q = np.full_like(flat, np.nan)
    valid = ~np.isnan(flat)
    m = int(valid.sum())
    if m:
        order = np.argsort(flat[valid])
        ranked = flat[valid][order] * m / np.arange(1, m + 1)
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(ranked, 1.0)
        q[valid] = adjusted
    return q.reshape(p.shape)
