"""The torch device a ``--device`` value names, checked before any model loads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synthprobe.common.files import InputError

if TYPE_CHECKING:
    import torch


def resolve_device(requested: str, *, auto_mps: bool = True) -> torch.device:
    """``auto`` picks CUDA when present, then Apple's MPS where ``auto_mps`` (cnn-hooks and image-check leave it
    out: their precision and decoding choices know CUDA and the CPU only), then the CPU. A named device must
    exist here."""
    import torch  # lazily: sd-generate checks its options before importing the heavy libraries

    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if auto_mps and torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise InputError(f"--device {requested!r} is not a device name (auto, cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {requested}: torch sees no CUDA GPU here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device
