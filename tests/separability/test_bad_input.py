"""separability on stores it cannot analyse: one image per synset, no prompt texts, too few synsets, NaN,
no row table, unknown groups, layers or pooling; --help has an example.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
from helpers import build_store, fails_with

from synthprobe.tools.separability import main


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


def test_store_without_its_prompt_texts_is_damage(tmp_path, cli):
    store = build_store(
        tmp_path / "cut.zarr", {"h": np.random.default_rng(0).normal(size=(8, 3))}, ["a.n.01", "b.n.01"] * 4
    )
    shutil.rmtree(store / "rows" / "prompt")
    fails_with(
        cli(main, store, "--out", tmp_path / "o", exit_code=None), "rows/prompt is missing", "cnn-hooks with --rebuild"
    )


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
