"""The linear probe: cross-validated ridge classification of synsets, for many labellings at once (docs/methods.md).

The channels are standardised and projected on the sample's top ``dims`` principal axes once per layer, over the whole
analysis sample. That uses no labels, so a permutation test of the probe stays exact, and it replaces the per-fold PCA
that cost most of an analysis (one eigendecomposition a layer instead of one a fold). In each fold a ridge classifier
with intercept is fitted on the training rows' scores; its out-of-fold scores are linear in the one-hot labels, so the
fold's operator is computed once and every relabelling costs one matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh

from synthprobe.common.stats import NULL_DIRECTION_RTOL, RIDGE_ALPHA


def principal_scores(x: np.ndarray, dims: int) -> np.ndarray:
    """(n, k) scores of ``x`` (n, channels) standardised over its rows (ddof 0; constant channels left at zero) on its
    top ``dims`` principal axes, axes of round-off variance dropped; not whitened.

    With every non-null axis kept, ridge on these scores equals ridge on the standardised channels, since the ridge
    penalty does not change under a rotation and the rows have no component along a null axis.
    """
    std = x.std(axis=0)
    values, scores, _ = principal_axes((x - x.mean(axis=0)) / np.where(std > 0, std, 1.0), dims)
    return scores[:, values > NULL_DIRECTION_RTOL * max(values[0], 0.0)] if len(values) else scores


def principal_axes(a: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The top ``dims`` principal axes of ``a`` (n, channels), already centred: their variances (sums of squares,
    descending, at least 0), the rows' (n, k) scores on them, and the total sum of squares.

    The eigenproblem is solved on the smaller Gram matrix (rows x rows or channels x channels), for the top
    eigenvalues only (LAPACK's bisection, evx: faster than the full spectrum for a few dozen of hundreds); exact and
    deterministic.
    """
    by_rows = len(a) <= a.shape[1]
    gram = a @ a.T if by_rows else a.T @ a
    size = len(gram)
    kept = min(dims, size)
    values, vectors = eigh(gram, subset_by_index=[size - kept, size - 1], driver="evx")
    values, vectors = np.maximum(values[::-1], 0.0), vectors[:, ::-1]
    return values, (vectors * np.sqrt(values) if by_rows else a @ vectors), float(np.trace(gram))  # a V = U S


@dataclass
class Probe:
    """Ridge classifiers (alpha RIDGE_ALPHA, intercept) on the rows' principal scores, one per fold.

    For one-hot labels Y of a fold's training rows, its out-of-fold scores are ``test_scores @ (centred' Y) +
    mean(Y)``, with ``centred`` the training rows' scores minus their mean ``m`` and ``test_scores`` the test rows'
    scores minus ``m``, times (centred' centred + alpha I)^-1. ``centred' Y`` is the per-synset sums of the training
    scores less each synset's training count times ``m``, and a fold's training sums are all rows' sums less its test
    rows': so every relabelling's predictions follow from per-synset sums of ``scores`` and of a column of ones, taken
    per fold.
    """

    folds: list[tuple[np.ndarray, np.ndarray]]  # (train rows, test rows)
    fold_of_unit: np.ndarray  # (U,) fold that tests each unit
    scores: np.ndarray  # (n, width) principal scores
    train_means: np.ndarray  # (folds, width) mean score of each fold's training rows
    test_columns: list[np.ndarray]  # per fold: (n_test, width + 1) test scores centred and solved, then ones; float32
    width: int  # the principal axes kept

    @classmethod
    def build(cls, x: np.ndarray, design, folds: list[tuple[np.ndarray, np.ndarray]], dims: int) -> Probe | None:
        """The probe of ``x`` (n, channels) on ``folds``; None without folds."""
        if not folds:
            return None
        scores = principal_scores(x, dims)
        fold_of_unit = np.zeros(design.n_units, dtype=np.int64)
        train_means, test_columns = [], []
        for f, (train, test) in enumerate(folds):
            fold_of_unit[design.units[test]] = f
            mean = scores[train].mean(axis=0)
            centred = scores[train] - mean
            gram = centred.T @ centred + RIDGE_ALPHA * np.eye(scores.shape[1])
            solved = np.linalg.solve(gram, (scores[test] - mean).T).T  # gram is symmetric
            train_means.append(mean)
            test_columns.append(np.hstack([solved, np.ones((len(test), 1))]).astype(np.float32))
        return cls(folds, fold_of_unit, scores, np.array(train_means), test_columns, scores.shape[1])

    def hits(self, test_sums: np.ndarray, total: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R, n) out-of-fold hits from per-synset sums of ``[scores, 1]`` over each fold's test rows (``test_sums``,
        (folds, R, K, width + 1)) and over all rows (``total``, (R, K, width + 1)) under ``labels`` (R, n), and (R, n)
        margins: the true
        synset's score minus the mean score (a continuous tie-breaker).

        A hit is scikit-learn's ``argmax == label`` (the first of tied synsets wins), computed as the own score
        above every other synset's (two fast passes over the scores instead of argmax's slow one per row), with
        argmax only where scores tie. Scores are float32: the relabellings' cost is these products.
        """
        hits = np.zeros(labels.shape, dtype=bool)
        margins = np.zeros(labels.shape)
        r, k = total.shape[:2]
        train_sums = total - test_sums
        counts = train_sums[..., -1:]
        n_train = np.array([len(train) for train, _ in self.folds]).reshape(-1, 1, 1, 1)
        means = self.train_means[:, None, None, :]
        weights = np.concatenate([train_sums[..., :-1] - counts * means, counts / n_train], axis=-1)
        weights = weights.reshape(len(self.folds), r * k, -1).astype(np.float32)
        for (_, test), fold_weights, columns in zip(self.folds, weights, self.test_columns):
            predicted = (fold_weights @ columns.T).reshape(r, k, -1)  # (R, K, n_test)
            flat = (np.arange(r)[:, None] * k + labels[:, test]) * len(test) + np.arange(len(test))
            own = predicted.reshape(-1)[flat]
            predicted.reshape(-1)[flat] = -np.inf
            others = predicted.max(axis=1)
            fold_hits = own > others
            tied = np.nonzero(own == others)  # the first synset reaching the top wins
            if len(tied[0]):
                predicted.reshape(-1)[flat[tied]] = own[tied]
                fold_hits[tied] = predicted[tied[0], :, tied[1]].argmax(axis=1) == labels[:, test][tied]
            hits[:, test] = fold_hits
            # The scores of a row sum to 1 over synsets (an intercept fits a constant exactly): their mean is 1/K.
            margins[:, test] = own - 1.0 / k
        return hits, margins
