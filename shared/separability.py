"""Which layers tell concepts apart, and which channels prefer which concept.

Two kinds of numbers, computed one layer at a time:

* The original study's metrics (1-4), exact over every selected image, from
  per-synset sufficient statistics gathered in one chunked pass over the layer
  (count, sum and sum of squares per channel, and a running top-m of rows per
  channel).
* Scale-free measures (Fisher ratio, cosine silhouette, linear probe) with
  permutation p-values, and per-channel selectivity tests, all on prompt
  units (``units.py``, ``separation.py``), computed on the layer's *analysis
  sample*: every selected row when there are at most ``sample`` of them, else
  whole units drawn at random within each synset. Fisher ratio and silhouette
  use the sample centred and, for layers wider than ``dims`` channels,
  projected on its top ``dims`` principal axes; the probe fits its own axes
  inside each fold. Memory and cost of this part are bounded by ``sample`` and
  ``dims``, not by the number of images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import __version__
from .files import InputError, atomic_write, begin_outputs
from .formats.analysis_folder import provenance_of, table_entry, write_summary
from .formats.image_checks import checked_rows
from .globs import select_by_globs
from .plots import pyplot, save_png
from .separation import FDR_METHODS, MEASURES, RIDGE_ALPHA, Design, channel_selectivity, q_values, scale_free_tests
from .units import assign_units

log = logging.getLogger("synthprobe")


@dataclass(frozen=True)
class Params:
    groups: tuple[str, ...] = ("concept",)
    layers: tuple[str, ...] = ("*",)
    pool: str = "mean"
    unit: str | None = None  # None: prompt units where the store has prompt texts, else image units
    top_layers: int = 6
    top_synsets: int = 5
    top_neurons: int = 10
    top_images: int = 5
    permutations: int = 1000
    sample: int = 1000
    dims: int = 64
    folds: int = 5
    alpha: float = 0.05
    fdr: str = "bh"
    seed: int = 0
    checks: str | None = None  # an image-check checks.jsonl: its flags are counted, ``drop`` ones left out
    drop: tuple[str, ...] = ()


# ---------------------------------------------------------------- row and layer choice


def select_rows(rows: pd.DataFrame, groups: tuple[str, ...]) -> pd.DataFrame:
    """Rows with status ok whose group is one of ``groups``; index = row number in the store."""
    known = sorted(set(rows["group"]))
    unknown = [g for g in groups if g not in known]
    if unknown:
        raise InputError(f"unknown --group {', '.join(unknown)}; this store has: {', '.join(known) or 'no rows'}")
    chosen = rows[rows["group"].isin(groups) & (rows["status"] == "ok")]
    n_synsets = chosen["synset"].nunique()
    if n_synsets < 2:
        raise InputError(
            f"need at least two synsets to compare, found {n_synsets} among {len(chosen)} ok rows "
            f"of group {','.join(groups)}"
        )
    return chosen


def select_layers(
    hook_points: list[str], patterns: tuple[str, ...], aliases: dict[str, str] | None = None
) -> list[str]:
    """Hook points matching any glob, in the store's depth order; an alias ({alias: canonical}) selects its
    canonical hook point, which the store holds once."""
    aliases = aliases or {}
    shown = ", ".join(hook_points[:8]) + (" ..." if len(hook_points) > 8 else "")
    matched = select_by_globs(hook_points + list(aliases), patterns, more=f"; the store has: {shown or 'none'}")
    chosen = {aliases.get(name, name) for name in matched}
    return [hook for hook in hook_points if hook in chosen]


def unit_sample(codes: np.ndarray, units: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Positions of about ``cap`` rows made of whole units, each synset in proportion (at least 2 units where it
    has them)."""
    if len(codes) <= cap:
        return np.arange(len(codes))
    rng = np.random.default_rng(seed)
    picked = []
    for k in np.unique(codes):
        members = np.flatnonzero(codes == k)
        unit_ids = rng.permutation(np.unique(units[members]))
        sizes = np.array([np.count_nonzero(units[members] == u) for u in unit_ids])
        wanted = cap * len(members) / len(codes)
        take = max(min(2, len(unit_ids)), int(np.searchsorted(np.cumsum(sizes), wanted, side="right")))
        picked.append(members[np.isin(units[members], unit_ids[:take])])
    return np.sort(np.concatenate(picked))


