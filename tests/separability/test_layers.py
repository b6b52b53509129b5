"""separability per layer: hand-computed answers on known centroids (golden), permutation p-values, prompt
units, aliases, metrics against direct numpy, chunked reading and subsampling.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import build_store
from helpers.separability import two_layer_signal_store
from scipy.spatial.distance import pdist

from synthprobe.formats.activation_store import ActivationStore
from synthprobe.separability import analysis as S
from synthprobe.separability.scan import unit_sample
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
    assert summary["unit"] == "prompt" and summary["n_units"] == 6 and "unit_note" not in summary
    assert all((out / name).stat().st_size > 1000 for name in summary["figures"].values())
    for key, table in summary["tables"].items():
        assert (out / table["file"]).is_file(), key
    for name in ("layers.csv", "synset_max_activation.csv", "top_synsets.csv", "top_neurons.csv", "top_images.csv"):
        golden.check_close(f"separability/{name}", (out / name).read_text())


def test_permutation_p_values_separate_signal_from_noise(tmp_path):
    store, _, _ = two_layer_signal_store(tmp_path / "s.zarr")
    table = S.analyse(ActivationStore(store), S.Params(permutations=199)).layers.set_index("layer")
    for measure in ("fisher", "silhouette", "probe"):
        assert table.loc["signal", f"{measure}_p"] == pytest.approx(1 / 200)
        assert table.loc["noise", f"{measure}_p"] > 0.1
        assert table.loc["signal", f"{measure}_p_fwer"] == pytest.approx(1 / 200)
        assert table.loc["signal", f"{measure}_effect"] > 5 and abs(table.loc["noise", f"{measure}_effect"]) < 3
        assert table.loc["noise", f"{measure}_p_fwer"] >= table.loc["noise", f"{measure}_p"]
    assert table.loc["signal", "probe_accuracy"] == 1.0 and table.loc["signal", "probe_balanced_accuracy"] == 1.0
    # Chance is the permutation null's mean accuracy: about 1/4 for four synsets of 15 images.
    assert table.loc["noise", "probe_chance"] == pytest.approx(0.25, abs=0.03)
    assert (table["fisher_null_p95"] > table["fisher_null_mean"]).all()
    assert "fisher_ci_low" not in table  # no interval is printed whose coverage is not tested


def test_layers_over_worker_processes_give_the_same_analysis(tmp_path):
    """Two spawned workers (each opening the store again) give every table of one process, in depth order."""
    store, _, _ = two_layer_signal_store(tmp_path / "s.zarr")
    one, two = (S.analyse(ActivationStore(store), S.Params(permutations=49, jobs=jobs)) for jobs in (1, 2))
    for name in ("layers", "synset_max", "top_neurons", "top_images", "selective"):
        pd.testing.assert_frame_equal(getattr(one, name), getattr(two, name), obj=name)


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


def test_subsample_keeps_the_templates_crossed():
    """wn-prompts' design, 10 synsets x 8 templates x one prompt x 3 seeds, sampled to 120 of 240 rows: every synset
    keeps the same 4 templates (the tests block on them), one prompt each."""
    synset, template = np.divmod(np.arange(80), 8)  # one prompt unit per (synset, template)
    codes, blocks, units = (np.repeat(v, 3) for v in (synset, template, np.arange(80)))
    for seed in range(5):
        picked = unit_sample(codes, units, 120, seed, blocks)
        kept = {k: sorted(set(blocks[picked][codes[picked] == k])) for k in range(10)}
        assert len(picked) == 120 and all(len(t) == 4 for t in kept.values())
        assert len({tuple(t) for t in kept.values()}) == 1, kept
    assert len({tuple(blocks[unit_sample(codes, units, 120, seed, blocks)][:3]) for seed in range(5)}) > 1  # random
