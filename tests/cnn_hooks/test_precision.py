"""cnn-hooks precision and devices: bf16 and CUDA pooled vectors match CPU fp32; defaults follow the
hardware.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from synthprobe.cnn_hooks.hook_points import PoolingHooks, column_slices, discover_hook_points
from synthprobe.cnn_hooks.run import Params, run_hooks
from synthprobe.common.decode import load_rgb
from synthprobe.common.image_dataset import decode_workers
from synthprobe.common.networks import Network, build_network
from synthprobe.common.precision import autocast, default_precision
from synthprobe.formats.activation_store import ActivationStore
from synthprobe.formats.image_folder import read_image_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pooled_batch(network: Network, images: torch.Tensor, precision: str, device: str = "cpu") -> dict[str, np.ndarray]:
    """One batch through the tool's own path: hooks, channels-last, autocast; per pool (N, all channels)."""
    points, _ = discover_hook_points(network.module, network.preprocessing)
    device = torch.device(device)
    module = network.module.to(device, memory_format=torch.channels_last)
    with PoolingHooks(module, points, ("mean", "max")) as hooks, torch.no_grad(), autocast(device, precision):
        module(network.preprocessing.normalizer(device)(images))
        pooled = hooks.take()
    network.module.cpu()
    return pooled | {"columns": column_slices(points)}


def assert_close_per_hook_point(reference: dict, other: dict) -> float:
    """Cosine >= 0.999 between the two runs' pooled vectors, for every image, hook point and pooling."""
    worst = 1.0
    for pool in ("mean", "max"):
        for name, columns in reference["columns"].items():
            a, b = reference[pool][:, columns].astype(np.float64), other[pool][:, columns].astype(np.float64)
            cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            assert cosine.min() >= 0.999, (name, pool, cosine.min())
            worst = min(worst, cosine.min())
    return worst


def test_bf16_pooled_vectors_match_fp32(tree):
    """Autocast plus channels-last must keep every hook point's pooled vector (cosine >= 0.999)."""
    network = build_network("resnet50", "none", image_size=64)
    folder = read_image_folder(tree)
    images = torch.stack([network.preprocessing.to_uint8(load_rgb(folder.file(p))) for p in folder.rows["path"]])
    fp32 = pooled_batch(network, images, "fp32")
    bf16 = pooled_batch(network, images, "bf16")
    assert len(fp32["columns"]) == 182
    assert assert_close_per_hook_point(fp32, bf16) < 0.99999  # bf16 really ran


@pytest.mark.cuda
def test_cuda_precisions_match_cpu_fp32(tree):
    network = build_network("resnet50", "none", image_size=64)
    folder = read_image_folder(tree)
    images = torch.stack([network.preprocessing.to_uint8(load_rgb(folder.file(p))) for p in folder.rows["path"]])
    reference = pooled_batch(network, images, "fp32")
    for precision in ("fp32", "bf16", "fp16"):
        assert_close_per_hook_point(reference, pooled_batch(network, images, precision, "cuda"))


@pytest.mark.cuda
def test_cuda_runs_twice_with_one_network(tree, tmp_path):
    """run_hooks leaves the model on the GPU; the next run must still find hook points and aliases (on the CPU)."""
    network = build_network("resnet18", "none", image_size=32)
    settings = Params(device="cuda", workers=None, silent=True)
    folder = read_image_folder(tree)
    for name in ("first.zarr", "second.zarr"):
        assert run_hooks(folder, tmp_path / name, network, settings).written == len(folder.rows)
    assert ActivationStore(tmp_path / "second.zarr").attrs["precision"] == "bf16"


def test_default_precision_follows_the_hardware(monkeypatch):
    monkeypatch.setattr("synthprobe.common.precision.cpu_has_fast_bf16", lambda: True)
    assert default_precision(torch.device("cpu")) == "bf16"
    monkeypatch.setattr("synthprobe.common.precision.cpu_has_fast_bf16", lambda: False)
    assert default_precision(torch.device("cpu")) == "fp32"


@pytest.mark.parametrize("cores, cuda, cpu", [(1, 1, 1), (2, 1, 1), (16, 15, 8), (64, 32, 8)])
def test_decode_workers_fill_the_cores_the_forward_leaves(monkeypatch, cores, cuda, cpu):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert decode_workers(torch.device("cuda")) == cuda
    assert decode_workers(torch.device("cpu")) == cpu
