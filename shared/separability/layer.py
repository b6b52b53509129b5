"""One layer of a separability analysis: its metric rows, its row of layers.csv, its selectivity candidates and
its permutation nulls (kept for the family-wise p-values over layers)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthprobe.separability.effects import null_summary
from synthprobe.separability.measures import MEASURES, scale_free_tests
from synthprobe.separability.scan import (
    LayerScan,
    avg_centroid_distance,
    max_activation,
    reduce_sample,
    scan_layer,
    top_channels,
)
from synthprobe.separability.selectivity import channel_selectivity
from synthprobe.separability.tables import selectivity_candidates


@dataclass
class LayerOutput:
    row: dict  # the layer's row of layers.csv, less what needs every layer
    max_rows: list[dict]
    neuron_rows: list[dict]
    image_rows: list[dict]
    tested: dict[str, np.ndarray]  # selectivity_candidates
    null: dict[str, np.ndarray]  # per measure: observed value and its null, for the family-wise p-values


def analyse_layer(inputs, hook: str, depth: int, params, aliases: list[str]) -> LayerOutput:
    """Every per-layer number of ``hook`` (``inputs``: analysis.Inputs, ``params``: analysis.Params)."""
    scan = scan_layer(
        inputs.store,
        hook,
        params.pool,
        inputs.store_rows,
        inputs.codes,
        len(inputs.synsets),
        inputs.sample_positions,
        params.top_images,
        inputs.row_ids,
    )
    design = inputs.design
    aligned = design.within_blocks(scan.sample)
    z, explained = reduce_sample(aligned, params.dims)
    tests = scale_free_tests(z, aligned, design, params.permutations, params.folds, params.dims, params.seed)
    row = {
        "layer": hook,
        "aliases": ";".join(aliases),
        "depth": depth,
        "channels": scan.sums.shape[1],
        "n_images": len(inputs.codes),
        "n_units": inputs.units.n_units,
        "avg_centroid_distance": avg_centroid_distance(scan.centroids),
    }
    for m in MEASURES:
        row[m if m != "probe" else "probe_accuracy"] = tests.estimates[m]
        row[f"{m}_p"] = tests.p_values[m]
    effects = {m: null_summary(tests.estimates[m], tests.null[m]) for m in MEASURES}
    row.update(
        {
            "probe_chance": effects["probe"]["null_mean"],
            "probe_balanced_accuracy": tests.estimates["probe_balanced"],
            "probe_folds": tests.probe_folds,
            "n_sample": len(design.codes),
            "n_sample_units": design.n_units,
            "dims": z.shape[1],
            "explained_variance": explained,
            **inputs.variance.shares(scan.sample),
        }
    )
    for m in MEASURES:
        row.update({f"{m}_{key}": value for key, value in effects[m].items() if (m, key) != ("probe", "null_mean")})
    return LayerOutput(
        row=row,
        **metric_rows(inputs, hook, scan, params),
        tested=selectivity_candidates(channel_selectivity(scan.sample, design), params.alpha),
        null={m: tests.null[m] for m in MEASURES},
    )


def metric_rows(inputs, hook: str, scan: LayerScan, params) -> dict[str, list[dict]]:
    """Metrics 1 and 4: each synset's max activation, the top channels with every synset's mean, their images."""
    centroids, counts, synsets, codes = scan.centroids, inputs.counts, inputs.synsets, inputs.codes
    peak, peak_channel = max_activation(centroids)
    max_rows = [
        {"layer": hook, "synset": s, "max_activation": float(v), "n_images": int(n), "channel": int(c)}
        for s, v, n, c in zip(synsets, peak, counts, peak_channel)
    ]
    std = scan.channel_std()
    neuron_rows, image_rows = [], []
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
        image_rows += [
            {
                "layer": hook,
                "rank": rank,
                "channel": int(channel),
                "image_rank": image_rank,
                "id": inputs.row_ids[position],
                "path": inputs.paths[position],
                "synset": synsets[codes[position]],
                "activation": float(value),
            }
            for image_rank, (value, position) in enumerate(
                zip(scan.top_values[:, channel], scan.top_positions[:, channel]), 1
            )
        ]
    return {"max_rows": max_rows, "neuron_rows": neuron_rows, "image_rows": image_rows}
