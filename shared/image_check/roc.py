"""The raw score against the labels: ROC curve, AUC, and the threshold that reaches a target precision or recall.

``low_flags``: a lower object score flags sooner (object-missing); otherwise a higher one does (object-leaked).
Every estimate is weighted by the sample's design (each label's weight).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from synthprobe.common.plots import pyplot, save_png
from synthprobe.common.stats import NAN

ROC_FIGURE = "roc.png"


def flag_strength(part: pd.DataFrame, low_flags: bool) -> np.ndarray:
    """The score turned so that larger flags sooner."""
    return -part["score"].to_numpy() if low_flags else part["score"].to_numpy()


def auc(part: pd.DataFrame, low_flags: bool) -> float:
    """The weighted area under the ROC curve of the raw score (ties count half, as in scikit-learn's
    roc_auc_score with sample_weight); NaN unless both answers occur."""
    condition, weight = part["condition"].to_numpy(), part["weight"].to_numpy()
    if condition.all() or not condition.any():
        return NAN
    levels, position = np.unique(flag_strength(part, low_flags), return_inverse=True)
    positives = np.bincount(position, weights=weight * condition, minlength=len(levels))
    negatives = np.bincount(position, weights=weight * ~condition, minlength=len(levels))
    below = np.cumsum(negatives) - negatives
    return float((positives * (below + negatives / 2)).sum() / (positives.sum() * negatives.sum()))


def cuts(part: pd.DataFrame, low_flags: bool) -> pd.DataFrame:
    """Every threshold between two labelled scores, with the weighted precision and recall of flagging by it."""
    strength = flag_strength(part, low_flags)
    levels = np.unique(strength)
    # Flag the images at or above each level: the threshold lies halfway to the next lower score.
    below = np.concatenate([[levels[0] - 1.0], levels[:-1]])
    weight, condition = part["weight"].to_numpy(), part["condition"].to_numpy()
    lines = []
    for level, lower in zip(levels, below):
        flagged = strength >= level
        true = (weight * (flagged & condition)).sum()
        threshold = (level + lower) / 2
        lines.append(
            {
                # Scores lie in 0..1: the cut that flags every image is 1 (missing) or 0 (leaked).
                "threshold": min(1.0, max(0.0, -threshold if low_flags else threshold)),
                "precision": true / (weight * flagged).sum(),
                "recall": true / (weight * condition).sum() if condition.any() else NAN,
                "false_positive_rate": (weight * (flagged & ~condition)).sum() / (weight * ~condition).sum()
                if (~condition).any()
                else NAN,
            }
        )
    return pd.DataFrame(lines)


def chosen_threshold(table: pd.DataFrame, precision: float | None, recall: float | None = None) -> dict:
    """The cut reaching the target precision with the most recall (or the target recall with the most precision)."""
    if recall is not None:
        criterion, reached, best = f"recall>={recall:g}", table["recall"] >= recall, "precision"
    else:
        criterion, reached, best = f"precision>={precision:g}", table["precision"] >= precision, "recall"
    if not reached.any():
        return {"criterion": criterion, "threshold": NAN, "precision": NAN, "recall": NAN}
    top = table[reached].sort_values(best, ascending=False, kind="stable").iloc[0]
    return {"criterion": criterion, **{k: float(top[k]) for k in ("threshold", "precision", "recall")}}


def roc_figure(roc: pd.DataFrame, audit: pd.DataFrame, path: Path) -> None:
    """One panel per verdict kind: each judge's ROC curve (recall against false-positive rate), AUC in the legend."""
    plt = pyplot()
    kinds = sorted(set(roc["kind"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for judge, curve in roc[roc["kind"] == kind].groupby("judge", sort=True):
            area = audit.loc[(audit["judge"] == judge) & (audit["kind"] == kind), "auc"]
            points = curve.sort_values(["false_positive_rate", "recall"])
            ax.plot(
                [0, *points["false_positive_rate"]],
                [0, *points["recall"]],
                marker=".",
                label=f"{judge} (AUC {area.iloc[0]:.2f})",
            )
        ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
        ax.set(
            title=f"object-{kind}",
            xlabel="false-positive rate",
            ylabel="recall (sensitivity)",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        ax.legend(fontsize=7, loc="lower right")
    save_png(fig, path)
