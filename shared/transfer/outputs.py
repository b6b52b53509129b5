"""transfer's outputs: the tables, the figure and summary.json of an analysis folder (docs/formats.md)."""

from __future__ import annotations

import pandas as pd
from scipy import stats as sps

from synthprobe import __version__
from synthprobe.common.files import atomic_write, begin_outputs
from synthprobe.common.plots import pyplot, save_png
from synthprobe.common.stats import RIDGE_ALPHA
from synthprobe.formats.analysis_folder import provenance_of, table_entry, write_summary
from synthprobe.transfer.analysis import Params, Result
from synthprobe.transfer.headline import headline

FIGURES = {"depth": "transfer_by_depth.png"}
TABLES = {
    "layers": (
        "layers.csv",
        "one row per hook point in depth order: the probe fitted on generated images scored on photos "
        "(transfer_accuracy, permutation p over photo units) beside each source's cross-validated accuracy and "
        "chance; CKA and representational similarity of the synset centroids (Mantel p); the domain gap; "
        "selective-channel overlap (docs/methods.md)",
    ),
    "synset_layers": (
        "synset_layers.csv",
        "one row per (hook point, shared synset): domain accuracy, selective channels on each source, their "
        "overlap (Jaccard) beside its chance level, and the photo AUROC of the channels selective on generated images",
    ),
    "synsets": (
        "synsets.csv",
        "every synset of either source: in which source it is, images and units per source, and its per-layer "
        "figures summed up (shared synsets only)",
    ),
}


def write_outputs(result: Result, params: Params, generated_store, photo_store, out_dir) -> dict:
    """Write the tables, the figure and, last, summary.json (the stage's completion marker)."""
    out = begin_outputs(out_dir, "summary.json")
    frames = {"layers": result.layers, "synset_layers": result.synset_layers, "synsets": result.synsets}
    for key, frame in frames.items():
        with atomic_write(out / TABLES[key][0]) as handle:
            frame.to_csv(handle, index=False, float_format="%.6g", lineterminator="\n")
    plot_depth(result.layers, out / FIGURES["depth"], params.alpha)
    sets = result.synset_sets
    fields = {
        "version": __version__,
        "parameters": {
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in params.__dict__.items()},
            "ridge_alpha": RIDGE_ALPHA,
        },
        "classifier": {key: generated_store.attrs.get(key) for key in ("model", "weights", "preprocessing")},
        "stores": {
            "generated": {"path": str(generated_store.path), **generated_store.provenance()},
            "photos": {"path": str(photo_store.path), **photo_store.provenance()},
        },
        "headline": headline(result.layers, params.alpha),
        "synsets": {
            "shared": sets["shared"],
            "only_generated": sorted(set(sets["generated"]) - set(sets["photos"])),
            "only_photos": sorted(set(sets["photos"]) - set(sets["generated"])),
        },
        "units": {source.name: units_summary(source) for source in (result.generated, result.photos)},
        "separability_rank_correlation": separability_rank_correlation(result.layers),
        "layers": result.layers["layer"].tolist(),
        "notes": notes(result),
    }
    return write_summary(
        out,
        "transfer",
        fields,
        tables={key: table_entry(name, len(frames[key]), text) for key, (name, text) in TABLES.items()},
        figures=FIGURES,
        provenance=provenance_of(generated=generated_store.path, photos=photo_store.path),
    )


def units_summary(source) -> dict:
    """The unit of a source's tests; "image" where every image is its own (photos without prompt texts)."""
    kind = "image" if source.n_units == len(source.codes) else source.unit_kind
    return {"unit": kind, "n_units": source.n_units, "n_images": len(source.codes)}


def separability_rank_correlation(layers: pd.DataFrame) -> float | None:
    """Spearman correlation over layers of the two sources' cross-validated accuracies: do the same layers
    separate the synsets best? No p-value (neighbouring layers are not independent)."""
    both = layers[["generated_accuracy", "photo_accuracy"]].dropna()
    if len(both) < 3 or both.nunique().min() < 2:
        return None
    return float(sps.spearmanr(both["generated_accuracy"], both["photo_accuracy"]).statistic)


def notes(result: Result) -> list[str]:
    sets = result.synset_sets
    out = []
    for name, other in (("generated", "photos"), ("photos", "generated")):
        missing = sorted(set(sets[name]) - set(sets[other]))
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            out.append(f"{len(missing)} synset(s) of the {name} store have no {other} and are left out: {shown}")
    return out


def plot_depth(layers: pd.DataFrame, path, alpha: float) -> None:
    """Transfer accuracy, domain gap and CKA by relative depth; filled markers where p <= alpha."""
    plt = pyplot()
    depth = layers["relative_depth"].to_numpy()
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(9, 9))
    top, middle, bottom = axes
    for column, label in (
        ("photo_accuracy", "within photos (cross-validated)"),
        ("generated_accuracy", "within generated (cross-validated)"),
    ):
        top.plot(depth, layers[column], linewidth=1, label=label)
    marked(top, depth, layers["transfer_accuracy"], layers["transfer_p"], alpha, "generated → photos", "C3")
    top.plot(depth, layers["chance"], linestyle="--", color="grey", label="chance")
    top.set_ylabel("probe accuracy")
    middle.plot(depth, layers["domain_accuracy"], color="C4", marker="o", markersize=3, linewidth=1)
    middle.axhline(0.5, linestyle="--", color="grey", label="indistinguishable")
    middle.set_ylabel("domain accuracy\n(generated vs photo)")
    marked(bottom, depth, layers["cka"], layers["cka_p"], alpha, "linear CKA of the synset centroids", "C2")
    bottom.set_ylabel("CKA")
    bottom.set_xlabel("relative depth (0: first hook point, 1: last)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    top.set_title("Generated images vs photos, by depth")
    save_png(fig, path)


def marked(ax, depth, values, p_values, alpha: float, label: str, color: str) -> None:
    """A line with filled markers where p <= alpha and open ones elsewhere."""
    ax.plot(depth, values, color=color, linewidth=1)
    significant = (p_values <= alpha).to_numpy()
    ax.plot(depth[significant], values[significant], "o", markersize=4, color=color, label=f"{label}, p <= {alpha:g}")
    ax.plot(
        depth[~significant],
        values[~significant],
        "o",
        markersize=4,
        color=color,
        markerfacecolor="white",
        label=f"{label}, p > {alpha:g}",
    )
