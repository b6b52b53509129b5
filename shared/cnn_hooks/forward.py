"""The per-batch forward: decoded images through the network with pooling hooks, in one process or on a worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from synthprobe.cnn_hooks.hook_points import HookPoint, PoolingHooks
from synthprobe.common.image_dataset import ImageDataset, decode_workers
from synthprobe.common.networks import Network
from synthprobe.common.precision import autocast
from synthprobe.common.preprocessing import Preprocessing


def forward_batches(module, loader, normalize, points: list[HookPoint], pools, device, precision: str) -> Iterator:
    """(digests, errors, pooled values, logits or None) per batch of decoded images."""
    with PoolingHooks(module, points, pools) as hooks:
        for images, digests, errors in loader:
            with torch.no_grad(), autocast(device, precision):  # not held across the yield: the caller's code
                logits = module(normalize(images))
            pooled = hooks.take()
            logits = logits.float().cpu().numpy() if isinstance(logits, torch.Tensor) and logits.dim() == 2 else None
            yield list(digests), list(errors), pooled, logits


def image_batches(
    files, expected, module, preprocessing: Preprocessing, points, pools, device, precision, batch_size, workers
) -> Iterator:
    """forward_batches over the images of ``files``, decoded by ``workers`` DataLoader processes (0: here)."""
    dataset = ImageDataset(files, expected, preprocessing)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda"
    )
    yield from forward_batches(module, loader, preprocessing.normalizer(device), points, pools, device, precision)


def local_batches(
    files: list[Path],
    expected: list[str],
    network: Network,
    points: list[HookPoint],
    device: torch.device,
    precision: str,
    settings,
) -> Iterator[tuple]:
    """The batches of every image in this process (the engine without Dask; run_cluster.cluster_batches is the
    one with it, same arguments after its engine)."""
    module = network.module.to(device, memory_format=torch.channels_last)
    workers = decode_workers(device) if settings.workers is None else settings.workers
    return image_batches(
        files,
        expected,
        module,
        network.preprocessing,
        points,
        settings.pools,
        device,
        precision,
        settings.batch_size,
        workers,
    )
