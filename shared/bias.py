"""The contextual-bias audit (the ``bias-report`` logic).

For each bias class the classifier's *confidence* on an image is the softmax
mass of the class's target set (the classifier classes that mean the class).
Comparing it across object-only, context-only and mixed images says whether
the classifier needs the object or only its usual surroundings.

Images of one prompt share that prompt's effect, so every mean and interval is
taken over *units* (shared/units.py): a group's estimate is the mean of its
units' mean confidences, and intervals treat the unit means as the sample.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import softmax

from .files import InputError, atomic_write, begin_outputs
from .formats.activation_store import ActivationStore
from .formats.analysis_folder import provenance_of, table_entry, write_summary
from .formats.image_checks import checked_rows, flagged_ids
from .formats.prompts import read_prompts
from .imagenet import hierarchy_indices, imagenet_names, is_imagenet_1k, is_wnid
from .plots import pyplot, save_png
from .prompts import BIAS_GROUPS, BiasClass, known_bias_classes, load_bias_class
from .stats import Estimate, mean_interval, ratio_interval, welch_difference
from .units import Units, assign_units
from .wordnet import load_wordnet

log = logging.getLogger("synthprobe")

MAPPINGS = ("hierarchy", "exact")
CROSS_GROUPS = ("context-only", "mixed")
OK_STATUS = "ok"
# Row ids written by ``wn-prompts bias``: bias-<class>-<group>-<text index>-s<seed index>.
BIAS_ID = re.compile(r"^bias-(?P<cls>.+)-(?P<group>object-only|context-only|mixed)-(?P<text>\d+)-s\d+$")
SEED_SUFFIX = re.compile(r"-s\d+$")
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
# The effects whose interval uses each group's units, for the note on a group with fewer than two units.
DEPENDENT_EFFECTS = {
    "object-only": "context reliance and sufficiency",
    "context-only": "context sufficiency",
    "mixed": "context reliance",
}
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


@dataclass(frozen=True)
class TargetSet:
    """The classifier classes that count as one bias class."""

    name: str
    synset: str
    indices: tuple[int, ...]
    n_classes: int  # the classifier's

    @property
    def chance(self) -> float:
        """The confidence of a classifier that spreads its mass evenly over all its classes."""
        return len(self.indices) / self.n_classes


def resolve_targets(
    bias_class: BiasClass, mapping: str, model_classes: list[str] | None, n_classes: int, wn=None
) -> TargetSet:
    if mapping == "hierarchy":
        if not model_classes or not all(is_wnid(c) for c in model_classes):
            raise InputError(
                "--mapping hierarchy needs an ImageNet classifier, but the store's classes are not "
                "ImageNet wnids; use --mapping exact with class indices in the bias class definition"
            )
        synsets = (bias_class.synset, *bias_class.extra_synsets)
        indices = sorted({i for synset in synsets for i in hierarchy_indices(wn, synset, model_classes)})
    else:
        indices = exact_indices(bias_class, model_classes, n_classes)
    return TargetSet(bias_class.name, bias_class.synset, tuple(indices), n_classes)


def exact_indices(bias_class: BiasClass, model_classes: list[str] | None, n_classes: int) -> list[int]:
    """The definition's ``imagenet_classes``: wnids looked up in the classifier's classes, or integer indices."""
    if not bias_class.imagenet_classes:
        raise InputError(f"bias class {bias_class.name!r} lists no imagenet_classes, which --mapping exact needs")
    position = {wnid: i for i, wnid in enumerate(model_classes or [])}
    indices = set()
    for entry in bias_class.imagenet_classes:
        if isinstance(entry, int) and not isinstance(entry, bool):
            if not 0 <= entry < n_classes:
                raise InputError(
                    f"bias class {bias_class.name!r}: class index {entry} is out of range "
                    f"(the classifier has {n_classes} classes)"
                )
            indices.add(entry)
        elif entry in position:
            indices.add(position[entry])
        else:
            hint = "" if model_classes else " (the store does not list the classifier's classes; give integer indices)"
            raise InputError(f"bias class {bias_class.name!r}: {entry!r} is not one of the classifier's classes{hint}")
    return sorted(indices)


def class_labels(attrs: dict, n_classes: int) -> list[str]:
    """A readable name for every classifier output: the store's names, ImageNet's, the ids, or 'class <i>'."""
    names, classes = attrs.get("class_names"), attrs.get("classes")
    if names and len(names) == n_classes:
        return [str(n) for n in names]
    if is_imagenet_1k(classes):
        return list(imagenet_names())
    if classes and len(classes) == n_classes:
        return [str(c) for c in classes]
    return [f"class {i}" for i in range(n_classes)]


def prompt_of(row_id: str, stored: str, texts: dict[str, str], definitions: dict[str, BiasClass]) -> tuple[str, str]:
    """(prompt id, prompt text) of an image, for display: the store's text, else (stores made before
    rows/prompt) the prompt file's, else the one the id and the class definition name.

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
    """One line per usable image (rows ``used``, probabilities ``p``): its unit, its confidence for every class
    and its top-1 class."""
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


def unit_sample(means: pd.DataFrame, name: str, group: str, column: str = "confidence") -> np.ndarray:
    """The unit means of one class and group (empty when it has no images)."""
    return means.loc[(name, group), column].to_numpy() if (name, group) in means.index else np.zeros(0)


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
    """Per class: its target set and chance, each group's log ratio to chance, context reliance (Welch) and
    context sufficiency (log-ratio delta method), all on unit means."""
    means = unit_means(images, ["confidence"])
    lines = []
    for name, target in targets.items():
        sample = {g: unit_sample(means, name, g) for g in BIAS_GROUPS}
        reliance = clipped(welch_difference(sample["mixed"], sample["object-only"], level), -1.0, 1.0)
        sufficiency = ratio_interval(sample["context-only"], sample["object-only"], level)
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
            mean = sample[group].mean() if len(sample[group]) else float("nan")
            line[f"log_ratio_{group.replace('-', '_')}"] = float(log_ratio(mean, target.chance))
        line.update(interval_columns("context_reliance", reliance), context_reliance_p=reliance.p_value)
        line.update(interval_columns("context_sufficiency", sufficiency))
        lines.append(line)
    return pd.DataFrame(lines)


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
    mapping: str = "hierarchy",
    unit: str | None = None,
    prompts_path: str | Path | None = None,
    level: float = 0.95,
    top: int = 5,
    class_dir: Path | None = None,
    wordnet_dir: str | None = None,
    allow_incomplete: bool = False,
    checks: str | Path | None = None,
    drop: tuple[str, ...] = (),
) -> dict:
    """Read the store, write every table, figure and ``summary.json`` (last, so it marks a finished report).

    ``unit`` None: prompt units where the store has prompt texts, else image units (shared/units.py).
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
    not_dropped, checked = checked_rows(rows, checks, drop)  # image-check flags: counted, the ``drop`` ones left out
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
        unflagged = group_table(images[~images["id"].isin(flagged_ids(checks))], classes, level)
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
