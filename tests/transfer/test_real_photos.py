"""A real network on real photos against lightly altered copies of them (other crops, jittered colours) as the
"generated" side: what the layers separate carries over (issue 21).

The network is torchvision's ResNet-18 with random weights (no weights can be downloaded here); random
convolutional features still tell these four scenes apart, so the check is on the pipeline and the statistics,
not on what ImageNet training learned.
"""

from __future__ import annotations

import pandas as pd
import pytest
from helpers.cnn_hooks import SMALL

from synthprobe.formats.analysis_folder import read_summary
from synthprobe.tools.cnn_hooks import main as cnn_hooks
from synthprobe.tools.transfer import main as transfer

pytest.importorskip("skimage")


def test_altered_copies_transfer(tmp_path, cli):
    from synthprobe.transfer.demo_photos import write_demo_photos

    write_demo_photos(tmp_path / "photos", per_photo=8, size=64, seed=0)
    write_demo_photos(tmp_path / "altered", per_photo=8, size=64, seed=1, jitter=True)
    for name in ("photos", "altered"):
        cli(cnn_hooks, tmp_path / name, "--out", tmp_path / f"{name}.zarr", *SMALL, "--layers", "layer*")
    out = tmp_path / "transfer"
    cli(transfer, tmp_path / "altered.zarr", tmp_path / "photos.zarr", "-o", out, "--permutations", 100, "--silent")
    layers = pd.read_csv(out / "layers.csv")
    deep = layers[layers["relative_depth"] >= 0.5]
    assert deep["transfer_accuracy"].median() >= 0.8, layers[["layer", "transfer_accuracy", "photo_accuracy"]]
    assert (deep["transfer_p"] <= 0.05).mean() >= 0.8  # 4 synsets: every one of the 24 relabellings, p >= 1/24
    assert deep["cka"].median() > 0.7
    assert read_summary(out).summary["synsets"]["shared"] == [
        "astronaut.n.01",
        "cat.n.01",
        "coffee.n.01",
        "rocket.n.01",
    ]
