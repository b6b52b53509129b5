"""Calibration of separability's tests on simulated layers (docs/methods.md).

Each simulated layer has synsets of several prompts, several images per prompt, and a random effect per prompt:
images of one prompt share it, as seeds of one prompt text do. The designs are those that broke an earlier
version: templates crossed with synsets with a template effect three times the image noise (as ``wn-prompts``
makes them), templates confounded with synsets, unequal units, synsets with two units, layers wider than ``--dims``.
Under no synset effect a calibrated test rejects at p <= 0.05 in 2-8 % of layers (two-sided bounds); with a synset
effect it must find it. Each check is also run where it must fail (image units, no blocking), to show it can.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from synthprobe.separability import measures as T
from synthprobe.separability.design import Design
from synthprobe.separability.effects import max_t_p
from synthprobe.separability.scan import reduce_sample
from synthprobe.separability.selectivity import channel_selectivity, q_values

N_LAYERS = 200
PERMUTATIONS = 99
CHANNELS = 10


def rejection_rate(p: np.ndarray) -> float:
    return float(np.mean(p <= 0.05))


def within_bounds(p: np.ndarray) -> bool:
    """Two-sided: neither anti-conservative nor so conservative that power is thrown away."""
    return not np.isnan(p).any() and 0.02 <= rejection_rate(p) <= 0.08


def simulated_layer(rng, unit_codes, unit_blocks, images_per_unit, synset_effect, template_sd=0.0, channels=CHANNELS):
    """(images x channels) values, synset codes, prompt units and template blocks: synset centre + template offset
    + prompt effect (SD 1) + image noise (SD 1)."""
    units = np.repeat(np.arange(len(unit_codes)), images_per_unit)
    codes, blocks = unit_codes[units], unit_blocks[units]
    x = (rng.normal(size=(unit_codes.max() + 1, channels)) * synset_effect)[codes]
    x += (rng.normal(size=(unit_blocks.max() + 1, channels)) * template_sd)[blocks]
    x += rng.normal(size=(len(unit_codes), channels))[units] + rng.normal(size=(len(units), channels))
    return x, codes, units, blocks


def crossed(synsets=5, templates=8, prompts=1):
    """Every synset gets every template, ``prompts`` prompts each: (unit synsets, unit templates)."""
    cells = np.array([(s, t) for s in range(synsets) for t in range(templates) for _ in range(prompts)])
    return cells[:, 0], cells[:, 1]


def layer_tests(design_of, n_layers, synset_effect, seed, block=True, permutations=PERMUTATIONS, **layer):
    """Per measure, each layer's p-value (and the tests themselves), the analysis as separability runs it."""
    rng = np.random.default_rng(seed)
    unit_codes, unit_blocks, images = design_of
    out = []
    for i in range(n_layers):
        x, codes, units, blocks = simulated_layer(rng, unit_codes, unit_blocks, images, synset_effect, **layer)
        design = Design.of(codes, units, blocks=blocks if block else None)
        aligned = design.within_blocks(x)
        z, _ = reduce_sample(aligned, 64)
        out.append(T.scale_free_tests(z, aligned, design, permutations, n_folds=5, dims=64, seed=i))
    return {m: np.array([t.p_values[m] for t in out]) for m in T.MEASURES}, out


PLAIN = (np.repeat(np.arange(4), 6), np.zeros(24, dtype=int), 3)  # 4 synsets x 6 prompts x 3 images, no template
CROSSED = (*crossed(), 3)  # 5 synsets x 8 templates x 1 prompt x 3 seeds
TEMPLATE_SD = 3.0


@pytest.fixture(scope="module")
def null_prompt_units():
    return layer_tests(PLAIN, N_LAYERS, 0.0, seed=101)[0]


@pytest.mark.parametrize("measure", T.MEASURES)
def test_null_p_values_are_uniform_with_prompt_units(null_prompt_units, measure):
    p = null_prompt_units[measure]
    assert within_bounds(p), rejection_rate(p)
    # Permutation p-values live on a grid of 1/(PERMUTATIONS+1), which KS tolerates at this size.
    assert sps.kstest(p, "uniform").pvalue > 0.01


