"""transfer end to end on stores: the analysis folder, its summary and headline, and what it refuses."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import fails_with
from helpers.transfer import simulated_layers, write_store

from synthprobe.formats.analysis_folder import read_summary
from synthprobe.tools.transfer import main


@pytest.fixture(scope="module")
def store_pair(tmp_path_factory):
    """'early' carries synset structure on generated images only, 'late' in both; one photo synset is unmatched."""
    folder = tmp_path_factory.mktemp("transfer")
    x_g, rows_g, x_p, rows_p = simulated_layers(np.random.default_rng(0), "generated-only", prompts=8)
    late_g, _, late_p, _ = simulated_layers(np.random.default_rng(1), "shared", prompts=8)
    rows_p = rows_p.copy()
    rows_p.loc[rows_p.index[:3], "synset"] = "unmatched.n.01"
    write_store(folder / "generated.zarr", rows_g, {"early": x_g, "late": late_g})
    write_store(folder / "photos.zarr", rows_p, {"early": x_p, "late": late_p})
    return folder


def test_analysis_folder(store_pair, tmp_path, cli):
    out = tmp_path / "out"
    cli(main, store_pair / "generated.zarr", store_pair / "photos.zarr", "-o", out, "--permutations", 199, "--silent")
    summary = read_summary(out)
    assert summary.kind == "transfer" and set(summary.tables) == {"layers", "synset_layers", "synsets"}
    assert (out / summary.figures["depth"]).stat().st_size > 10_000
    layers = pd.read_csv(out / "layers.csv")
    required = ["layer", "transfer_accuracy", "photo_accuracy", "generated_accuracy", "chance", "cka", "cka_p"]
    assert set(required + ["domain_accuracy"]) <= set(layers.columns)
    early, late = layers.set_index("layer").loc["early"], layers.set_index("layer").loc["late"]
    assert early["transfer_p"] > 0.05 and late["transfer_p"] <= 0.01 and late["transfer_accuracy"] > 0.9
    data = summary.summary
    assert data["headline"][0].startswith("The probe trained on generated images keeps")
    assert "from late on" in data["headline"][0] and "before late it is at chance" in data["headline"][0]
    assert data["synsets"]["only_photos"] == ["unmatched.n.01"] and len(data["synsets"]["shared"]) == 6
    assert any("unmatched.n.01" in note for note in data["notes"])
    assert data["units"]["generated"] == {"unit": "prompt", "n_units": 48, "n_images": 144}
    assert data["units"]["photos"] == {"unit": "image", "n_units": 69, "n_images": 69}
    synsets = pd.read_csv(out / "synsets.csv").set_index("synset")
    assert not synsets.loc["unmatched.n.01", "in_generated"] and np.isnan(synsets.loc["unmatched.n.01", "n_photos"])
    assert len(pd.read_csv(out / "synset_layers.csv")) == 2 * 6
    json.dumps(data)  # plain JSON


@pytest.mark.parametrize(
    ("attrs", "fragment"),
    [
        ({"weights": "other"}, "differ in weights ('other' vs 'test')"),
        ({"model": "resnet18"}, "differ in model ('resnet18' vs 'resnet50')"),
        ({"preprocessing": "resize 256"}, "differ in preprocessing"),
    ],
)
def test_another_classifier_is_refused_in_one_line(store_pair, tmp_path, cli, attrs, fragment):
    x_g, rows_g, x_p, rows_p = simulated_layers(np.random.default_rng(0), "shared")
    write_store(tmp_path / "other.zarr", rows_p, {"early": x_p, "late": x_p}, **attrs)
    result = cli(main, store_pair / "generated.zarr", tmp_path / "other.zarr", "-o", tmp_path / "o", exit_code=None)
    fails_with(result, fragment, "run cnn-hooks on the photos with the generated store's --model and --weights")


def test_stores_without_two_shared_synsets_are_refused(store_pair, tmp_path, cli):
    x_g, rows_g, x_p, rows_p = simulated_layers(np.random.default_rng(0), "shared", n_synsets=2)
    rows_p = rows_p.assign(synset=rows_p["synset"].str.replace("s", "other", regex=False))
    write_store(tmp_path / "elsewhere.zarr", rows_p, {"early": x_p})
    result = cli(main, store_pair / "generated.zarr", tmp_path / "elsewhere.zarr", "-o", tmp_path / "o", exit_code=None)
    fails_with(result, "share 0 synset(s)", "--labels")


def test_stores_without_a_shared_hook_point_are_refused(store_pair, tmp_path, cli):
    _, _, x_p, rows_p = simulated_layers(np.random.default_rng(0), "shared")
    write_store(tmp_path / "layers.zarr", rows_p, {"conv1": x_p})
    result = cli(main, store_pair / "generated.zarr", tmp_path / "layers.zarr", "-o", tmp_path / "o", exit_code=None)
    fails_with(result, "no hook point in common")
