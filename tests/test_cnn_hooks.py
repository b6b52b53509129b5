"""cnn-hooks on small random-weight CNNs: hook names, pooled values, store layout, resume, precision, bad input."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from helpers import fails_with, smooth_image, write_manifest
from PIL import Image

from synthprobe.cnn.hook_points import (
    PoolingHooks,
    column_slices,
    discover_hook_points,
    find_aliases,
    select_hook_points,
)
from synthprobe.cnn.models import RANDOM_INIT_SEED, Network, build_network
from synthprobe.cnn.precision import autocast, default_precision
from synthprobe.cnn.preprocessing import DECODING
from synthprobe.cnn.reader import ImageDataset, decode_workers
from synthprobe.cnn.run import RunSettings, run_hooks
from synthprobe.decode import decode_rgb, load_rgb
from synthprobe.files import InputError
from synthprobe.formats.activation_store import MIN_CHUNK_BYTES, ActivationStore
from synthprobe.formats.image_folder import read_image_folder
from synthprobe.tools.cnn_hooks import main

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--model", "resnet18", "--weights", "none", "--image-size", "64", "--workers", "0", "--silent"]
SYNSETS = ("bee.n.01", "n01440764", "frog.n.01")


def make_tree(root: Path, per_synset: int, seed: int = 0, size: int = 64) -> Path:
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


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny forwards run fastest on one thread, and they stay fast when other jobs load the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree"), per_synset=2)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, tree, cli) -> Path:
    """resnet18 (random), both poolings, float16 values, fp32 compute: the store most tests read."""
    out = tmp_path_factory.mktemp("stores") / "acts.zarr"
    cli(main, tree, "--out", out, *SMALL, "--pool", "both", "--store-dtype", "float16", "--precision", "fp32")
    return out


# ---- hook points -----------------------------------------------------------------------------


def test_resnet50_hook_points_are_feature_extraction_node_names():
    from torchvision.models.feature_extraction import get_graph_node_names

    network = build_network("resnet50", "none", image_size=64)
    points, n_classes = discover_hook_points(network.module, network.preprocessing)
    names = [p.name for p in points]
    _, fx_nodes = get_graph_node_names(torchvision.models.resnet50())
    # Graph nodes that are no module call: the input, torch.flatten and each block's residual add.
    functional = [n for n in fx_nodes if n in ("x", "flatten") or n.endswith(".add")]
    module_calls = [n for n in fx_nodes if n not in functional]
    assert len(fx_nodes) == 176 and len(functional) == 18 and len(module_calls) == 158
    assert [n for n in names if n in set(module_calls)] == module_calls  # same names, same forward order
    containers = [n for n in names if n not in set(module_calls)]
    blocks = [f"layer{s}.{b}" for s, count in enumerate((3, 4, 6, 3), 1) for b in range(count)]
    assert sorted(containers) == sorted(
        blocks + [f"layer{s}" for s in range(1, 5)] + [f"layer{s}.0.downsample" for s in range(1, 5)]
    )
    assert len(names) == len(set(names)) == 182
    assert names[names.index("layer4.2.relu_2") + 1 : names.index("layer4.2.relu_2") + 3] == ["layer4.2", "layer4"]
    shape = {p.name: p.shape for p in points}
    assert shape["layer4.2.relu"] == (512, 2, 2) and shape["layer4.2.relu_2"] == (2048, 2, 2) and shape["fc"] == (1000,)
    assert n_classes == 1000


def test_layer_globs_select_in_forward_order_and_unmatched_pattern_fails():
    network = build_network("resnet18", "none", image_size=64)
    points, _ = discover_hook_points(network.module, network.preprocessing)
    chosen = select_hook_points(points, ["layer4.*relu*", "fc"])
    assert [p.name for p in chosen] == ["layer4.0.relu", "layer4.0.relu_1", "layer4.1.relu", "layer4.1.relu_1", "fc"]
    with pytest.raises(InputError, match="'layer9.*' matches no hook point"):
        select_hook_points(points, ["layer4.*", "layer9.*"])


def test_list_layers_prints_names_channels_shapes(cli):
    result = cli(main, "--list-layers", "--model", "resnet18", "--image-size", "64")
    lines = result.output.strip().splitlines()
    assert len(lines) == 75  # 60 module calls + 8 blocks + 4 stages + 3 downsample containers
    assert lines[0] == "conv1\t64\t64x32x32" and lines[-1] == "fc\t1000\t1000"
    result = cli(
        main, "--list-layers", "--model", "resnet18", "--image-size", "64", "--layers", "layer2.*.relu_1,avgpool"
    )
    assert result.output.splitlines() == [
        "layer2.0.relu_1\t128\t128x8x8\t= layer2.0",
        "layer2.1.relu_1\t128\t128x8x8\t= layer2",
        "avgpool\t512\t512x1x1\t= layer4",
    ]


def test_aliases_are_stored_once_and_selected_through_their_canonical(tmp_path, tree, cli):
    network = build_network("resnet50", "none", image_size=64)
    points, _ = discover_hook_points(network.module, network.preprocessing)
    aliases = find_aliases(network.module, points, network.preprocessing)
    # The example: one tensor under four names (avgpool is its mean); conv and BatchNorm stay apart.
    assert {a for a, c in aliases.items() if c == "layer4"} == {"layer4.2.relu_2", "layer4.2", "avgpool"}
    assert "layer1.0.bn1" not in aliases and "layer1.0.conv1" not in aliases
    out = tmp_path / "a.zarr"
    cli(main, tree, "--out", out, *SMALL, "--layers", "layer4*,avgpool,fc")
    store = ActivationStore(out)
    assert store.hook_points == [
        "layer4.0.conv1",
        "layer4.0.bn1",
        "layer4.0.relu",
        "layer4.0.conv2",
        "layer4.0.bn2",
        "layer4.0.downsample.0",
        "layer4.0.downsample",
        "layer4.0",
        "layer4.1.conv1",
        "layer4.1.bn1",
        "layer4.1.relu",
        "layer4.1.conv2",
        "layer4.1.bn2",
        "layer4",
        "fc",
    ]
    assert store.attrs["hook_aliases"]["avgpool"] == "layer4"
    assert store.aliases()["layer4"] == ["layer4.1.relu_1", "layer4.1", "avgpool"]
    # Selecting only an alias selects its canonical, whose values are the alias's: avgpool's output.
    cli(main, tree, "--out", tmp_path / "b.zarr", *SMALL, "--layers", "avgpool", "--precision", "fp32")
    selected = ActivationStore(tmp_path / "b.zarr")
    assert selected.hook_points == ["layer4"]
    resnet18 = build_network("resnet18", "none", image_size=64)
    images = torch.stack([resnet18.preprocessing.to_uint8(load_rgb(tree / p)) for p in selected.rows()["path"]])
    with torch.no_grad():
        x = resnet18.preprocessing.normalizer(torch.device("cpu"))(images)
        avgpool = torch.nn.Sequential(*list(resnet18.module.children())[:-1])(x).flatten(1)
    np.testing.assert_allclose(selected.read_layer("layer4"), avgpool.numpy(), rtol=1e-4, atol=1e-6)
    # A resumed store keeps the aliases it was made with.
    cli(main, tree, "--out", out, *SMALL, "--layers", "layer4*,avgpool,fc")


# ---- pooled values ---------------------------------------------------------------------------


def test_pooled_values_equal_a_manual_computation(tree, small_store):
    """Preprocess one image with torchvision's own transforms, take full maps with FX, pool by hand."""
    from torchvision import transforms as T
    from torchvision.models.feature_extraction import create_feature_extractor

    store = ActivationStore(small_store)
    rows = store.rows()
    index = 3
    transform = T.Compose(
        [T.Resize(73), T.CenterCrop(64), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    )
    image = transform(Image.open(tree / rows["path"][index]).convert("RGB")).unsqueeze(0)
    model = build_network("resnet18", "none").module
    nodes = ["conv1", "layer1.0.relu", "layer1.0.relu_1", "layer3.1.conv2", "layer4.1.relu_1", "avgpool", "fc"]
    with torch.no_grad():
        maps = create_feature_extractor(model, nodes)(image)
    aliases = store.attrs["hook_aliases"]
    for node in nodes:
        full = maps[node].double()
        mean = full.mean(dim=(2, 3)) if full.dim() == 4 else full
        peak = full.amax(dim=(2, 3)) if full.dim() == 4 else full
        # Stored as float16: compare at its resolution. An alias is stored as its canonical.
        stored = aliases.get(node, node)
        np.testing.assert_allclose(store.read_layer(stored, "mean")[index], mean[0].numpy(), rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(store.read_layer(stored, "max")[index], peak[0].numpy(), rtol=2e-3, atol=2e-4)
    # The stage output is the last block's output; avgpool's max over one pixel is no layer4 max, so no alias.
    assert aliases["layer4.1.relu_1"] == "layer4" and "avgpool" in store.hook_points
    # BatchNorm is pooled before ReLU(inplace=True) overwrites it.
    bn, relu = (store.read_layer(name, "max") for name in ("layer1.0.bn1", "layer1.0.relu"))
    np.testing.assert_array_equal(relu, np.maximum(bn, 0))
    assert (store.read_layer("layer1.0.bn1", "mean") < store.read_layer("layer1.0.relu", "mean")).any()
    with torch.no_grad():
        logits = model(image)
    np.testing.assert_allclose(store.logits()[index], logits[0].numpy(), rtol=1e-4, atol=1e-5)


def pooled_batch(network: Network, images: torch.Tensor, precision: str, device: str = "cpu") -> dict[str, np.ndarray]:
    """One batch through the tool's own path: hooks, channels-last, autocast; per pool (N, all channels)."""
    points, _ = discover_hook_points(network.module, network.preprocessing)
    device = torch.device(device)
    module = network.module.to(device, memory_format=torch.channels_last)
    with PoolingHooks(module, points, ("mean", "max")) as hooks, torch.no_grad(), autocast(device, precision):
        module(network.preprocessing.normalizer(device)(images))
        pooled = hooks.take()
    network.module.cpu()
    return pooled | {"columns": column_slices(points)}


def assert_close_per_hook_point(reference: dict, other: dict) -> float:
    """Cosine >= 0.999 between the two runs' pooled vectors, for every image, hook point and pooling."""
    worst = 1.0
    for pool in ("mean", "max"):
        for name, columns in reference["columns"].items():
            a, b = reference[pool][:, columns].astype(np.float64), other[pool][:, columns].astype(np.float64)
            cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            assert cosine.min() >= 0.999, (name, pool, cosine.min())
            worst = min(worst, cosine.min())
    return worst


def test_bf16_pooled_vectors_match_fp32(tree):
    """Autocast plus channels-last must keep every hook point's pooled vector (cosine >= 0.999)."""
    network = build_network("resnet50", "none", image_size=64)
    folder = read_image_folder(tree)
    images = torch.stack([network.preprocessing.to_uint8(load_rgb(folder.file(p))) for p in folder.rows["path"]])
    fp32 = pooled_batch(network, images, "fp32")
    bf16 = pooled_batch(network, images, "bf16")
    assert len(fp32["columns"]) == 182
    assert assert_close_per_hook_point(fp32, bf16) < 0.99999  # bf16 really ran


@pytest.mark.cuda
def test_cuda_precisions_match_cpu_fp32(tree):
    network = build_network("resnet50", "none", image_size=64)
    folder = read_image_folder(tree)
    images = torch.stack([network.preprocessing.to_uint8(load_rgb(folder.file(p))) for p in folder.rows["path"]])
    reference = pooled_batch(network, images, "fp32")
    for precision in ("fp32", "bf16", "fp16"):
        assert_close_per_hook_point(reference, pooled_batch(network, images, precision, "cuda"))


@pytest.mark.cuda
def test_cuda_runs_twice_with_one_network(tree, tmp_path):
    """run_hooks leaves the model on the GPU; the next run must still find hook points and aliases (on the CPU)."""
    network = build_network("resnet18", "none", image_size=32)
    settings = RunSettings(device="cuda", workers=None, silent=True)
    folder = read_image_folder(tree)
    for name in ("first.zarr", "second.zarr"):
        assert run_hooks(folder, tmp_path / name, network, settings).written == len(folder.rows)
    assert ActivationStore(tmp_path / "second.zarr").attrs["precision"] == "bf16"


def test_default_precision_follows_the_hardware(monkeypatch):
    monkeypatch.setattr("synthprobe.cnn.precision.cpu_has_fast_bf16", lambda: True)
    assert default_precision(torch.device("cpu")) == "bf16"
    monkeypatch.setattr("synthprobe.cnn.precision.cpu_has_fast_bf16", lambda: False)
    assert default_precision(torch.device("cpu")) == "fp32"


@pytest.mark.parametrize("cores, cuda, cpu", [(1, 1, 1), (2, 1, 1), (16, 15, 8), (64, 32, 8)])
def test_decode_workers_fill_the_cores_the_forward_leaves(monkeypatch, cores, cuda, cpu):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert decode_workers(torch.device("cuda")) == cuda
    assert decode_workers(torch.device("cpu")) == cpu


# ---- the store -------------------------------------------------------------------------------


def test_store_layout_dtype_chunks_and_attrs(small_store, tree):
    import zarr

    store = ActivationStore(small_store)
    attrs = store.attrs
    assert attrs["schema"] == 1 and attrs["complete"] is True and attrs["rows_committed"] == 6
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
    assert set(rows["synset"]) == set(SYNSETS) and (rows["synset"] == rows["target"]).all()
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
    attrs = {k: v for k, v in store.attrs.items() if k not in ("versions", "source_folder", "classes", "class_names")}
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

    def assert_close(expected, values):
        for key, array in expected.items():
            np.testing.assert_allclose(values[key], array, rtol=1e-3, atol=1e-5, err_msg=key)

    golden.check_json("cnn_hooks/values.json", values, assert_close, indent=1)


# ---- resume ----------------------------------------------------------------------------------


def committed(store: Path) -> int:
    try:
        return json.loads((store / "zarr.json").read_text())["attributes"]["rows_committed"]
    except (OSError, ValueError, KeyError):
        return 0


def test_resume_after_kill_9_equals_an_uninterrupted_run(tmp_path, cli):
    images = make_tree(tmp_path / "images", per_synset=14)  # 42 images
    args = [
        images,
        *SMALL[:-1],
        "--precision",
        "fp32",
        "--batch-size",
        "2",
        "--rows-per-write",
        "4",
        "--layers",
        "layer4*,fc",
    ]
    killed = tmp_path / "killed.zarr"
    command = [sys.executable, "-m", "synthprobe.tools.cnn_hooks", *map(str, args), "--out", str(killed), "--silent"]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    deadline = time.monotonic() + 120
    while committed(killed) < 8 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    output = process.communicate()[0].decode()
    assert process.returncode == -signal.SIGKILL, output
    interrupted_at = committed(killed)
    assert 8 <= interrupted_at < 42, interrupted_at
    cli(main, *args, "--out", killed)
    reference = tmp_path / "reference.zarr"
    cli(main, *args, "--out", reference)
    got, want = store_arrays(killed), store_arrays(reference)
    assert got.keys() == want.keys() and len(want) == 9 + 1 + 19 - 4  # row table, logits, hook points less aliases
    for name in want:
        assert got[name].shape[0] == 42, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert ActivationStore(killed).attrs == ActivationStore(reference).attrs


def test_rerun_appends_new_manifest_rows_only_and_refuses_changed_images(tmp_path, caplog, cli):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    sha = {}
    for i in range(4):
        Image.fromarray(smooth_image(rng)).save(folder / f"im{i}.png")
        sha[i] = hashlib.sha256((folder / f"im{i}.png").read_bytes()).hexdigest()
    a, b = (
        manifest_row("a", "im0.png", sha256=sha[0]),
        manifest_row("b", "im1.png", "frog.n.01", "object-only", sha256=sha[1]),
    )
    write_manifest(folder, [a, manifest_row("gone", None, status="failed"), b])
    out = tmp_path / "acts.zarr"
    cli(main, folder, "--out", out, *SMALL, "--layers", "layer1")
    first = ActivationStore(out)
    assert list(first.rows()["id"]) == ["a", "b"] and list(first.rows()["group"]) == ["concept", "object-only"]
    assert list(first.rows()["sha256"]) == [sha[0], sha[1]]
    # The prompt unit of the analyses: the manifest's prompt text and template travel into the row table.
    assert list(first.rows()["prompt"]) == ["a photo of a bee.n.01", "a photo of a frog.n.01"]
    assert list(first.rows()["template"]) == ["photo", "photo"]
    source = first.attrs["source_sha256"]
    write_manifest(folder, [a, b, manifest_row("c", "im2.png"), manifest_row("d", "im3.png", group="mixed")])
    cli(main, folder, "--out", out, *SMALL, "--layers", "layer1")
    second = ActivationStore(out)
    assert list(second.rows()["id"]) == ["a", "b", "c", "d"] and second.attrs["source_sha256"] != source
    assert list(second.rows()["sha256"]) == [sha[i] for i in range(4)]  # hashed while decoding where unlisted
    np.testing.assert_array_equal(second.read_layer("layer1")[:2], first.read_layer("layer1"))
    caplog.set_level(logging.INFO, logger="synthprobe")
    cli(main, folder, "--out", out, *SMALL[:-1], "--layers", "layer1")
    assert "already holds all 4 images" in caplog.text
    # Regenerated images under the same ids must not be mixed with the recorded ones.
    write_manifest(folder, [manifest_row("a", "im0.png", sha256=sha[3]), b])
    fails_with(
        cli(main, folder, "--out", out, *SMALL, "--layers", "layer1", exit_code=None),
        "1 images of",
        "changed since",
        "(im0.png)",
        "--rebuild",
    )
    line = fails_with(
        cli(main, folder, "--out", out, *SMALL, exit_code=None),
        "another hook_points",
        "(['layer1'], now 73 names, 'conv1' ... 'fc')",
    )
    assert len(line) < 300


def test_imagefolder_rerun_rehashes_only_touched_files_and_refuses_changed_content(tmp_path, monkeypatch, cli):
    from synthprobe import files

    images = make_tree(tmp_path / "images", per_synset=2)
    out = tmp_path / "acts.zarr"
    args = [images, "--out", out, *SMALL, "--layers", "layer1"]
    cli(main, *args)
    before = ActivationStore(out).read_layer("layer1")
    touched = images / "frog.n.01" / "img 01.png"
    os.utime(touched, ns=(time.time_ns(), time.time_ns()))  # a new mtime, the same content
    read = []
    real_sha256_file = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda path: read.append(Path(path).name) or real_sha256_file(path))
    cli(main, *args)
    assert read == ["img 01.png"], "only the file whose mtime changed is read again"
    Image.fromarray(smooth_image(np.random.default_rng(9))).save(touched)  # new content under the same name
    line = fails_with(
        cli(main, *args, exit_code=None), "1 images of", "changed since", "frog.n.01/img 01.png", "--rebuild"
    )
    assert len(line) < 300
    cli(main, *args, "--rebuild")
    after = ActivationStore(out)
    changed_row = list(after.rows()["path"]).index("frog.n.01/img 01.png")
    assert after.rows()["sha256"][changed_row] == hashlib.sha256(touched.read_bytes()).hexdigest()
    others = np.arange(6) != changed_row
    np.testing.assert_array_equal(after.read_layer("layer1")[others], before[others])
    assert not np.array_equal(after.read_layer("layer1")[changed_row], before[changed_row])


def test_file_that_differs_from_its_manifest_hash_is_a_bad_image(tmp_path, cli):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(smooth_image(np.random.default_rng(2))).save(folder / "im0.png")
    write_manifest(folder, [manifest_row("a", "im0.png", sha256="0" * 64)])
    fails_with(
        cli(main, folder, "--out", tmp_path / "acts.zarr", *SMALL, exit_code=None),
        "im0.png",
        "differs from the one in the manifest",
    )


# ---- other models and weights ----------------------------------------------------------------


def test_timm_model_with_its_own_preprocessing_and_a_safetensors_file(tmp_path, tree, cli):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(5)
    reference = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    weights = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    out = tmp_path / "timm.zarr"
    model = ["--model", "timm:efficientnet_lite0", "--weights", weights, "--image-size", "64", "--precision", "fp32"]
    cli(main, tree, "--out", out, *model, "--layers", "blocks*,conv_head,classifier", "--workers", "0", "--silent")
    store = ActivationStore(out)
    assert store.attrs["model"] == "timm:efficientnet_lite0" and store.attrs["weights"].startswith("sha256:")
    assert store.attrs["preprocessing"]["source"].startswith("timm efficientnet_lite0")
    assert store.attrs["hook_aliases"]["blocks.6"] == "blocks" and "blocks.5" in store.hook_points
    assert store.channels("conv_head") == 1280
    assert store.attrs["classes"][0] == "n01440764"
    preprocessing = build_network("timm:efficientnet_lite0", "none", 64).preprocessing
    image = preprocessing.to_uint8(load_rgb(tree / store.rows()["path"][0])).unsqueeze(0)
    with torch.no_grad():
        logits = reference(preprocessing.normalizer(torch.device("cpu"))(image))
    np.testing.assert_allclose(store.logits()[0], logits[0].numpy(), rtol=1e-4, atol=1e-5)


def test_pth_weights_load_with_weights_only(tmp_path):
    torch.manual_seed(3)
    model = torchvision.models.resnet18()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "r18.pth")
    network = build_network("resnet18", str(tmp_path / "r18.pth"))
    assert network.weights.startswith("sha256:") and network.weights_source == str(tmp_path / "r18.pth")
    torch.testing.assert_close(network.module.fc.weight, model.fc.weight)


