"""separability's design: template blocks read from the rows, relabellings and folds that respect them, van
Elteren's test within templates, the note where templates and synsets cannot be told apart."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import build_store, fails_with
from scipy import stats as sps

from synthprobe.formats.activation_store import ActivationStore
from synthprobe.separability import Params, analyse
from synthprobe.separability.design import Design, block_permutations, permutation_strata, probe_folds
from synthprobe.separability.selectivity import channel_selectivity
from synthprobe.tools.separability import main


def crossed_rows(synsets=5, templates=8, seeds=2):
    """Synset and template of every image of a crossed design (one prompt per synset and template)."""
    cells = [(s, t) for s in range(synsets) for t in range(templates)]
    unit_codes = np.array([s for s, _ in cells])
    unit_blocks = np.array([t for _, t in cells])
    units = np.repeat(np.arange(len(cells)), seeds)
    return unit_codes, unit_blocks, units


def test_relabellings_stay_within_templates_and_folds_keep_templates_whole():
    unit_codes, unit_blocks, units = crossed_rows()
    design = Design.of(unit_codes[units], units, blocks=unit_blocks[units])
    folds = probe_folds(design, 5, seed=0)
    assert len(folds) == 5
    for train, test in folds:  # a template on one side only; every synset trains
        assert not set(design.blocks[train]) & set(design.blocks[test])
        assert set(design.codes[train]) == set(range(5))
    relabelled = block_permutations(unit_codes, permutation_strata(design, folds), 20, np.random.default_rng(0))
    for labels in relabelled:
        for t in range(8):
            assert sorted(labels[unit_blocks == t]) == sorted(unit_codes[unit_blocks == t])
    assert (relabelled != unit_codes).any(axis=1).all()


def test_centring_within_templates_removes_the_template_offset_only():
    unit_codes, unit_blocks, units = crossed_rows(seeds=1)
    design = Design.of(unit_codes[units], units, blocks=unit_blocks[units])
    offsets = np.arange(8.0)[:, None] * 10
    concept = np.arange(5.0)[:, None]
    aligned = design.within_blocks(offsets[design.blocks] + concept[design.codes])
    np.testing.assert_allclose(aligned, (concept - concept.mean())[design.codes])


def test_van_elteren_sums_each_template_s_mann_whitney():
    """Against scipy block by block: U per template, variance n m (N + 1) / 12 times the tie correction, each
    template weighted by 1 / (N + 1); unequal cells and ties included."""
    rng = np.random.default_rng(12)
    cells = [(s, t) for s in range(3) for t in range(4) for _ in range(rng.integers(1, 4))]
    unit_codes, unit_blocks = np.array(cells).T
    units = np.repeat(np.arange(len(cells)), 2)
    x = np.round(rng.normal(size=(len(units), 3)) + 3 * unit_blocks[units, None], 1)
    result = channel_selectivity(x, Design.of(unit_codes[units], units, blocks=unit_blocks[units]))
    means = np.stack([x[units == u].mean(axis=0) for u in range(len(cells))])
    for k in range(3):
        for c in range(3):
            weighted = variance = u_total = pairs = 0.0
            for t in range(4):
                inside = means[(unit_blocks == t) & (unit_codes == k), c]
                outside = means[(unit_blocks == t) & (unit_codes != k), c]
                size, n_pairs = len(inside) + len(outside), len(inside) * len(outside)
                u = sps.mannwhitneyu(inside, outside).statistic
                tie = sps.tiecorrect(np.concatenate([inside, outside]))
                weighted += (u - n_pairs / 2) / (size + 1)
                variance += n_pairs * (size + 1) / 12 * tie / (size + 1) ** 2
                u_total, pairs = u_total + u, pairs + n_pairs
            assert result["p_value"][k, c] == pytest.approx(sps.norm.sf(weighted / np.sqrt(variance)))
            assert result["auroc"][k, c] == pytest.approx(u_total / pairs)


def template_store(path, synset_templates: dict[str, list[str]], signal: float, seed=0, seeds=3):
    """One layer: a template offset 5 times the image noise, ``signal`` times a synset offset, a prompt effect."""
    rng = np.random.default_rng(seed)
    cells = [(s, t) for s, templates in synset_templates.items() for t in templates]
    names = sorted({t for _, t in cells})
    synset_index = {s: i for i, s in enumerate(synset_templates)}
    template_offset = rng.normal(size=(len(names), 6)) * 5
    synset_offset = rng.normal(size=(len(synset_templates), 6)) * signal
    rows = [(s, t, names.index(t)) for s, t in cells for _ in range(seeds)]
    values = np.stack(
        [template_offset[b] + synset_offset[synset_index[s]] + rng.normal(size=6) for s, _, b in rows]
    ) + np.repeat(rng.normal(size=(len(cells), 6)), seeds, axis=0)
    return build_store(
        path,
        {"h": values},
        [s for s, _, _ in rows],
        prompts=[f"{t} of {s}" for s, t, _ in rows],
        templates=[t for _, t, _ in rows],
    )


def test_a_crossed_store_is_blocked_on_template(tmp_path, cli):
    templates = [f"t{i}" for i in range(6)]
    store = template_store(tmp_path / "c.zarr", {f"s{i}.n.01": templates for i in range(4)}, signal=1.5)
    out = tmp_path / "out"
    cli(main, store, "--out", out, "--permutations", 99, "--silent")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["block"] == "template" and summary["n_blocks"] == 6 and summary["design_note"] is None
    assert summary["parameters"]["block"] is None  # the default, resolved in "block"
    layer = analyse(ActivationStore(store), Params(permutations=99)).layers.iloc[0]
    assert layer["fisher_p"] == pytest.approx(0.01) and layer["probe_p"] == pytest.approx(0.01)
    unblocked = analyse(ActivationStore(store), Params(permutations=99, block="none")).layers.iloc[0]
    assert unblocked["fisher_p"] > 0.05  # the template effect swamps the synsets' when ignored


def test_templates_of_one_synset_only_are_named_and_never_rejected(tmp_path, caplog, cli):
    """Each synset has its own templates: concept and template cannot be told apart; blocked, nothing moves."""
    store = template_store(tmp_path / "o.zarr", {"a.n.01": ["t0", "t1"], "b.n.01": ["t2", "t3"]}, signal=0.0)
    out = tmp_path / "out"
    cli(main, store, "--out", out, "--permutations", 20, "--block", "template", "--silent")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["block"] == "template"
    assert "concept and template cannot be told apart" in summary["design_note"]
    assert summary["design_note"] in summary["notes"] and "cannot be told apart" in caplog.text
    layer = analyse(ActivationStore(store), Params(permutations=20, block="template")).layers.iloc[0]
    assert np.isnan(layer[["fisher_p", "silhouette_p", "probe_p", "fisher_p_fwer"]].astype(float)).all()
    default = analyse(ActivationStore(store), Params(permutations=20))
    assert default.blocks["block"] == "none" and "cannot be told apart" in default.blocks["design_note"]


def test_partly_shared_templates_hold_their_unshared_units_fixed(tmp_path):
    store = template_store(
        tmp_path / "p.zarr", {"a.n.01": ["t0", "t1", "t2"], "b.n.01": ["t0", "t1", "t3"]}, signal=0.0
    )
    result = analyse(ActivationStore(store), Params(permutations=20))
    assert result.blocks["block"] == "template"
    assert result.blocks["design_note"].startswith("2 of 4 templates belong to one synset only (t2, t3)")


def test_block_template_needs_templates(tmp_path, cli):
    store = build_store(tmp_path / "n.zarr", {"h": np.ones((4, 2))}, ["a.n.01", "b.n.01"] * 2)
    result = cli(main, store, "--out", tmp_path / "out", "--block", "template", exit_code=None)
    fails_with(result, "--block template", "the rows have no templates")
