"""cnn-hooks on damaged image folders, manifests, images, weights and stores, and a full disk.

The cases and the checks are in tests/helpers/bad_input_cases.py and the fails_cleanly fixture (conftest.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.bad_input_cases import CNN_HOOKS_CASES
from helpers.bad_inputs import write
from PIL import Image

from synthprobe.tools import cnn_hooks

SMALL = [
    "--model",
    "resnet18",
    "--weights",
    "none",
    "--image-size",
    "32",
    "--workers",
    "0",
    "--layers",
    "layer1",
    "--silent",
]


@pytest.fixture(scope="module")
def image_folders(tmp_path_factory, cli) -> Path:
    """A manifest folder, an ImageFolder tree and a store made from the tree."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    manifest = root / "manifest"
    manifest.mkdir()
    rows = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(manifest / f"im{i}.png")
        rows.append({"id": f"im{i}", "synset": "bee.n.01", "path": f"im{i}.png", "status": "ok"})
    write(manifest / "images.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    tree = root / "tree"
    for synset in ("bee.n.01", "frog.n.01"):
        (tree / synset).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tree / synset / "a.png")
    cli(cnn_hooks.main, tree, "--out", root / "tree.zarr", *SMALL)
    return root


@pytest.mark.parametrize("case", list(CNN_HOOKS_CASES))
def test_cnn_hooks(case, image_folders, tmp_path, fails_cleanly):
    for name in ("manifest", "tree", "tree.zarr"):
        shutil.copytree(image_folders / name, tmp_path / name)
    args, names = CNN_HOOKS_CASES[case](tmp_path)
    small = [*SMALL[:2], *SMALL[4:]] if "--weights" in map(str, args) else SMALL  # one --weights per --model
    fails_cleanly(cnn_hooks.main, [*small, *args], tmp_path, names)


def test_cnn_hooks_disk_full_names_the_store(image_folders, tmp_path, monkeypatch, fails_cleanly):
    import errno

    from synthprobe.formats.activation_store import writer

    def disk_full(pairs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "_append_all", disk_full)
    out = tmp_path / "acts.zarr"
    line = fails_cleanly(cnn_hooks.main, [image_folders / "manifest", "--out", out, *SMALL], tmp_path, [out])
    assert "No space left on device" in line
