"""transfer's analysis: per hook point, what generated images and photos of the same synsets say about one
classifier, and whether it agrees (docs/methods.md, "Generated images vs photos").

For each layer: the probe fitted on one source scored on the other beside each source's own cross-validated
accuracy; the agreement of the synsets' arrangement (CKA, representational similarity); the domain gap (how well a
probe tells generated from photo within a synset); and whether the channels selective on generated images are
selective on photos.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from synthprobe.transfer.channels import overlap, photo_preference, selectivity, unit_means
from synthprobe.transfer.geometry import agreement
from synthprobe.transfer.pairing import Source, grouped_folds, pair_sources, shared_layers
from synthprobe.transfer.probes import (
    Ridge,
    accuracy,
    balanced_accuracy,
    cross_validated_scores,
    fixed_probe_p,
    layer_scores,
)


@dataclass(frozen=True)
class Params:
    groups: tuple[str, ...] = ("concept",)
    layers: tuple[str, ...] = ("*",)
    pool: str = "mean"
    unit: str | None = None  # None: prompt units where a store has prompt texts, else each image its own unit
    dims: int = 64
    folds: int = 5
    permutations: int = 1000
    alpha: float = 0.05
    seed: int = 0
    workers: int | None = None  # layers analysed at once; None: one per CPU core


@dataclass
class Result:
    layers: pd.DataFrame  # one row per hook point
    synset_layers: pd.DataFrame  # one row per (hook point, shared synset)
    synsets: pd.DataFrame  # one row per synset of either source
    generated: Source
    photos: Source
    synset_sets: dict  # shared, generated, photos: synset names


@dataclass
class Folds:
    generated: list
    photos: list
    domain: list  # per shared synset: folds over its generated (class 0) and photo (class 1) rows


def domain_rows(generated: Source, photos: Source, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Synset k's rows of both sources: positions in each, 0/1 domain labels, and units that never collide."""
    in_g, in_p = np.flatnonzero(generated.codes == k), np.flatnonzero(photos.codes == k)
    labels = np.r_[np.zeros(len(in_g), dtype=np.int64), np.ones(len(in_p), dtype=np.int64)]
    units = np.r_[generated.units[in_g], generated.n_units + photos.units[in_p]]
    return in_g, in_p, labels, units


def make_folds(generated: Source, photos: Source, params: Params) -> Folds:
    domain = []
    for k in range(generated.n_synsets):
        _, _, labels, units = domain_rows(generated, photos, k)
        domain.append(grouped_folds(labels, units, params.folds, params.seed))
    return Folds(
        grouped_folds(generated.codes, generated.units, params.folds, params.seed),
        grouped_folds(photos.codes, photos.units, params.folds, params.seed),
        domain,
    )


def analyse(generated_store, photo_store, params: Params, progress=lambda items, **_: items) -> Result:
    """Every measure over the hook points both stores hold (``progress`` wraps the layer loop)."""
    generated, photos, synset_sets = pair_sources(
        generated_store.rows(),
        photo_store.rows(),
        params.groups,
        params.unit,
        (str(generated_store.path), str(photo_store.path)),
    )
    layers = shared_layers(generated_store, photo_store, params.layers)
    folds = make_folds(generated, photos, params)

    def one_layer(hook: str):
        x_g = generated_store.read_layer(hook, params.pool, generated.rows)
        x_p = photo_store.read_layer(hook, params.pool, photos.rows)
        return analyse_layer(x_g, x_p, generated, photos, folds, params)

    from threadpoolctl import threadpool_limits

    # Layers in parallel, one BLAS thread each: numpy's and scipy's BLAS pools thrash when both spread over the
    # cores (DESIGN.md); sorting and BLAS release the GIL.
    with threadpool_limits(1), ThreadPoolExecutor(params.workers or os.cpu_count() or 1) as pool:
        results = list(progress(pool.map(one_layer, layers), total=len(layers), desc="layers", unit="layer"))
    layer_rows, synset_rows = [], []
    for depth, (hook, (row, per_synset)) in enumerate(zip(layers, results)):
        layer_rows.append({"layer": hook, "depth": depth, "relative_depth": depth / max(len(layers) - 1, 1), **row})
        synset_rows.append(per_synset.assign(layer=hook))
    table = pd.DataFrame(layer_rows)
    per_synset = pd.concat(synset_rows, ignore_index=True)
    per_synset = per_synset[["layer", *[c for c in per_synset.columns if c != "layer"]]]
    return Result(
        table, per_synset, synset_table(generated, photos, synset_sets, per_synset), generated, photos, synset_sets
    )


