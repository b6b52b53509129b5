"""separability's outputs: the tables, the figures and summary.json of an analysis folder."""

from __future__ import annotations

import numpy as np
import pandas as pd

from synthprobe import __version__
from synthprobe.common.files import atomic_write, begin_outputs
from synthprobe.common.plots import pyplot, save_png
from synthprobe.common.stats import RIDGE_ALPHA
from synthprobe.formats.analysis_folder import provenance_of, table_entry, write_summary
from synthprobe.separability.analysis import Params, Result
from synthprobe.separability.tables import top_layers

FIGURES = {
    "heatmap": "max_activation_heatmap.png",
    "depth": "separability_by_depth.png",
    "variance": "variance_by_depth.png",
}
TABLES = {
    "layers": (
        "layers.csv",
        "one row per distinct tensor in depth order (aliases: other hook points with the "
        "same values, stored once): metric 2 (avg_centroid_distance, distance_rank) "
        "and the scale-free measures (Fisher ratio, cosine silhouette, cross-validated probe accuracy and balanced "
        "accuracy) with one-sided permutation p-values that move synset labels between units of one block "
        "(template); per measure the permutation null's mean (the probe's: probe_chance) and 95th percentile, the "
        "standardised effect (observed - null mean) / null SD, and p_fwer: family-wise over the layers "
        "(Westfall-Young max-T on the shared relabellings); the shares of the "
        "layer's variance due to synset, template, prompt and seed (var_*, NaN where the design cannot tell them "
        "apart) and the seeds' intraclass correlation (icc_seed)",
    ),
    "synset_max_activation": (
        "synset_max_activation.csv",
        "metric 1: the largest channel value of each synset's "
        "centroid per layer, the images it averages and that channel",
    ),
    "top_synsets": (
        "top_synsets.csv",
        "metric 3: per top layer (by distance), the synsets with the highest max activation",
    ),
    "top_neurons": (
        "top_neurons.csv",
        "metric 4: per layer, the channels with the highest centroid value, each "
        "synset's mean, standard deviation (ddof 1) and image count",
    ),
    "top_images": ("top_images.csv", "metric 4: the images (row id, path) that activate each top channel most"),
    "selective_channels": (
        "selective_channels.csv",
        "(layer, channel, synset) whose unit means are higher for the "
        "synset than for the other units of the same block (one-sided Mann-Whitney; van Elteren's stratified "
        "test over template blocks), with q below alpha; q-values "
        "are corrected over one family: every layer, synset and channel of this analysis",
    ),
}


def write_outputs(result: Result, params: Params, store, out_dir) -> dict:
    """Write the tables, the figures and, last, summary.json (the stage's completion marker)."""
    out = begin_outputs(out_dir, "summary.json")
    frames = {
        "layers": result.layers,
        "synset_max_activation": result.synset_max,
        "top_synsets": result.top_synsets,
        "top_neurons": result.top_neurons,
        "top_images": result.top_images,
        "selective_channels": result.selective,
    }
    for key, frame in frames.items():
        with atomic_write(out / TABLES[key][0]) as handle:
            frame.to_csv(handle, index=False, float_format="%.6g", lineterminator="\n")
    plot_heatmap(result, top_layers(result.layers, params.top_layers), out / FIGURES["heatmap"])
    plot_depth(result.layers, out / FIGURES["depth"], params.alpha)
    plot_variance(result.layers, out / FIGURES["variance"])

    def best(column):
        ranked = result.layers.dropna(subset=[column]).sort_values([column, "depth"], ascending=[False, True])
        return ranked["layer"].head(params.top_layers).tolist()

    fields = {
        "version": __version__,
        "parameters": {
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in params.__dict__.items()},
            "ridge_alpha": RIDGE_ALPHA,
        },
        "store": {"path": str(store.path), **store.provenance(), "n_hook_points": len(store.hook_points)},
        "n_images": int(sum(result.synset_counts.values())),
        "n_synsets": len(result.synset_counts),
        "synsets": result.synset_counts,
        **result.units,
        **result.blocks,
        "n_sample": result.n_sample,
        "selectivity_family": {
            "tests": result.n_tests,
            "correction": params.fdr,
            "alpha": params.alpha,
            "scope": "every (layer, synset, channel) of this analysis",
        },
        "layer_family": {
            "correction": "Westfall-Young max-T (single step) over the shared relabellings",
            "tests": len(result.layers),
            "scope": "every layer of this analysis, per measure: the *_p_fwer columns",
        },
        "layers": result.layers["layer"].tolist(),
        "top_layers": top_layers(result.layers, params.top_layers),
        "best_layers": {
            "probe_accuracy": best("probe_accuracy"),
            "fisher": best("fisher"),
            "silhouette": best("silhouette"),
        },
        "notes": result.notes,
        **({"checks": result.checks} if result.checks else {}),
    }
    return write_summary(
        out,
        "separability",
        fields,
        tables={key: table_entry(name, len(frames[key]), text) for key, (name, text) in TABLES.items()},
        figures=FIGURES,
        provenance=provenance_of(store=store.path, checks=params.checks),
    )


