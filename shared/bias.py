"""The contextual-bias audit (the ``bias-report`` logic).

For each bias class the classifier's *confidence* on an image is the softmax
mass of the class's target set (the classifier classes that mean the class).
Comparing it across object-only, context-only and mixed images says whether
the classifier needs the object or only its usual surroundings.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .files import InputError, atomic_write, begin_outputs
from .image_check import checked_rows
from .imagenet import hierarchy_indices, imagenet_names, is_imagenet_1k, is_wnid
from .plots import pyplot, save_png
from .prompts import BIAS_GROUPS, BiasClass, known_bias_classes, load_bias_class, record_seed
from .records import read_prompts
from .stats import bootstrap_ci
from .store import ActivationStore
from .wordnet import load_wordnet

log = logging.getLogger("synthprobe")

REPORT_SCHEMA = 1
MAPPINGS = ("hierarchy", "exact")
CROSS_GROUPS = ("context-only", "mixed")
OK_STATUS = "ok"
# Row ids written by ``wn-prompts bias``: bias-<class>-<group>-<text index>-s<seed index>.
BIAS_ID = re.compile(r"^bias-(?P<cls>.+)-(?P<group>object-only|context-only|mixed)-(?P<text>\d+)-s\d+$")
SEED_SUFFIX = re.compile(r"-s\d+$")
GROUP_COLORS = {"object-only": "#4c72b0", "context-only": "#dd8452", "mixed": "#55a868"}
FILES = {
    "images": "images.csv", "prompts": "prompts.csv", "top_prompts": "top_prompts.csv", "groups": "groups.csv",
    "classes": "classes.csv", "cross_class": "cross_class.csv",
}
FIGURES = {"groups": "groups.png", "cross_class": "cross_class.png"}
DEFINITIONS = {
    "confidence": "target probability: the softmax mass of the class's target set on one image",
    "top1_accuracy": "share of images whose top-1 class lies in the class's target set",
    "context_reliance": "mean confidence on mixed images minus mean confidence on object-only images",
    "context_sufficiency": "mean confidence on context-only images over mean confidence on object-only images",
    "interval": "percentile bootstrap over images (two-sample for reliance and sufficiency)",
    "cross_class": "mean confidence of the target class on the context-only / mixed images of the source class",
}


@dataclass(frozen=True)
class TargetSet:
    """The classifier classes that count as one bias class."""

    name: str
    synset: str
    indices: tuple[int, ...]


def resolve_targets(bias_class: BiasClass, mapping: str, model_classes: list[str] | None, n_classes: int,
                    wn=None) -> TargetSet:
    if mapping == "hierarchy":
        if not model_classes or not all(is_wnid(c) for c in model_classes):
            raise InputError("--mapping hierarchy needs an ImageNet classifier, but the store's classes are not "
                             "ImageNet wnids; use --mapping exact with class indices in the bias class definition")
        indices = hierarchy_indices(wn, bias_class.synset, model_classes)
    else:
        indices = exact_indices(bias_class, model_classes, n_classes)
    return TargetSet(bias_class.name, bias_class.synset, tuple(indices))


def exact_indices(bias_class: BiasClass, model_classes: list[str] | None, n_classes: int) -> list[int]:
    """The definition's ``imagenet_classes``: wnids looked up in the classifier's classes, or integer indices."""
    if not bias_class.imagenet_classes:
        raise InputError(f"bias class {bias_class.name!r} lists no imagenet_classes, which --mapping exact needs")
    position = {wnid: i for i, wnid in enumerate(model_classes or [])}
    indices = set()
    for entry in bias_class.imagenet_classes:
        if isinstance(entry, int) and not isinstance(entry, bool):
            if not 0 <= entry < n_classes:
                raise InputError(f"bias class {bias_class.name!r}: class index {entry} is out of range "
                                 f"(the classifier has {n_classes} classes)")
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


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def prompt_of(row_id: str, texts: dict[str, str], definitions: dict[str, BiasClass]) -> tuple[str, str]:
    """(prompt id, prompt text) of an image: from the prompt file, else from the id and the class definition.

    An image whose prompt cannot be found is its own prompt, with an empty text.
    """
    stem = SEED_SUFFIX.sub("", row_id)
    if row_id in texts:
        return stem, texts[row_id]
    match = BIAS_ID.match(row_id)
    if match and match["cls"] in definitions:
        group_texts = definitions[match["cls"]].prompts[match["group"]]
        if int(match["text"]) < len(group_texts):
            return stem, group_texts[int(match["text"])]
    return row_id, ""


def image_table(rows: pd.DataFrame, probs: np.ndarray, targets: dict[str, TargetSet], labels: list[str],
                texts: dict[str, str], definitions: dict[str, BiasClass]) -> pd.DataFrame:
    """One line per usable image of a selected class: its confidence for every class and its top-1 class.

    Usable: status ok, a bias group, and a target synset that is one of the selected classes.
    """
    class_of_synset = {t.synset: name for name, t in targets.items()}
    keep = ((rows["status"] == OK_STATUS) & rows["group"].isin(BIAS_GROUPS) & rows["target"].isin(class_of_synset)).to_numpy()
    used, p = rows[keep].reset_index(drop=True), probs[keep]
    class_probs = {name: p[:, list(t.indices)].sum(axis=1) for name, t in targets.items()}
    top1 = p.argmax(axis=1) if len(p) else np.zeros(0, dtype=int)
    classes = used["target"].map(class_of_synset)
    prompts = [prompt_of(i, texts, definitions) for i in used["id"]]
    table = pd.DataFrame({
        "id": used["id"], "class": classes, "group": used["group"],
        "prompt_id": [pid for pid, _ in prompts], "prompt": [text for _, text in prompts],
        "confidence": [class_probs[c][i] for i, c in enumerate(classes)],
        "top1_index": top1, "top1_class": [labels[k] for k in top1],
        "top1_in_target": [int(k) in targets[c].indices for k, c in zip(top1, classes)],
    })
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
    return table.sort_values(["class", "group", *by], ascending=[True, True, *ascending],
                             key=lambda col: col.map(keys[col.name]) if col.name in keys else col,
                             kind="stable").reset_index(drop=True)


def prompt_table(images: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Every prompt with its confidence over its images, ranked within class and group (the study's table)."""
    table = images.groupby(["class", "group", "prompt_id", "prompt"], sort=False).agg(
        confidence_mean=("confidence", "mean"), confidence_std=("confidence", "std"), n=("confidence", "size"),
        top1_accuracy=("top1_in_target", "mean"), top1_class=("top1_class", most_common)).reset_index()
    table = ordered(table, classes, ["confidence_mean", "prompt_id"], [False, True])
    table.insert(2, "rank", table.groupby(["class", "group"]).cumcount() + 1)
    return table.rename(columns={"prompt_id": "id"})