# ---------------------------------------------------------------- one pass over a layer


@dataclass
class LayerScan:
    counts: np.ndarray  # (K,) images per synset
    sums: np.ndarray  # (K, C)
    sq_dev: np.ndarray  # (K, C) sum of squared deviations from ``shift``
    shift: np.ndarray  # (C,) a per-channel offset that keeps the sums of squares well conditioned
    top_values: np.ndarray  # (m, C) the m largest values of each channel, descending
    top_positions: np.ndarray  # (m, C) their positions among the selected rows
    sample: np.ndarray  # (n_sample, C) the analysis sample's rows

    @property
    def centroids(self) -> np.ndarray:
        return self.sums / self.counts[:, None]

    def channel_std(self) -> np.ndarray:
        """(K, C) per-synset standard deviation (ddof 1); NaN for a synset with one image."""
        n = self.counts[:, None]
        mean_dev = self.sums / n - self.shift
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (self.sq_dev - n * mean_dev**2) / (n - 1)
        var = np.where(n > 1, np.maximum(var, 0.0), np.nan)
        return np.sqrt(var)


def scan_layer(
    store,
    hook: str,
    pool: str,
    store_rows: np.ndarray,
    codes: np.ndarray,
    n_synsets: int,
    sample_positions: np.ndarray,
    top_m: int,
    row_ids: np.ndarray,
) -> LayerScan:
    """Read one layer chunk by chunk and keep only per-synset statistics, top rows and the sample."""
    channels = store.channels(hook, pool)
    counts = np.bincount(codes, minlength=n_synsets).astype(np.float64)
    sums = np.zeros((n_synsets, channels))
    sq_dev = np.zeros((n_synsets, channels))
    shift = None
    top_values = np.zeros((0, channels))
    top_positions = np.zeros((0, channels), dtype=np.int64)
    sample = np.empty((len(sample_positions), channels))
    in_sample = np.full(len(store_rows), -1)
    in_sample[sample_positions] = np.arange(len(sample_positions))
    for index, block in store.iter_layer(hook, pool, rows=store_rows):
        positions = np.searchsorted(store_rows, index)
        bad = ~np.isfinite(block)
        if bad.any():
            row = positions[np.flatnonzero(bad.any(axis=1))[0]]
            raise InputError(f"layer {hook} has a NaN or infinite value in row {row_ids[row]}")
        if shift is None:
            shift = block.mean(axis=0)
        onehot = np.zeros((len(positions), n_synsets))
        onehot[np.arange(len(positions)), codes[positions]] = 1.0
        sums += onehot.T @ block
        sq_dev += onehot.T @ (block - shift) ** 2
        candidates = np.vstack([top_values, block])
        candidate_positions = np.vstack([top_positions, np.broadcast_to(positions[:, None], block.shape)])
        kept = min(top_m, len(candidates))
        keep = np.argpartition(-candidates, kept - 1, axis=0)[:kept]
        top_values = np.take_along_axis(candidates, keep, axis=0)
        top_positions = np.take_along_axis(candidate_positions, keep, axis=0)
        wanted = in_sample[positions] >= 0
        sample[in_sample[positions[wanted]]] = block[wanted]
    order = np.lexsort((top_positions, -top_values), axis=0)
    return LayerScan(
        counts,
        sums,
        sq_dev,
        shift,
        np.take_along_axis(top_values, order, axis=0),
        np.take_along_axis(top_positions, order, axis=0),
        sample,
    )


# ---------------------------------------------------------------- the original study's metrics (1-4)


