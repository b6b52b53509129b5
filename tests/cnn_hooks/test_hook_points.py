"""cnn-hooks hook points: feature-extraction names, layer globs, --list-layers, aliases stored once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from helpers.cnn_hooks import SMALL

from synthprobe.cnn_hooks.hook_points import discover_hook_points, find_aliases, select_hook_points
from synthprobe.common.decode import load_rgb
from synthprobe.common.files import InputError
from synthprobe.common.networks import build_network
from synthprobe.formats.activation_store import ActivationStore
from synthprobe.tools.cnn_hooks import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