def top_prompts(prompts: pd.DataFrame, classes: list[str], k: int) -> pd.DataFrame:
    """Each class's ``k`` most confident prompts across all groups."""
    rank = {c: i for i, c in enumerate(classes)}
    table = prompts.drop(columns="rank").sort_values(
        ["class", "confidence_mean", "id"], ascending=[True, False, True], kind="stable",
        key=lambda col: col.map(rank) if col.name == "class" else col)
    table = table.groupby("class", sort=False).head(k).reset_index(drop=True)
    table.insert(1, "rank", table.groupby("class").cumcount() + 1)
    return table


def group_table(images: pd.DataFrame, classes: list[str], n_boot: int, seed: int, level: float) -> pd.DataFrame:
    """Per class and group: mean confidence with a bootstrap interval, top-1 accuracy, counts (n=0 allowed)."""
    lines = []
    for name in classes:
        for group in BIAS_GROUPS:
            sub = images[(images["class"] == name) & (images["group"] == group)]
            mean, low, high = bootstrap_ci([sub["confidence"]], np.mean, n_boot, record_seed(seed, f"{name}/{group}"), level)
            lines.append({"class": name, "group": group, "n": len(sub), "n_prompts": sub["prompt_id"].nunique(),
                          "confidence_mean": mean, "confidence_low": low, "confidence_high": high,
                          "top1_accuracy": sub["top1_in_target"].mean() if len(sub) else float("nan")})
    return pd.DataFrame(lines)


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.mean() - b.mean())


