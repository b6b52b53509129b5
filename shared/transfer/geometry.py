"""Do the synsets sit in the same arrangement in both sources? Linear CKA and the rank correlation of the
centroid-distance matrices (representational similarity), each with a Mantel permutation p.

Both are computed from the two (K, C) matrices of synset centroids (rows paired by synset, channels on one pooled
scale). The null relabels the synsets of the photo source: the whole synset moves, so the units within it stay
together (``permutations.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from synthprobe.common.stats import permutation_p
from synthprobe.transfer.permutations import synset_relabellings


@dataclass
class Agreement:
    cka: float
    cka_p: float
    rsa: float  # Spearman correlation of the centroid-distance matrices' upper triangles
    rsa_p: float
    permutations: int  # relabellings in the null (all K! when exact)
    exact: bool


def centred_gram(centroids: np.ndarray) -> np.ndarray:
    c = centroids - centroids.mean(axis=0)
    return c @ c.T


def cka_of(gram_a: np.ndarray, grams_b: np.ndarray) -> np.ndarray:
    """Linear CKA of one centred Gram matrix against a stack (R, K, K) of them."""
    cross = np.einsum("ij,rij->r", gram_a, grams_b)
    norm_a = np.sqrt((gram_a**2).sum())
    norm_b = np.sqrt((grams_b**2).sum(axis=(1, 2)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return cross / (norm_a * norm_b)


def distances_from_gram(gram: np.ndarray) -> np.ndarray:
    diagonal = np.diag(gram)
    return np.sqrt(np.maximum(diagonal[:, None] + diagonal[None, :] - 2 * gram, 0.0))


def agreement(centroids_g: np.ndarray, centroids_p: np.ndarray, permutations: int, rng) -> Agreement:
    k = len(centroids_g)
    gram_g, gram_p = centred_gram(centroids_g), centred_gram(centroids_p)
    upper = np.triu_indices(k, 1)
    # Spearman's rho is Pearson's on ranks; a relabelling permutes the photo distances, hence their ranks.
    ranks_g = standardised(sps.rankdata(distances_from_gram(gram_g)[upper]))
    ranks_p = np.zeros((k, k))
    ranks_p[upper] = standardised(sps.rankdata(distances_from_gram(gram_p)[upper]))
    ranks_p += ranks_p.T

    def statistics(orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cka = cka_of(gram_g, gram_p[orders[:, :, None], orders[:, None, :]])
        rows, columns = orders[:, upper[0]], orders[:, upper[1]]
        rsa = (ranks_p[rows, columns] @ ranks_g) / len(ranks_g) if k > 2 else np.full(len(orders), np.nan)
        return cka, rsa

    cka, rsa = (float(v[0]) for v in statistics(np.arange(k)[None, :]))
    if permutations == 0:
        return Agreement(cka, float("nan"), rsa, float("nan"), 0, False)
    orders, exact = synset_relabellings(k, permutations, rng)
    null_cka, null_rsa = statistics(orders)
    return Agreement(
        cka,
        permutation_p(cka, null_cka, exact=exact),
        rsa,
        permutation_p(rsa, null_rsa, exact=exact),
        len(orders),
        exact,
    )


def standardised(values: np.ndarray) -> np.ndarray:
    """Mean 0, standard deviation 1 (ddof 0), so that a mean of products is a correlation; zeros if constant."""
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)
