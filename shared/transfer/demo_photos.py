"""A small real-photo side for ``make demo`` and the tests: crops of the public-domain photos scikit-image ships.

    python -m synthprobe.transfer.demo_photos out/demo/photos             # ImageFolder tree, 8 crops a photo
    python -m synthprobe.transfer.demo_photos out/altered --jitter --seed 1   # other crops, colours jittered

Each photo gives several random crops (60-100 % of its shorter side), so every synset has several images; crops
of one photo are not independent samples, which is fine for showing the pipeline and not for a finding.
``--jitter`` also scales each colour channel and the brightness at random: the "lightly altered copies" the
tests use as a stand-in for generated images of the same scenes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

# synset -> scikit-image loader; scikit-image documents each as public domain or CC0 (skimage/data/README.txt).
PHOTOS = {"cat.n.01": "chelsea", "coffee.n.01": "coffee", "rocket.n.01": "rocket", "astronaut.n.01": "astronaut"}


def crop(photo: np.ndarray, rng, size: int, jitter: bool) -> Image.Image:
    height, width = photo.shape[:2]
    side = int(min(height, width) * rng.uniform(0.6, 1.0))
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    pixels = photo[top : top + side, left : left + side].astype(np.float32)
    if jitter:
        pixels = pixels * rng.uniform(0.8, 1.2, size=3) * rng.uniform(0.85, 1.15)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.resize((size, size), Image.BICUBIC)


def write_demo_photos(out: str | Path, per_photo: int = 8, size: int = 96, seed: int = 0, jitter: bool = False):
    """``out/<synset>/<photo>-NN.png`` for each photo of PHOTOS; returns ``out``."""
    from skimage import data

    out = Path(out)
    rng = np.random.default_rng(seed)
    for synset, name in PHOTOS.items():
        photo = getattr(data, name)()
        (out / synset).mkdir(parents=True, exist_ok=True)
        for i in range(per_photo):
            crop(photo, rng, size, jitter).save(out / synset / f"{name}-{i:02d}.png")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--per-photo", type=int, default=8)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jitter", action="store_true")
    args = parser.parse_args()
    write_demo_photos(args.out, args.per_photo, args.size, args.seed, args.jitter)


if __name__ == "__main__":
    main()
