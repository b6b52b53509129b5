"""The variance decomposition gets known components back from simulated layers (docs/methods.md)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from synthprobe.formats.activation_store import ActivationStore, StoreWriter
from synthprobe.separability import analysis as S
from synthprobe.separability.outputs import write_outputs
from synthprobe.separability.variance import VarianceModel


def variance_shares(x, synsets, templates, units):
    return VarianceModel.of(synsets, templates, units).shares(x)


CHANNELS = 200  # independent channels: the trace over them averages the effects' sampling error
TRUE = {"synset": 1.0, "template": 2.0, "prompt": 0.5, "seed": 1.0}  # variance per channel


def crossed_layer(rng, synsets=10, templates=8, seeds=3, sd=TRUE, keep=None):
    """Every synset x template cell one prompt of ``seeds`` images (``keep`` (cells,) images kept per prompt);
    each channel draws its own effects."""
    cell_synset = np.repeat(np.arange(synsets), templates)
    cell_template = np.tile(np.arange(templates), synsets)
    per_cell = np.full(len(cell_synset), seeds) if keep is None else keep
    units = np.repeat(np.arange(len(cell_synset)), per_cell)
    codes, template_codes = cell_synset[units], cell_template[units]
    x = (
        rng.normal(size=(synsets, CHANNELS))[codes] * np.sqrt(sd["synset"])
        + rng.normal(size=(templates, CHANNELS))[template_codes] * np.sqrt(sd["template"])
        + rng.normal(size=(len(cell_synset), CHANNELS))[units] * np.sqrt(sd["prompt"])
        + rng.normal(size=(len(units), CHANNELS)) * np.sqrt(sd["seed"])
        + 5.0
    )
    return x, codes, template_codes, units


def true_shares(sd=TRUE):
    total = sum(sd.values())
    return {c: v / total for c, v in sd.items()}


def test_balanced_design_is_the_classical_anova():
    """Balanced: the expected mean squares' estimators, computed here from the textbook formulas."""
    rng = np.random.default_rng(0)
    a, b, n = 6, 5, 4
    x, codes, templates, units = crossed_layer(rng, a, b, n)
    grand = x.mean(axis=0)
    cell = np.stack([x[units == u].mean(axis=0) for u in range(a * b)]).reshape(a, b, -1)
    row, column = cell.mean(axis=1), cell.mean(axis=0)
    ms_a = b * n * ((row - grand) ** 2).sum() / (a - 1)
    ms_b = a * n * ((column - grand) ** 2).sum() / (b - 1)
    ms_ab = n * ((cell - row[:, None] - column[None] + grand) ** 2).sum() / ((a - 1) * (b - 1))
    ms_e = ((x - cell.reshape(a * b, -1)[units]) ** 2).sum() / (a * b * (n - 1))
    sigma = {
        "synset": (ms_a - ms_ab) / (b * n),
        "template": (ms_b - ms_ab) / (a * n),
        "prompt": (ms_ab - ms_e) / n,
        "seed": ms_e,
    }
    assert min(sigma.values()) > 0  # no truncation at 0 in this draw
    shares = variance_shares(x, codes, templates, units)
    for name, value in true_shares(sigma).items():
        assert shares[f"var_{name}"] == pytest.approx(value)
    assert shares["icc_seed"] == pytest.approx(1 - shares["var_seed"])


def test_known_components_come_back():
    shares = variance_shares(*crossed_layer(np.random.default_rng(1)))
    for name, value in true_shares().items():
        assert shares[f"var_{name}"] == pytest.approx(value, abs=0.04), name


def test_unbalanced_design_is_unbiased_on_average():
    """Prompts of 1 to 4 seeds and missing cells: averaged over simulated layers, the components come back."""
    rng = np.random.default_rng(2)
    draws = []
    for _ in range(60):
        keep = rng.integers(0, 5, size=80)  # 0: a missing synset x template cell
        draws.append(variance_shares(*crossed_layer(rng, keep=keep)))
    for name, value in true_shares().items():
        assert np.mean([d[f"var_{name}"] for d in draws]) == pytest.approx(value, abs=0.02), name


def test_image_folder_rows_get_synset_and_within():
    """No templates, each image its own unit: synset against everything within a synset."""
    rng = np.random.default_rng(3)
    codes = np.repeat(np.arange(12), 10)
    x = rng.normal(size=(12, CHANNELS))[codes] * 2.0 + rng.normal(size=(120, CHANNELS))
    shares = variance_shares(x, codes, None, np.arange(120))
    assert shares["var_synset"] == pytest.approx(4 / 5, abs=0.05)
    assert shares["var_seed"] == pytest.approx(1 - shares["var_synset"])
    assert np.isnan([shares["var_template"], shares["var_prompt"], shares["icc_seed"]]).all()


def test_templates_confounded_with_synsets_are_not_estimated():
    """Each synset its own templates: a template effect is a synset effect here, so it is NaN, not a guess."""
    rng = np.random.default_rng(4)
    x, codes, templates, units = crossed_layer(rng, synsets=4, templates=2)
    own_templates = codes * 2 + templates  # every (synset, template) a template of its own
    shares = variance_shares(x, codes, own_templates, units)
    assert np.isnan(shares["var_template"])
    assert sum(shares[f"var_{c}"] for c in ("synset", "prompt", "seed")) == pytest.approx(1.0)


def test_analysis_writes_the_columns_and_the_figure(tmp_path):
    """Templates crossed with synsets in a store: layers.csv has its sample's shares, summary.json the figure."""
    x, codes, templates, units = crossed_layer(np.random.default_rng(5), synsets=4, templates=3, seeds=3)
    rows = pd.DataFrame(
        {
            "id": [f"img{i:03d}" for i in range(len(x))],
            "synset": [f"s{c}.n.01" for c in codes],
            "group": "concept",
            "target": [f"s{c}.n.01" for c in codes],
            "path": [f"images/{i:03d}.png" for i in range(len(x))],
            "status": "ok",
            "prompt": [f"template {t} of s{c}" for c, t in zip(codes, templates)],
            "template": [f"template {t}" for t in templates],
        }
    )
    writer = StoreWriter(tmp_path / "s.zarr", attrs={"model": "m"}, hook_channels={"layer": CHANNELS}, pools=("mean",))
    writer.append(rows, {"layer": {"mean": x.astype("float32")}})
    writer.finish()
    store = ActivationStore(tmp_path / "s.zarr")
    params = S.Params(permutations=0)
    write_outputs(S.analyse(store, params), params, store, tmp_path / "out")
    layer = pd.read_csv(tmp_path / "out" / "layers.csv").iloc[0]
    expected = variance_shares(x.astype("float32").astype(np.float64), codes, templates, units)
    for column, value in expected.items():
        assert layer[column] == pytest.approx(value, rel=1e-5), column
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (tmp_path / "out" / summary["figures"]["variance"]).is_file()