def max_activation(centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Metric 1: each synset's largest centroid value, and the channel holding it."""
    channel = centroids.argmax(axis=1)
    return centroids[np.arange(len(centroids)), channel], channel


def avg_centroid_distance(centroids: np.ndarray) -> float:
    """Metric 2: mean Euclidean distance over all pairs of synset centroids."""
    k = len(centroids)
    squared = (centroids**2).sum(axis=1)
    gram = centroids @ centroids.T
    dist = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * gram, 0.0))
    return float(dist[np.triu_indices(k, 1)].mean())


def top_channels(centroids: np.ndarray, n: int) -> np.ndarray:
    """Metric 4: channels ordered by their highest centroid value over synsets (ties by channel index)."""
    best = centroids.max(axis=0)
    return np.lexsort((np.arange(len(best)), -best))[:n]


# ---------------------------------------------------------------- scale-free measures (6-7)


def reduce_sample(sample: np.ndarray, dims: int) -> tuple[np.ndarray, float]:
    """The sample centred and, if wider than ``dims``, projected on its top principal axes.

    Returns the (n, d) scores and the fraction of the sample's variance they
    keep. Fisher ratio and cosine silhouette of centred rows do not change
    under a rotation, so a layer of at most ``dims`` channels, or a sample of
    at most ``dims`` rows, loses nothing. The axes come from the smaller of the
    two Gram matrices (rows x rows or channels x channels), which is exact and deterministic.
    """
    from scipy.linalg import eigh

    centred = sample - sample.mean(axis=0)
    n, channels = centred.shape
    if channels <= dims:
        return centred, 1.0
    by_rows = n <= channels
    gram = centred @ centred.T if by_rows else centred.T @ centred
    size, kept = len(gram), min(dims, n)
    values, vectors = eigh(gram, subset_by_index=[size - kept, size - 1])
    values = np.maximum(values, 0.0)
    scores = vectors * np.sqrt(values) if by_rows else centred @ vectors
    total = float(np.trace(gram))
    return scores, (float(values.sum() / total) if total > 0 else 1.0)


# ---------------------------------------------------------------- the whole analysis


@dataclass
class Result:
    layers: pd.DataFrame
    synset_max: pd.DataFrame
    top_synsets: pd.DataFrame
    top_neurons: pd.DataFrame
    top_images: pd.DataFrame
    selective: pd.DataFrame
    synset_counts: dict[str, int]
    units: dict  # unit kind, number of units, and why image units were used if they were
    n_sample: int
    n_tests: int  # (layer, synset, channel) tests in the selectivity family
    notes: list[str]
    checks: dict | None = None  # image-check counts per synset and group, when the analysis read a checks file


