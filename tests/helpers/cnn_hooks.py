"""What the cnn-hooks test modules share: a small ImageFolder tree, manifest rows and a store's arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from . import smooth_image

SMALL = ["--model", "resnet18", "--weights", "none", "--image-size", "64", "--workers", "0", "--silent"]
SYNSETS = ("bee.n.01", "n01440764", "frog.n.01")


def make_tree(root: Path, per_synset: int, seed: int = 0, size: int = 64) -> Path:
    """An ImageFolder tree: ``per_synset`` photo-like PNGs under ``root/<synset>/`` for each of SYNSETS."""
    rng = np.random.default_rng(seed)
    for synset in SYNSETS:
        (root / synset).mkdir(parents=True, exist_ok=True)
        for i in range(per_synset):
            Image.fromarray(smooth_image(rng, size)).save(root / synset / f"img {i:02d}.png")
    return root


def manifest_row(
    row_id: str,
    path: str | None,
    synset: str = "bee.n.01",
    group: str = "concept",
    status: str = "ok",
    sha256: str = "",
):
    """A row as sd-generate writes it; a failed row has no path."""
    row = {
        "schema": 1,
        "id": row_id,
        "synset": synset,
        "lemma": synset.split(".")[0],
        "group": group,
        "target": synset,
        "prompt": f"a photo of a {synset}",
        "template": "photo",
        "seed": 1,
        "status": status,
        "params": {"steps": 2},
    }
    if path is not None:
        row.update(path=path, sha256=sha256)
    return row


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a store by its path inside the store, strings as objects so they compare."""
    import zarr

    arrays = {}
    for name, node in zarr.open_group(str(path), mode="r").members(max_depth=None):
        if isinstance(node, zarr.Array):
            values = np.asarray(node[:])
            arrays[name] = values.astype(object) if values.dtype.kind == "T" else values
    return arrays


def assert_same_stores(got: Path, want: Path, where: str = "") -> None:
    """The same arrays, texts equal and numbers within float round-off: a forward's sums follow the thread count
    and the kernels (ATEN_CPU_CAPABILITY), which a Dask worker or another process may not share."""
    got_arrays, want_arrays = store_arrays(got), store_arrays(want)
    assert got_arrays.keys() == want_arrays.keys()
    for name, expected in want_arrays.items():
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(got_arrays[name], expected, rtol=1e-5, atol=1e-6, err_msg=f"{where}{name}")
        else:
            np.testing.assert_array_equal(got_arrays[name], expected, err_msg=f"{where}{name}")
