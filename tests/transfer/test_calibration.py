"""Calibration of transfer's p-values on simulated nulls (docs/methods.md).

Under "structure on the generated side only" nothing carries over between the sources: the transfer p (both
directions) and the CKA and representational-similarity p must be uniform over seeds, with about 5 % at or below
0.05. A naive null that relabels the scored rows' units instead of their synsets is run on the same layers to show
the check can fail: the photo probe's predictions on clustered generated images follow the clusters, so that null
rejects far too often.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.transfer import simulated_layers
from scipy import stats as sps

from synthprobe.transfer.analysis import Params, analyse_layer, make_folds
from synthprobe.transfer.pairing import pair_sources
from synthprobe.transfer.probes import Ridge, layer_scores

N_LAYERS = 200
PARAMS = Params(permutations=99)
P_COLUMNS = ("transfer_p", "photo_to_generated_p", "cka_p", "rsa_p")


def null_layers(scenario: str, seed: int, effect: float = 1.5):
    rng = np.random.default_rng(seed)
    for _ in range(N_LAYERS):
        x_g, rows_g, x_p, rows_p = simulated_layers(
            rng, scenario, n_synsets=8, prompts=4, photos=6, channels=8, effect=effect
        )
        generated, photos, _ = pair_sources(rows_g, rows_p, ("concept",), None)
        yield x_g, x_p, generated, photos


@pytest.fixture(scope="module")
def generated_only():
    rows = []
    for i, (x_g, x_p, generated, photos) in enumerate(null_layers("generated-only", 211)):
        params = Params(permutations=PARAMS.permutations, seed=i)
        row, _ = analyse_layer(x_g, x_p, generated, photos, make_folds(generated, photos, params), params)
        rows.append(row)
    return {column: np.array([r[column] for r in rows]) for column in P_COLUMNS}


@pytest.mark.parametrize("column", P_COLUMNS)
def test_null_p_values_are_uniform(generated_only, column):
    p = generated_only[column]
    assert not np.isnan(p).any()
    assert np.mean(p <= 0.05) <= 0.09, np.mean(p <= 0.05)
    assert sps.kstest(p, "uniform").pvalue > 0.01


def unit_relabelling_p(scores: np.ndarray, source, permutations: int, rng) -> float:
    """The naive null: the scored rows' synset labels shuffled over their units."""
    hits = np.mean(scores.argmax(axis=1) == source.codes)
    null = [
        np.mean(scores.argmax(axis=1) == rng.permutation(source.unit_codes)[source.units]) for _ in range(permutations)
    ]
    return (1 + np.count_nonzero(np.array(null) >= hits)) / (1 + permutations)


def test_the_check_fails_for_a_unit_relabelling_null():
    rng = np.random.default_rng(5)
    p = []
    for x_g, x_p, generated, photos in null_layers("generated-only", 212, effect=4.0):
        scores = layer_scores(x_g, x_p, PARAMS.dims, 0)
        to_generated = Ridge.fit(scores.photos, photos.codes, photos.n_synsets).scores(scores.generated)
        p.append(unit_relabelling_p(to_generated, generated, 99, rng))
    assert np.mean(np.array(p) <= 0.05) > 0.15


def test_shared_structure_is_detected():
    rejected = []
    for i, (x_g, x_p, generated, photos) in enumerate(null_layers("shared", 213)):
        if i == 40:
            break
        row, _ = analyse_layer(x_g, x_p, generated, photos, make_folds(generated, photos, PARAMS), PARAMS)
        rejected.append([row[c] <= 0.05 for c in P_COLUMNS])
    assert np.mean(rejected, axis=0).min() > 0.9