def analyse(store, params: Params, progress=lambda items, **_: items) -> Result:
    """Run every measure over the chosen layers of ``store`` (an ActivationStore)."""
    rows = store.rows()
    keep, checks = checked_rows(rows, params.checks, params.drop)
    chosen = select_rows(rows[keep], params.groups)
    store_rows = chosen.index.to_numpy()
    synsets, codes = np.unique(chosen["synset"].to_numpy(), return_inverse=True)
    counts = np.bincount(codes, minlength=len(synsets))
    units = assign_units(chosen, params.unit, source=str(store.path))
    row_ids, paths = chosen["id"].to_numpy(), chosen["path"].to_numpy()
    layers = select_layers(store.hook_points, params.layers, store.attrs.get("hook_aliases"))
    aliases = store.aliases()
    sample_positions = unit_sample(codes, units.codes, params.sample, params.seed)
    design = Design.of(codes[sample_positions], units.codes[sample_positions], len(synsets))
    notes = [f"synset {s} has one image: its standard deviations are undefined (NaN)" for s in synsets[counts == 1]]
    if units.note:
        notes.append(units.note)
    few_units = synsets[design.units_per_synset() < 2]
    if len(few_units):
        note = (
            f"fewer than two {units.kind} units in the sample for {', '.join(few_units)}: the linear probe is "
            "undefined (NaN) and permutations run over all units"
        )
        log.warning(note)
        notes.append(note)

    layer_rows, max_rows, neuron_rows, image_rows, tested = [], [], [], [], []
    for depth, hook in enumerate(progress(layers, desc="layers", unit="layer")):
        scan = scan_layer(
            store, hook, params.pool, store_rows, codes, len(synsets), sample_positions, params.top_images, row_ids
        )
        centroids = scan.centroids
        peak, peak_channel = max_activation(centroids)
        max_rows += [
            {"layer": hook, "synset": s, "max_activation": float(v), "n_images": int(n), "channel": int(c)}
            for s, v, n, c in zip(synsets, peak, counts, peak_channel)
        ]
        std = scan.channel_std()
        for rank, channel in enumerate(top_channels(centroids, params.top_neurons), 1):
            neuron_rows += [
                {
                    "layer": hook,
                    "rank": rank,
                    "channel": int(channel),
                    "max_centroid": float(centroids[:, channel].max()),
                    "synset": s,
                    "mean": float(centroids[j, channel]),
                    "std": float(std[j, channel]),
                    "n_images": int(counts[j]),
                }
                for j, s in enumerate(synsets)
            ]
            for image_rank, (value, position) in enumerate(
                zip(scan.top_values[:, channel], scan.top_positions[:, channel]), 1
            ):
                image_rows.append(
                    {
                        "layer": hook,
                        "rank": rank,
                        "channel": int(channel),
                        "image_rank": image_rank,
                        "id": row_ids[position],
                        "path": paths[position],
                        "synset": synsets[codes[position]],
                        "activation": float(value),
                    }
                )

        z, explained = reduce_sample(scan.sample, params.dims)
        tests = scale_free_tests(z, scan.sample, design, params.permutations, params.folds, params.dims, params.seed)
        tested.append(selectivity_candidates(channel_selectivity(scan.sample, design), params.alpha))
        row = {
            "layer": hook,
            "aliases": ";".join(aliases.get(hook, [])),
            "depth": depth,
            "channels": centroids.shape[1],
            "n_images": len(codes),
            "n_units": units.n_units,
            "avg_centroid_distance": avg_centroid_distance(centroids),
        }
        for m in MEASURES:
            row[m if m != "probe" else "probe_accuracy"] = tests.estimates[m]
            row[f"{m}_p"] = tests.p_values[m]
        row.update(
            {
                "probe_chance": tests.chance,
                "probe_folds": tests.probe_folds,
                "n_sample": len(design.codes),
                "n_sample_units": design.n_units,
                "dims": z.shape[1],
                "explained_variance": explained,
            }
        )
        layer_rows.append(row)

    table = pd.DataFrame(layer_rows)
    table.insert(7, "distance_rank", table["avg_centroid_distance"].rank(ascending=False, method="first").astype(int))
    selective, per_layer, n_tests = selective_channels(layers, tested, synsets, design, params.alpha, params.fdr)
    table["n_selective_channels"] = per_layer
    synset_max = pd.DataFrame(max_rows)
    return Result(
        layers=table,
        synset_max=synset_max,
        top_synsets=top_synsets_table(table, synset_max, params.top_layers, params.top_synsets),
        top_neurons=pd.DataFrame(neuron_rows),
        top_images=pd.DataFrame(image_rows),
        selective=selective,
        synset_counts={str(s): int(n) for s, n in zip(synsets, counts)},
        units=units.summary(),
        n_sample=len(design.codes),
        n_tests=n_tests,
        notes=notes,
        checks=checks,
    )


def selectivity_candidates(selectivity: dict[str, np.ndarray], alpha: float) -> dict[str, np.ndarray]:
    """What the family-wide correction needs of one layer: every p-value (float32 bounds the memory of a
    many-synset run), and the other figures only where p < alpha, since a q-value is never below its p-value."""
    p = selectivity["p_value"]
    synset_index, channel_index = np.nonzero(p < alpha)
    return {
        "p_value": p.astype(np.float32),
        "synset": synset_index,
        "channel": channel_index,
        **{key: selectivity[key][synset_index, channel_index] for key in ("auroc", "d_prime")},
        "candidate_p": p[synset_index, channel_index],
    }


