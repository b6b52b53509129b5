"""cnn-hooks pooled values against a manual computation: CNN maps, ViT tokens, channels-last maps."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from synthprobe.cnn_hooks.hook_points import PoolingHooks, column_slices, discover_hook_points
from synthprobe.common.decode import load_rgb
from synthprobe.common.networks import RANDOM_INIT_SEED, build_network
from synthprobe.formats.activation_store import ActivationStore
from synthprobe.tools.cnn_hooks import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