def test_image_units_on_the_same_null_are_false_positives():
    """The check can fail: treating the images of one prompt as independent rejects far too often."""
    rng = np.random.default_rng(101)
    p = {m: [] for m in T.MEASURES}
    for i in range(100):
        x, codes, units, _ = simulated_layer(rng, *PLAIN, 0.0)
        design = Design.of(codes, np.arange(len(codes)))
        z, _ = reduce_sample(x, 64)
        tests = T.scale_free_tests(z, x, design, PERMUTATIONS, 5, 64, i)
        for m in T.MEASURES:
            p[m].append(tests.p_values[m])
    for measure in T.MEASURES:
        assert rejection_rate(np.array(p[measure])) > 0.3, measure


def test_power_with_a_synset_effect():
    p, _ = layer_tests(PLAIN, N_LAYERS, 0.7, seed=202)
    for measure in T.MEASURES:
        assert rejection_rate(p[measure]) >= 0.8, (measure, rejection_rate(p[measure]))


def test_templates_crossed_with_synsets_with_a_strong_template_effect():
    """Blocked on template: uniform null p-values and full power; unblocked, the same null layers pile up at 1."""
    p, tests = layer_tests(CROSSED, N_LAYERS, 0.0, seed=505, template_sd=TEMPLATE_SD)
    for measure in T.MEASURES:
        assert within_bounds(p[measure]), (measure, rejection_rate(p[measure]))
        assert sps.kstest(p[measure], "uniform").pvalue > 0.01, measure
    assert {t.probe_folds for t in tests} == {5}  # folds of whole templates
    power, _ = layer_tests(CROSSED, 100, 0.7, seed=506, template_sd=TEMPLATE_SD)
    for measure in T.MEASURES:
        assert rejection_rate(power[measure]) >= 0.8, (measure, rejection_rate(power[measure]))
    unblocked, _ = layer_tests(CROSSED, 50, 0.0, seed=505, block=False, template_sd=TEMPLATE_SD)
    assert np.mean(unblocked["fisher"]) > 0.8  # the check can fail: the template effect inflates the null


def test_templates_confounded_with_synsets_give_no_p_value():
    """Each synset has its own templates: no relabelling within a template can move a label, so nothing is
    rejected (NaN), however large the template effect."""
    unit_codes = np.repeat(np.arange(4), 6)
    unit_blocks = np.repeat(np.arange(8), 3)  # templates 0-1 only in synset 0, 2-3 only in synset 1, ...
    p, tests = layer_tests((unit_codes, unit_blocks, 3), 5, 0.0, seed=606, template_sd=TEMPLATE_SD)
    for measure in T.MEASURES:
        assert np.isnan(p[measure]).all(), measure
    assert all(len(t.null["fisher"]) == 0 for t in tests)


@pytest.mark.parametrize(
    "design_of",
    [
        (np.repeat(np.arange(4), [2, 9, 4, 6]), np.zeros(21, dtype=int), 3),
        (*crossed(synsets=4, templates=4, prompts=1), np.tile([2, 3], 8)),  # 4 units a synset, 2 or 3 images
    ],
    ids=["unequal-units-and-a-two-unit-synset", "four-templates-unequal-images"],
)
def test_null_is_calibrated_on_unequal_designs(design_of):
    p, _ = layer_tests(design_of, N_LAYERS, 0.0, seed=707, template_sd=TEMPLATE_SD)
    for measure in T.MEASURES:
        assert within_bounds(p[measure]), (measure, rejection_rate(p[measure]))


