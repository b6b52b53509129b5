"""How much of a layer's variation is the concept, the wording and the seed: a variance decomposition per layer.

A random-effects model of every channel of the analysis sample: synset + template + prompt (the synset x template
cell, or any prompt within it) + seed (images of one prompt), components estimated by the method of moments on the
sums of squares traced over channels (Henderson's method I: each grouping's sum of squared group totals against
its expectation under the model). On a balanced design (every synset the same templates, every prompt the same
seeds) these are the classical ANOVA estimators and unbiased; on an unbalanced one Henderson's method I is still
unbiased for a random-effects model, only less efficient. Negative estimates (a component whose mean square falls
below the one it is tested against) are set to 0 before the shares are taken (docs/methods.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthprobe.separability.design import group_sums

COMPONENTS = ("synset", "template", "prompt", "seed")


@dataclass(frozen=True)
class VarianceModel:
    """The sample's design, once per analysis: which components it can estimate and the expectations' coefficients."""

    groupings: dict[str, np.ndarray]  # component -> (n,) level of each row; "seed" is each row its own level
    coefficients: np.ndarray | None  # (g, c): E[T_g] - E[T_mean] = coefficients @ sigma; None if not identifiable

    @classmethod
    def of(cls, synsets: np.ndarray, templates: np.ndarray | None, units: np.ndarray) -> VarianceModel:
        """``synsets``, ``units`` (n,) integer codes; ``templates`` (n,) codes, or None where the rows have none.

        A component the design cannot estimate is left out: template without templates, or where no template is
        shared by two synsets and no synset has two templates (template and concept cannot be told apart); prompt
        where every unit is one image (the within-synset variance is then the residual, reported as ``seed``).
        """
        groupings = {"synset": synsets}
        if templates is not None and separable(synsets, templates):
            groupings["template"] = templates
        if np.bincount(units).max() > 1:
            groupings["prompt"] = units
        groupings["seed"] = np.arange(len(synsets))
        whole = np.zeros(len(synsets), dtype=np.int64)
        coefficients = np.array(
            [
                [pair_coefficient(groups, levels) - pair_coefficient(whole, levels) for levels in groupings.values()]
                for groups in groupings.values()
            ]
        )
        if np.linalg.matrix_rank(coefficients) < len(groupings):  # e.g. one prompt per synset: prompt is synset
            coefficients = None
        return cls(groupings, coefficients)

    def shares(self, x: np.ndarray) -> dict:
        """Share of the total variance of ``x`` (n, channels) per component (NaN where not estimated), and the seeds'
        intraclass correlation (NaN without prompts of several images):
        {"var_synset", "var_template", "var_prompt", "var_seed", "icc_seed"}."""
        shares = dict.fromkeys(COMPONENTS, float("nan"))
        if self.coefficients is not None:
            centred = x - x.mean(axis=0)  # T_mean is then 0
            observed = np.array([group_square_sum(centred, groups) for groups in self.groupings.values()])
            estimates = np.maximum(np.linalg.solve(self.coefficients, observed), 0.0)
            total = estimates.sum()
            for name, value in zip(self.groupings, estimates):
                shares[name] = float(value / total) if total > 0 else float("nan")
        icc = 1.0 - shares["seed"] if "prompt" in self.groupings else float("nan")
        return {**{f"var_{c}": shares[c] for c in COMPONENTS}, "icc_seed": icc}


def separable(synsets: np.ndarray, templates: np.ndarray) -> bool:
    """Whether template and synset effects can be told apart: two templates at least, and some template shared by
    two synsets or some synset with two templates."""
    cells = np.unique(np.stack([synsets, templates]), axis=1)
    n_templates, n_synsets = len(np.unique(templates)), len(np.unique(synsets))
    return n_templates > 1 and cells.shape[1] > max(n_templates, n_synsets)


def group_square_sum(centred: np.ndarray, groups: np.ndarray) -> float:
    """T_g: sum over groups of the squared norm of the group's total row, over its size."""
    sizes = np.bincount(groups)
    totals = group_sums(centred, groups)
    kept = sizes > 0
    return float(((totals[kept] ** 2).sum(axis=1) / sizes[kept]).sum())


def pair_coefficient(groups: np.ndarray, levels: np.ndarray) -> float:
    """The coefficient of a component with ``levels`` in E[T_g] of the grouping ``groups``:
    sum over groups G and levels L of n(G and L)^2 / n(G)."""
    n_levels = levels.max() + 1
    pairs = np.bincount(groups * n_levels + levels)
    group_of_pair = np.arange(len(pairs)) // n_levels
    sizes = np.bincount(groups)
    return float((pairs.astype(np.float64) ** 2 / np.maximum(sizes[group_of_pair], 1)).sum())
