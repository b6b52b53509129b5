"""The per-batch forward: decoded images through one or several networks with pooling hooks, in one process or on a
worker. Several networks share each image's decode (the dearer half of the work on a CPU, nearly all of it on a GPU)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthprobe.cnn_hooks.hook_points import HookPoint, PoolingHooks
from synthprobe.common.image_dataset import ImageDataset, decode_workers
from synthprobe.common.networks import Network
from synthprobe.common.precision import autocast
from synthprobe.common.preprocessing import Preprocessing


@dataclass
class Member:
    """One network of a pass: its module (on the device), hook points, preprocessing, and which rows it takes."""

    module: torch.nn.Module
    points: list[HookPoint]
    preprocessing: Preprocessing
    wanted: np.ndarray | None = None  # a bool per row of the pass; None: every row


def pass_batches(
    files: list[Path],
    expected: list[str],
    members: Sequence[Member],
    pools: tuple[str, ...],
    device: torch.device,
    precision: str,
    batch_size: int,
    workers: int,
) -> Iterator[tuple]:
    """Per batch: (digests, errors, per member (pooled values, logits or None) of the rows it wants, or None where it
    wants none of them). Each file is decoded once, and resized once per distinct resize, crop and interpolation."""
    # A member that wants none of the rows (its store is complete) costs no resize.
    busy = [m for m in members if m.wanted is None or m.wanted.any()]
    decodes = list(dict.fromkeys(m.preprocessing.pixels for m in busy))
    preprocessings = [next(m.preprocessing for m in busy if m.preprocessing.pixels == key) for key in decodes]
    dataset = ImageDataset(files, expected, preprocessings)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda"
    )
    normalizers = [m.preprocessing.normalizer(device) for m in members]
    with contextlib.ExitStack() as stack:
        hooks = [stack.enter_context(PoolingHooks(m.module, m.points, pools)) for m in members]
        start = 0
        for images, digests, errors in loader:
            end = start + len(digests)
            outputs = []
            for member, member_hooks, normalize in zip(members, hooks, normalizers):
                rows = None if member.wanted is None else member.wanted[start:end]
                if rows is not None and not rows.any():
                    outputs.append(None)
                    continue
                batch = images[decodes.index(member.preprocessing.pixels)]
                if rows is not None and not rows.all():
                    batch = batch[torch.from_numpy(rows)]
                with torch.no_grad(), autocast(device, precision):  # not held across the yield: the caller's code
                    logits = member.module(normalize(batch))
                pooled = member_hooks.take()
                is_head = isinstance(logits, torch.Tensor) and logits.dim() == 2
                outputs.append((pooled, logits.float().cpu().numpy() if is_head else None))
            start = end
            yield list(digests), list(errors), outputs


def image_batches(
    files, expected, module, preprocessing: Preprocessing, points, pools, device, precision, batch_size, workers
) -> Iterator:
    """(digests, errors, pooled values, logits or None) per batch of one network, decoded by ``workers`` DataLoader
    processes (0: here)."""
    members = [Member(module, points, preprocessing)]
    for digests, errors, ((pooled, logits),) in pass_batches(
        files, expected, members, pools, device, precision, batch_size, workers
    ):
        yield digests, errors, pooled, logits


def local_batches(
    files: list[Path],
    expected: list[str],
    networks: list[tuple[Network, list[HookPoint], np.ndarray]],
    device: torch.device,
    precision: str,
    settings,
) -> Iterator[tuple]:
    """pass_batches of every image in this process for each (network, hook points, rows it wants); the engine
    without Dask (run_cluster.cluster_batches is the one with it, same arguments after its engine)."""
    members = [
        Member(network.module.to(device, memory_format=torch.channels_last), points, network.preprocessing, wanted)
        for network, points, wanted in networks
    ]
    workers = decode_workers(device) if settings.workers is None else settings.workers
    return pass_batches(files, expected, members, settings.pools, device, precision, settings.batch_size, workers)
