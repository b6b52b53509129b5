"""The null of every transfer p-value: relabel the synsets of one source.

A relabelling moves a whole synset (all its units with it), so the unit structure of either source, and the
templates a balanced design crosses with every synset, stay as they are. With K! at most the number of
permutations asked for, every relabelling is enumerated (identity included; an exact p on a grid of 1/K!);
otherwise random relabellings are drawn and the observed order counts once more.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

TOLERANCE = 1e-9  # relative: statistics equal up to round-off count as ties


def synset_relabellings(k: int, permutations: int, rng) -> tuple[np.ndarray, bool]:
    """(R, K) orders (row r maps synset j to orders[r, j]), and whether they are all K! of them."""
    if math.factorial(k) <= permutations:
        return np.array(list(itertools.permutations(range(k)))), True
    return np.argsort(rng.random((permutations, k)), axis=1), False


def permutation_p(
    observed: float, null: np.ndarray, exact: bool, observed_tie: float = 0.0, null_tie: np.ndarray | None = None
) -> float:
    """One-sided: the share of relabellings whose statistic is at least the observed one; NaN if undefined.

    ``null_tie`` (continuous) breaks the ties of a discrete statistic such as an accuracy, so that null p-values are
    uniform rather than conservative.
    """
    defined = ~np.isnan(null)
    if np.isnan(observed) or not defined.any():
        return float("nan")
    tie = np.zeros(len(null)) if null_tie is None else null_tie
    null, tie = null[defined], tie[defined]
    tolerance = TOLERANCE * abs(observed)
    as_large = np.count_nonzero(
        (null > observed + tolerance) | ((np.abs(null - observed) <= tolerance) & (tie >= observed_tie - tolerance))
    )
    return float(as_large / len(null) if exact else (1 + as_large) / (1 + len(null)))