def mean_ratio(a: np.ndarray, b: np.ndarray) -> float:
    # A zero denominator gives NaN, which the bootstrap's quantiles skip.
    denominator = b.mean()
    return float(a.mean() / denominator) if denominator > 0 else float("nan")


def class_table(images: pd.DataFrame, targets: dict[str, TargetSet], labels: list[str], n_boot: int, seed: int,
                level: float) -> pd.DataFrame:
    """Per class: its target set, context reliance and context sufficiency with two-sample bootstrap intervals."""
    lines = []
    for name, target in targets.items():
        sample = {g: images.loc[(images["class"] == name) & (images["group"] == g), "confidence"].to_numpy()
                  for g in BIAS_GROUPS}
        line = {"class": name, "synset": target.synset, "n": sum(len(s) for s in sample.values()),
                "target_indices": ";".join(map(str, target.indices)),
                "target_classes": ";".join(labels[i] for i in target.indices)}
        effects = {"context_reliance": (mean_difference, "mixed"), "context_sufficiency": (mean_ratio, "context-only")}
        for measure, (statistic, group) in effects.items():
            estimate, low, high = bootstrap_ci([sample[group], sample["object-only"]], statistic, n_boot,
                                               record_seed(seed, f"{name}/{measure}"), level)
            line.update({measure: estimate, f"{measure}_low": low, f"{measure}_high": high})
        lines.append(line)
    return pd.DataFrame(lines)


def cross_class_matrices(images: pd.DataFrame, classes: list[str]) -> dict[str, pd.DataFrame]:
    """Per group: (target class x source class) mean confidence of the target on the source's images."""
    matrices = {}
    for group in CROSS_GROUPS:
        sub = images[images["group"] == group]
        means = sub.groupby("class")[[f"p_{c}" for c in classes]].mean()
        matrix = means.reindex(classes).T
        matrix.index, matrix.columns = classes, classes
        matrices[group] = matrix
    return matrices