def selective_channels(
    layers: list[str], tested: list[dict], synsets: np.ndarray, design: Design, alpha: float, fdr: str
) -> tuple[pd.DataFrame, list[int], int]:
    """The (layer, synset, channel) tests with q-value below ``alpha``, corrected as one family over every
    layer, synset and channel; per layer the number of channels selective for some synset; the family's size."""
    if fdr not in FDR_METHODS:
        raise InputError(f"--fdr {fdr!r} is not one of {', '.join(FDR_METHODS)}")
    flat = np.concatenate([t["p_value"].ravel() for t in tested]).astype(np.float64) if tested else np.zeros(0)
    q_flat = q_values(flat, fdr)
    parts, per_layer, start = [], [], 0
    n_synset_units = design.units_per_synset()
    for hook, t in zip(layers, tested):
        q = q_flat[start : start + t["p_value"].size].reshape(t["p_value"].shape)[t["synset"], t["channel"]]
        start += t["p_value"].size
        keep = q < alpha
        synset_index, channel_index = t["synset"][keep], t["channel"][keep]
        per_layer.append(len(np.unique(channel_index)))
        parts.append(
            pd.DataFrame(
                {
                    "layer": hook,
                    "channel": channel_index,
                    "synset": synsets[synset_index],
                    "auroc": t["auroc"][keep],
                    "d_prime": t["d_prime"][keep],
                    "p_value": t["candidate_p"][keep],
                    "q_value": q[keep],
                    "n_units_synset": n_synset_units[synset_index],
                    "n_units_rest": design.n_units - n_synset_units[synset_index],
                }
            )
        )
    selective = pd.concat(parts, ignore_index=True).sort_values(
        ["layer", "channel", "synset"], kind="stable", key=lambda c: c.map(layers.index) if c.name == "layer" else c
    )
    return selective.reset_index(drop=True), per_layer, int(np.count_nonzero(~np.isnan(flat)))


def top_layers(layers: pd.DataFrame, n: int) -> list[str]:
    """Metric 2's top-K: layers by average centroid distance, largest first."""
    return layers.sort_values("distance_rank")["layer"].head(n).tolist()


def top_synsets_table(layers: pd.DataFrame, synset_max: pd.DataFrame, n_layers: int, n_synsets: int) -> pd.DataFrame:
    """Metric 3: for each top layer, its synsets with the highest max activation."""
    parts = []
    for layer_rank, layer in enumerate(top_layers(layers, n_layers), 1):
        rows = (
            synset_max[synset_max["layer"] == layer]
            .sort_values(["max_activation", "synset"], ascending=[False, True])
            .head(n_synsets)
        )
        parts.append(rows.assign(layer_rank=layer_rank, rank=range(1, len(rows) + 1)))
    columns = ["layer_rank", "layer", "rank", "synset", "max_activation", "n_images"]
    return pd.concat(parts, ignore_index=True)[columns]


# ---------------------------------------------------------------- outputs

FIGURES = {"heatmap": "max_activation_heatmap.png", "depth": "separability_by_depth.png"}
TABLES = {
    "layers": (
        "layers.csv",
        "one row per distinct tensor in depth order (aliases: other hook points with the "
        "same values, stored once): metric 2 (avg_centroid_distance, distance_rank) "
        "and the scale-free measures (Fisher ratio, cosine silhouette, cross-validated probe accuracy beside "
        "chance) with one-sided permutation p-values that move synset labels between units",
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
        "synset than for the other units (one-sided Mann-Whitney), with q below alpha; q-values "
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
        "n_sample": result.n_sample,
        "selectivity_family": {
            "tests": result.n_tests,
            "correction": params.fdr,
            "alpha": params.alpha,
            "scope": "every (layer, synset, channel) of this analysis",
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
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(max(8, 0.12 * len(depth) + 4), 11))
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
    axes[0].set_title("Separability by depth: scale-free measures vs the raw centroid distance")
    save_png(fig, path)