def test_layers_wider_than_dims():
    """2,048 channels on 40 rows: the sample is reduced to 64 axes, the probe fits its own inside each fold."""
    design_of = (*crossed(synsets=4, templates=5, prompts=1), 2)
    p, _ = layer_tests(design_of, 100, 0.0, seed=808, template_sd=TEMPLATE_SD, channels=2048)
    for measure in T.MEASURES:
        assert within_bounds(p[measure]), (measure, rejection_rate(p[measure]))
    power, _ = layer_tests(design_of, 30, 0.5, seed=809, template_sd=TEMPLATE_SD, channels=2048)
    for measure in T.MEASURES:
        assert rejection_rate(power[measure]) >= 0.8, (measure, rejection_rate(power[measure]))


def test_family_wise_p_values_control_the_family():
    """Analyses of 5 null layers sharing their relabellings: some layer has p_fwer <= 0.05 in at most ~5 % of
    analyses (each layer alone rejects in about 5 %, so any of five in about 23 %)."""
    rng = np.random.default_rng(909)
    any_fwer, any_raw = {m: [] for m in T.MEASURES}, {m: [] for m in T.MEASURES}
    for _ in range(120):
        seed = int(rng.integers(1 << 30))
        _, tests = layer_tests(CROSSED, 5, 0.0, seed=seed, permutations=199, template_sd=TEMPLATE_SD)
        for m in T.MEASURES:
            observed = np.array([t.estimates[m] for t in tests])
            raw = np.array([t.p_values[m] for t in tests])
            fwer = max_t_p(observed, np.stack([t.null[m] for t in tests]), raw)
            assert (fwer >= raw).all()
            any_fwer[m].append((fwer <= 0.05).any())
            any_raw[m].append((raw <= 0.05).any())
    for m in T.MEASURES:
        assert np.mean(any_fwer[m]) <= 0.09, (m, np.mean(any_fwer[m]))
        assert np.mean(any_raw[m]) > 0.12, m  # the check can fail: uncorrected, a family rejects far more


def selectivity_found(design_of, n_layers, synset_effect, seed, block=True, template_sd=0.0):
    """Every (synset, channel) p-value of every layer, and per layer whether BH finds a selective channel."""
    rng = np.random.default_rng(seed)
    all_p, any_found = [], []
    for _ in range(n_layers):
        x, codes, units, blocks = simulated_layer(rng, *design_of, synset_effect, template_sd=template_sd)
        p = channel_selectivity(x, Design.of(codes, units, blocks=blocks if block else None))["p_value"]
        all_p.append(p.ravel())
        any_found.append((q_values(p) < 0.05).any())
    return np.concatenate(all_p), np.array(any_found)


def test_channel_selectivity_is_calibrated_on_unit_means():
    p, any_found = selectivity_found(PLAIN, N_LAYERS, 0.0, seed=303)
    assert 0.02 <= rejection_rate(p) <= 0.06
    # Under the global null Benjamini-Hochberg controls the chance of any discovery at alpha.
    assert np.mean(any_found) <= 0.08
    # Exact Mann-Whitney p-values are discrete (6 against 18 units), so compare quantiles, not KS.
    assert np.quantile(p, 0.5) == pytest.approx(0.5, abs=0.05)
    _, found = selectivity_found(PLAIN, N_LAYERS, 1.0, seed=404)
    assert np.mean(found) >= 0.8


def test_channel_selectivity_within_templates():
    """van Elteren within templates: selective channels on at most 10 % of null layers and on signal layers,
    where the same test unblocked finds almost nothing."""
    p, any_found = selectivity_found(CROSSED, N_LAYERS, 0.0, seed=313, template_sd=TEMPLATE_SD)
    assert 0.02 <= rejection_rate(p) <= 0.08 and np.mean(any_found) <= 0.10
    _, found = selectivity_found(CROSSED, N_LAYERS, 1.0, seed=414, template_sd=TEMPLATE_SD)
    assert np.mean(found) >= 0.8, np.mean(found)
    _, unblocked = selectivity_found(CROSSED, N_LAYERS, 1.0, seed=414, block=False, template_sd=TEMPLATE_SD)
    assert np.mean(unblocked) < 0.3
