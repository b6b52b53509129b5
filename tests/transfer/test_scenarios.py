"""The three simulated store pairs of issue 21 give the expected readings (docs/methods.md).

* shared class structure: transfer near the within-photo accuracy, CKA high with a small p, no domain gap;
* structure on the generated side only: transfer at chance, photo accuracy at chance, a domain gap;
* a constant domain offset on the photos: domain accuracy near 1; centring each source keeps transfer, the
  uncentred probe loses it; CKA does not move (centroids are centred over synsets).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.transfer import simulated_layers

from synthprobe.transfer.analysis import Params, analyse_layer, make_folds
from synthprobe.transfer.pairing import pair_sources

PARAMS = Params(permutations=499)


def readings(scenario: str, seed: int = 0, **options) -> dict:
    x_g, rows_g, x_p, rows_p = simulated_layers(np.random.default_rng(seed), scenario, prompts=8, **options)
    generated, photos, _ = pair_sources(rows_g, rows_p, ("concept",), None)
    row, per_synset = analyse_layer(x_g, x_p, generated, photos, make_folds(generated, photos, PARAMS), PARAMS)
    return {**row, "per_synset": per_synset, "units": (generated.n_units, photos.n_units)}


def test_prompt_units_for_generated_images_and_photos_as_their_own():
    units = readings("shared")["units"]
    assert units == (6 * 8, 6 * 12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shared_structure_transfers(seed):
    r = readings("shared", seed)
    assert r["photo_accuracy"] > 0.8 and r["generated_accuracy"] > 0.8
    assert r["transfer_accuracy"] >= r["photo_accuracy"] - 0.1
    assert r["transfer_p"] <= 0.01 and r["photo_to_generated_p"] <= 0.01
    assert r["transfer_ratio_above_chance"] > 0.85
    assert r["cka"] > 0.8 and r["cka_p"] <= 0.01 and r["rsa"] > 0.5 and r["rsa_p"] <= 0.01
    assert 0.3 <= r["domain_accuracy"] <= 0.7
    assert r["selective_overlap"] > r["selective_overlap_chance"]
    assert r["photo_auroc_selective"] > 0.7 > r["photo_auroc_other"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_structure_on_generated_images_only_does_not_transfer(seed):
    r = readings("generated-only", seed)
    assert r["generated_accuracy"] > 0.8
    assert abs(r["photo_accuracy"] - r["chance"]) < 0.15
    assert abs(r["transfer_accuracy"] - r["chance"]) < 0.15
    assert r["domain_accuracy"] > 0.8  # the generated synsets sit away from the structureless photos
    assert r["selective_photos"] == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_constant_domain_offset(seed):
    plain, shifted = readings("shared", seed), readings("shared", seed, offset=4.0)
    assert plain["domain_accuracy"] < 0.7 and shifted["domain_accuracy"] > 0.95
    assert shifted["transfer_accuracy"] == pytest.approx(plain["transfer_accuracy"], abs=0.05)
    assert shifted["transfer_accuracy_uncentred"] < shifted["transfer_accuracy"] - 0.2
    assert shifted["cka"] == pytest.approx(plain["cka"], abs=1e-6)
    assert shifted["rsa"] == pytest.approx(plain["rsa"], abs=1e-9)