# ---- images ----------------------------------------------------------------------------------


def test_grayscale_rgba_palette_and_16_bit_pngs_are_converted(tmp_path, cli):
    folder = tmp_path / "odd" / "bee.n.01"
    folder.mkdir(parents=True)
    Image.fromarray(np.full((40, 40), 100, np.uint8), "L").save(folder / "gray.png")
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:20] = (255, 0, 0, 255)  # opaque red above, fully transparent below
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray(np.full((40, 40), 65535, np.uint16)).save(folder / "deep.png")
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([30, 60, 90] + [0] * 765)
    palette.save(folder / "palette.png")
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(folder / "photo.jpg", quality=95)
    assert Image.open(folder / "deep.png").mode == "I;16"
    assert np.asarray(load_rgb(folder / "gray.png"))[0, 0].tolist() == [100, 100, 100]
    assert np.asarray(load_rgb(folder / "rgba.png"))[0, 0].tolist() == [255, 0, 0]
    assert np.asarray(load_rgb(folder / "rgba.png"))[39, 0].tolist() == [255, 255, 255]
    assert np.asarray(load_rgb(folder / "deep.png"))[0, 0].tolist() == [255, 255, 255]
    assert np.asarray(load_rgb(folder / "palette.png"))[0, 0].tolist() == [30, 60, 90]
    out = tmp_path / "odd.zarr"
    cli(main, tmp_path / "odd", "--out", out, *SMALL, "--layers", "fc")
    rows = ActivationStore(out).rows()
    assert len(rows) == 5 and (rows["status"] == "ok").all()


