"""The reader: images decoded in DataLoader workers, as uint8 tensors ready for the device."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from synthprobe.common.decode import decode_rgb_sizes
from synthprobe.common.files import error_line
from synthprobe.common.preprocessing import Preprocessing


def decode_workers(device: torch.device) -> int:
    """DataLoader processes that decode images, sized to the machine.

    Decoding a 1024 px PNG costs about as much CPU as a bf16 ResNet-50 forward on two CPU cores, and
    far more than the forward on a GPU: with a GPU every core but the main process's decodes; on the
    CPU the forward needs half of them.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
    return max(1, min(32, cores - 1)) if device.type == "cuda" else max(1, min(8, cores // 2))


class ImageDataset(torch.utils.data.Dataset):
    """Decoding in DataLoader workers: (uint8 image, sha256 of the file, error or '') per row; a bad file gives
    zeros. Given a sequence of preprocessings, a row holds a tuple of images, one per preprocessing, all from one
    decode of the file (JPEG: one per distinct resize, as its reduced decoding depends on it)."""

    def __init__(
        self, files: list[Path], expected_sha256: list[str], preprocessing: Preprocessing | Sequence[Preprocessing]
    ):
        self.files = files
        self.expected = expected_sha256  # from the manifest, "" where unknown
        self.single = isinstance(preprocessing, Preprocessing)
        self.preprocessings = (preprocessing,) if self.single else tuple(preprocessing)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        digest = error = ""
        try:
            data = self.files[index].read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if self.expected[index] and digest != self.expected[index]:
                raise ValueError("the file's sha256 differs from the one in the manifest")
            decoded = decode_rgb_sizes(data, [p.resize for p in self.preprocessings])
            images = tuple(p.to_uint8(decoded[p.resize]) for p in self.preprocessings)
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad files
            images = tuple(torch.zeros(3, p.crop, p.crop, dtype=torch.uint8) for p in self.preprocessings)
            error = error_line(exc)
        return images[0] if self.single else images, digest, error
