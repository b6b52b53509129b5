"""separability: hand-computed answers, parity with direct numpy/scikit-learn/scipy computations, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats as sps
from scipy.spatial.distance import pdist
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics import calinski_harabasz_score, roc_auc_score, silhouette_score

from synthprobe import separability as S
from synthprobe.stats import benjamini_hochberg
from synthprobe.store import ActivationStore, StoreWriter
from synthprobe.tools.separability import main

ATTRS = {"model": "resnet50", "weights": "test", "preprocessing": "resize 224"}


def build_store(path, layers: dict[str, np.ndarray], synsets, groups=None, status=None, batch=7):
    """A store whose rows are ``synsets`` (one per image); tiny chunks so that every layer spans several."""
    n = len(synsets)
    rows = pd.DataFrame({
        "id": [f"img{i:03d}" for i in range(n)], "synset": list(synsets),
        "group": list(groups) if groups is not None else ["concept"] * n, "target": list(synsets),
        "path": [f"images/{s}/{i:03d}.png" for i, s in enumerate(synsets)],
        "status": list(status) if status is not None else ["ok"] * n})
    writer = StoreWriter(path, attrs=ATTRS, hook_channels={k: v.shape[1] for k, v in layers.items()},
                         pools=("mean",), min_chunk_bytes=64)
    for start in range(0, n, batch):
        writer.append(rows.iloc[start:start + batch],
                      {k: {"mean": v[start:start + batch].astype("float32")} for k, v in layers.items()})
    writer.finish()
    return path


def run(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


# Three synsets, two images each at centroid +- (0.5, -0.5): centroids (0,0), (3,0), (0,4) on "shallow",
# twice that on "deep". Pairwise centroid distances are 3, 4, 5 (mean 4) and 6, 8, 10 (mean 8).
CENTROIDS = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
OFFSET = np.array([0.5, -0.5])


@pytest.fixture
def known_store(tmp_path):
    synsets = ["ant.n.01", "ant.n.01", "bee.n.01", "bee.n.01", "cat.n.01", "cat.n.01"]
    shallow = np.repeat(CENTROIDS, 2, axis=0) + np.tile([OFFSET, -OFFSET], (3, 1))
    return build_store(tmp_path / "known.zarr", {"shallow": shallow, "deep": 2 * shallow}, synsets)


def test_known_centroids_give_hand_computed_metrics(known_store, tmp_path, golden):
    out = tmp_path / "out"
    result = run([known_store, "--out", out, "--permutations", 20, "--bootstrap", 20, "--top-layers", 2,
                  "--top-neurons", 2, "--top-images", 2, "--silent"])
    assert result.exit_code == 0, result.output
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
    params = S.Params(permutations=199, bootstrap=100)
    table = S.analyse(ActivationStore(store), params).layers.set_index("layer")
    for measure in ("fisher", "silhouette", "probe"):
        assert table.loc["signal", f"{measure}_p"] == pytest.approx(1 / 200)
        assert table.loc["noise", f"{measure}_p"] > 0.1
        estimate = table[measure if measure != "probe" else "probe_accuracy"]
        assert ((table[f"{measure}_ci_low"] <= estimate) & (estimate <= table[f"{measure}_ci_high"])).all()
    assert table.loc["signal", "probe_accuracy"] == 1.0 and table.loc["signal", "probe_chance"] == 0.25
    assert table.loc["noise", "probe_ci_low"] < 0.25 + 0.15


def test_original_metrics_match_direct_numpy(tmp_path):
    rng = np.random.default_rng(1)
    sizes = {"dog.n.01": 5, "cat.n.01": 3, "cup.n.01": 7}
    synsets = list(rng.permutation([s for s, n in sizes.items() for _ in range(n)]))
    layers = {"a": rng.gamma(2.0, size=(15, 6)), "b": rng.gamma(1.0, size=(15, 40))}
    groups = ["concept"] * 13 + ["mixed", "concept"]
    status = ["ok"] * 14 + ["failed"]
    store = build_store(tmp_path / "p.zarr", layers, synsets, groups=groups, status=status)
    result = S.analyse(ActivationStore(store), S.Params(permutations=0, bootstrap=0, top_neurons=4, top_images=3))
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


@pytest.mark.parametrize("channels, dims", [(5, 64), (300, 64)])  # exact width; PCA that loses nothing (n <= dims)
def test_scale_free_measures_match_scikit_learn(channels, dims):
    rng = np.random.default_rng(2)
    codes = np.repeat(np.arange(3), [8, 12, 10])
    x = rng.normal(size=(30, channels)) + codes[:, None] * 0.4 + 1.0
    z, explained = S.reduce_sample(x, dims)
    assert explained == pytest.approx(1.0)
    measures = S.scale_free_measures(z, codes, permutations=0, n_boot=0, n_folds=4, seed=3)
    centred = x - x.mean(axis=0)
    assert measures.estimates["fisher"] == pytest.approx(calinski_harabasz_score(x, codes))
    assert measures.estimates["silhouette"] == pytest.approx(silhouette_score(centred, codes, metric="cosine"))
    probe = S.Probe.build(z, codes, 4, 3)
    hits = []
    for train, test in probe.folds:
        model = RidgeClassifier(alpha=S.RIDGE_ALPHA).fit(probe.features[train], codes[train])
        hits.append(model.predict(probe.features[test]) == codes[test])
    assert measures.estimates["probe"] == pytest.approx(np.concatenate(hits).mean())
    assert measures.chance == pytest.approx(12 / 30)


def test_resampled_statistics_match_direct_computation():
    """The batched permutation and bootstrap formulas equal scikit-learn on the relabelled or resampled rows."""
    rng = np.random.default_rng(4)
    codes = np.repeat(np.arange(3), [6, 5, 7])
    z = rng.normal(size=(18, 4)) + codes[:, None]
    z -= z.mean(axis=0)
    counts = np.bincount(codes).astype(float)
    unit = S._unit(z)
    labels = np.stack([rng.permutation(codes) for _ in range(3)])
    sums = (S._onehot(labels, 3) @ np.hstack([z, unit])).reshape(3, 3, -1)
    fisher = S._fisher(sums[..., :4], np.full(3, (z**2).sum()), counts)
    silhouette = S._silhouette(unit, np.ascontiguousarray(sums[..., 4:]), labels, counts)
    for r in range(3):
        assert fisher[r] == pytest.approx(calinski_harabasz_score(z, labels[r]))
        assert silhouette[r] == pytest.approx(silhouette_score(z, labels[r], metric="cosine"))
    picks = np.concatenate([rng.choice(np.flatnonzero(codes == k), (codes == k).sum()) for k in range(3)])
    weights = np.bincount(picks, minlength=18).astype(float)[None, :]
    class_sums = np.stack([weights[:, codes == k] @ np.hstack([z, unit])[codes == k] for k in range(3)], axis=1)
    resampled = S._silhouette(unit, np.ascontiguousarray(class_sums[..., 4:]), codes[None, :], counts, weights)
    assert resampled[0] == pytest.approx(silhouette_score(z[picks], codes[picks], metric="cosine"))
    fisher_resampled = S._fisher(class_sums[..., :4], weights @ (z**2).sum(axis=1), counts)
    assert fisher_resampled[0] == pytest.approx(calinski_harabasz_score(z[picks], codes[picks]))


def test_channel_selectivity_matches_scipy():
    rng = np.random.default_rng(5)
    codes = np.repeat(np.arange(3), [9, 6, 11])
    x = np.round(rng.normal(size=(26, 5)) + (codes[:, None] == 1) * np.array([2, 0, 0, 0, 0]), 1)  # ties
    x[:, 4] = 1.0  # a constant channel has no test
    result = S.channel_selectivity(x, codes, 3)
    for k in range(3):
        for c in range(4):
            inside, outside = x[codes == k, c], x[codes != k, c]
            expected = sps.mannwhitneyu(inside, outside, method="asymptotic", use_continuity=True).pvalue
            assert result["p_value"][k, c] == pytest.approx(expected)
            assert result["auroc"][k, c] == pytest.approx(roc_auc_score(codes == k, x[:, c]))
            pooled = np.sqrt((inside.var(ddof=1) + outside.var(ddof=1)) / 2)
            assert result["d_prime"][k, c] == pytest.approx((inside.mean() - outside.mean()) / pooled)
    assert np.isnan(result["p_value"][:, 4]).all()
    np.testing.assert_allclose(result["q_value"], benjamini_hochberg(result["p_value"]))
    assert result["q_value"][1, 0] < 0.05 and result["auroc"][1, 0] > 0.9


def test_selective_channels_are_listed(tmp_path):
    store, _, _ = two_layer_signal_store(tmp_path / "s.zarr")
    result = S.analyse(ActivationStore(store), S.Params(permutations=0, bootstrap=0))
    selective = result.selective
    assert set(selective.layer) == {"signal"}
    assert (selective.q_value < 0.05).all() and (selective.auroc > 0.5).all()
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
    S.analyse(ActivationStore(store), S.Params(permutations=0, bootstrap=0, layers=("sig*",)))
    assert {hook for hook, _ in calls} == {"signal"}
    assert len(calls) > 1 and sum(n for _, n in calls) == 60


def test_subsample_is_stratified_and_bounded(tmp_path):
    codes = np.repeat(np.arange(3), [100, 10, 1])
    picked = S.stratified_sample(codes, 30, seed=0)
    assert len(picked) <= 32 and np.bincount(codes[picked]).tolist() == [27, 3, 1]
    store, _, _ = two_layer_signal_store(tmp_path / "s.zarr")
    table = S.analyse(ActivationStore(store), S.Params(permutations=0, bootstrap=0, sample=20, dims=3)).layers
    assert table["n_sample"].tolist() == [20, 20] and table["dims"].tolist() == [3, 3]
    assert (table["explained_variance"] < 1).all() and (table["n_images"] == 60).all()


# ---------------------------------------------------------------- bad input

def test_a_synset_with_one_image_is_undefined_not_a_crash(tmp_path):
    rng = np.random.default_rng(6)
    synsets = ["a.n.01"] * 4 + ["b.n.01"] * 4 + ["c.n.01"]
    store = build_store(tmp_path / "one.zarr", {"h": rng.normal(size=(9, 4))}, synsets)
    out = tmp_path / "out"
    result = run([store, "--out", out, "--permutations", 10, "--bootstrap", 10, "--silent"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert any("c.n.01 has one image" in note for note in summary["notes"])
    assert any("probe is undefined" in note for note in summary["notes"])
    neurons = pd.read_csv(out / "top_neurons.csv")
    assert neurons[neurons.synset == "c.n.01"]["std"].isna().all()
    assert neurons[neurons.synset == "a.n.01"]["std"].notna().all()
    layer = pd.read_csv(out / "layers.csv").iloc[0]
    assert np.isnan(layer["probe_accuracy"]) and np.isfinite(layer["fisher"]) and np.isfinite(layer["silhouette"])


def bad(args, fragment):
    result = run(args)
    assert result.exit_code != 0
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("Error:") and fragment in message, result.output
    return message


def test_fewer_than_two_synsets(tmp_path):
    store = build_store(tmp_path / "x.zarr", {"h": np.ones((4, 2))}, ["a.n.01"] * 4)
    bad([store, "--out", tmp_path / "o"], "need at least two synsets")


def test_nan_names_layer_and_row(tmp_path):
    values = np.arange(24, dtype=float).reshape(12, 2)
    values[9, 1] = np.inf
    store = build_store(tmp_path / "x.zarr", {"ok": np.ones((12, 2)), "bad.layer": values},
                        ["a.n.01", "b.n.01"] * 6)
    bad([store, "--out", tmp_path / "o", "--silent"], "layer bad.layer has a NaN or infinite value in row img009")


def test_store_without_row_table(tmp_path):
    store = build_store(tmp_path / "x.zarr", {"h": np.ones((4, 2))}, ["a.n.01", "b.n.01"] * 2)
    shutil.rmtree(store / "rows")
    bad([store, "--out", tmp_path / "o"], "has no row table")


def test_unknown_group_lists_the_known_ones(tmp_path):
    store = build_store(tmp_path / "x.zarr", {"h": np.ones((4, 2))}, ["a.n.01", "b.n.01"] * 2,
                        groups=["object-only", "mixed"] * 2)
    bad([store, "--out", tmp_path / "o", "--group", "concept"],
        "unknown --group concept; this store has: mixed, object-only")


def test_unknown_layers_and_pool(tmp_path):
    store = build_store(tmp_path / "x.zarr", {"h": np.ones((4, 2))}, ["a.n.01", "b.n.01"] * 2)
    bad([store, "--out", tmp_path / "o", "--layers", "layer9.*"], "matches no hook point; the store has: h")
    bad([store, "--out", tmp_path / "o", "--pool", "max"], "--pool max is not in the store; it has: mean")


def test_not_a_store(tmp_path):
    bad([tmp_path, "--out", tmp_path / "o"], "is not an activation store")


def test_help_has_an_example():
    result = run(["--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "--permutations" in result.output