def plot_heatmap(result: Result, layers: list[str], path) -> None:
    """Metric 5: max activation, synsets (rows) by top layers (columns)."""
    plt = pyplot()

    grid = result.synset_max.pivot(index="synset", columns="layer", values="max_activation")[layers]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(layers), 1.2 + 0.35 * len(grid)))
    image = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right")
    ax.set_yticks(range(len(grid)), grid.index)
    if grid.size <= 200:
        for (i, j), value in np.ndenumerate(grid.to_numpy()):
            ax.text(j, i, f"{value:.3g}", ha="center", va="center", color="w", fontsize=7)
    ax.set_xlabel("layer (top by average centroid distance)")
    ax.set_ylabel("synset")
    ax.set_title("Max activation of each synset's centroid")
    fig.colorbar(image, ax=ax, label="max activation")
    save_png(fig, path)


def plot_depth(layers: pd.DataFrame, path, alpha: float = 0.05) -> None:
    """Scale-free measures by depth, filled where the permutation p-value is at most ``alpha``, beside the
    raw centroid distance."""
    plt = pyplot()

    panels = [
        ("fisher", "fisher_p", "Fisher ratio (log)"),
        ("silhouette", "silhouette_p", "silhouette (cosine)"),
        ("probe_accuracy", "probe_p", "linear-probe accuracy"),
        ("avg_centroid_distance", None, "avg centroid distance (raw)"),
    ]
    depth = layers["depth"].to_numpy()
    fig, axes = plt.subplots(len(panels) + 1, 1, sharex=True, figsize=(max(8, 0.12 * len(depth) + 4), 13.5))
    plot_effects(axes[-1], layers, depth)
    for ax, (column, p_column, label) in zip(axes, panels):
        ax.plot(depth, layers[column], color="C0" if p_column else "C3", linewidth=1)
        if p_column:
            significant = (layers[p_column] <= alpha).to_numpy()
            ax.plot(
                depth[significant],
                layers[column][significant],
                "o",
                markersize=4,
                color="C0",
                label=f"p <= {alpha:g} (permutation over units)",
            )
            ax.plot(
                depth[~significant],
                layers[column][~significant],
                "o",
                markersize=4,
                markerfacecolor="white",
                color="C0",
                label=f"p > {alpha:g}",
            )
        if column == "fisher" and (layers[column] > 0).any():
            ax.set_yscale("log")
        if column == "probe_accuracy":
            ax.plot(depth, layers["probe_chance"], linestyle="--", color="grey", label="chance")
        if p_column:
            ax.legend(loc="best", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    step = max(1, len(depth) // 40)
    axes[-1].set_xticks(depth[::step], layers["layer"].iloc[::step], rotation=90, fontsize=7)
    axes[-1].set_xlabel("layer (depth order)")
    axes[0].set_title("Separability by depth: scale-free measures vs the raw centroid distance, and their effects")
    save_png(fig, path)


def plot_effects(ax, layers: pd.DataFrame, depth: np.ndarray) -> None:
    """Each measure's standardised effect, (observed - null mean) / null SD: one scale for the three measures."""
    for column, label in (("fisher", "Fisher ratio"), ("silhouette", "silhouette"), ("probe", "linear probe")):
        ax.plot(depth, layers[f"{column}_effect"], marker=".", linewidth=1, label=label)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_ylabel("effect (null SDs)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)


def plot_variance(layers: pd.DataFrame, path) -> None:
    """The variance decomposition stacked by relative depth (0 the first analysed layer, 1 the last); components
    the design cannot estimate (NaN) are left out of the stack and the legend."""
    from synthprobe.separability.variance import COMPONENTS

    plt = pyplot()
    depth = layers["depth"].to_numpy(dtype=np.float64)
    relative = (depth - depth.min()) / max(np.ptp(depth), 1.0)
    shown = [c for c in COMPONENTS if layers[f"var_{c}"].notna().any()]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    values = [layers[f"var_{c}"].fillna(0.0).to_numpy() for c in shown]
    if len(relative) == 1:  # one layer: a band across the axis, since a stack of one point draws nothing
        relative, values = np.array([0.0, 1.0]), [np.repeat(v, 2) for v in values]
    ax.stackplot(
        relative,
        *values,
        labels=[
            {
                "prompt": "prompt (synset x template)" if "template" in shown else "prompt",
                "seed": "seed (within prompt)" if "prompt" in shown else "residual (one image a prompt)",
            }.get(c, c)
            for c in shown
        ],
        alpha=0.85,
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("relative depth (first to last analysed layer)")
    ax.set_ylabel("share of the layer's variance")
    ax.set_title("Variance decomposition by depth (method of moments, trace over channels)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    save_png(fig, path)
