"""One layer of a separability analysis: its metric rows, its row of layers.csv, its selectivity candidates and
its permutation nulls (kept for the family-wise p-values over layers)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

from synthprobe.common.memory import keep_freed_memory
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


def analyse_layer(inputs, hook: str, depth: int, aliases: list[str], params) -> LayerOutput:
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


# ---------------------------------------------------------------- layers over processes

PARALLEL_LAYERS = 8  # fewer layers run in this process: starting workers would cost more than it saves
_worker: dict = {}  # a worker process's inputs and params, set once by its initializer


def layer_jobs(jobs: int, n_layers: int) -> int:
    """Worker processes for ``n_layers``: ``jobs``, or with 0 one per core when there are enough layers."""
    if jobs == 0:
        jobs = (os.cpu_count() or 1) if n_layers >= PARALLEL_LAYERS else 1
    return max(1, min(jobs, n_layers))


def layer_outputs(inputs, params, progress) -> list[LayerOutput]:
    """``analyse_layer`` for every layer, in depth order; over ``layer_jobs`` processes (each with one BLAS
    thread) where more than one. A layer's numbers do not depend on the process that computes them."""
    aliases = inputs.store.aliases()
    tasks = [(hook, depth, aliases.get(hook, [])) for depth, hook in enumerate(inputs.layers)]
    jobs = layer_jobs(params.jobs, len(tasks))
    if jobs == 1:
        return [analyse_layer(inputs, *task, params) for task in progress(tasks, desc="layers", unit="layer")]
    # spawn, not fork: the parent's zarr I/O thread does not survive a fork
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker, initargs=(inputs, params)) as pool:
        # The widest layers first, so that no worker is left with one while the others idle
        widest_first = sorted(tasks, key=lambda task: inputs.store.channels(task[0], params.pool), reverse=True)
        futures = {task[0]: pool.submit(_worker_layer, *task) for task in widest_first}
        for _ in progress(as_completed(futures.values()), total=len(futures), desc="layers", unit="layer"):
            pass
        return [futures[hook].result() for hook, _, _ in tasks]


def _start_worker(inputs, params) -> None:
    from threadpoolctl import threadpool_limits

    keep_freed_memory()
    _worker.update(inputs=inputs, params=params, threads=threadpool_limits(limits=1))


def _worker_layer(hook: str, depth: int, aliases: list[str]) -> LayerOutput:
    return analyse_layer(_worker["inputs"], hook, depth, aliases, _worker["params"])
