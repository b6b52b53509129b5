"""The flag rates of rates.csv corrected for a judge's measured error (Rogan-Gladen, with a delta-method interval).

A judge with sensitivity Se and specificity Sp flags a share r = Se t + (1 - Sp)(1 - t)
of images whose true share is t, so t = (r + Sp - 1) / (Se + Sp - 1). The interval's
coverage on simulated labels is measured in tests/image_check/test_audit.py.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from synthprobe.common.stats import NAN, Estimate

MEASURED = ("sensitivity", "specificity")
CORRECTED_COLUMNS = ["synset", "group", "negative_prompt", "flag", "n", "rate", "rate_low", "rate_high", "judge"]
CORRECTED_COLUMNS += ["sensitivity", "specificity", "corrected", "corrected_low", "corrected_high"]


def interval_se(value: float, low: float, high: float, level: float) -> float:
    """A standard error read off a two-sided interval (its width over 2 z); Wilson's keeps a width at 0 and 1."""
    return (high - low) / (2 * stats.norm.ppf((1 + level) / 2))


def rogan_gladen(rate: Estimate, sensitivity: Estimate, specificity: Estimate, level: float = 0.95) -> Estimate:
    """The true rate behind an apparent ``rate`` of a judge with this sensitivity and specificity, with a
    delta-method interval over the three estimates' errors (independent samples), clipped to 0..1.

    (rate + Sp - 1) / (Se + Sp - 1); undefined unless the judge beats chance (Se + Sp > 1).
    """
    youden = sensitivity.value + specificity.value - 1
    if not youden > 0 or any(math.isnan(e.low) for e in (rate, sensitivity, specificity)):
        return Estimate(NAN)
    value = (rate.value + specificity.value - 1) / youden
    se = [interval_se(e.value, e.low, e.high, level) for e in (rate, sensitivity, specificity)]
    variance = (se[0] ** 2 + value**2 * se[1] ** 2 + (1 - value) ** 2 * se[2] ** 2) / youden**2
    half = stats.norm.ppf((1 + level) / 2) * math.sqrt(variance)
    clip = lambda x: min(1.0, max(0.0, x))  # noqa: E731
    return Estimate(clip(value), clip(value - half), clip(value + half))


def corrected_rates(rates: pd.DataFrame, judge: str, audit: pd.DataFrame, level: float) -> pd.DataFrame:
    """rates.csv's rows of ``judge`` with the judge's measured sensitivity and specificity and the corrected rate
    (the audit's kind is the flag's name: object-missing is missing)."""
    lines = []
    for _, rate in rates.iterrows():
        found = audit[(audit["judge"] == judge) & (audit["kind"] == rate["flag"].removeprefix("object-"))]
        if found.empty:
            continue
        measured = found.iloc[0]
        se, sp = (Estimate(measured[m], measured[f"{m}_low"], measured[f"{m}_high"]) for m in MEASURED)
        corrected = rogan_gladen(Estimate(rate["rate"], rate["rate_low"], rate["rate_high"]), se, sp, level)
        lines.append(
            {
                **{k: rate[k] for k in ("synset", "group", "flag", "n", "rate", "rate_low", "rate_high")},
                "negative_prompt": bool(rate.get("negative_prompt", False)),  # rates.csv before the split: none
                "judge": judge,
                "sensitivity": se.value,
                "specificity": sp.value,
                "corrected": corrected.value,
                "corrected_low": corrected.low,
                "corrected_high": corrected.high,
            }
        )
    return pd.DataFrame(lines, columns=CORRECTED_COLUMNS)
