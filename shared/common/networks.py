"""Torchvision and timm classifiers in eval mode: weights DEFAULT, none, an enum name or a local file."""

from __future__ import annotations

import difflib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from synthprobe.common.files import InputError, error_line, sha256_file
from synthprobe.common.preprocessing import Preprocessing, timm_preprocessing, torchvision_preprocessing

TIMM_PREFIX = "timm:"
RANDOM_INIT_SEED = 0  # --weights none is random but reproducible


@dataclass
class Network:
    module: torch.nn.Module
    name: str  # as given: "resnet50" or "timm:resnet18"
    weights: str  # what the weights are: "IMAGENET1K_V2", "none", "sha256:<hex>", "timm:resnet18.a1_in1k"
    weights_source: str | None  # the local file, when there is one
    preprocessing: Preprocessing
    build_args: tuple = ()  # build_network's arguments: how a Dask worker builds the same network


def build_network(name: str, weights: str = "DEFAULT", image_size: int | None = None) -> Network:
    """A model in eval mode on the CPU with its preprocessing; ``weights`` is DEFAULT, none, an enum name or a file.

    A file's classifier head may have any number of classes: the model is built with the file's count.
    """
    state = read_state_dict(weights) if weights_kind(weights) == "file" else None
    if name.startswith(TIMM_PREFIX):
        module, identity, preprocessing = _timm_model(name[len(TIMM_PREFIX) :], weights, state)
    else:
        module, identity, preprocessing = _torchvision_model(name, weights, state)
    source = None
    if state is not None:
        source = str(Path(weights).resolve())
        check_state_dict(module, state, Path(weights), name)
        module.load_state_dict(state, strict=False)  # strictness checked above, num_batches_tracked may be absent
        identity = f"sha256:{sha256_file(weights)}"
    if image_size is not None:
        preprocessing = preprocessing.with_crop(image_size)
    module.eval().requires_grad_(False)
    return Network(module, name, identity, source, preprocessing, (name, source or weights, image_size))


def weights_kind(weights: str) -> str:
    """'default', 'none', 'file' (a path) or 'named' (a torchvision weights name such as IMAGENET1K_V1)."""
    if weights.lower() in ("default", "none"):
        return weights.lower()
    looks_like_file = weights.endswith((".pth", ".pt", ".bin", ".safetensors")) or "/" in weights or os.sep in weights
    return "file" if looks_like_file or Path(weights).exists() else "named"


def _torchvision_model(name: str, weights: str, state: dict | None):
    import torchvision.models as tvm

    known = tvm.list_models(module=tvm)
    if name not in known:
        raise InputError(unknown_model_message(name, known, "torchvision classification model"))
    enum = tvm.get_model_weights(name)
    kind = weights_kind(weights)
    if kind in ("none", "file"):
        torch.manual_seed(RANDOM_INIT_SEED)
        module = tvm.get_model(name, weights=None)
        classes = state_dict_classes(module, state)
        if classes is not None:
            torch.manual_seed(RANDOM_INIT_SEED)
            module = tvm.get_model(name, weights=None, num_classes=classes)
        return module, "none" if kind == "none" else None, torchvision_preprocessing(enum.DEFAULT)
    chosen = enum.DEFAULT if kind == "default" else enum.__members__.get(weights)
    if chosen is None:
        raise InputError(
            f"--weights {weights}: not DEFAULT, none, a file, or one of {name}'s weights "
            f"({', '.join(enum.__members__)})"
        )
    try:
        module = tvm.get_model(name, weights=chosen)
    except Exception as exc:  # urllib, ssl, hash check: all mean "could not fetch"
        raise InputError(
            f"cannot fetch the {chosen} weights for {name} ({error_line(exc)}); "
            "with no internet, pass a local state-dict file to --weights"
        ) from None
    return module, chosen.name, torchvision_preprocessing(chosen)


def _timm_model(name: str, weights: str, state: dict | None):
    import timm

    if not timm.is_model(name):
        raise InputError(unknown_model_message(name, timm.list_models(), "timm model", TIMM_PREFIX))
    kind = weights_kind(weights)
    if kind == "named":
        raise InputError(f"--weights {weights}: for timm models use DEFAULT, none or a local file")
    pretrained = kind == "default"
    torch.manual_seed(RANDOM_INIT_SEED)
    try:
        module = timm.create_model(name, pretrained=pretrained)
    except Exception as exc:
        if not pretrained:
            raise
        raise InputError(
            f"cannot fetch the pretrained weights for timm:{name} ({error_line(exc)}); "
            "with no internet, pass a local state-dict file to --weights"
        ) from None
    classes = state_dict_classes(module, state)
    if classes is not None:
        torch.manual_seed(RANDOM_INIT_SEED)
        module = timm.create_model(name, pretrained=False, num_classes=classes)
    if pretrained:
        identity = (
            f"timm:{module.pretrained_cfg.get('architecture', name)}.{module.pretrained_cfg.get('tag') or 'default'}"
        )
    else:
        identity = "none" if kind == "none" else None
    return module, identity, timm_preprocessing(module, name)


def unknown_model_message(name: str, known: list[str], kind: str, prefix: str = "") -> str:
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
    hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
    other = "" if prefix else " (timm models: timm:<name>)"
    return f"unknown {kind} {prefix + name!r}{hint}{other}"


def state_dict_classes(module: torch.nn.Module, state: dict | None) -> int | None:
    """The class count of the state dict's classifier head (the model's last Linear) where it differs from the
    model's."""
    linears = [name for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    if state is None or not linears:
        return None
    head = state.get(f"{linears[-1]}.weight")
    if head is None or head.dim() != 2 or head.shape[0] == module.get_submodule(linears[-1]).out_features:
        return None
    return int(head.shape[0])


def read_state_dict(path: str) -> dict:
    """A state dict from .safetensors, or from .pth read with weights_only, unwrapped from training checkpoints."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"--weights {path}: no such file (expected DEFAULT, none, or a .pth/.safetensors state dict)")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message runs to a page of advice about weights_only=False
        raise InputError(
            f"cannot read {file} as a state dict: it is not a torch file, or it holds objects other "
            "than tensors, which are not loaded (weights_only) since they could run code"
        ) from None
    except Exception as exc:
        raise InputError(f"cannot read {file} as a state dict ({error_line(exc)})") from None
    return _unwrap_state_dict(state, file)


def _unwrap_state_dict(state, file: Path) -> dict:
    for key in ("state_dict", "model"):  # training checkpoints often nest the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{file} is not a state dict (a mapping of names to tensors)")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def check_state_dict(module: torch.nn.Module, state: dict, file: Path, model_name: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label}: {', '.join(keys[:5])}{f' (+{len(keys) - 5} more)' if len(keys) > 5 else ''}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatch (file vs model)", shapes),
        )
        if keys
    ]
    if problems:
        raise InputError(f"{file} does not fit {model_name}: {'; '.join(problems)}")
