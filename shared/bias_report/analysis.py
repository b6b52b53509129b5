"""The contextual-bias audit: the tables of ``bias-report`` (its run and outputs: shared/bias_report/outputs.py).

For each bias class the classifier's *confidence* on an image is the softmax
mass of the class's target set (the classifier classes that mean the class).
Comparing it across object-only, context-only and mixed images says whether
the classifier needs the object or only its usual surroundings.

Images of one prompt share that prompt's effect, so every mean and interval is
taken over *units* (shared/common/units.py): a group's estimate is the mean of its
units' mean confidences, and intervals treat the unit means as the sample.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

import numpy as np
import pandas as pd

from synthprobe.bias_report.effects import context_reliance, log_ratio_interval
from synthprobe.bias_report.targets import TargetSet
from synthprobe.common.stats import Estimate, mean_interval, ratio_interval
from synthprobe.common.units import Units
from synthprobe.formats.bias_classes import BIAS_GROUPS, BiasClass

CROSS_GROUPS = ("context-only", "mixed")
OK_STATUS = "ok"
# Row ids written by ``wn-prompts bias``: bias-<class>-<group>-<text index>-s<seed index>.
BIAS_ID = re.compile(r"^bias-(?P<cls>.+)-(?P<group>object-only|context-only|mixed)-(?P<text>\d+)-s\d+$")
SEED_SUFFIX = re.compile(r"-s\d+$")
# The effects whose interval uses each group's units, for the note on a group with fewer than two units.
DEPENDENT_EFFECTS = {
    "object-only": "context reliance and sufficiency",
    "context-only": "context sufficiency",
    "mixed": "context reliance",
}


def prompt_of(row_id: str, stored: str, texts: dict[str, str], definitions: dict[str, BiasClass]) -> tuple[str, str]:
    """(prompt id, prompt text) of an image, for display: the store's text, else (rows of an ImageFolder tree)
    the prompt file's, else the one the id and the class definition name.

    An image whose prompt cannot be found is its own prompt, with an empty text.
    """
    stem = SEED_SUFFIX.sub("", row_id)
    if stored:
        return stem, stored
    if row_id in texts:
        return stem, texts[row_id]
    match = BIAS_ID.match(row_id)
    if match and match["cls"] in definitions:
        group_texts = definitions[match["cls"]].prompts[match["group"]]
        if int(match["text"]) < len(group_texts):
            return stem, group_texts[int(match["text"])]
    return row_id, ""


def usable(rows: pd.DataFrame, targets: dict[str, TargetSet]) -> np.ndarray:
    """Rows of the audit: status ok, a bias group, and a target synset that is one of the selected classes."""
    synsets = [t.synset for t in targets.values()]
    return ((rows["status"] == OK_STATUS) & rows["group"].isin(BIAS_GROUPS) & rows["target"].isin(synsets)).to_numpy()


def image_table(
    used: pd.DataFrame,
    p: np.ndarray,
    units: Units,
    targets: dict[str, TargetSet],
    labels: list[str],
    texts: dict[str, str],
    definitions: dict[str, BiasClass],
) -> pd.DataFrame:
    """One line per usable image (rows ``used``, probabilities ``p``): its unit, the pair of a paired class file
    its prompt text belongs to (NaN: none), its confidence for every class and its top-1 class."""
    used = used.reset_index(drop=True)
    class_of_synset = {t.synset: name for name, t in targets.items()}
    class_probs = {name: p[:, list(t.indices)].sum(axis=1) for name, t in targets.items()}
    top1 = p.argmax(axis=1) if len(p) else np.zeros(0, dtype=int)
    classes = used["target"].map(class_of_synset)
    stored = used["prompt"] if "prompt" in used else [""] * len(used)
    prompts = [prompt_of(i, text, texts, definitions) for i, text in zip(used["id"], stored)]
    table = pd.DataFrame(
        {
            "id": used["id"],
            "class": classes,
            "group": used["group"],
            "unit": units.codes,
            "prompt_id": [pid for pid, _ in prompts],
            "prompt": [text for _, text in prompts],
            "pair": pd.Series(
                [definitions[c].pair_of(g, text) for c, g, (_, text) in zip(classes, used["group"], prompts)],
                dtype="float64",
            ),
            "confidence": [class_probs[c][i] for i, c in enumerate(classes)],
            "top1_index": top1,
            "top1_class": [labels[k] for k in top1],
            "top1_in_target": [int(k) in targets[c].indices for k, c in zip(top1, classes)],
        }
    )
    for name, values in class_probs.items():
        table[f"p_{name}"] = values
    return table


def most_common(values: pd.Series) -> str:
    """The most frequent value; ties go to the first in name order, so the output is stable."""
    counts = Counter(values)
    return min(counts, key=lambda v: (-counts[v], v))


def ordered(table: pd.DataFrame, classes: list[str], by: list[str], ascending: list[bool]) -> pd.DataFrame:
    """Sort by class in the order asked, group in study order, then ``by``."""
    keys = {"class": {c: i for i, c in enumerate(classes)}, "group": {g: i for i, g in enumerate(BIAS_GROUPS)}}
    return table.sort_values(
        ["class", "group", *by],
        ascending=[True, True, *ascending],
        key=lambda col: col.map(keys[col.name]) if col.name in keys else col,
        kind="stable",
    ).reset_index(drop=True)


def prompt_table(images: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Every prompt with its confidence over its images, ranked within class and group (the study's table)."""
    table = (
        images.groupby(["class", "group", "prompt_id", "prompt"], sort=False)
        .agg(
            confidence_mean=("confidence", "mean"),
            confidence_std=("confidence", "std"),
            n=("confidence", "size"),
            top1_accuracy=("top1_in_target", "mean"),
            top1_class=("top1_class", most_common),
        )
        .reset_index()
    )
    table = ordered(table, classes, ["confidence_mean", "prompt_id"], [False, True])
    table.insert(2, "rank", table.groupby(["class", "group"]).cumcount() + 1)
    return table.rename(columns={"prompt_id": "id"})


