"""The cnn-hooks tests' fixtures: one torch thread, an ImageFolder tree and the store most of them read."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers.cnn_hooks import SMALL, make_tree


@contextmanager
def torch_threads(count: int):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny forwards run fastest on one thread, and they stay fast when other jobs load the CPU."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tree(tmp_path_factory) -> Path:
    """The cnn-hooks tests' ImageFolder tree: two photo-like PNGs of each of three synsets."""
    return make_tree(tmp_path_factory.mktemp("tree"), per_synset=2)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory, tree, cli) -> Path:
    """resnet18 (random), both poolings, float16 values, fp32 compute: the store most cnn-hooks tests read."""
    from synthprobe.tools.cnn_hooks import main

    out = tmp_path_factory.mktemp("stores") / "acts.zarr"
    with torch_threads(1):
        cli(main, tree, "--out", out, *SMALL, "--pool", "both", "--store-dtype", "float16", "--precision", "fp32")
    return out