def test_large_jpegs_decode_at_a_reduced_scale_that_still_covers_the_resize(tmp_path):
    """PIL's draft: a 1024 px JPEG decodes at 1/4 scale for the 232 px resize, close to the full decode; PNG in full."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:1024, 0:1024] / 1024
    smooth = np.stack([np.sin(6 * x + c) * np.cos(4 * y - c) for c in range(3)], -1) * 100 + 128
    photo = Image.fromarray(np.clip(smooth + rng.normal(0, 4, smooth.shape), 0, 255).astype(np.uint8))
    photo.save(tmp_path / "photo.jpg", quality=90)
    photo.save(tmp_path / "photo.png")
    photo.resize((400, 300)).save(tmp_path / "small.jpg", quality=90)
    preprocessing = build_network("resnet50", "none").preprocessing
    files = [tmp_path / name for name in ("photo.jpg", "photo.png", "small.jpg")]
    dataset = ImageDataset(files, [""] * 3, preprocessing)
    jpeg = (tmp_path / "photo.jpg").read_bytes()
    assert preprocessing.resize == 232 and decode_rgb(jpeg, preprocessing.resize).size == (256, 256)
    assert decode_rgb((tmp_path / "photo.png").read_bytes(), preprocessing.resize).size == (1024, 1024)
    assert decode_rgb((tmp_path / "small.jpg").read_bytes(), preprocessing.resize).size == (
        400,
        300,
    )  # 1/2 is too small
    reduced, full = dataset[0][0].float(), preprocessing.to_uint8(load_rgb(files[0])).float()
    assert reduced.shape == (3, 224, 224) and 0 < (reduced - full).abs().mean() < 1.5
    assert torch.equal(dataset[1][0], preprocessing.to_uint8(load_rgb(files[1])))
    assert build_network("resnet18", "none").preprocessing.attrs()["decode"] == DECODING


@pytest.fixture
def folder_with_truncated_png(tmp_path) -> Path:
    folder = make_tree(tmp_path / "images", per_synset=1)
    data = (folder / "frog.n.01" / "img 00.png").read_bytes()
    (folder / "frog.n.01" / "img 00.png").write_bytes(data[: len(data) // 2])
    return folder


def test_truncated_image_fails_naming_the_file(tmp_path, folder_with_truncated_png, cli):
    line = fails_with(
        cli(main, folder_with_truncated_png, "--out", tmp_path / "a.zarr", *SMALL, exit_code=None),
        "cannot decode",
        "frog.n.01/img 00.png",
        "--skip-bad",
    )
    assert "truncated" in line.lower() or "error" in line.lower()


def test_skip_bad_records_a_failed_row_with_nan_values(tmp_path, folder_with_truncated_png, cli):
    out = tmp_path / "a.zarr"
    # Two decoding worker processes here: failures travel back from them as row errors.
    cli(
        main,
        folder_with_truncated_png,
        "--out",
        out,
        *SMALL,
        "--workers",
        "2",
        "--batch-size",
        "2",
        "--skip-bad",
        "--layers",
        "layer4,fc",
    )
    store = ActivationStore(out)
    rows = store.rows()
    bad = rows.index[rows["path"] == "frog.n.01/img 00.png"][0]
    assert rows["status"][bad] == "failed" and (rows["status"] == "ok").sum() == 2
    assert np.isnan(store.read_layer("layer4")[bad]).all() and np.isnan(store.logits()[bad]).all()
    assert np.isfinite(np.delete(store.read_layer("layer4"), bad, axis=0)).all()


# ---- bad input -------------------------------------------------------------------------------


def test_unknown_model_suggests_close_names(tmp_path, tree, cli):
    fails_with(
        cli(main, tree, "--out", tmp_path / "a.zarr", "--model", "resnet5", "--weights", "none", exit_code=None),
        "unknown torchvision classification model 'resnet5'",
        "did you mean",
        "resnet50",
        "timm:<name>",
    )
    fails_with(
        cli(main, tree, "--out", tmp_path / "a.zarr", "--model", "timm:efficientnet_lite9", exit_code=None),
        "unknown timm model 'timm:efficientnet_lite9'",
        "did you mean timm:efficientnet_lite",
    )


def test_layers_pattern_matching_nothing_fails(tmp_path, tree, cli):
    fails_with(
        cli(main, tree, "--out", tmp_path / "a.zarr", *SMALL, "--layers", "layer4.*,conv9*", exit_code=None),
        "--layers 'conv9*' matches no hook point",
    )
    assert not (tmp_path / "a.zarr").exists()


def test_weights_file_that_does_not_fit_names_the_keys(tmp_path, tree, cli):
    state = torchvision.models.resnet18(num_classes=10).state_dict()  # a 10-class head fits: the model follows it
    state["extra.weight"] = torch.zeros(1)
    del state["layer1.0.conv1.weight"]
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")

    def with_weights(weights):
        return cli(
            main, tree, "--out", tmp_path / "a.zarr", "--model", "resnet18", "--weights", weights, exit_code=None
        )

    fails_with(
        with_weights(tmp_path / "bad.pth"),
        "does not fit resnet18",
        "missing keys: layer1.0.conv1.weight",
        "unexpected keys: extra.weight",
        "conv1.weight (64, 3, 3, 3) vs (64, 3, 7, 7)",
    )
    torch.save(torchvision.models.resnet18(), tmp_path / "pickled_module.pth")  # not a state dict: weights_only refuses
    fails_with(with_weights(tmp_path / "pickled_module.pth"), "cannot read", "as a state dict")
    fails_with(with_weights(tmp_path / "missing.pth"), "no such file")
    fails_with(with_weights("IMAGENET9K"), "IMAGENET1K_V1")


def test_default_weights_offline_fail_with_a_hint(tmp_path, tree, monkeypatch, cli):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    fails_with(
        cli(main, tree, "--out", tmp_path / "a.zarr", "--model", "resnet18", exit_code=None),
        "cannot fetch the ResNet18_Weights.IMAGENET1K_V1 weights",
        "--weights",
    )


def test_existing_store_from_another_model_is_refused(tmp_path, tree, small_store, cli):
    copy = tmp_path / "copy.zarr"
    import shutil

    shutil.copytree(small_store, copy)
    args = [
        "--pool",
        "both",
        "--store-dtype",
        "float16",
        "--precision",
        "fp32",
        "--workers",
        "0",
        "--silent",
        "--image-size",
        "64",
    ]
    fails_with(
        cli(main, tree, "--out", copy, "--model", "resnet34", "--weights", "none", *args, exit_code=None),
        "another model",
        "'resnet18'",
        "'resnet34'",
    )
    fails_with(
        cli(main, tree, "--out", copy, "--model", "resnet18", "--weights", "none", *args[:-1], "96", exit_code=None),
        "another preprocessing",
    )
    fails_with(
        cli(
            main,
            tree,
            "--out",
            copy,
            *SMALL,
            "--pool",
            "mean",
            "--store-dtype",
            "float16",
            "--precision",
            "fp32",
            exit_code=None,
        ),
        "another pooling",
    )
    assert ActivationStore(copy).attrs == ActivationStore(small_store).attrs  # refused before touching it


def test_out_that_is_not_a_store_is_refused(tmp_path, tree, cli):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    fails_with(
        cli(main, tree, "--out", tmp_path / "notes", *SMALL, exit_code=None), "exists and is not an activation store"
    )
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_bad_folders_and_manifests(tmp_path, cli):
    fails_with(cli(main, tmp_path / "nowhere", "--out", tmp_path / "a.zarr", *SMALL, exit_code=None), "is not a folder")
    (tmp_path / "empty").mkdir()
    fails_with(cli(main, tmp_path / "empty", "--out", tmp_path / "a.zarr", *SMALL, exit_code=None), "no images")
    folder = tmp_path / "manifest"
    folder.mkdir()
    write_manifest(folder, [manifest_row("a", "a.png"), {"id": "b", "synset": "bee.n.01", "status": "ok"}])
    fails_with(
        cli(main, folder, "--out", tmp_path / "a.zarr", *SMALL, exit_code=None), "images.jsonl:2", "needs a 'path'"
    )
    write_manifest(folder, [manifest_row("a", "a.png"), manifest_row("a", "b.png")])
    fails_with(
        cli(main, folder, "--out", tmp_path / "a.zarr", *SMALL, exit_code=None),
        "two images share the id 'a'",
        "a.png, b.png",
    )
    fails_with(cli(main, folder, *SMALL, exit_code=None), "give IMAGES and --out")


def test_skip_bad_rows_are_retried_on_a_rerun(tmp_path, folder_with_truncated_png, tree, cli):
    out = tmp_path / "a.zarr"
    args = [*SMALL, "--batch-size", "2", "--skip-bad", "--layers", "layer4,fc"]
    cli(main, folder_with_truncated_png, "--out", out, *args)
    before = ActivationStore(out).rows()
    bad = before.index[before["status"] == "failed"][0]
    shutil.copyfile(tree / "frog.n.01" / "img 00.png", folder_with_truncated_png / "frog.n.01" / "img 00.png")
    cli(main, folder_with_truncated_png, "--out", out, *args)
    store = ActivationStore(out)
    rows = store.rows()
    assert len(rows) == 3 and (rows["status"] == "ok").all() and rows["id"].tolist() == before["id"].tolist()
    assert rows["sha256"][bad] and rows["sha256"].tolist()[:bad] == before["sha256"].tolist()[:bad]
    fresh = tmp_path / "fresh.zarr"
    cli(main, folder_with_truncated_png, "--out", fresh, *args)
    np.testing.assert_array_equal(store.read_layer("layer4"), ActivationStore(fresh).read_layer("layer4"))
    np.testing.assert_array_equal(store.logits(), ActivationStore(fresh).logits())


@pytest.mark.parametrize("model", ["resnet18", "timm:resnet18"])
def test_weights_file_with_a_head_of_any_size(tmp_path, tree, model, cli):
    import timm

    torch.manual_seed(4)
    reference = (
        timm.create_model("resnet18", num_classes=7)
        if model.startswith("timm:")
        else torchvision.models.resnet18(num_classes=7)
    )
    torch.save(reference.state_dict(), tmp_path / "seven.pth")
    args = [tree, "--model", model, "--weights", tmp_path / "seven.pth", "--image-size", "64", "--workers", "0"]
    out = tmp_path / "seven.zarr"
    cli(main, *args, "--out", out, "--layers", "fc", "--silent")
    store = ActivationStore(out)
    assert store.logits().shape == (6, 7) and store.attrs["class_names"] == [f"class_{i}" for i in range(7)]
    np.testing.assert_allclose(store.read_layer("fc"), store.logits(), rtol=1e-5)
    (tmp_path / "names.txt").write_text("".join(f"kind {i}\n" for i in range(7)))
    cli(
        main,
        *args,
        "--out",
        tmp_path / "named.zarr",
        "--layers",
        "fc",
        "--class-names",
        tmp_path / "names.txt",
        "--silent",
    )
    assert ActivationStore(tmp_path / "named.zarr").attrs["class_names"][6] == "kind 6"


@pytest.mark.parametrize(
    "model", ["timm:test_vit", "timm:test_convnext", "timm:resnet18.a1_in1k", "timm:mobilevitv2_050"]
)
def test_list_layers_for_timm_names(model, cli):
    """Transformers, ConvNeXt, a name with a pretrained tag, a hybrid: listed without weights."""
    lines = cli(main, "--list-layers", "--model", model).output.strip().splitlines()
    names = [line.split("\t")[0] for line in lines]
    assert len(lines) > 10 and len(set(names)) == len(names)
    assert all(line.split("\t")[1].isdigit() for line in lines)
    assert any("\t= " in line for line in lines)  # every one of these has aliases (e.g. an Identity)


def test_vit_token_outputs_are_pooled_over_tokens(tmp_path, tree, cli):
    import timm

    out = tmp_path / "vit.zarr"
    model = ["--model", "timm:test_vit", "--weights", "none", "--precision", "fp32"]
    cli(main, tree, "--out", out, *model, "--layers", "blocks.0,norm", "--workers", "0", "--silent")
    store = ActivationStore(out)
    network = build_network("timm:test_vit", "none")
    torch.manual_seed(RANDOM_INIT_SEED)
    reference = timm.create_model("test_vit", pretrained=False).eval()
    images = torch.stack([network.preprocessing.to_uint8(load_rgb(tree / p)) for p in store.rows()["path"]])
    outputs = {}
    for name in ("blocks.0", "norm"):
        reference.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: outputs.setdefault(name, o))
    with torch.no_grad():
        reference(network.preprocessing.normalizer(torch.device("cpu"))(images))
    for name in ("blocks.0", "norm"):
        assert outputs[name].dim() == 3 and store.channels(name) == outputs[name].shape[2]
        np.testing.assert_allclose(store.read_layer(name), outputs[name].mean(dim=1).numpy(), rtol=1e-4, atol=1e-5)


def test_channels_last_maps_are_pooled_over_space_and_window_outputs_are_no_hook_points():
    """timm's Swin gives (N, H, W, C) stage outputs and runs attention over batch x windows."""
    import timm

    torch.manual_seed(0)
    swin = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        embed_dim=8,
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 1, 1),
        img_size=64,
        window_size=2,
    ).eval()
    points, n_classes = discover_hook_points(swin, SimpleNamespace(crop=64))
    by_name = {p.name: p for p in points}
    assert n_classes == 1000
    assert (by_name["layers.1"].layout, by_name["layers.1"].channels) == ("NHWC", 16)
    assert (by_name["patch_embed.proj"].layout, by_name["patch_embed.proj"].channels) == ("NCHW", 8)
    assert (by_name["layers.0.blocks.0.mlp.fc1"].layout, by_name["layers.0.blocks.0.mlp.fc1"].channels) == ("NLC", 32)
    assert "layers.0.blocks.0.attn.qkv" not in by_name  # (N x 64 windows, 4, 24)
    assert "layers.3.blocks.0.attn.qkv" in by_name  # one window: its first dimension is the batch

    chosen = [by_name[name] for name in ("patch_embed.proj", "layers.1", "layers.3.blocks.0.attn.qkv", "head.fc")]
    images = torch.randn(3, 3, 64, 64)
    outputs = {}
    for point in chosen:
        swin.get_submodule(point.module).register_forward_hook(
            lambda m, i, o, name=point.name: outputs.setdefault(name, o)
        )
    with PoolingHooks(swin, chosen, ("mean", "max")) as hooks, torch.no_grad():
        swin(images)
        pooled = hooks.take()
    columns = column_slices(chosen)
    expected = {
        "patch_embed.proj": outputs["patch_embed.proj"].mean(dim=(2, 3)),
        "layers.1": outputs["layers.1"].mean(dim=(1, 2)),
        "layers.3.blocks.0.attn.qkv": outputs["layers.3.blocks.0.attn.qkv"].mean(dim=1),
        "head.fc": outputs["head.fc"],
    }
    for name, value in expected.items():
        np.testing.assert_allclose(pooled["mean"][:, columns[name]], value.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        pooled["max"][:, columns["layers.1"]], outputs["layers.1"].amax(dim=(1, 2)).numpy(), rtol=1e-6
    )
