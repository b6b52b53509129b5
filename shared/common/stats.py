"""Statistics shared by the analyses: intervals on unit means.

The interval functions take one value per experimental unit (a prompt's mean
confidence, say), never raw images: images of one prompt are not independent.
Their coverage on simulated prompt-level data is measured in
tests/bias_report/test_stats.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

NAN = float("nan")


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided interval (NaN where undefined) and, for a test, its p-value."""

    value: float
    low: float = NAN
    high: float = NAN
    p_value: float = NAN


def _sample(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def mean_interval(values, level: float = 0.95) -> Estimate:
    """Mean with a Student t-interval (df = n - 1); no interval below two values."""
    x = _sample(values)
    if len(x) == 0:
        return Estimate(NAN)
    mean = float(x.mean())
    if len(x) < 2:
        return Estimate(mean)
    half = stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return Estimate(mean, mean - half, mean + half)


def welch_df(a: float, b: float, n_a: int, n_b: int) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of two variance terms ``a`` and ``b``."""
    return (a + b) ** 2 / (a**2 / (n_a - 1) + b**2 / (n_b - 1))


def welch_difference(x, y, level: float = 0.95) -> Estimate:
    """mean(x) - mean(y) with Welch's t-interval and two-sided p-value (scipy's ttest_ind, equal_var=False)."""
    x, y = _sample(x), _sample(y)
    if not (len(x) and len(y)):
        return Estimate(NAN)
    difference = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return Estimate(difference)
    a, b = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = np.sqrt(a + b)
    if se == 0:  # every unit mean identical in both groups: the difference is exact
        return Estimate(difference, difference, difference, float(difference == 0))
    df = welch_df(a, b, len(x), len(y))
    half = stats.t.ppf((1 + level) / 2, df) * se
    p = 2 * stats.t.sf(abs(difference) / se, df)
    return Estimate(difference, difference - half, difference + half, float(p))


def ratio_interval(x, y, level: float = 0.95) -> Estimate:
    """mean(x) / mean(y) with a delta-method t-interval on the log ratio (Welch df), exponentiated.

    The log ratio's variance is var(x)/(n_x mean(x)^2) + var(y)/(n_y mean(y)^2);
    the interval is asymmetric around the ratio and never below zero. Needs
    positive means (confidences are softmax masses, so they are).
    """
    x, y = _sample(x), _sample(y)
    if not (len(x) and len(y)):
        return Estimate(NAN)
    mean_x, mean_y = x.mean(), y.mean()
    if mean_x <= 0 or mean_y <= 0:
        return Estimate(float(mean_x / mean_y) if mean_y > 0 else NAN)
    ratio = float(mean_x / mean_y)
    if len(x) < 2 or len(y) < 2:
        return Estimate(ratio)
    a = x.var(ddof=1) / (len(x) * mean_x**2)
    b = y.var(ddof=1) / (len(y) * mean_y**2)
    se = np.sqrt(a + b)
    if se == 0:
        return Estimate(ratio, ratio, ratio)
    half = stats.t.ppf((1 + level) / 2, welch_df(a, b, len(x), len(y))) * se
    return Estimate(ratio, float(ratio * np.exp(-half)), float(ratio * np.exp(half)))


def clustered_proportion(flagged, sizes, level: float = 0.95) -> Estimate:
    """The share of flagged images, sum(flagged) / sum(sizes), over units of ``sizes`` images each
    ``flagged`` of which are flagged, with a Wilson interval on the design-effect sample size.

    Images of one unit are correlated, so the binomial variance p(1-p)/n is replaced
    by the units' ratio-estimator variance, which sets an effective sample size
    n_eff = p(1-p) / variance (at most n); Wilson's score interval on (p, n_eff) with
    Student's t (df = units - 1) in place of z stays inside 0..1 and keeps a width at
    p = 0. No interval below two units.
    """
    x, n = _sample(flagged), _sample(sizes)
    total = n.sum()
    if len(n) == 0 or total == 0:
        return Estimate(NAN)
    p = float(x.sum() / total)
    if len(n) < 2:
        return Estimate(p)
    variance = len(n) / (len(n) - 1) * ((x - p * n) ** 2).sum() / total**2
    return wilson_on_variance(p, variance, float(total), len(n) - 1, level)


def wilson_on_variance(
    p: float, variance: float, n: float, df: int, level: float = 0.95, at_most_n: bool = True
) -> Estimate:
    """Wilson's score interval for a proportion ``p`` of ``n`` images whose estimator has ``variance``: on the
    effective sample size p(1-p) / variance, with Student's t (``df``) in place of z. The effective size is at
    most n unless ``at_most_n`` is False (a stratified design can beat simple random sampling); n where the
    variance is 0 or p is 0 or 1."""
    if variance <= 0 or p in (0.0, 1.0):
        n_eff = n
    else:
        n_eff = max(p * (1 - p) / variance, 1.0)
        n_eff = min(n, n_eff) if at_most_n else n_eff
    q = stats.t.ppf((1 + level) / 2, df)
    c = q * q / n_eff
    centre = (p + c / 2) / (1 + c)
    half = q * np.sqrt(p * (1 - p) / n_eff + c / (4 * n_eff)) / (1 + c)
    return Estimate(p, max(0.0, float(centre - half)), min(1.0, float(centre + half)))


# The linear probes of separability and transfer: ridge alpha on standardised channels (RidgeClassifier's
# default), and principal axes with a variance below this fraction of the largest are round-off.
RIDGE_ALPHA = 1.0
NULL_DIRECTION_RTOL = 1e-9
PERMUTATION_TOLERANCE = 1e-9  # relative: statistics equal up to round-off count as ties


def permutation_p(
    observed: float,
    null: np.ndarray,
    observed_tie: float = 0.0,
    null_tie: np.ndarray | None = None,
    exact: bool = False,
    atol: float = 0.0,
) -> float:
    """One-sided permutation p-value: (1 + relabellings at least as large) / (1 + relabellings), or with ``exact``
    (``null`` holds every relabelling, the observed one among them) their share; NaN if undefined.

    ``null_tie`` (continuous) breaks the ties of a discrete statistic such as an accuracy, so that null p-values are
    uniform rather than conservative. ``atol``: the absolute round-off of a statistic computed in float32, under
    which a relabelling's value counts as a tie.
    """
    defined = ~np.isnan(null)
    if np.isnan(observed) or not defined.any():
        return float("nan")
    tie = np.zeros(len(null)) if null_tie is None else null_tie
    null, tie = null[defined], tie[defined]
    tolerance = max(PERMUTATION_TOLERANCE * abs(observed), atol)
    as_large = np.count_nonzero(
        (null > observed + tolerance) | ((np.abs(null - observed) <= tolerance) & (tie >= observed_tie - tolerance))
    )
    return float(as_large / len(null) if exact else (1 + as_large) / (1 + len(null)))
