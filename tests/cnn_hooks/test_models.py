"""cnn-hooks on other models and weight files: timm with its own preprocessing, .pth and .safetensors files,
heads of any size.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from synthprobe.common.decode import load_rgb
from synthprobe.common.networks import build_network
from synthprobe.formats.activation_store import ActivationStore
from synthprobe.tools.cnn_hooks import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
