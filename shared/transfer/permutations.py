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


def synset_relabellings(k: int, permutations: int, rng) -> tuple[np.ndarray, bool]:
    """(R, K) orders (row r maps synset j to orders[r, j]), and whether they are all K! of them."""
    if math.factorial(k) <= permutations:
        return np.array(list(itertools.permutations(range(k)))), True
    return np.argsort(rng.random((permutations, k)), axis=1), False
