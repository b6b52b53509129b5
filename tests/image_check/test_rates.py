"""image-check's leak and miss rates: counted over prompt units, with intervals that cover when the images of
a prompt fail together.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synthprobe.common.stats import clustered_proportion
from synthprobe.image_check.rates import flag_rates


def test_flag_rates_count_prompt_units():
    images = pd.DataFrame(
        {
            "id": ["a0", "a1", "b0", "c0", "c1", "d0"],
            "synset": ["bee.n.01"] * 6,
            "prompt": ["p1", "p1", "p2", "c1", "c1", "c2"],
        }
    )
    checks = pd.DataFrame(
        {
            "id": images["id"],
            "synset": "bee.n.01",
            "group": ["object-only"] * 3 + ["context-only"] * 3,
            "verdict": ["object-missing", "ok", "ok", "object-leaked", "object-leaked", "unscored"],
        }
    )
    rates = flag_rates(checks, images).set_index("group")
    assert not rates["negative_prompt"].any()
    assert rates.loc["object-only", ["flag", "n", "n_units", "n_flagged"]].tolist() == ["object-missing", 3, 2, 1]
    assert rates.loc["context-only", ["flag", "n", "n_units", "n_flagged"]].tolist() == ["object-leaked", 2, 1, 2]
    assert rates.loc["object-only", "rate"] == pytest.approx(1 / 3)
    assert 0 <= rates.loc["object-only", "rate_low"] < 1 / 3 < rates.loc["object-only", "rate_high"] <= 1
    assert np.isnan(rates.loc["context-only", "rate_low"])  # one unit: no interval


def test_leak_rates_split_by_negative_prompt():
    """The context-only images of one class, half made with a negative prompt: two rows, so the fall shows."""
    images = pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(8)],
            "synset": "frog.n.01",
            "prompt": ["pond", "pond", "reeds", "reeds"] * 2,
            "negative_prompt": [""] * 4 + ["frog, toad"] * 4,
        }
    )
    verdicts = ["object-leaked", "object-leaked", "object-leaked", "ok", "ok", "ok", "object-leaked", "ok"]
    checks = pd.DataFrame({"id": images["id"], "synset": "frog.n.01", "group": "context-only", "verdict": verdicts})
    rates = flag_rates(checks, images).set_index("negative_prompt")
    assert rates.loc[False, ["n", "n_units", "n_flagged"]].tolist() == [4, 2, 3]
    assert rates.loc[True, ["n", "n_units", "n_flagged"]].tolist() == [4, 2, 1]
    assert rates.loc[True, "rate"] < rates.loc[False, "rate"]
    # A folder without the column (a plain tree, an older manifest) is all made without one.
    assert flag_rates(checks, images.drop(columns="negative_prompt"))["negative_prompt"].tolist() == [False]


def clustered_flags(rng, rate: float, concentration: float):
    """5-10 prompts of 2-4 images; each prompt's own flag rate ~ Beta(mean ``rate``)."""
    k = rng.integers(5, 11)
    sizes = rng.integers(2, 5, size=k)
    prompt_rates = rng.beta(rate * concentration, (1 - rate) * concentration, size=k)
    return rng.binomial(sizes, prompt_rates), sizes


def wilson_over_images(flagged, sizes, z=1.959964):
    """What treating images as independent gives: Wilson's interval on all images."""
    n, p = sizes.sum(), flagged.sum() / sizes.sum()
    centre, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n),
    )
    return centre - half, centre + half


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5])
def test_flag_rate_intervals_cover_with_correlated_images(rate):
    rng = np.random.default_rng(int(rate * 100))
    ours, naive = [], []
    for _ in range(400):
        flagged, sizes = clustered_flags(rng, rate, concentration=2.0)
        estimate = clustered_proportion(flagged, sizes)
        ours.append(estimate.low <= rate <= estimate.high)
        low, high = wilson_over_images(flagged, sizes)
        naive.append(low <= rate <= high)
    assert 0.9 <= np.mean(ours) <= 0.995, np.mean(ours)
    assert np.mean(naive) < 0.9, np.mean(naive)  # the check can fail: images of a prompt are not independent
