"""cnn-hooks on a Dask cluster: each task decodes and runs a contiguous block of rows on its worker's device and
returns the pooled values; the client writes them to the store in row order, as a single process would.

One network a run: a worker holds one model at a time (common.cluster.worker_model), so several classifiers run
one after another (run.run_pass)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from synthprobe.cnn_hooks.forward import image_batches
from synthprobe.cnn_hooks.hook_points import HookPoint
from synthprobe.common.cluster import worker_model
from synthprobe.common.networks import Network, build_network

# Batches per task: enough work to hide a task's overhead, little enough to lose when a worker dies.
BATCHES_PER_TASK = 4


def hooks_task(
    build_args: tuple,
    files: list[Path],
    expected: list[str],
    points: list[HookPoint],
    pools: tuple[str, ...],
    device: str,
    precision: str,
    batch_size: int,
) -> list[tuple]:
    """One task, on a worker: the block's batches as (digests, errors, pooled values, logits or None).

    Decoding runs in the worker process itself: a Dask worker is a daemon process, which may not start
    DataLoader processes.
    """
    network = worker_model(build_network, *build_args)
    where = torch.device(device)
    module = network.module.to(where, memory_format=torch.channels_last)
    return list(
        image_batches(files, expected, module, network.preprocessing, points, pools, where, precision, batch_size, 0)
    )


def cluster_batches(
    engine,
    files: list[Path],
    expected: list[str],
    networks: list[tuple[Network, list[HookPoint], object]],
    device: torch.device,
    precision: str,
    settings,
) -> Iterator[tuple]:
    """The batches of every block of the one (network, hook points, rows) of ``networks``, computed on ``engine``'s
    workers and yielded in row order as forward.local_batches yields them."""
    ((network, points, _),) = networks  # every row: a run on Dask has one network
    block = settings.batch_size * BATCHES_PER_TASK
    starts = range(0, len(files), block)
    tasks = [
        (
            network.build_args,
            files[s : s + block],
            expected[s : s + block],
            points,
            settings.pools,
            str(device),
            precision,
            settings.batch_size,
        )
        for s in starts
    ]
    finished: dict[int, list] = {}
    following = 0
    results = engine.run_tasks(hooks_task, tasks, [len(t[1]) for t in tasks], desc="cnn-hooks", unit="img", silent=True)
    with contextlib.closing(results):  # closed with this generator: the cluster's tasks are cancelled at once
        for index, batches in results:
            finished[index] = batches
            while following in finished:  # a block that finished early waits for those before it
                for digests, errors, pooled, logits in finished.pop(following):
                    yield digests, errors, [(pooled, logits)]
                following += 1