def analyse_layer(x_g: np.ndarray, x_p: np.ndarray, generated: Source, photos: Source, folds: Folds, params: Params):
    """One layer's row of layers.csv and its per-synset rows, from its (rows, channels) values in each source."""
    k = generated.n_synsets
    scores = layer_scores(x_g, x_p, params.dims, params.seed)
    probe_g = Ridge.fit(scores.generated, generated.codes, k)
    to_photos = probe_g.scores(scores.photos)
    to_generated = Ridge.fit(scores.photos, photos.codes, k).scores(scores.generated)
    photo_acc = accuracy(cross_validated_scores(scores.photos, photos.codes, k, folds.photos), photos.codes)
    transfer = accuracy(to_photos, photos.codes)
    chance = float(photos.counts().max() / len(photos.codes))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_above = (transfer - chance) / (photo_acc - chance) if photo_acc > chance else float("nan")
    geometry = agreement(
        centroids(x_g, generated) / scores.scale,
        centroids(x_p, photos) / scores.scale,
        params.permutations,
        rng(params),
    )
    domain = np.array([domain_accuracy(scores, generated, photos, j, folds.domain[j]) for j in range(k)])
    channels = channel_rows(x_g, x_p, generated, photos, params.alpha)
    row = {
        "channels": x_g.shape[1],
        "dims": scores.generated.shape[1],
        "transfer_accuracy": transfer,
        "transfer_p": fixed_probe_p(to_photos, photos.codes, params.permutations, rng(params)),
        "photo_accuracy": photo_acc,
        "generated_accuracy": accuracy(
            cross_validated_scores(scores.generated, generated.codes, k, folds.generated), generated.codes
        ),
        "chance": chance,
        "transfer_ratio": transfer / photo_acc if photo_acc > 0 else float("nan"),
        "transfer_ratio_above_chance": ratio_above,
        "transfer_accuracy_uncentred": accuracy(probe_g.scores(scores.photos_uncentred), photos.codes),
        "photo_to_generated_accuracy": accuracy(to_generated, generated.codes),
        "photo_to_generated_p": fixed_probe_p(to_generated, generated.codes, params.permutations, rng(params)),
        "generated_chance": float(generated.counts().max() / len(generated.codes)),
        "cka": geometry.cka,
        "cka_p": geometry.cka_p,
        "rsa": geometry.rsa,
        "rsa_p": geometry.rsa_p,
        "domain_accuracy": float(np.nanmean(domain)) if not np.isnan(domain).all() else float("nan"),
        "selective_generated": int(channels.pop("any_generated")),
        "selective_photos": int(channels.pop("any_photos")),
        "selective_overlap": mean_defined(channels["overlap"]),
        "selective_overlap_chance": mean_defined(channels["overlap_chance"]),
        "photo_auroc_selective": mean_defined(channels["photo_auroc_selective"]),
        "photo_auroc_other": mean_defined(channels["photo_auroc_other"]),
    }
    per_synset = pd.DataFrame({"synset": generated.synsets, "domain_accuracy": domain, **channels})
    return row, per_synset


def rng(params: Params):
    """The same relabellings for every test and layer of a run."""
    return np.random.default_rng(params.seed)


def centroids(x: np.ndarray, source: Source) -> np.ndarray:
    return unit_means(x, source.codes, source.n_synsets)


def domain_accuracy(scores, generated: Source, photos: Source, k: int, folds) -> float:
    """Cross-validated balanced accuracy of a probe telling synset k's generated images from its photos."""
    in_g, in_p, labels, _ = domain_rows(generated, photos, k)
    z = np.vstack([scores.generated[in_g], scores.photos_uncentred[in_p]])
    return balanced_accuracy(cross_validated_scores(z, labels, 2, folds), labels)


def channel_rows(x_g, x_p, generated: Source, photos: Source, alpha: float) -> dict:
    k = generated.n_synsets
    on_g = selectivity(x_g, generated.units, generated.unit_codes, k, alpha)
    on_p = selectivity(x_p, photos.units, photos.unit_codes, k, alpha)
    jaccard, chance = overlap(on_g.selective, on_p.selective)
    chosen, rest = photo_preference(on_g.selective, on_p.auroc)
    return {
        "selective_generated": on_g.selective.sum(axis=1),
        "selective_photos": on_p.selective.sum(axis=1),
        "overlap": jaccard,
        "overlap_chance": chance,
        "photo_auroc_selective": chosen,
        "photo_auroc_other": rest,
        "any_generated": on_g.selective.any(axis=0).sum(),
        "any_photos": on_p.selective.any(axis=0).sum(),
    }


def mean_defined(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if (~np.isnan(values)).any() else float("nan")


def synset_table(generated: Source, photos: Source, synset_sets: dict, per_synset: pd.DataFrame) -> pd.DataFrame:
    """Every synset of either source: where it is, its images and units, and its per-layer figures summed up."""
    names = sorted(set(synset_sets["generated"]) | set(synset_sets["photos"]))
    table = pd.DataFrame({"synset": names})
    table["in_generated"] = table["synset"].isin(synset_sets["generated"])
    table["in_photos"] = table["synset"].isin(synset_sets["photos"])
    shared = synset_sets["shared"]
    for source in (generated, photos):
        counts = dict(zip(shared, source.counts()))
        units = dict(zip(shared, source.units_per_synset()))
        table[f"n_{source.name}"] = table["synset"].map(counts).astype("Int64")
        table[f"units_{source.name}"] = table["synset"].map(units).astype("Int64")
    last = per_synset[per_synset["layer"] == per_synset["layer"].iloc[-1]].set_index("synset")
    means = per_synset.groupby("synset")[["overlap", "photo_auroc_selective"]].mean()
    table["domain_accuracy_last_layer"] = table["synset"].map(last["domain_accuracy"])
    table["overlap_mean"] = table["synset"].map(means["overlap"])
    table["photo_auroc_selective_mean"] = table["synset"].map(means["photo_auroc_selective"])
    return table
