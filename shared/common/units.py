"""The experimental unit of both analyses (docs/methods.md).

Images made from one prompt text (several seeds, or one concept template
reused) share that prompt's effect, so they are not independent samples: every
permutation, fold, bootstrap and test works on *units*. The prompt unit is
(synset, prompt text); a row without a prompt text (an ImageFolder image) is a
unit of its own. ``--unit image`` makes every image its own unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from synthprobe.common.files import InputError

UNITS = ("prompt", "image")


@dataclass(frozen=True)
class Units:
    """Which unit each row belongs to."""

    kind: str  # "prompt" or "image"
    codes: np.ndarray  # (rows,) unit index of every row, 0 .. n_units - 1, in order of first appearance

    @property
    def n_units(self) -> int:
        return int(self.codes.max()) + 1 if len(self.codes) else 0

    def summary(self) -> dict:
        return {"unit": self.kind, "n_units": self.n_units}


def assign_units(rows: pd.DataFrame, unit: str | None) -> Units:
    """Unit codes for ``rows`` (a row table with ``id``, ``synset`` and ``prompt``); ``unit`` None is "prompt"."""
    if unit not in (None, *UNITS):
        raise InputError(f"--unit {unit!r} is not one of {', '.join(UNITS)}")
    kind = unit or "prompt"
    ids = rows["id"].astype(str).to_numpy()
    if kind == "image":
        keys = ids
    else:
        prompts = rows["prompt"].astype(str).to_numpy()
        synsets = rows["synset"].astype(str).to_numpy()
        # "\x00" cannot occur in a synset name or id: a prompt unit never collides with an own-image unit.
        keys = np.where(prompts != "", synsets + "\x00" + prompts, "\x00" + ids)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # number units in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return Units(kind=kind, codes=rank[inverse.ravel()])
