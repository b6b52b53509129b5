"""separability's statistics against scikit-learn and scipy: scale-free measures, the probe, permuted
statistics, channel selectivity, q-values, the selective channels.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.separability import two_layer_signal_store
from scipy import stats as sps
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics import calinski_harabasz_score, roc_auc_score, silhouette_score
from sklearn.preprocessing import StandardScaler

from synthprobe.common.stats import RIDGE_ALPHA
from synthprobe.formats.activation_store import ActivationStore
from synthprobe.separability import analysis as S
from synthprobe.separability import measures as T
from synthprobe.separability.design import Design, block_permutations, probe_folds
from synthprobe.separability.probe import Probe
from synthprobe.separability.scan import reduce_sample
from synthprobe.separability.selectivity import channel_selectivity, q_values, ranks_with_ties


def sklearn_probe_hits(x, labels, folds, scale=True):
    """RidgeClassifier fitted on each training fold, as scikit-learn users would, on ``x`` standardised over the
    whole sample (``scale``; no labels used, as the probe does)."""
    features = StandardScaler().fit_transform(x) if scale else x
    hits = np.zeros(len(labels), dtype=bool)
    for train, test in folds:
        model = RidgeClassifier(alpha=RIDGE_ALPHA).fit(features[train], labels[train])
        hits[test] = model.predict(features[test]) == labels[test]
    return hits


@pytest.mark.parametrize("channels", [5, 300])  # narrower than --dims; wider than the rows (null directions)
def test_scale_free_measures_match_scikit_learn(channels):
    rng = np.random.default_rng(2)
    codes = np.repeat(np.arange(3), [8, 12, 10])
    units = np.arange(30) // 2  # two images per prompt
    x = rng.normal(size=(30, channels)) + codes[:, None] * 0.4 + 1.0
    z, explained = reduce_sample(x, 64)
    assert explained == pytest.approx(1.0)
    design = Design.of(codes, units)
    tests = T.scale_free_tests(z, x, design, permutations=0, n_folds=4, dims=64, seed=3)
    centred = x - x.mean(axis=0)
    assert tests.estimates["fisher"] == pytest.approx(calinski_harabasz_score(x, codes))
    assert tests.estimates["silhouette"] == pytest.approx(silhouette_score(centred, codes, metric="cosine"))
    probe = Probe.build(x, design, probe_folds(design, 4, 3), 64)
    for train, test in probe.folds:  # grouped: no prompt has images on both sides; stratified: every synset trains
        assert not set(units[train]) & set(units[test]) and set(codes[train]) == {0, 1, 2}
    assert tests.estimates["probe"] == pytest.approx(sklearn_probe_hits(x, codes, probe.folds).mean())


def test_probe_keeps_no_round_off_direction():
    """30 rows x 300 channels: whitening PCA scores made round-off a feature (0.43 where ridge gets 0.93)."""
    rng = np.random.default_rng(11)
    codes = np.repeat(np.arange(3), 10)
    x = rng.normal(size=(30, 300)) + np.eye(3)[codes] @ rng.normal(size=(3, 300)) * 0.5
    design = Design.of(codes, np.arange(30))
    probe = Probe.build(x, design, probe_folds(design, 5, 0), 64)
    assert probe.width <= 29  # at most n - 1 axes: the centred rows span no more
    accuracy = T.scale_free_tests(x - x.mean(axis=0), x, design, 0, 5, 64, 0).estimates["probe"]
    assert accuracy == pytest.approx(sklearn_probe_hits(x, codes, probe.folds).mean()) and accuracy > 0.85


def test_probe_on_fewer_axes_is_ridge_on_the_sample_principal_components():
    """Wider than --dims: ridge on the top principal components of the standardised sample (scikit-learn's PCA)."""
    rng = np.random.default_rng(7)
    unit_codes = np.repeat(np.arange(4), 10)
    units = np.repeat(np.arange(40), 3)
    codes = unit_codes[units]
    x = rng.normal(size=(120, 200)) + np.eye(4)[codes] @ rng.normal(size=(4, 200)) * 0.3
    design = T.Design.of(codes, units)
    dims = 16
    folds = probe_folds(design, 5, 1)
    probe = Probe.build(x, design, folds, dims)
    assert probe.width == dims
    components = PCA(n_components=dims, svd_solver="full").fit_transform(StandardScaler().fit_transform(x))
    expected = sklearn_probe_hits(components, codes, folds, scale=False)
    observed = T.LayerMeasures.build(x - x.mean(axis=0), x, design, folds, dims)(unit_codes[None])
    hits, margins = observed.hits, observed.margins
    np.testing.assert_array_equal(hits[0], expected)
    for train, test in folds:  # margins: the own synset's score minus the mean score, on 0/1 labels (sklearn: -1/1)
        scores = (
            RidgeClassifier(alpha=RIDGE_ALPHA).fit(components[train], codes[train]).decision_function(components[test])
            + 1
        ) / 2
        own = scores[np.arange(len(test)), codes[test]]
        np.testing.assert_allclose(margins[0, test], own - scores.mean(axis=1), atol=1e-6)  # float32 scores


def test_probe_of_a_constant_layer_breaks_ties_as_scikit_learn():
    """A dead layer keeps no axis: every row gets its training synset shares, tied ones go to the first synset."""
    codes = np.repeat(np.arange(3), 8)
    design = T.Design.of(codes, np.arange(24) // 2)
    x = np.ones((24, 5))
    folds = probe_folds(design, 4, 0)
    probe = Probe.build(x, design, folds, 64)
    assert probe.width == 0
    relabelled = np.vstack([design.unit_codes, np.random.default_rng(0).permutation(design.unit_codes)])
    hits = T.LayerMeasures.build(x - x.mean(axis=0), x, design, folds, 64)(relabelled).hits
    for r, labels in enumerate(relabelled[:, design.units]):
        np.testing.assert_array_equal(hits[r], sklearn_probe_hits(x, labels, folds))


def test_permuted_statistics_match_direct_computation():
    """Each permuted labelling gives what scikit-learn gives on the relabelled rows, the probe with the same folds."""
    rng = np.random.default_rng(4)
    unit_codes = np.repeat(np.arange(3), [4, 3, 4])
    units = np.repeat(np.arange(11), 2)
    codes = unit_codes[units]
    x = rng.normal(size=(22, 4)) + codes[:, None]
    z = x - x.mean(axis=0)
    design = Design.of(codes, units)
    probe = Probe.build(x, design, probe_folds(design, 3, 0), 64)
    relabelled = block_permutations(unit_codes, probe.fold_of_unit, 5, rng)
    for labels in relabelled:  # each fold keeps its synset counts, so the permuted labels are stratified alike
        for f in range(len(probe.folds)):
            in_fold = probe.fold_of_unit == f
            assert sorted(labels[in_fold]) == sorted(unit_codes[in_fold])
    permuted = T.LayerMeasures.build(z, x, design, probe.folds, 64)(relabelled)
    for r, labels in enumerate(relabelled[:, units]):
        assert permuted.values["fisher"][r] == pytest.approx(calinski_harabasz_score(z, labels))
        assert permuted.values["silhouette"][r] == pytest.approx(silhouette_score(z, labels, metric="cosine"))
        np.testing.assert_array_equal(permuted.hits[r], sklearn_probe_hits(x, labels, probe.folds))


def test_channel_selectivity_matches_scipy_on_unit_means():
    rng = np.random.default_rng(5)
    unit_codes = np.repeat(np.arange(3), [9, 6, 11])
    units = np.repeat(np.arange(26), 3)
    codes = unit_codes[units]
    x = np.round(rng.normal(size=(78, 5)) + (codes[:, None] == 1) * np.array([2, 0, 0, 0, 0]), 1)  # ties
    x[:, 4] = 1.0  # a constant channel has no test
    result = channel_selectivity(x, Design.of(codes, units))
    means = np.stack([x[units == u].mean(axis=0) for u in range(26)])
    for k in range(3):
        for c in range(4):
            inside, outside = means[unit_codes == k, c], means[unit_codes != k, c]
            method = "exact" if min(len(inside), len(outside)) < 8 else "asymptotic"
            expected = sps.mannwhitneyu(inside, outside, alternative="greater", method=method).pvalue
            assert result["p_value"][k, c] == pytest.approx(expected)
            assert result["auroc"][k, c] == pytest.approx(roc_auc_score(unit_codes == k, means[:, c]))
            pooled = np.sqrt((inside.var(ddof=1) + outside.var(ddof=1)) / 2)
            assert result["d_prime"][k, c] == pytest.approx((inside.mean() - outside.mean()) / pooled)
    assert np.isnan(result["p_value"][:, 4]).all()
    assert result["p_value"][1, 0] < 1e-3 and result["auroc"][1, 0] > 0.9
    assert result["p_value"][0, 0] > 0.5  # one-sided: a synset lower than the rest is not selective


def test_q_values_are_scipy_over_the_tested_entries():
    p = np.array([[0.001, np.nan, 0.04], [0.03, 0.2, np.nan]])
    for method in ("bh", "by"):
        q = q_values(p, method)
        tested = ~np.isnan(p)
        np.testing.assert_allclose(q[tested], sps.false_discovery_control(p[tested], method=method))
        assert np.isnan(q[~tested]).all()


def test_selective_channels_are_listed(tmp_path):
    store, _, _ = two_layer_signal_store(tmp_path / "s.zarr")
    result = S.analyse(ActivationStore(store), S.Params(permutations=0))
    selective = result.selective
    assert set(selective.layer) == {"signal"}
    assert (selective.q_value < 0.05).all() and (selective.auroc > 0.5).all()
    assert result.n_tests == 2 * 4 * 12  # one family: both layers, every synset and channel
    all_p = np.concatenate(
        [
            channel_selectivity(layer, Design.of(codes, np.arange(60)))["p_value"].ravel()
            for layer in (two_layer_signal_store(tmp_path / "t.zarr")[1][name] for name in ("noise", "signal"))
            for codes in [np.repeat(np.arange(4), 15)]
        ]
    )
    family_q = sps.false_discovery_control(all_p)
    assert len(selective) == int((family_q < 0.05).sum())
    counts = result.layers.set_index("layer")["n_selective_channels"]
    assert counts["noise"] == 0 and counts["signal"] == selective.channel.nunique()


def test_ranks_with_ties_match_scipy():
    rng = np.random.default_rng(12)
    values = np.round(rng.normal(size=(40, 6)), 1)  # many ties
    values[:, 2] = 1.0  # one tie group of every row
    values[:, 3] = np.arange(40)[::-1]  # none
    ranks, ties = ranks_with_ties(values)
    np.testing.assert_array_equal(ranks, sps.rankdata(values, axis=0))
    tie_size = sps.rankdata(values, "max", axis=0) - sps.rankdata(values, "min", axis=0) + 1
    np.testing.assert_array_equal(ties, (tie_size**2 - 1).sum(axis=0))
    assert ties[2] == 40**3 - 40 and ties[3] == 0
