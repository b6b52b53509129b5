"""transfer's kernels against scipy and scikit-learn where they have the method."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from synthprobe.transfer.channels import selectivity, tied_ranks
from synthprobe.transfer.geometry import agreement
from synthprobe.transfer.permutations import synset_relabellings
from synthprobe.transfer.probes import Ridge, principal_axes


def test_tied_ranks_match_scipy():
    values = np.random.default_rng(0).integers(0, 5, size=(40, 7)).astype(float)  # many ties
    ranks, ties = tied_ranks(values)
    np.testing.assert_allclose(ranks, sps.rankdata(values, axis=0))
    for column in range(values.shape[1]):
        _, sizes = np.unique(values[:, column], return_counts=True)
        assert ties[column] == pytest.approx((sizes**3 - sizes).sum())


def test_selectivity_matches_scipy_mannwhitneyu_on_unit_means():
    rng = np.random.default_rng(1)
    unit_codes = np.repeat(np.arange(3), 9)
    units = np.repeat(np.arange(27), 2)
    # Small integers: many tied unit means, each exact in float32 and float64.
    x = rng.integers(-3, 4, size=(54, 5)) + unit_codes[units][:, None] * np.array([0, 1, 3, 0, 0]).astype(float)
    x[:, 3] = 0.0  # a dead channel: untested
    result = selectivity(x, units, unit_codes, 3, alpha=0.05)
    means = x.reshape(27, 2, 5).mean(axis=1)
    for k in range(3):
        inside, outside = means[unit_codes == k], means[unit_codes != k]
        test = sps.mannwhitneyu(inside, outside, alternative="greater", axis=0, method="asymptotic")
        tested = [0, 1, 2, 4]
        np.testing.assert_allclose(result.p_value[k, tested], test.pvalue[tested], rtol=1e-10)
        np.testing.assert_allclose(result.auroc[k], test.statistic / (9 * 18))
    assert np.isnan(result.p_value[:, 3]).all() and not result.selective[:, 3].any()
    assert result.selective[2, 2] and not result.selective[:, 0].any()


def test_ridge_matches_scikit_learn():
    from sklearn.linear_model import RidgeClassifier

    rng = np.random.default_rng(2)
    z, codes = rng.normal(size=(60, 6)), np.repeat(np.arange(3), 20)
    ours = Ridge.fit(z, codes, 3).scores(z)
    theirs = RidgeClassifier(alpha=1.0).fit(z, codes).decision_function(z)
    np.testing.assert_allclose(2 * ours - 1, theirs, atol=1e-10)  # scikit-learn's targets are -1/1


@pytest.mark.parametrize("shape", [(30, 200), (200, 30), (400, 600)])
def test_principal_axes_span_the_top_components(shape):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(shape[0], 5)) @ rng.normal(size=(5, shape[1])) * 10 + rng.normal(size=shape) * 0.1
    axes = principal_axes(a - a.mean(axis=0), 5, seed=0)
    top = np.linalg.svd(a - a.mean(axis=0), full_matrices=False)[2][:5].T
    np.testing.assert_allclose(np.linalg.svd(axes.T @ top, compute_uv=False), 1.0, atol=1e-6)


def test_cka_and_rsa_match_their_definitions():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(7, 20)), rng.normal(size=(7, 30))
    result = agreement(a, b, permutations=0, rng=rng)
    x, y = a - a.mean(axis=0), b - b.mean(axis=0)
    cka = np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    assert result.cka == pytest.approx(cka)
    upper = np.triu_indices(7, 1)
    distance = lambda m: np.linalg.norm(m[:, None] - m[None], axis=-1)[upper]
    assert result.rsa == pytest.approx(sps.spearmanr(distance(a), distance(b)).statistic)


def test_identical_arrangements_get_the_smallest_exact_p():
    a = np.random.default_rng(5).normal(size=(5, 12))
    result = agreement(a, 2 * a + 1, permutations=1000, rng=np.random.default_rng(0))
    assert result.exact and result.permutations == 120
    assert result.cka == pytest.approx(1.0) and result.cka_p == pytest.approx(1 / 120)
    assert result.rsa == pytest.approx(1.0) and result.rsa_p == pytest.approx(1 / 120)
    orders, exact = synset_relabellings(8, 1000, np.random.default_rng(0))
    assert not exact and orders.shape == (1000, 8)
