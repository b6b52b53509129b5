"""--device: one resolver for every tool; auto takes MPS only where the caller runs on it."""

from __future__ import annotations

import pytest
import torch

from synthprobe.common.devices import resolve_device
from synthprobe.common.files import InputError


def test_auto_prefers_cuda_then_mps_where_allowed(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")  # sd-generate
    assert resolve_device("auto", auto_mps=False) == torch.device("cpu")  # cnn-hooks, image-check
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", auto_mps=False) == torch.device("cuda")


def test_named_devices_are_checked(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match=r"--device 'gpu' is not a device name"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="torch sees no CUDA GPU here"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InputError, match=r"--device cuda:1: this machine has 1 CUDA GPU\(s\)"):
        resolve_device("cuda:1")
