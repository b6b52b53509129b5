"""The sentences that lead the report's "Generated images vs photos" section, one set per classifier."""

from __future__ import annotations

import numpy as np
import pandas as pd

DOMAIN_RECOGNISED = 0.9  # domain accuracy from which generated images count as recognisable as generated


def carried_from(layers: pd.DataFrame, alpha: float) -> int | None:
    """Position of the first layer from which every later layer's transfer p is at most ``alpha``; None if the
    last layer's is not."""
    significant = (layers["transfer_p"] <= alpha).to_numpy()
    if not len(significant) or not significant[-1]:
        return None
    failing = np.flatnonzero(~significant)
    return int(failing[-1] + 1) if len(failing) else 0


def transfer_sentence(layers: pd.DataFrame, alpha: float) -> str:
    if layers["transfer_p"].isna().all():
        best = layers.loc[layers["transfer_accuracy"].idxmax()]
        return (
            f"The probe trained on generated images reaches {best['transfer_accuracy']:.0%} on photos at "
            f"{best['layer']} (chance {best['chance']:.0%}; no permutations, so no test)."
        )
    start = carried_from(layers, alpha)
    if start is None:
        return (
            f"The probe trained on generated images is not above chance on photos at the last layer "
            f"(permutation p > {alpha:g}): what the layers separate on generated images does not carry over."
        )
    tail = layers.iloc[start:]
    kept = tail["transfer_ratio_above_chance"].median()
    first = tail["layer"].iloc[0]
    kept_text = f"keeps {kept:.0%} of its photo accuracy above chance" if np.isfinite(kept) else "is above chance"
    sentence = f"The probe trained on generated images {kept_text} from {first} on (median over {len(tail)} layers)"
    if start > 0:
        sentence += f"; before {first} it is at chance (p > {alpha:g} at {layers['layer'].iloc[start - 1]})"
    return sentence + "."


def domain_sentence(layers: pd.DataFrame) -> str:
    domain = layers["domain_accuracy"]
    if domain.isna().all():
        return "The domain gap is undefined: a synset needs two units in each source."
    recognised = layers[domain >= DOMAIN_RECOGNISED]
    where = (
        f"a probe first tells them apart with {DOMAIN_RECOGNISED:.0%} accuracy or more at {recognised['layer'].iloc[0]}"
        if len(recognised)
        else f"no layer reaches {DOMAIN_RECOGNISED:.0%}"
    )
    return (
        f"Within a synset, generated images are told from photos with {domain.iloc[-1]:.0%} accuracy at the last "
        f"layer (0.5: indistinguishable); {where}."
    )


def geometry_sentence(layers: pd.DataFrame, alpha: float) -> str:
    last = layers.iloc[-1]
    agreeing = int((layers["cka_p"] <= alpha).sum())
    return (
        f"The synsets' arrangement agrees at {agreeing} of {len(layers)} layers (CKA permutation p <= {alpha:g}); "
        f"at the last layer CKA is {last['cka']:.2f} (p {last['cka_p']:.2g})."
    )


def headline(layers: pd.DataFrame, alpha: float) -> list[str]:
    return [transfer_sentence(layers, alpha), domain_sentence(layers), geometry_sentence(layers, alpha)]
