"""bias-report's run and outputs: the figures, summary.json and ``run_bias_report``, which reads the store,
computes every table with shared/bias_report/analysis.py and writes the analysis folder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import softmax

from synthprobe.bias_report.analysis import (
    CROSS_GROUPS,
    OK_STATUS,
    TargetSet,
    class_labels,
    class_table,
    cross_class_matrices,
    cross_class_table,
    group_table,
    image_table,
    prompt_table,
    resolve_targets,
    small_group_notes,
    top_prompts,
    usable,
)
from synthprobe.common.files import InputError, atomic_write, begin_outputs
from synthprobe.common.plots import pyplot, save_png
from synthprobe.common.units import Units, assign_units
from synthprobe.common.wordnet import load_wordnet
from synthprobe.formats.activation_store import ActivationStore
from synthprobe.formats.analysis_folder import provenance_of, table_entry, write_summary
from synthprobe.formats.bias_classes import BIAS_GROUPS, BiasClass, known_bias_classes, load_bias_class
from synthprobe.formats.image_checks import checked_rows
from synthprobe.formats.prompts import read_prompts

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
DEFINITIONS = {
    "confidence": "target probability: the softmax mass of the class's target set on one image",
    "confidence_mean": "mean over the group's units of each unit's mean confidence (the image mean when every "
    "unit has the same number of images)",
    "top1_accuracy": "share of images whose top-1 class lies in the class's target set",
    "context_reliance": "mean confidence on mixed images minus mean confidence on object-only images",
    "context_sufficiency": "mean confidence on context-only images over mean confidence on object-only images",
    "interval": "group mean: Student t-interval on the unit means (df = units - 1); context reliance: Welch "
    "t-interval on the unit means of mixed and object-only, with Welch's two-sided p-value; context "
    "sufficiency: delta-method t-interval on the log ratio of the two means (Welch df), exponentiated. "
    "Means are cut to 0..1 and reliance to -1..1 (where the true values lie). No interval for a group "
    "with fewer than 2 units",
    "chance": "target classes / classifier classes: the confidence of a classifier that spreads its mass evenly",
    "log_ratio": "natural log of mean confidence over chance (0: at chance; 1: e times chance), comparable "
    "between classes with different numbers of target classes",
    "cross_class": "mean confidence of the target class on the context-only / mixed images of the source class "
    "(mean of unit means)",
}


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


# ---- the whole report --------------------------------------------------------


def _number(value) -> float | None:
    """A JSON number with 6 significant digits; NaN becomes null."""
    value = float(value)
    return None if np.isnan(value) else float(f"{value:.6g}")


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_write(path) as handle:
        table.to_csv(handle, index=False, float_format="%.6g", na_rep="", lineterminator="\n")


def load_classes(names: list[str], class_dir: Path | None) -> dict[str, BiasClass]:
    if not names:
        raise InputError("--classes is empty; known classes: " + ", ".join(known_bias_classes(class_dir)))
    definitions = {name: load_bias_class(name, class_dir) for name in dict.fromkeys(names)}
    owner: dict[str, str] = {}
    for name, definition in definitions.items():
        if definition.synset in owner:
            raise InputError(
                f"bias classes {owner[definition.synset]!r} and {name!r} share the synset "
                f"{definition.synset}; their images cannot be told apart"
            )
        owner[definition.synset] = name
    return definitions


def unit_definition(units: Units) -> str:
    if units.kind == "image":
        return "the image: every image is its own unit" + (f" ({units.note})" if units.note else "")
    return (
        "the prompt: the images of one (synset, prompt text) are one unit, since they share the prompt's "
        "effect; an image without a prompt text is its own unit"
    )


def build_summary(
    parameters: dict,
    store: ActivationStore,
    counts: dict,
    units: Units,
    notes: list[str],
    groups: pd.DataFrame,
    class_lines: pd.DataFrame,
    tops: pd.DataFrame,
    matrices: dict[str, pd.DataFrame],
    labels: list[str],
    targets: dict[str, TargetSet],
) -> dict:
    """Everything the report stage needs, with the definitions of every number."""
    provenance = store.provenance()
    model_classes = store.attrs.get("classes") or []
    per_class = {}
    for line in class_lines.to_dict("records"):
        name = line["class"]
        indices = targets[name].indices
        per_class[name] = {
            "synset": line["synset"],
            "targets": [
                {"index": i, "id": model_classes[i] if i < len(model_classes) else None, "name": labels[i]}
                for i in indices
            ],
            "n": line["n"],
            "n_prompts": line["n_prompts"],
            "chance": _number(line["chance"]),
            "groups": {
                g["group"]: {
                    "n": g["n"],
                    "n_prompts": g["n_prompts"],
                    "confidence": {k: _number(g[f"confidence_{k}"]) for k in ("mean", "low", "high")},
                    "log_ratio": _number(line[f"log_ratio_{g['group'].replace('-', '_')}"]),
                    "top1_accuracy": _number(g["top1_accuracy"]),
                }
                for g in groups[groups["class"] == name].to_dict("records")
            },
            **{
                m: {"estimate": _number(line[m]), "low": _number(line[f"{m}_low"]), "high": _number(line[f"{m}_high"])}
                for m in ("context_reliance", "context_sufficiency")
            },
            "context_reliance_p": _number(line["context_reliance_p"]),
            "top_prompts": [
                {
                    "id": t["id"],
                    "group": t["group"],
                    "prompt": t["prompt"],
                    "confidence_mean": _number(t["confidence_mean"]),
                    "n": t["n"],
                }
                for t in tops[tops["class"] == name].to_dict("records")
            ],
        }
    return {
        "parameters": parameters,
        "store": {"path": str(store.path), **counts, "attrs": provenance},
        **units.summary(),
        "notes": notes,
        "definitions": {"unit": unit_definition(units), **DEFINITIONS},
        "groups": list(BIAS_GROUPS),
        "classes": per_class,
        "cross_class": {
            g: {t: {s: _number(v) for s, v in row.items()} for t, row in m.iterrows()} for g, m in matrices.items()
        },
    }


def run_bias_report(
    store_path: str | Path,
    out: str | Path,
    class_names: list[str],
    *,
    mapping: str,
    unit: str | None,
    prompts_path: str | Path | None,
    level: float,
    top: int,
    class_dir: Path | None,
    wordnet_dir: str | None,
    allow_incomplete: bool,
    checks: str | Path | None,
    drop: tuple[str, ...],
) -> dict:
    """Read the store, write every table, figure and ``summary.json`` (last, so it marks a finished report).

    No defaults here: bias-report's options hold them. ``unit`` None: prompt units where the store has
    prompt texts, else image units (shared/common/units.py).
    """
    definitions = load_classes(class_names, class_dir)
    store = ActivationStore(store_path, allow_incomplete)
    logits = store.logits()
    model_classes = store.attrs.get("classes")
    wn = load_wordnet(wordnet_dir) if mapping == "hierarchy" else None
    targets = {name: resolve_targets(d, mapping, model_classes, logits.shape[1], wn) for name, d in definitions.items()}
    texts = {r.id: r.prompt for r in read_prompts(prompts_path)} if prompts_path else {}
    labels = class_labels(store.attrs, logits.shape[1])
    rows = store.rows()
    # image-check flags: counted, the ``drop`` ones left out
    not_dropped, flagged, checked = checked_rows(rows, checks, drop)
    keep = usable(rows, targets) & not_dropped.to_numpy()
    if not keep.any():
        raise InputError(
            f"{store_path} holds no object-only, context-only or mixed images of "
            f"{', '.join(definitions)} (groups found: {', '.join(sorted(set(rows['group']))) or 'none'}); "
            "make the store from 'wn-prompts bias' prompts"
        )
    units = assign_units(rows[keep], unit, str(store_path))
    images = image_table(
        rows[keep], softmax(logits[keep].astype(np.float64), axis=1), units, targets, labels, texts, definitions
    )
    log.info("unit: %s (%d units over %d images)", units.kind, units.n_units, len(images))
    classes = list(definitions)
    for name in classes:
        if not (images["class"] == name).any():
            log.warning("class %s has no images in %s", name, store_path)
    out = begin_outputs(out, "summary.json")
    n_failed = int((rows["status"] != OK_STATUS).sum())
    counts = {
        "n_rows": len(rows),
        "n_used": len(images),
        "n_failed": n_failed,
        "n_ignored": len(rows) - n_failed - len(images),
    }
    prompts = prompt_table(images, classes)
    tops = top_prompts(prompts, classes, top)
    groups = group_table(images, classes, level)
    if checks:  # every group with and without the images the checks flagged (those --drop left in)
        unflagged = group_table(images[~images["id"].isin(set(rows["id"][flagged]))], classes, level)
        columns = ["n", "n_prompts", "confidence_mean", "confidence_low", "confidence_high"]
        groups = pd.concat([groups, unflagged[columns].add_suffix("_unflagged")], axis=1)
    notes = small_group_notes(groups, units.kind)
    for note in notes:
        log.warning(note)
    class_lines = class_table(images, targets, labels, level)
    matrices = cross_class_matrices(images, classes)
    tables = {
        "images": images,
        "prompts": prompts,
        "top_prompts": tops,
        "groups": groups,
        "classes": class_lines,
        "cross_class": cross_class_table(matrices, targets),
    }
    for key, table in tables.items():
        _write_csv(table, out / TABLES[key][0])
    plot_groups(groups, classes, level, units.kind, out / FIGURES["groups"])
    plot_cross_class(matrices, out / FIGURES["cross_class"])
    parameters = {
        "classes": classes,
        "mapping": mapping,
        "unit": unit,
        "prompts": str(prompts_path) if prompts_path else None,
        "level": level,
        "top": top,
        "class_dir": str(class_dir) if class_dir else None,
    }
    summary = build_summary(
        parameters, store, counts, units, notes, groups, class_lines, tops, matrices, labels, targets
    )
    if checked:
        summary.update(checks=checked, parameters={**parameters, "checks": str(checks), "drop": list(drop)})
    summary = write_summary(
        out,
        "bias-report",
        summary,
        tables={key: table_entry(TABLES[key][0], len(table), TABLES[key][1]) for key, table in tables.items()},
        figures=FIGURES,
        provenance=provenance_of(store=store_path, prompts=prompts_path, checks=checks),
    )
    log.info("bias report for %d classes (%d images) written to %s", len(classes), len(images), out)
    return summary
