"""bias-report's outputs: ``write(result, out)`` writes the tables, the figures and summary.json (last)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from synthprobe.bias_report.analysis import CROSS_GROUPS
from synthprobe.bias_report.audit import Result
from synthprobe.common.files import atomic_write, begin_outputs
from synthprobe.common.plots import pyplot, save_png
from synthprobe.formats.analysis_folder import provenance_of, table_entry, write_summary
from synthprobe.formats.bias_classes import BIAS_GROUPS

log = logging.getLogger("synthprobe")

GROUP_COLORS = {"object-only": "#4c72b0", "context-only": "#dd8452", "mixed": "#55a868"}
TABLES = {  # key -> (file, description)
    "images": ("images.csv", "one row per image: its unit, confidence (target probability) and top-1 class"),
    "prompts": ("prompts.csv", "one row per prompt: mean confidence of its images, rank in its class and group"),
    "top_prompts": ("top_prompts.csv", "each class's most confident prompts across groups"),
    "groups": ("groups.csv", "mean confidence per class and group with an interval over units"),
    "classes": ("classes.csv", "per class: log ratios to chance, context reliance and sufficiency"),
    "cross_class": ("cross_class.csv", "mean probability of each target class on every class's images"),
}
FIGURES = {"groups": "groups.png", "cross_class": "cross_class.png"}
# ---- figures ---------------------------------------------------------------


def plot_groups(groups: pd.DataFrame, classes: list[str], level: float, kind: str, path: Path) -> None:
    """Grouped bars: mean confidence per class and group, with the t-interval as error bars."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(classes) + 2), 4.5))
    x = np.arange(len(classes))
    width = 0.8 / len(BIAS_GROUPS)
    for k, group in enumerate(BIAS_GROUPS):
        sub = groups[groups["group"] == group].set_index("class").loc[classes]
        mean = sub["confidence_mean"].to_numpy()
        # Error bars cannot be NaN or negative: a missing interval draws none.
        below = np.nan_to_num(np.clip(mean - sub["confidence_low"].to_numpy(), 0, None))
        above = np.nan_to_num(np.clip(sub["confidence_high"].to_numpy() - mean, 0, None))
        xs = x + (k - (len(BIAS_GROUPS) - 1) / 2) * width
        ax.bar(xs, np.nan_to_num(mean), width, yerr=[below, above], capsize=3, label=group, color=GROUP_COLORS[group])
        for xi, n, units, top in zip(xs, sub["n"], sub["n_prompts"], np.nan_to_num(mean)):
            if n == 0:
                ax.text(xi, 0.02, "n=0", ha="center", va="bottom", rotation=90, fontsize=8)
            elif units < 2:
                ax.text(xi, top + 0.02, f"{units} unit: no CI", ha="center", va="bottom", rotation=90, fontsize=8)
    ax.set_xticks(x, classes)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"target probability (mean of {kind} means, {level:.0%} CI)")
    ax.set_title("Classifier confidence by image group")
    ax.spines[["top", "right"]].set_visible(False)
    fig.legend(loc="lower center", ncols=len(BIAS_GROUPS), frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save_png(fig, path)


def plot_cross_class(matrices: dict[str, pd.DataFrame], path: Path) -> None:
    """Heatmaps (one per group) of each target class's confidence on every source class's images.

    Each panel has its own colour scale: context-only confidences are small, and
    on a shared 0-1 scale a context that raises another class would not show.
    """
    plt = pyplot()

    classes = list(matrices[CROSS_GROUPS[0]].index)
    side = max(3.5, 0.75 * len(classes) + 1.5)
    fig, axes = plt.subplots(1, len(matrices), figsize=(2 * side + 3, side + 0.6), layout="constrained")
    for ax, (group, matrix) in zip(axes, matrices.items()):
        values = matrix.to_numpy(dtype=float)
        top = max(float(np.nanmax(values)) if np.isfinite(values).any() else 0.0, 1e-3)
        image = ax.imshow(np.ma.masked_invalid(values), vmin=0, vmax=top, cmap="viridis")
        for (i, j), v in np.ndenumerate(values):
            ax.text(
                j,
                i,
                "n=0" if np.isnan(v) else f"{v:.2g}",
                ha="center",
                va="center",
                fontsize=8,
                color="black" if np.isnan(v) or v > 0.6 * top else "white",
            )
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("images of class")
        ax.set_ylabel("probability of class")
        ax.set_title(f"{group} images")
        fig.colorbar(image, ax=ax, label="mean target probability", shrink=0.8)
    save_png(fig, path)


# ---- the folder ----------------------------------------------------------------


def write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_write(path) as handle:
        table.to_csv(handle, index=False, float_format="%.6g", na_rep="", lineterminator="\n")


def write(result: Result, out: str | Path) -> dict:
    """Write every table and figure of ``result`` into the folder ``out``, then ``summary.json`` (last, so it
    marks a finished report); return the summary."""
    out = begin_outputs(out, "summary.json")
    for key, table in result.tables.items():
        write_csv(table, out / TABLES[key][0])
    plot_groups(result.tables["groups"], result.classes, result.level, result.units.kind, out / FIGURES["groups"])
    plot_cross_class(result.matrices, out / FIGURES["cross_class"])
    summary = write_summary(
        out,
        "bias-report",
        result.summary,
        tables={key: table_entry(TABLES[key][0], len(table), TABLES[key][1]) for key, table in result.tables.items()},
        figures=FIGURES,
        provenance=provenance_of(**result.provenance),
    )
    log.info(
        "bias report for %d classes (%d images) written to %s", len(result.classes), len(result.tables["images"]), out
    )
    return summary
