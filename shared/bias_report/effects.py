"""bias-report's effects with their tests and intervals (docs/methods.md, bias-report): context reliance by a
paired t-test where a class file pairs its object-only and mixed texts, by Welch's where not, and each group's
log ratio to chance with an interval on the log scale.

Every function takes unit means (one value per prompt unit), never images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from synthprobe.common.stats import NAN, Estimate, mean_interval, welch_difference

PAIRED, WELCH = "paired", "welch"


@dataclass(frozen=True)
class Reliance:
    """Context reliance (mixed − object-only) and the test that gave its interval and p-value."""

    estimate: Estimate
    test: str  # PAIRED or WELCH
    n_pairs: int | None  # complete pairs the paired test used; None for Welch


def paired_difference(x, y, level: float = 0.95) -> Estimate:
    """mean(x − y) over pairs with Student's t-interval on the differences (df = pairs − 1) and the two-sided
    p-value of no difference (scipy's ttest_rel)."""
    differences = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    estimate = mean_interval(differences, level)
    if len(differences) < 2:
        return estimate
    se = differences.std(ddof=1) / np.sqrt(len(differences))
    if se == 0:  # every pair differs by the same amount: the difference is exact
        return replace(estimate, p_value=float(estimate.value == 0))
    p = 2 * stats.t.sf(abs(estimate.value) / se, len(differences) - 1)
    return replace(estimate, p_value=float(p))


def matched_pairs(object_only: pd.DataFrame, mixed: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """(mixed, object-only) unit means of the complete pairs, in pair order; None when the units do not pair up
    one to one (a unit without a pair, or several units of one pair: image units) or fewer than 2 pairs are
    complete. The frames hold one line per unit with ``pair`` (NaN: none) and ``confidence``."""
    for units in (object_only, mixed):
        if units["pair"].isna().any() or units["pair"].duplicated().any():
            return None
    common = np.intersect1d(object_only["pair"], mixed["pair"])
    if len(common) < 2:
        return None
    return tuple(units.set_index("pair").loc[common, "confidence"].to_numpy() for units in (mixed, object_only))


def context_reliance(object_only: pd.DataFrame, mixed: pd.DataFrame, level: float) -> Reliance:
    """Paired where the units pair up (matched_pairs), else Welch on all units."""
    pairs = matched_pairs(object_only, mixed)
    if pairs is None:
        estimate = welch_difference(mixed["confidence"], object_only["confidence"], level)
        test, n_pairs = WELCH, None
    else:
        estimate, test, n_pairs = paired_difference(*pairs, level), PAIRED, len(pairs[0])
    return Reliance(estimate, test, n_pairs)


def log_ratio_interval(values, chance: float, level: float = 0.95) -> Estimate:
    """ln(mean / chance) with a delta-method t-interval on the log scale: half-width t(df = n − 1) · s / (√n ·
    mean). No interval below two values; NaN where the mean is not positive."""
    x = np.asarray(values, dtype=np.float64)
    if not len(x) or x.mean() <= 0:
        return Estimate(NAN)
    value = float(np.log(x.mean() / chance))
    if len(x) < 2:
        return Estimate(value)
    half = stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / (np.sqrt(len(x)) * x.mean())
    return Estimate(value, value - half, value + half)