def cross_class_table(matrices: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The matrices stacked: one line per (group, target class), one column per source class."""
    parts = [m.rename_axis("target_class").reset_index().assign(group=g) for g, m in matrices.items()]
    table = pd.concat(parts, ignore_index=True)
    return table[["group", "target_class", *matrices[CROSS_GROUPS[0]].columns]]


# ---- figures ---------------------------------------------------------------


def plot_groups(groups: pd.DataFrame, classes: list[str], level: float, path: Path) -> None:
    """Grouped bars: mean confidence per class and group, with the bootstrap interval as error bars."""
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
        for xi, n in zip(xs, sub["n"]):
            if n == 0:
                ax.text(xi, 0.02, "n=0", ha="center", va="bottom", rotation=90, fontsize=8)
    ax.set_xticks(x, classes)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"target probability (mean, {level:.0%} CI)")
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
            ax.text(j, i, "n=0" if np.isnan(v) else f"{v:.2g}", ha="center", va="center", fontsize=8,
                    color="black" if np.isnan(v) or v > 0.6 * top else "white")
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
            raise InputError(f"bias classes {owner[definition.synset]!r} and {name!r} share the synset "
                             f"{definition.synset}; their images cannot be told apart")
        owner[definition.synset] = name
    return definitions


def build_summary(parameters: dict, store: ActivationStore, counts: dict, groups: pd.DataFrame, class_lines: pd.DataFrame,
                  tops: pd.DataFrame, matrices: dict[str, pd.DataFrame], labels: list[str],
                  targets: dict[str, TargetSet]) -> dict:
    """Everything the report stage needs, with the definitions of every number."""
    provenance = store.provenance()
    model_classes = store.attrs.get("classes") or []
    per_class = {}
    for line in class_lines.to_dict("records"):
        name = line["class"]
        indices = targets[name].indices
        per_class[name] = {
            "synset": line["synset"],
            "targets": [{"index": i, "id": model_classes[i] if i < len(model_classes) else None, "name": labels[i]}
                        for i in indices],
            "n": line["n"],
            "groups": {g["group"]: {"n": g["n"], "n_prompts": g["n_prompts"],
                                    "confidence": {k: _number(g[f"confidence_{k}"]) for k in ("mean", "low", "high")},
                                    "top1_accuracy": _number(g["top1_accuracy"])}
                       for g in groups[groups["class"] == name].to_dict("records")},
            **{m: {"estimate": _number(line[m]), "low": _number(line[f"{m}_low"]), "high": _number(line[f"{m}_high"])}
               for m in ("context_reliance", "context_sufficiency")},
            "top_prompts": [{"id": t["id"], "group": t["group"], "prompt": t["prompt"],
                             "confidence_mean": _number(t["confidence_mean"]), "n": t["n"]}
                            for t in tops[tops["class"] == name].to_dict("records")],
        }
    return {
        "schema": REPORT_SCHEMA,
        "tool": "bias-report",
        "parameters": parameters,
        "store": {"path": str(store.path), **counts, "attrs": provenance},
        "definitions": DEFINITIONS,
        "groups": list(BIAS_GROUPS),
        "classes": per_class,
        "cross_class": {g: {t: {s: _number(v) for s, v in row.items()} for t, row in m.iterrows()}
                        for g, m in matrices.items()},
        "files": FILES,
        "figures": FIGURES,
    }


def run_bias_report(store_path: str | Path, out: str | Path, class_names: list[str], *, mapping: str = "hierarchy",
                    prompts_path: str | Path | None = None, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                    top: int = 5, class_dir: Path | None = None, wordnet_dir: str | None = None,
                    checks: str | Path | None = None, drop: tuple[str, ...] = ()) -> dict:
    """Read the store, write every table, figure and ``summary.json`` (last, so it marks a finished report)."""
    definitions = load_classes(class_names, class_dir)
    store = ActivationStore(store_path)
    logits = store.logits()
    model_classes = store.attrs.get("classes")
    wn = load_wordnet(wordnet_dir) if mapping == "hierarchy" else None
    targets = {name: resolve_targets(d, mapping, model_classes, logits.shape[1], wn) for name, d in definitions.items()}
    texts = {r.id: r.prompt for r in read_prompts(prompts_path)} if prompts_path else {}
    labels = class_labels(store.attrs, logits.shape[1])
    rows = store.rows()
    keep, checked = checked_rows(rows, checks, drop)  # image-check flags: counted, the ``drop`` ones left out
    images = image_table(rows[keep], softmax(logits)[keep.to_numpy()], targets, labels, texts, definitions)
    if images.empty:
        raise InputError(f"{store_path} holds no object-only, context-only or mixed images of "
                         f"{', '.join(definitions)} (groups found: {', '.join(sorted(set(rows['group']))) or 'none'}); "
                         "make the store from 'wn-prompts bias' prompts")
    classes = list(definitions)
    for name in classes:
        if not (images["class"] == name).any():
            log.warning("class %s has no images in %s", name, store_path)
    out = begin_outputs(out, "summary.json")
    n_failed = int((rows["status"] != OK_STATUS).sum())
    counts = {"n_rows": len(rows), "n_used": len(images), "n_failed": n_failed,
              "n_ignored": len(rows) - n_failed - len(images)}
    prompts = prompt_table(images, classes)
    tops = top_prompts(prompts, classes, top)
    groups = group_table(images, classes, n_boot, seed, level)
    class_lines = class_table(images, targets, labels, n_boot, seed, level)
    matrices = cross_class_matrices(images, classes)
    tables = {"images": images, "prompts": prompts, "top_prompts": tops, "groups": groups, "classes": class_lines,
              "cross_class": cross_class_table(matrices)}
    for key, table in tables.items():
        _write_csv(table, out / FILES[key])
    plot_groups(groups, classes, level, out / FIGURES["groups"])
    plot_cross_class(matrices, out / FIGURES["cross_class"])
    parameters = {"classes": classes, "mapping": mapping, "prompts": str(prompts_path) if prompts_path else None,
                  "bootstrap": n_boot, "level": level, "seed": seed, "top": top,
                  "class_dir": str(class_dir) if class_dir else None}
    summary = build_summary(parameters, store, counts, groups, class_lines, tops, matrices, labels, targets)
    if checked:
        summary.update(checks=checked, parameters={**parameters, "checks": str(checks), "drop": list(drop)})
    with atomic_write(out / "summary.json") as handle:
        handle.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    log.info("bias report for %d classes (%d images) written to %s", len(classes), len(images), out)
    return summary
