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
  projected on its top ``dims`` principal axes; the probe uses the standardised
  sample's top ``dims`` axes (``probe.py``). Memory and cost of this part are bounded by ``sample`` and
  ``dims``, not by the number of images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from synthprobe.common.files import InputError
from synthprobe.common.units import assign_units
from synthprobe.formats.image_checks import checked_rows
from synthprobe.separability.measures import (
    FDR_METHODS,
    MEASURES,
    Design,
    channel_selectivity,
    q_values,
    scale_free_tests,
)
from synthprobe.separability.scan import (
    avg_centroid_distance,
    max_activation,
    reduce_sample,
    scan_layer,
    select_layers,
    select_rows,
    top_channels,
    unit_sample,
)
from synthprobe.separability.variance import VarianceModel

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


# numpy's and scipy's BLAS pools, two threads each, thrash on two cores (twice the CPU for the same wall time); the
# products here are small enough that one thread each does not lose (docs/methods.md, README performance)
@threadpool_limits.wrap(limits=1)
def analyse(store, params: Params, progress=lambda items, **_: items) -> Result:
    """Run every measure over the chosen layers of ``store`` (an ActivationStore)."""
    rows = store.rows()
    keep, _, checks = checked_rows(rows, params.checks, params.drop)
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
    variance = VarianceModel.of(design.codes, template_codes(chosen, sample_positions), design.units)
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
                **variance.shares(scan.sample),
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


def template_codes(chosen: pd.DataFrame, positions: np.ndarray) -> np.ndarray | None:
    """Template codes of the sample rows; None unless every one has a template (ImageFolder rows have "")."""
    if "template" not in chosen:
        return None
    templates = chosen["template"].to_numpy()[positions]
    if (templates == "").any() or pd.isna(templates).any():
        return None
    return np.unique(templates, return_inverse=True)[1]


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
