"""The linear probes of a transfer analysis, on one layer's shared axes.

Both sources are standardised with one pooled scale per channel (so a channel weighs the same in both) after each
is centred on its own mean, and projected on the top ``dims`` principal axes of the pooled centred rows (no labels
are used to find them) plus, when the sources' means differ outside those axes, the direction of that difference:
the projection keeps the whole offset between the sources. A ridge classifier (alpha 1, intercept, one-hot
targets) is fitted on those scores, as separability's probe does on its own axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthprobe.common.stats import NULL_DIRECTION_RTOL, RIDGE_ALPHA, permutation_p
from synthprobe.transfer.permutations import synset_relabellings


@dataclass
class LayerScores:
    """Rows of both sources on the layer's shared axes."""

    generated: np.ndarray  # (n_g, d) centred on the generated mean
    photos: np.ndarray  # (n_p, d) centred on the photo mean
    offset: np.ndarray  # (d,) photo mean minus generated mean on the axes
    scale: np.ndarray  # (C,) the pooled standard deviation of each channel (1 where constant)

    @property
    def photos_uncentred(self) -> np.ndarray:
        """Photo rows centred on the generated mean: what a probe of generated images sees without centring."""
        return self.photos + self.offset


def layer_scores(x_generated: np.ndarray, x_photos: np.ndarray, dims: int, seed: int) -> LayerScores:
    mean_g, mean_p = x_generated.mean(axis=0), x_photos.mean(axis=0)
    centred = np.vstack([x_generated - mean_g, x_photos - mean_p])
    scale = centred.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    centred /= scale
    axes = principal_axes(centred, dims, seed)
    offset = (mean_p - mean_g) / scale
    residual = offset - axes @ (axes.T @ offset)
    if np.linalg.norm(residual) > 1e-9 * max(np.linalg.norm(offset), 1e-300):
        axes = np.hstack([axes, (residual / np.linalg.norm(residual))[:, None]])
    scores = centred @ axes
    n_g = len(x_generated)
    return LayerScores(scores[:n_g], scores[n_g:], offset @ axes, scale)


def principal_axes(a: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """(C, k) top right singular vectors of ``a`` (k <= dims), round-off directions dropped.

    Exact from the smaller Gram matrix for narrow data, else a randomized SVD (Halko et al.; scikit-learn's).
    """
    n, c = a.shape
    if min(n, c) <= 4 * dims:
        from scipy.linalg import eigh

        by_rows = n <= c
        gram = a @ a.T if by_rows else a.T @ a
        k = min(dims, len(gram))
        values, vectors = eigh(gram, subset_by_index=[len(gram) - k, len(gram) - 1])
        values, vectors = values[::-1], vectors[:, ::-1]
        keep = values > NULL_DIRECTION_RTOL * max(values[0], 0.0)
        values, vectors = values[keep], vectors[:, keep]
        return (a.T @ vectors) / np.sqrt(values) if by_rows else vectors
    from sklearn.utils.extmath import randomized_svd

    # float32 halves the cost of the range finder; the axes need no more precision than the stored values have.
    _, singular, vt = randomized_svd(a.astype(np.float32), dims, n_oversamples=10, n_iter=3, random_state=seed)
    keep = singular**2 > NULL_DIRECTION_RTOL * singular[0] ** 2
    return vt[keep].T.astype(np.float64)


# ---------------------------------------------------------------- ridge


@dataclass
class Ridge:
    weights: np.ndarray  # (d, K)
    intercept: np.ndarray  # (K,)

    @classmethod
    def fit(cls, z: np.ndarray, codes: np.ndarray, n_classes: int) -> Ridge:
        onehot = np.eye(n_classes)[codes]
        mean_z, mean_y = z.mean(axis=0), onehot.mean(axis=0)
        centred = z - mean_z
        gram = centred.T @ centred + RIDGE_ALPHA * np.eye(z.shape[1])
        weights = np.linalg.solve(gram, centred.T @ (onehot - mean_y))
        return cls(weights, mean_y - mean_z @ weights)

    def scores(self, z: np.ndarray) -> np.ndarray:
        return z @ self.weights + self.intercept


def cross_validated_scores(z: np.ndarray, codes: np.ndarray, n_classes: int, folds) -> np.ndarray | None:
    """(n, K) out-of-fold ridge scores; None without folds."""
    if not folds:
        return None
    out = np.zeros((len(z), n_classes))
    for train, test in folds:
        out[test] = Ridge.fit(z[train], codes[train], n_classes).scores(z[test])
    return out


def accuracy(scores: np.ndarray | None, codes: np.ndarray) -> float:
    return float("nan") if scores is None else float(np.mean(scores.argmax(axis=1) == codes))


def balanced_accuracy(scores: np.ndarray | None, codes: np.ndarray) -> float:
    """Mean recall over the classes present: 0.5 for two classes a probe cannot tell apart, whatever their sizes."""
    if scores is None:
        return float("nan")
    hits = scores.argmax(axis=1) == codes
    return float(np.mean([hits[codes == c].mean() for c in np.unique(codes)]))


# ---------------------------------------------------------------- a fixed probe's accuracy and its permutation p


def fixed_probe_p(scores: np.ndarray, codes: np.ndarray, permutations: int, rng) -> float:
    """One-sided p that a probe fitted on the other source scores these rows better than chance.

    The probe's predictions are fixed; the null relabels the synsets of the scored rows (``permutations.py``):
    under it the probe's synsets are exchangeable, whether or not the scored rows cluster by synset. The accuracy
    under a relabelling is a sum over the confusion matrix; its ties are broken by the mean margin (the labelled
    synset's score minus the row's mean score). NaN without permutations.
    """
    if permutations == 0:
        return float("nan")
    n, k = scores.shape
    confusion = np.zeros((k, k))
    np.add.at(confusion, (codes, scores.argmax(axis=1)), 1.0)
    margins = np.zeros((k, k))
    np.add.at(margins, codes, scores - scores.mean(axis=1, keepdims=True))
    orders, exact = synset_relabellings(k, permutations, rng)
    synsets = np.arange(k)
    null_hits, null_margins = confusion[synsets, orders].sum(axis=1) / n, margins[synsets, orders].sum(axis=1) / n
    observed, observed_margin = np.trace(confusion) / n, np.trace(margins) / n
    return permutation_p(observed, null_hits, observed_margin, null_margins, exact=exact)
