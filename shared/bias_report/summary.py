"""bias-report's summary.json fields: every number the report stage needs, with the definitions of each."""

from __future__ import annotations

import numpy as np
import pandas as pd

from synthprobe.bias_report.read import Inputs, Params
from synthprobe.common.units import Units
from synthprobe.formats.bias_classes import BIAS_GROUPS

DEFINITIONS = {
    "confidence": "target probability: the softmax mass of the class's target set on one image",
    "confidence_mean": "mean over the group's units of each unit's mean confidence (the image mean when every "
    "unit has the same number of images)",
    "top1_accuracy": "share of images whose top-1 class lies in the class's target set",
    "context_reliance": "mean confidence on mixed images minus mean confidence on object-only images; with the "
    "paired test, the mean over complete pairs of the mixed unit's minus the object-only unit's mean",
    "context_reliance_test": "paired: Student t on the per-pair differences of unit means (df = pairs - 1), "
    "where the class file pairs its object-only and mixed texts and every unit of the two groups is one text of "
    "a pair (prompt units), over the complete pairs (context_reliance_n_pairs); welch: Welch's t on all unit "
    "means of the two groups, elsewhere",
    "context_sufficiency": "mean confidence on context-only images over mean confidence on object-only images",
    "interval": "group mean: Student t-interval on the unit means (df = units - 1); context reliance: the "
    "context_reliance_test's t-interval and two-sided p-value; log ratios: delta-method t-interval on the log "
    "scale (half-width t(df = units - 1) * s / (sqrt(units) * mean)), reported on the log scale; context "
    "sufficiency: delta-method t-interval on the log ratio of the two means (Welch df), exponentiated. Means are "
    "cut to 0..1 and reliance to -1..1 (where the true values lie). No interval for a group with fewer than 2 "
    "units",
    "chance": "target classes / classifier classes: the confidence of a classifier that spreads its mass evenly",
    "log_ratio": "natural log of mean confidence over chance (0: at chance; 1: e times chance), comparable "
    "between classes with different numbers of target classes",
    "cross_class": "mean confidence of the target class on the context-only / mixed images of the source class "
    "(mean of unit means)",
}


def number(value) -> float | None:
    """A JSON number with 6 significant digits; NaN becomes null."""
    value = float(value)
    return None if np.isnan(value) else float(f"{value:.6g}")


def unit_definition(units: Units) -> str:
    if units.kind == "image":
        return "the image: every image is its own unit"
    return (
        "the prompt: the images of one (synset, prompt text) are one unit, since they share the prompt's "
        "effect; an image without a prompt text is its own unit"
    )


def group_summary(group: dict, line: dict) -> dict:
    """One group of a class: counts, the confidence with its interval, the log ratio with its own."""
    ratio = f"log_ratio_{group['group'].replace('-', '_')}"
    return {
        "n": group["n"],
        "n_prompts": group["n_prompts"],
        "confidence": {k: number(group[f"confidence_{k}"]) for k in ("mean", "low", "high")},
        "log_ratio": number(line[ratio]),
        "log_ratio_low": number(line[f"{ratio}_low"]),
        "log_ratio_high": number(line[f"{ratio}_high"]),
        "top1_accuracy": number(group["top1_accuracy"]),
    }


def class_summary(line: dict, tables: dict[str, pd.DataFrame], inputs: Inputs) -> dict:
    """One class of classes.csv with its target classes, groups and top prompts."""
    name = line["class"]
    model_classes = inputs.store.attrs.get("classes") or []
    groups, tops = tables["groups"], tables["top_prompts"]
    effects = {
        m: {"estimate": number(line[m]), "low": number(line[f"{m}_low"]), "high": number(line[f"{m}_high"])}
        for m in ("context_reliance", "context_sufficiency")
    }
    effects["context_reliance"].update(
        test=line["context_reliance_test"],
        n_pairs=None if pd.isna(line["context_reliance_n_pairs"]) else int(line["context_reliance_n_pairs"]),
    )
    return {
        "synset": line["synset"],
        "targets": [
            {"index": i, "id": model_classes[i] if i < len(model_classes) else None, "name": inputs.labels[i]}
            for i in inputs.targets[name].indices
        ],
        "n": line["n"],
        "n_prompts": line["n_prompts"],
        "chance": number(line["chance"]),
        "groups": {g["group"]: group_summary(g, line) for g in groups[groups["class"] == name].to_dict("records")},
        **effects,
        "context_reliance_p": number(line["context_reliance_p"]),
        "top_prompts": [
            {
                "id": t["id"],
                "group": t["group"],
                "prompt": t["prompt"],
                "confidence_mean": number(t["confidence_mean"]),
                "n": t["n"],
            }
            for t in tops[tops["class"] == name].to_dict("records")
        ],
    }


def build_summary(
    inputs: Inputs,
    params: Params,
    counts: dict,
    units: Units,
    notes: list[str],
    tables: dict[str, pd.DataFrame],
    matrices: dict[str, pd.DataFrame],
) -> dict:
    """Everything the report stage needs, with the definitions of every number."""
    parameters = {
        "classes": list(inputs.definitions),
        "mapping": params.mapping,
        "unit": params.unit,
        "prompts": inputs.prompts_path,
        "level": params.level,
        "top": params.top,
        "class_dir": str(params.class_dir) if params.class_dir else None,
    }
    summary = {
        "parameters": parameters,
        "store": {"path": str(inputs.store.path), **counts, "attrs": inputs.store.provenance()},
        **units.summary(),
        "notes": notes,
        "definitions": {"unit": unit_definition(units), **DEFINITIONS},
        "groups": list(BIAS_GROUPS),
        "classes": {
            line["class"]: class_summary(line, tables, inputs) for line in tables["classes"].to_dict("records")
        },
        "cross_class": {
            g: {t: {s: number(v) for s, v in row.items()} for t, row in m.iterrows()} for g, m in matrices.items()
        },
    }
    if inputs.checked:
        summary.update(
            checks=inputs.checked, parameters={**parameters, "checks": inputs.checks_path, "drop": list(params.drop)}
        )
    return summary
