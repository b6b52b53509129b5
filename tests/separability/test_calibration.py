"""Calibration of separability's tests on simulated layers (docs/methods.md).

Each simulated layer has synsets of several prompts, several images per prompt,
and a random effect per prompt: images of one prompt share it, as seeds of one
prompt text do. Under no synset effect a calibrated test rejects at p <= 0.05
in about 5% of layers and its p-values are uniform; the same simulation with a
synset effect must be detected. The image-level procedure (each image its own
unit) is run on the same null layers to show the check can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from synthprobe.separability import measures as T
from synthprobe.separability.scan import reduce_sample

N_LAYERS = 200
PERMUTATIONS = 99
SYNSETS, PROMPTS_PER_SYNSET, IMAGES_PER_PROMPT, CHANNELS = 4, 6, 3, 10


def simulated_layer(rng, synset_effect: float, prompt_sd: float = 1.0):
    """(images x channels) values, synset codes and prompt units: synset centre + prompt effect + image noise."""
    unit_codes = np.repeat(np.arange(SYNSETS), PROMPTS_PER_SYNSET)
    units = np.repeat(np.arange(len(unit_codes)), IMAGES_PER_PROMPT)
    codes = unit_codes[units]
    centres = rng.normal(size=(SYNSETS, CHANNELS)) * synset_effect
    prompt_effects = rng.normal(size=(len(unit_codes), CHANNELS)) * prompt_sd
    x = centres[codes] + prompt_effects[units] + rng.normal(size=(len(units), CHANNELS))
    return x, codes, units


def layer_p_values(synset_effect: float, unit: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = {m: [] for m in T.MEASURES}
    for i in range(N_LAYERS):
        x, codes, units = simulated_layer(rng, synset_effect)
        design = T.Design.of(codes, units if unit == "prompt" else np.arange(len(codes)))
        z, _ = reduce_sample(x, 64)
        tests = T.scale_free_tests(z, x, design, PERMUTATIONS, n_folds=5, dims=64, seed=i)
        for m in T.MEASURES:
            p[m].append(tests.p_values[m])
    return {m: np.array(v) for m, v in p.items()}


@pytest.fixture(scope="module")
def null_prompt_units():
    return layer_p_values(0.0, "prompt", seed=101)


@pytest.mark.parametrize("measure", T.MEASURES)
def test_null_p_values_are_uniform_with_prompt_units(null_prompt_units, measure):
    p = null_prompt_units[measure]
    assert not np.isnan(p).any()
    assert np.mean(p <= 0.05) <= 0.08, np.mean(p <= 0.05)
    # Permutation p-values live on a grid of 1/(PERMUTATIONS+1), which KS tolerates at this size.
    assert sps.kstest(p, "uniform").pvalue > 0.01


def test_image_units_on_the_same_null_are_false_positives():
    """The check can fail: treating the images of one prompt as independent rejects far too often."""
    p = layer_p_values(0.0, "image", seed=101)
    for measure in T.MEASURES:
        assert np.mean(p[measure] <= 0.05) > 0.3, measure


def test_power_with_a_synset_effect():
    p = layer_p_values(0.7, "prompt", seed=202)
    for measure in T.MEASURES:
        assert np.mean(p[measure] <= 0.05) >= 0.8, (measure, np.mean(p[measure] <= 0.05))


def selectivity_p_values(synset_effect: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per layer: every (synset, channel) p-value, and whether BH finds any selective channel."""
    rng = np.random.default_rng(seed)
    all_p, any_found = [], []
    for _ in range(N_LAYERS):
        x, codes, units = simulated_layer(rng, synset_effect)
        p = T.channel_selectivity(x, T.Design.of(codes, units))["p_value"]
        all_p.append(p.ravel())
        any_found.append((T.q_values(p) < 0.05).any())
    return np.concatenate(all_p), np.array(any_found)


def test_channel_selectivity_is_calibrated_on_unit_means():
    p, any_found = selectivity_p_values(0.0, seed=303)
    assert np.mean(p <= 0.05) <= 0.06
    # Under the global null Benjamini-Hochberg controls the chance of any discovery at alpha.
    assert np.mean(any_found) <= 0.08
    # Exact Mann-Whitney p-values are discrete (6 against 18 units), so compare quantiles, not KS.
    assert np.quantile(p, 0.5) == pytest.approx(0.5, abs=0.05)
    _, found = selectivity_p_values(1.0, seed=404)
    assert np.mean(found) >= 0.8
