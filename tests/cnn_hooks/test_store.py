"""The activation store cnn-hooks writes: layout, dtype, chunks, attrs, xarray, and a golden store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from helpers.cnn_hooks import SYNSETS, make_tree

from synthprobe.formats.activation_store import MIN_CHUNK_BYTES, ActivationStore
from synthprobe.tools.cnn_hooks import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_store_layout_dtype_chunks_and_attrs(small_store, tree):
    import zarr

    store = ActivationStore(small_store)
    attrs = store.attrs
    assert attrs["schema"] == 2 and attrs["complete"] is True and attrs["rows_committed"] == 6
    assert attrs["model"] == "resnet18" and attrs["weights"] == "none" and attrs["precision"] == "fp32"
    assert attrs["pooling"] == ["mean", "max"] and attrs["dtype"] == "float16"
    assert attrs["preprocessing"]["resize"] == 73 and attrs["preprocessing"]["crop"] == 64
    assert attrs["preprocessing"]["interpolation"] == "bilinear" and attrs["preprocessing"]["mean"] == [
        0.485,
        0.456,
        0.406,
    ]
    assert attrs["source_layout"] == "imagefolder" and len(attrs["source_sha256"]) == 64
    assert {"torch", "torchvision", "timm", "zarr", "synthprobe"} <= set(attrs["versions"])
    assert len(attrs["classes"]) == 1000 and attrs["classes"][309] == "n02206856" and attrs["class_names"][309] == "bee"
    assert store.hook_points[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert len(store.hook_points) == 75 - len(attrs["hook_aliases"]) == 60  # each distinct tensor once
    group = zarr.open_group(str(small_store), mode="r")
    for hook in store.hook_points:
        for pool in ("mean", "max"):
            array = group[f"hooks/{hook}/{pool}"]
            channels = array.shape[1]
            assert array.shape == (6, store.channels(hook)) and array.dtype == np.float16
            assert array.metadata.dimension_names == ("image", "channel")
            rows = array.chunks[0]
            assert array.chunks == (rows, channels) and rows & (rows - 1) == 0  # whole rows, a power of two
            assert rows * channels * 2 >= MIN_CHUNK_BYTES > rows * channels  # at least 1 MB, not twice over
            assert array.shards[0] % rows == 0 and array.shards[1] == channels
    logits = group["logits/logits"]
    assert (
        logits.shape == (6, 1000)
        and logits.dtype == np.float32
        and logits.metadata.dimension_names == ("image", "class")
    )
    rows = store.rows()
    assert list(rows.columns) == ["id", "synset", "group", "target", "path", "status", "sha256", "prompt", "template"]
    assert set(rows["prompt"]) == {""} and set(rows["template"]) == {""}  # an ImageFolder image is its own unit
    assert rows["sha256"][0] == hashlib.sha256((tree / rows["path"][0]).read_bytes()).hexdigest()
    assert rows["id"][0] == "bee.n.01_img_00.png" and rows["path"][0] == "bee.n.01/img 00.png"
    wordnet_names = {"n01440764": "tench.n.01"}  # an ImageNet wnid folder is read as its WordNet 3.0 synset
    assert (
        set(rows["synset"]) == {wordnet_names.get(s, s) for s in SYNSETS} and (rows["synset"] == rows["target"]).all()
    )
    assert (rows["group"] == "concept").all() and (rows["status"] == "ok").all()


def test_xarray_opens_every_group(small_store):
    import xarray as xr

    store = ActivationStore(small_store)
    layer = xr.open_zarr(small_store, group="hooks/layer3.1.relu", consolidated=False)
    assert layer["mean"].dims == ("image", "channel") and layer["mean"].shape == (6, 256)
    np.testing.assert_array_equal(layer["max"].values, store.read_layer("layer3.1.relu", "max"))
    rows = xr.open_zarr(small_store, group="rows", consolidated=False)
    assert [str(v) for v in rows["id"].values] == list(store.rows()["id"])
    logits = xr.open_zarr(small_store, group="logits", consolidated=False)["logits"]
    assert logits.dims == ("image", "class")
    np.testing.assert_array_equal(logits.values, store.logits())


def store_summary(path: Path) -> str:
    import zarr

    store = ActivationStore(path)
    # Library versions are never pinned; source_sha256 hashes PNG bytes, which change with Pillow's zlib.
    left_out = ("versions", "source_folder", "source_sha256", "classes", "class_names")
    attrs = {k: v for k, v in store.attrs.items() if k not in left_out}
    group = zarr.open_group(str(path), mode="r")
    layout = [
        f"{name}: {a.shape} {a.dtype} chunks {a.chunks} shards {a.shards} dims {a.metadata.dimension_names}"
        for name in ("hooks/conv1/mean", "hooks/layer2.0.downsample/mean", "hooks/layer4/mean", "logits/logits")
        for a in [group[name]]
    ]
    return json.dumps(attrs, indent=1, sort_keys=True) + "\n" + "\n".join(layout) + "\n"


def test_golden_store(tmp_path, golden, cli):
    """A fixed tiny input through random resnet18 (seed 0): attrs, layout, and a few values within a tolerance."""
    images = make_tree(tmp_path / "images", per_synset=1, seed=7, size=40)
    out = tmp_path / "golden.zarr"
    model = ["--model", "resnet18", "--weights", "none", "--image-size", "32", "--precision", "fp32"]
    cli(main, images, "--out", out, *model, "--layers", "conv1,layer2.*,layer4,fc", "--workers", "0", "--silent")
    golden.check("cnn_hooks/store_summary.txt", store_summary(out).replace(str(tmp_path), "TMP"))
    store = ActivationStore(out)
    aliases = store.attrs["hook_aliases"]  # layer2.1.relu_1 is stored once, as layer2
    values = {
        hook: np.round(store.read_layer(aliases.get(hook, hook))[:, :4], 6).tolist()
        for hook in ("conv1", "layer2.1.relu_1", "layer4")
    }
    values["logits"] = np.round(store.logits()[:, :4], 6).tolist()
    golden.check_close("cnn_hooks/values.json", json.dumps(values), rtol=1e-3, atol=1e-5)
