"""separability: hand-computed answers, parity with direct numpy/scikit-learn/scipy computations, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import build_store, fails_with
from scipy import stats as sps
from scipy.spatial.distance import pdist
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics import calinski_harabasz_score, roc_auc_score, silhouette_score
from sklearn.preprocessing import StandardScaler

from synthprobe import separability as S
from synthprobe import separation as T
from synthprobe.formats.activation_store import ActivationStore
from synthprobe.separability_scan import reduce_sample, unit_sample
from synthprobe.tools.separability import main

# Three synsets, two images each at centroid +- (0.5, -0.5): centroids (0,0), (3,0), (0,4) on "shallow",
# twice that on "deep". Pairwise centroid distances are 3, 4, 5 (mean 4) and 6, 8, 10 (mean 8).
CENTROIDS = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
OFFSET = np.array([0.5, -0.5])


@pytest.fixture
def known_store(tmp_path):
    synsets = ["ant.n.01", "ant.n.01", "bee.n.01", "bee.n.01", "cat.n.01", "cat.n.01"]
    shallow = np.repeat(CENTROIDS, 2, axis=0) + np.tile([OFFSET, -OFFSET], (3, 1))
    return build_store(tmp_path / "known.zarr", {"shallow": shallow, "deep": 2 * shallow}, synsets)


def test_known_centroids_give_hand_computed_metrics(known_store, tmp_path, golden, cli):
    out = tmp_path / "out"
    cli(
        main,
        known_store,
        "--out",
        out,
        "--permutations",
        20,
        "--top-layers",
        2,
        "--top-neurons",
        2,
        "--top-images",
        2,
        "--silent",
    )
    layers = pd.read_csv(out / "layers.csv").set_index("layer")
    assert layers.loc["shallow", "avg_centroid_distance"] == pytest.approx(4.0)
    assert layers.loc["deep", "avg_centroid_distance"] == pytest.approx(8.0)
    assert layers.loc["deep", "distance_rank"] == 1
    # Between scatter 2 * (1 + 16/9 + 4 + 16/9 + 1 + 64/9) = 100/3 over K-1 = 2; within 6 * 0.5 = 3 over n-K = 3.
    assert layers.loc["shallow", "fisher"] == pytest.approx(50 / 3, rel=1e-5)
    for measure in ("fisher", "silhouette", "probe_accuracy"):  # scale-free: doubling the layer changes nothing
        assert layers.loc["deep", measure] == pytest.approx(layers.loc["shallow", measure], rel=1e-5)
    peaks = pd.read_csv(out / "synset_max_activation.csv").set_index(["layer", "synset"])
    assert peaks.loc[("shallow", "bee.n.01"), "max_activation"] == pytest.approx(3.0)
    assert peaks.loc[("deep", "cat.n.01"), ["max_activation", "channel", "n_images"]].tolist() == [8.0, 1, 2]
    neurons = pd.read_csv(out / "top_neurons.csv")
    first = neurons[(neurons.layer == "shallow") & (neurons["rank"] == 1)].set_index("synset")
    assert first["channel"].iloc[0] == 1  # highest centroid value over synsets: cat's 4 on channel 1
    assert first.loc["cat.n.01", "mean"] == pytest.approx(4.0)
    assert first.loc["cat.n.01", "std"] == pytest.approx(0.5 * np.sqrt(2))  # two images at 4 -+ 0.5
    images = pd.read_csv(out / "top_images.csv")
    top = images[(images.layer == "shallow") & (images["rank"] == 1)]
    assert top["id"].tolist() == ["img005", "img004"] and top["path"].iloc[0] == "images/cat.n.01/005.png"
    assert top["activation"].tolist() == pytest.approx([4.5, 3.5])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["top_layers"] == ["deep", "shallow"]
    assert summary["synsets"] == {"ant.n.01": 2, "bee.n.01": 2, "cat.n.01": 2}
    assert summary["store"]["model"] == "resnet50" and summary["parameters"]["permutations"] == 20
    assert summary["unit"] == "prompt" and summary["n_units"] == 6 and summary["unit_note"] is None
    assert all((out / name).stat().st_size > 1000 for name in summary["figures"].values())
    for key, table in summary["tables"].items():
        assert (out / table["file"]).is_file(), key
    for name in ("layers.csv", "synset_max_activation.csv", "top_synsets.csv", "top_neurons.csv", "top_images.csv"):
        golden.check(f"separability/{name}", (out / name).read_text())


def two_layer_signal_store(path, seed=0):
    """Four synsets of 15 images: 'noise' carries no synset information, 'signal' puts each synset apart."""
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(4), 15)
    synsets = [f"s{c}.n.01" for c in codes]
    centres = rng.normal(size=(4, 12)) * 3
    layers = {"noise": rng.normal(size=(60, 12)), "signal": centres[codes] + rng.normal(size=(60, 12))}
    return build_store(path, layers, synsets), layers, codes


def test_permutation_p_values_separate_signal_from_noise(tmp_path):
    store, _, _ = two_layer_signal_store(tmp_path / "s.zarr")
    table = S.analyse(ActivationStore(store), S.Params(permutations=199)).layers.set_index("layer")
    for measure in ("fisher", "silhouette", "probe"):
        assert table.loc["signal", f"{measure}_p"] == pytest.approx(1 / 200)
        assert table.loc["noise", f"{measure}_p"] > 0.1
    assert table.loc["signal", "probe_accuracy"] == 1.0 and table.loc["signal", "probe_chance"] == 0.25
    assert "fisher_ci_low" not in table  # no interval is printed whose coverage is not tested


def test_images_of_one_prompt_move_together(tmp_path):
    """Three prompts per synset, five seeds each, a strong prompt effect and no synset effect: significant
    when images count as independent, not when the prompt is the unit."""
    rng = np.random.default_rng(3)
    unit_of_row = np.repeat(np.arange(12), 5)
    synsets = [f"s{u // 3}.n.01" for u in unit_of_row]
    values = (rng.normal(size=(12, 6)) * 3)[unit_of_row] + rng.normal(size=(60, 6))
    store = ActivationStore(
        build_store(tmp_path / "u.zarr", {"h": values}, synsets, prompts=[f"prompt {u}" for u in unit_of_row])
    )
    by_prompt = S.analyse(store, S.Params(permutations=199, folds=3)).layers.iloc[0]
    by_image = S.analyse(store, S.Params(permutations=199, folds=3, unit="image")).layers.iloc[0]
    assert by_prompt["n_units"] == 12 and by_image["n_units"] == 60
    assert by_image["fisher_p"] == pytest.approx(1 / 200) and by_image["probe_p"] < 0.01
    assert by_prompt["fisher_p"] > 0.05 and by_prompt["probe_p"] > 0.05
    assert by_prompt["fisher"] == pytest.approx(by_image["fisher"])  # the statistic is over images either way


def test_aliases_are_one_row_and_select_their_canonical(tmp_path):
    """cnn-hooks stores one tensor once; its other names are listed beside it, and selecting one selects it."""
    rng = np.random.default_rng(8)
    store = build_store(
        tmp_path / "a.zarr",
        {"layer4": rng.normal(size=(8, 3)), "fc": rng.normal(size=(8, 2))},
        ["a.n.01", "b.n.01"] * 4,
        aliases={"layer4.2": "layer4", "layer4.2.relu_2": "layer4"},
    )
    table = S.analyse(ActivationStore(store), S.Params(permutations=0)).layers
    assert table["layer"].tolist() == ["layer4", "fc"]
    assert sorted(table["aliases"].iloc[0].split(";")) == ["layer4.2", "layer4.2.relu_2"]
    assert table["aliases"].iloc[1] == ""
    chosen = S.analyse(ActivationStore(store), S.Params(permutations=0, layers=("layer4.2.relu_2",))).layers
    assert chosen["layer"].tolist() == ["layer4"]


def test_original_metrics_match_direct_numpy(tmp_path):
    rng = np.random.default_rng(1)
    sizes = {"dog.n.01": 5, "cat.n.01": 3, "cup.n.01": 7}
    synsets = list(rng.permutation([s for s, n in sizes.items() for _ in range(n)]))
    layers = {"a": rng.gamma(2.0, size=(15, 6)), "b": rng.gamma(1.0, size=(15, 40))}
    groups = ["concept"] * 13 + ["mixed", "concept"]
    status = ["ok"] * 14 + ["failed"]
    store = build_store(tmp_path / "p.zarr", layers, synsets, groups=groups, status=status)
    result = S.analyse(ActivationStore(store), S.Params(permutations=0, top_neurons=4, top_images=3))
    keep = np.arange(13)
    labels = np.array(synsets)[keep]
    for name, values in layers.items():
        x = values[keep].astype(np.float32).astype(np.float64)
        names = sorted(set(labels))
        centroids = np.stack([x[labels == s].mean(axis=0) for s in names])
        got = result.synset_max[result.synset_max.layer == name]
        np.testing.assert_allclose(got["max_activation"], centroids.max(axis=1))
        assert got["n_images"].tolist() == [int((labels == s).sum()) for s in names]
        distance = result.layers.set_index("layer").loc[name, "avg_centroid_distance"]
        assert distance == pytest.approx(pdist(centroids).mean())
        order = np.argsort(-centroids.max(axis=0), kind="stable")[:4]
        neurons = result.top_neurons[result.top_neurons.layer == name]
        assert neurons.drop_duplicates("rank")["channel"].tolist() == order.tolist()
        for channel in order:
            rows = neurons[neurons.channel == channel].set_index("synset")
            for s in names:
                member = x[labels == s, channel]
                assert rows.loc[s, "mean"] == pytest.approx(member.mean())
                assert rows.loc[s, "std"] == pytest.approx(member.std(ddof=1))
            shown = result.top_images[(result.top_images.layer == name) & (result.top_images.channel == channel)]
            expected = np.argsort(-x[:, channel], kind="stable")[:3]
            assert shown["id"].tolist() == [f"img{i:03d}" for i in expected]


def sklearn_probe_hits(x, labels, folds):
    """StandardScaler + RidgeClassifier fitted on each training fold, as scikit-learn users would."""
    hits = np.zeros(len(labels), dtype=bool)
    for train, test in folds:
        scaler = StandardScaler().fit(x[train])
        model = RidgeClassifier(alpha=T.RIDGE_ALPHA).fit(scaler.transform(x[train]), labels[train])
        hits[test] = model.predict(scaler.transform(x[test])) == labels[test]
    return hits


@pytest.mark.parametrize("channels", [5, 300])  # narrower than --dims; wider than the rows (null directions)
def test_scale_free_measures_match_scikit_learn(channels):
    rng = np.random.default_rng(2)
    codes = np.repeat(np.arange(3), [8, 12, 10])
    units = np.arange(30) // 2  # two images per prompt
    x = rng.normal(size=(30, channels)) + codes[:, None] * 0.4 + 1.0
    z, explained = reduce_sample(x, 64)
    assert explained == pytest.approx(1.0)
    design = T.Design.of(codes, units)
    tests = T.scale_free_tests(z, x, design, permutations=0, n_folds=4, dims=64, seed=3)
    centred = x - x.mean(axis=0)
    assert tests.estimates["fisher"] == pytest.approx(calinski_harabasz_score(x, codes))
    assert tests.estimates["silhouette"] == pytest.approx(silhouette_score(centred, codes, metric="cosine"))
    probe = T.Probe.build(x, design, 4, 64, 3)
    for train, test in probe.folds:  # grouped: no prompt has images on both sides; stratified: every synset trains
        assert not set(units[train]) & set(units[test]) and set(codes[train]) == {0, 1, 2}
    assert tests.estimates["probe"] == pytest.approx(sklearn_probe_hits(x, codes, probe.folds).mean())
    assert tests.chance == pytest.approx(12 / 30)


def test_probe_keeps_no_round_off_direction():
    """30 rows x 300 channels: whitening PCA scores made round-off a feature (0.43 where ridge gets 0.93)."""
    rng = np.random.default_rng(11)
    codes = np.repeat(np.arange(3), 10)
    x = rng.normal(size=(30, 300)) + np.eye(3)[codes] @ rng.normal(size=(3, 300)) * 0.5
    design = T.Design.of(codes, np.arange(30))
    probe = T.Probe.build(x, design, 5, 64, 0)
    assert max(probe.widths) <= 24  # at most n_train - 1 axes: the centred training rows span no more
    accuracy = T.scale_free_tests(x - x.mean(axis=0), x, design, 0, 5, 64, 0).estimates["probe"]
    assert accuracy == pytest.approx(sklearn_probe_hits(x, codes, probe.folds).mean()) and accuracy > 0.85


def test_permuted_statistics_match_direct_computation():
    """Each permuted labelling gives what scikit-learn gives on the relabelled rows, the probe with the same folds."""
    rng = np.random.default_rng(4)
    unit_codes = np.repeat(np.arange(3), [4, 3, 4])
    units = np.repeat(np.arange(11), 2)
    codes = unit_codes[units]
    x = rng.normal(size=(22, 4)) + codes[:, None]
    z = x - x.mean(axis=0)
    design = T.Design.of(codes, units)
    probe = T.Probe.build(x, design, 3, 64, 0)
    relabelled = T.block_permutations(unit_codes, probe.fold_of_unit, 5, rng)
    for labels in relabelled:  # each fold keeps its synset counts, so the permuted labels are stratified alike
        for f in range(len(probe.folds)):
            in_fold = probe.fold_of_unit == f
            assert sorted(labels[in_fold]) == sorted(unit_codes[in_fold])
    per_row = np.hstack([z, T.unit_vectors(z), np.ones((22, 1)), probe.columns(22)])
    onehot = (relabelled[:, None, :] == np.arange(3)[None, :, None]).reshape(15, -1).astype(float)
    sums = (onehot @ design.unit_sums(per_row)).reshape(5, 3, -1)
    counts = sums[..., 8]
    fisher = T.fisher_from_sums(sums[..., :4], (z**2).sum(), counts)
    silhouette = T.silhouette_from_sums(
        T.unit_vectors(z), np.ascontiguousarray(sums[..., 4:8]), relabelled[:, units], counts
    )
    hits, _ = probe.hits(sums[..., 9:], relabelled[:, units])
    for r, labels in enumerate(relabelled[:, units]):
        assert fisher[r] == pytest.approx(calinski_harabasz_score(z, labels))
        assert silhouette[r] == pytest.approx(silhouette_score(z, labels, metric="cosine"))
        np.testing.assert_array_equal(hits[r], sklearn_probe_hits(x, labels, probe.folds))


def test_channel_selectivity_matches_scipy_on_unit_means():
    rng = np.random.default_rng(5)
    unit_codes = np.repeat(np.arange(3), [9, 6, 11])
    units = np.repeat(np.arange(26), 3)
    codes = unit_codes[units]
    x = np.round(rng.normal(size=(78, 5)) + (codes[:, None] == 1) * np.array([2, 0, 0, 0, 0]), 1)  # ties
    x[:, 4] = 1.0  # a constant channel has no test
    result = T.channel_selectivity(x, T.Design.of(codes, units))
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
        q = T.q_values(p, method)
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
            T.channel_selectivity(layer, T.Design.of(codes, np.arange(60)))["p_value"].ravel()
            for layer in (two_layer_signal_store(tmp_path / "t.zarr")[1][name] for name in ("noise", "signal"))
            for codes in [np.repeat(np.arange(4), 15)]
        ]
    )
    family_q = sps.false_discovery_control(all_p)
    assert len(selective) == int((family_q < 0.05).sum())
    counts = result.layers.set_index("layer")["n_selective_channels"]
    assert counts["noise"] == 0 and counts["signal"] == selective.channel.nunique()


def test_layers_are_read_in_chunks_never_whole(tmp_path, monkeypatch):
    store, _, _ = two_layer_signal_store(tmp_path / "s.zarr")
    calls = []
    original = ActivationStore.iter_layer

    def spy(self, hook, pool="mean", rows=None):
        for index, block in original(self, hook, pool, rows):
            calls.append((hook, len(index)))
            yield index, block

    monkeypatch.setattr(ActivationStore, "iter_layer", spy)
    monkeypatch.setattr(ActivationStore, "read_layer", lambda *a, **k: pytest.fail("read a whole layer"))
    S.analyse(ActivationStore(store), S.Params(permutations=0, layers=("sig*",)))
    assert {hook for hook, _ in calls} == {"signal"}
    assert len(calls) > 1 and sum(n for _, n in calls) == 60


def test_subsample_takes_whole_units_by_synset_and_is_bounded(tmp_path):
    codes = np.repeat(np.arange(3), [100, 10, 2])
    units = np.arange(112) // 2
    picked = unit_sample(codes, units, 30, seed=0)
    assert np.bincount(codes[picked]).tolist() == [26, 4, 2]
    assert all(np.count_nonzero(units[picked] == u) == 2 for u in np.unique(units[picked]))  # never half a unit
    store, _, _ = two_layer_signal_store(tmp_path / "s.zarr")
    table = S.analyse(ActivationStore(store), S.Params(permutations=0, sample=20, dims=3)).layers
    assert table["n_sample"].tolist() == [20, 20] and table["dims"].tolist() == [3, 3]
    assert (table["explained_variance"] < 1).all() and (table["n_images"] == 60).all()


# ---------------------------------------------------------------- bad input


def test_a_synset_with_one_image_is_undefined_not_a_crash(tmp_path, cli):
    rng = np.random.default_rng(6)
    synsets = ["a.n.01"] * 4 + ["b.n.01"] * 4 + ["c.n.01"]
    store = build_store(tmp_path / "one.zarr", {"h": rng.normal(size=(9, 4))}, synsets)
    out = tmp_path / "out"
    cli(main, store, "--out", out, "--permutations", 10, "--silent")
    summary = json.loads((out / "summary.json").read_text())
    assert any("c.n.01 has one image" in note for note in summary["notes"])
    assert any(
        "fewer than two prompt units in the sample for c.n.01: the linear probe is undefined" in note
        for note in summary["notes"]
    )
    neurons = pd.read_csv(out / "top_neurons.csv")
    assert neurons[neurons.synset == "c.n.01"]["std"].isna().all()
    assert neurons[neurons.synset == "a.n.01"]["std"].notna().all()
    layer = pd.read_csv(out / "layers.csv").iloc[0]
    assert np.isnan(layer["probe_accuracy"]) and np.isfinite(layer["fisher"]) and np.isfinite(layer["silhouette"])
    assert np.isnan(layer["probe_p"]) and 0 < layer["fisher_p"] <= 1


def test_store_without_prompt_texts(tmp_path, caplog, cli):
    """A store made before rows/prompt: image units with a warning by default, an error if prompt units are asked."""
    store = build_store(
        tmp_path / "old.zarr", {"h": np.random.default_rng(0).normal(size=(8, 3))}, ["a.n.01", "b.n.01"] * 4
    )
    for name in ("prompt", "template"):
        shutil.rmtree(store / "rows" / name)
    fails_with(
        cli(main, store, "--out", tmp_path / "o", "--unit", "prompt", exit_code=None),
        "has no prompt texts (made before rows/prompt existed); use --unit image, or rebuild the store with cnn-hooks",
    )
    out = tmp_path / "auto"
    cli(main, store, "--out", out, "--permutations", 10, "--silent")
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["unit"] == "image" and summary["n_units"] == 8 and "each image is its own unit" in summary["unit_note"]
    )
    assert summary["unit_note"] in summary["notes"]


def test_fewer_than_two_synsets(tmp_path, cli):
    store = build_store(tmp_path / "x.zarr", {"h": np.ones((4, 2))}, ["a.n.01"] * 4)
    fails_with(cli(main, store, "--out", tmp_path / "o", exit_code=None), "need at least two synsets")


def test_nan_names_layer_and_row(tmp_path, cli):
    values = np.arange(24, dtype=float).reshape(12, 2)
    values[9, 1] = np.inf
    store = build_store(tmp_path / "x.zarr", {"ok": np.ones((12, 2)), "bad.layer": values}, ["a.n.01", "b.n.01"] * 6)
    fails_with(
        cli(main, store, "--out", tmp_path / "o", "--silent", exit_code=None),
        "layer bad.layer has a NaN or infinite value in row img009",
    )


def test_store_without_row_table(tmp_path, cli):
    store = build_store(tmp_path / "x.zarr", {"h": np.ones((4, 2))}, ["a.n.01", "b.n.01"] * 2)
    shutil.rmtree(store / "rows")
    fails_with(cli(main, store, "--out", tmp_path / "o", exit_code=None), "has no row table")


def test_unknown_group_lists_the_known_ones(tmp_path, cli):
    store = build_store(
        tmp_path / "x.zarr", {"h": np.ones((4, 2))}, ["a.n.01", "b.n.01"] * 2, groups=["object-only", "mixed"] * 2
    )
    fails_with(
        cli(main, store, "--out", tmp_path / "o", "--group", "concept", exit_code=None),
        "unknown --group concept; this store has: mixed, object-only",
    )


def test_unknown_layers_and_pool(tmp_path, cli):
    store = build_store(tmp_path / "x.zarr", {"h": np.ones((4, 2))}, ["a.n.01", "b.n.01"] * 2)
    fails_with(
        cli(main, store, "--out", tmp_path / "o", "--layers", "layer9.*", exit_code=None),
        "matches no hook point; the store has: h",
    )
    fails_with(
        cli(main, store, "--out", tmp_path / "o", "--pool", "max", exit_code=None),
        "--pool max is not in the store; it has: mean",
    )


def test_not_a_store(tmp_path, cli):
    fails_with(cli(main, tmp_path, "--out", tmp_path / "o", exit_code=None), "is not an activation store")


def test_help_has_an_example(cli):
    result = cli(main, "--help")
    assert "Example:" in result.output and "--permutations" in result.output
