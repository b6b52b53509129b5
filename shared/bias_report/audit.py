"""bias-report's computation: ``analyse(inputs, params)`` makes every table (shared/bias_report/analysis.py) and
the summary; shared/bias_report/outputs.py writes them."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import softmax

from synthprobe.bias_report.analysis import (
    OK_STATUS,
    class_table,
    cross_class_matrices,
    cross_class_table,
    group_table,
    image_table,
    prompt_table,
    small_group_notes,
    top_prompts,
    usable,
)
from synthprobe.bias_report.read import Inputs, Params
from synthprobe.bias_report.summary import build_summary
from synthprobe.common.files import InputError
from synthprobe.common.units import Units, assign_units

log = logging.getLogger("synthprobe")

UNFLAGGED_COLUMNS = ["n", "n_prompts", "confidence_mean", "confidence_low", "confidence_high"]


@dataclass(frozen=True)
class Result:
    """An audit's tables (key -> table, keys as in outputs.TABLES), what its figures draw, and its summary."""

    tables: dict[str, pd.DataFrame]
    matrices: dict[str, pd.DataFrame]  # cross-class confidence per group
    classes: list[str]
    level: float
    units: Units
    summary: dict  # summary.json less what writing adds (tables, figures, provenance)
    provenance: dict  # input paths as given


def audit_images(inputs: Inputs, params: Params) -> tuple[pd.DataFrame, Units]:
    """The usable images with their units and confidences; an audit without any is refused."""
    keep = usable(inputs.rows, inputs.targets) & inputs.not_dropped.to_numpy()
    if not keep.any():
        raise InputError(
            f"{inputs.store_path} holds no object-only, context-only or mixed images of "
            f"{', '.join(inputs.definitions)} (groups found: "
            f"{', '.join(sorted(set(inputs.rows['group']))) or 'none'}); make the store from 'wn-prompts bias' prompts"
        )
    units = assign_units(inputs.rows[keep], params.unit)
    probabilities = softmax(inputs.logits[keep].astype(np.float64), axis=1)
    images = image_table(
        inputs.rows[keep], probabilities, units, inputs.targets, inputs.labels, inputs.texts, inputs.definitions
    )
    log.info("unit: %s (%d units over %d images)", units.kind, units.n_units, len(images))
    for name in inputs.definitions:
        if not (images["class"] == name).any():
            log.warning("class %s has no images in %s", name, inputs.store_path)
    return images, units


def groups_with_flags(images: pd.DataFrame, inputs: Inputs, classes: list[str], level: float) -> pd.DataFrame:
    """The groups table; with checks, beside it the same figures without the images the checks flagged."""
    groups = group_table(images, classes, level)
    if inputs.checked is None:
        return groups
    flagged_ids = set(inputs.rows["id"][inputs.flagged])
    unflagged = group_table(images[~images["id"].isin(flagged_ids)], classes, level)
    return pd.concat([groups, unflagged[UNFLAGGED_COLUMNS].add_suffix("_unflagged")], axis=1)


def analyse(inputs: Inputs, params: Params) -> Result:
    """Every table and the summary of an audit (docs/formats.md, "bias-report output folder")."""
    images, units = audit_images(inputs, params)
    classes = list(inputs.definitions)
    prompts = prompt_table(images, classes)
    groups = groups_with_flags(images, inputs, classes, params.level)
    notes = small_group_notes(groups, units.kind)
    for note in notes:
        log.warning(note)
    matrices = cross_class_matrices(images, classes)
    tables = {
        "images": images,
        "prompts": prompts,
        "top_prompts": top_prompts(prompts, classes, params.top),
        "groups": groups,
        "classes": class_table(images, inputs.targets, inputs.labels, params.level),
        "cross_class": cross_class_table(matrices, inputs.targets),
    }
    n_failed = int((inputs.rows["status"] != OK_STATUS).sum())
    counts = {
        "n_rows": len(inputs.rows),
        "n_used": len(images),
        "n_failed": n_failed,
        "n_ignored": len(inputs.rows) - n_failed - len(images),
    }
    summary = build_summary(inputs, params, counts, units, notes, tables, matrices)
    provenance = {"store": inputs.store_path, "prompts": inputs.prompts_path, "checks": inputs.checks_path}
    return Result(tables, matrices, classes, params.level, units, summary, provenance)