def top_prompts(prompts: pd.DataFrame, classes: list[str], k: int) -> pd.DataFrame:
    """Each class's ``k`` most confident prompts across all groups."""
    rank = {c: i for i, c in enumerate(classes)}
    table = prompts.drop(columns="rank").sort_values(
        ["class", "confidence_mean", "id"],
        ascending=[True, False, True],
        kind="stable",
        key=lambda col: col.map(rank) if col.name == "class" else col,
    )
    table = table.groupby("class", sort=False).head(k).reset_index(drop=True)
    table.insert(1, "rank", table.groupby("class").cumcount() + 1)
    return table


def unit_means(images: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Each unit's mean of ``columns``, indexed by (class, group, unit): the sample every estimate works on."""
    return images.groupby(["class", "group", "unit"])[columns].mean()


def group_units(means: pd.DataFrame, name: str, group: str) -> pd.DataFrame:
    """The unit means of one class and group, one line per unit (none when it has no images)."""
    return means.loc[(name, group)] if (name, group) in means.index else means.iloc[:0]


def unit_sample(means: pd.DataFrame, name: str, group: str, column: str = "confidence") -> np.ndarray:
    return group_units(means, name, group)[column].to_numpy()


def clipped(estimate: Estimate, low: float, high: float) -> Estimate:
    """The interval cut to the range the true value lies in; coverage stays as it was (NaN stays NaN)."""
    return replace(estimate, low=float(np.clip(estimate.low, low, high)), high=float(np.clip(estimate.high, low, high)))


def group_table(images: pd.DataFrame, classes: list[str], level: float) -> pd.DataFrame:
    """Per class and group: mean of unit means with a t-interval, top-1 accuracy, counts (n=0 allowed)."""
    means = unit_means(images, ["confidence"])
    lines = []
    for name in classes:
        for group in BIAS_GROUPS:
            sub = images[(images["class"] == name) & (images["group"] == group)]
            sample = unit_sample(means, name, group)
            estimate = clipped(mean_interval(sample, level), 0.0, 1.0)  # confidences are probabilities
            lines.append(
                {
                    "class": name,
                    "group": group,
                    "n": len(sub),
                    "n_prompts": len(sample),
                    "confidence_mean": estimate.value,
                    "confidence_low": estimate.low,
                    "confidence_high": estimate.high,
                    "top1_accuracy": sub["top1_in_target"].mean() if len(sub) else float("nan"),
                }
            )
    return pd.DataFrame(lines)


def small_group_notes(groups: pd.DataFrame, kind: str) -> list[str]:
    """One note per class and group with fewer than the two units an interval needs."""
    return [
        f"{g['class']} {g['group']}: {g['n_prompts']} {kind} unit(s), fewer than the 2 an interval needs: "
        f"no interval for its mean or for the {DEPENDENT_EFFECTS[g['group']]}"
        for g in groups.to_dict("records")
        if g["n_prompts"] < 2
    ]


def log_ratio(value, chance):
    """ln(value / chance), elementwise; NaN where the value is undefined or not positive."""
    value = np.asarray(value, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(value > 0, np.log(value / chance), np.nan)


def interval_columns(measure: str, estimate: Estimate) -> dict:
    return {measure: estimate.value, f"{measure}_low": estimate.low, f"{measure}_high": estimate.high}


def class_table(images: pd.DataFrame, targets: dict[str, TargetSet], labels: list[str], level: float) -> pd.DataFrame:
    """Per class: its target set and chance, each group's log ratio to chance (interval on the log scale),
    context reliance (paired t where the units pair up, else Welch) and context sufficiency (log-ratio delta
    method), all on unit means."""
    means = unit_means(images, ["confidence", "pair"])
    lines = []
    for name, target in targets.items():
        sample = {g: unit_sample(means, name, g) for g in BIAS_GROUPS}
        reliance = context_reliance(group_units(means, name, "object-only"), group_units(means, name, "mixed"), level)
        line = {
            "class": name,
            "synset": target.synset,
            "n": int((images["class"] == name).sum()),
            "n_prompts": sum(len(s) for s in sample.values()),
            "target_indices": ";".join(map(str, target.indices)),
            "target_classes": ";".join(labels[i] for i in target.indices),
            "chance": target.chance,
        }
        for group in BIAS_GROUPS:
            ratio = log_ratio_interval(sample[group], target.chance, level)
            line.update(interval_columns(f"log_ratio_{group.replace('-', '_')}", ratio))
        line.update(
            interval_columns("context_reliance", clipped(reliance.estimate, -1.0, 1.0)),
            context_reliance_p=reliance.estimate.p_value,
            context_reliance_test=reliance.test,
            context_reliance_n_pairs=reliance.n_pairs,
        )
        sufficiency = ratio_interval(sample["context-only"], sample["object-only"], level)
        line.update(interval_columns("context_sufficiency", sufficiency))
        lines.append(line)
    return pd.DataFrame(lines).astype({"context_reliance_n_pairs": "Int64"})


def cross_class_matrices(images: pd.DataFrame, classes: list[str]) -> dict[str, pd.DataFrame]:
    """Per group: (target class x source class) mean of the source's unit means of the target's confidence."""
    means = unit_means(images, [f"p_{c}" for c in classes]).groupby(["group", "class"]).mean()
    matrices = {}
    for group in CROSS_GROUPS:
        matrix = means.reindex([(group, c) for c in classes]).T
        matrix.index, matrix.columns = classes, classes
        matrices[group] = matrix
    return matrices


def cross_class_table(matrices: dict[str, pd.DataFrame], targets: dict[str, TargetSet]) -> pd.DataFrame:
    """The matrices stacked: one line per (group, target class) with the target's chance, one column of
    confidence per source class, then one of its log ratio to chance (``log_ratio_<source>``)."""
    parts = []
    for group, matrix in matrices.items():
        chance = pd.Series({name: targets[name].chance for name in matrix.index})
        ratios = pd.DataFrame(
            log_ratio(matrix.to_numpy(), chance.to_numpy()[:, None]),
            index=matrix.index,
            columns=[f"log_ratio_{c}" for c in matrix.columns],
        )
        part = pd.concat([matrix, ratios], axis=1).rename_axis("target_class").reset_index()
        parts.append(part.assign(group=group, chance=chance.to_numpy()))
    table = pd.concat(parts, ignore_index=True)
    sources = list(matrices[CROSS_GROUPS[0]].columns)
    return table[["group", "target_class", "chance", *sources, *(f"log_ratio_{s}" for s in sources)]]
