"""Resize, crop and normalise as the model's weights expect, taken from torchvision or timm."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

COLOR_HANDLING = "8-bit RGB; grayscale repeated, alpha over white, 16-bit scaled to 8-bit"
DECODING = "JPEG at the smallest DCT scale keeping both sides >= resize (PIL draft); other formats in full"


@dataclass(frozen=True)
class Preprocessing:
    """Resize the short side, center-crop, normalise: what torchvision's and timm's eval transforms do."""

    resize: int
    crop: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str

    def attrs(self) -> dict:
        return {
            "resize": self.resize,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "color": COLOR_HANDLING,
            "decode": DECODING,
            "source": self.source,
        }

    @property
    def pixels(self) -> tuple[int, int, str]:
        """What the uint8 image depends on (normalisation happens on the device): networks with equal ``pixels``
        share one resized image."""
        return self.resize, self.crop, self.interpolation

    def with_crop(self, crop: int) -> Preprocessing:
        """Another input size, keeping the ratio of resize to crop."""
        resize = round(crop * self.resize / self.crop)
        return Preprocessing(resize, crop, self.interpolation, self.mean, self.std, f"{self.source}, crop {crop}")

    def to_uint8(self, image) -> torch.Tensor:
        """A PIL RGB image to a (3, crop, crop) uint8 tensor; normalisation happens on the device."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        image = TF.resize(image, self.resize, interpolation=InterpolationMode(self.interpolation))
        return TF.pil_to_tensor(TF.center_crop(image, self.crop))

    def normalizer(self, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        # (x / 255 - mean) / std as one multiply-add with the 255 folded in.
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1) * 255.0
        scale = 1.0 / std
        shift = -torch.tensor(self.mean, device=device).view(1, 3, 1, 1) * 255.0 / std

        def normalize(images: torch.Tensor) -> torch.Tensor:
            x = torch.addcmul(shift, images.to(device, non_blocking=True).float(), scale)
            return x.contiguous(memory_format=torch.channels_last)

        return normalize


def torchvision_preprocessing(weights) -> Preprocessing:
    transform = weights.transforms()
    return Preprocessing(
        int(transform.resize_size[0]),
        int(transform.crop_size[0]),
        transform.interpolation.value,
        tuple(float(v) for v in transform.mean),
        tuple(float(v) for v in transform.std),
        f"torchvision {weights}",
    )


def timm_preprocessing(model, name: str) -> Preprocessing:
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    crop = int(config["input_size"][-1])
    return Preprocessing(
        math.floor(crop / config["crop_pct"]),
        crop,
        config["interpolation"],
        tuple(float(v) for v in config["mean"]),
        tuple(float(v) for v in config["std"]),
        f"timm {name} data config",
    )
