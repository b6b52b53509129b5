"""The library behind ``cnn-hooks``: build a CNN, name its hook points, pool in the hooks, fill a store.

Hook points are module calls named as torchvision.models.feature_extraction
names graph nodes: the module's qualified name, with ``_1``, ``_2`` for its
second and third call in one forward (ResNet's Bottleneck calls one ``relu``
three times). Container modules (``layer1.0``, ``layer1``) are hook points too:
their output is the block or stage output. Every output is pooled over its
spatial dimensions the moment it is produced, so no feature map outlives its
layer; the pooled vectors of a batch leave the device in one transfer.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import os
import pickle
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import library_versions
from .decode import decode_rgb
from .devices import resolve_device
from .files import InputError, Sha256Memo, cache_root, error_line, sha256_file
from .formats.activation_store import ROWS_PER_WRITE, StoreWriter
from .formats.image_folder import ImageFolder
from .globs import select_by_globs
from .progress import progress

log = logging.getLogger("synthprobe")

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
TIMM_PREFIX = "timm:"
RANDOM_INIT_SEED = 0  # --weights none is random but reproducible
COLOR_HANDLING = "8-bit RGB; grayscale repeated, alpha over white, 16-bit scaled to 8-bit"
DECODING = "JPEG at the smallest DCT scale keeping both sides >= resize (PIL draft); other formats in full"


# ---- preprocessing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocessing:
    """Resize the short side, center-crop, normalise: what torchvision's and timm's eval transforms do."""

    resize: int
    crop: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str

    def attrs(self) -> dict:
        return {
            "resize": self.resize,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "color": COLOR_HANDLING,
            "decode": DECODING,
            "source": self.source,
        }

    def with_crop(self, crop: int) -> Preprocessing:
        """Another input size, keeping the ratio of resize to crop."""
        resize = round(crop * self.resize / self.crop)
        return Preprocessing(resize, crop, self.interpolation, self.mean, self.std, f"{self.source}, crop {crop}")

    def to_uint8(self, image) -> torch.Tensor:
        """A PIL RGB image to a (3, crop, crop) uint8 tensor; normalisation happens on the device."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        image = TF.resize(image, self.resize, interpolation=InterpolationMode(self.interpolation))
        return TF.pil_to_tensor(TF.center_crop(image, self.crop))

    def normalizer(self, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        # (x / 255 - mean) / std as one multiply-add with the 255 folded in.
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1) * 255.0
        scale = 1.0 / std
        shift = -torch.tensor(self.mean, device=device).view(1, 3, 1, 1) * 255.0 / std

        def normalize(images: torch.Tensor) -> torch.Tensor:
            x = torch.addcmul(shift, images.to(device, non_blocking=True).float(), scale)
            return x.contiguous(memory_format=torch.channels_last)

        return normalize


def torchvision_preprocessing(weights) -> Preprocessing:
    transform = weights.transforms()
    return Preprocessing(
        int(transform.resize_size[0]),
        int(transform.crop_size[0]),
        transform.interpolation.value,
        tuple(float(v) for v in transform.mean),
        tuple(float(v) for v in transform.std),
        f"torchvision {weights}",
    )


def timm_preprocessing(model, name: str) -> Preprocessing:
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    crop = int(config["input_size"][-1])
    return Preprocessing(
        math.floor(crop / config["crop_pct"]),
        crop,
        config["interpolation"],
        tuple(float(v) for v in config["mean"]),
        tuple(float(v) for v in config["std"]),
        f"timm {name} data config",
    )


# ---- models ----------------------------------------------------------------------------------


@dataclass
class Network:
    module: torch.nn.Module
    name: str  # as given: "resnet50" or "timm:resnet18"
    weights: str  # what the weights are: "IMAGENET1K_V2", "none", "sha256:<hex>", "timm:resnet18.a1_in1k"
    weights_source: str | None  # the local file, when there is one
    preprocessing: Preprocessing


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
    return Network(module, name, identity, source, preprocessing)


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


# ---- device and precision --------------------------------------------------------------------


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX-512-BF16: the CPUs on which bf16 autocast is several times faster than fp32."""
    if "AMX" in torch.backends.cpu.get_cpu_capability().upper():
        return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def decode_workers(device: torch.device) -> int:
    """DataLoader processes that decode images, sized to the machine.

    Decoding a 1024 px PNG costs about as much CPU as a bf16 ResNet-50 forward on two CPU cores, and
    far more than the forward on a GPU: with a GPU every core but the main process's decodes; on the
    CPU the forward needs half of them.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
    return max(1, min(32, cores - 1)) if device.type == "cuda" else max(1, min(8, cores // 2))


def default_precision(device: torch.device) -> str:
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


# ---- hook points -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HookPoint:
    name: str  # "layer4.2.relu_2"
    module: str  # "layer4.2.relu"
    call: int  # 2: the third call of that module in one forward
    shape: tuple[int, ...]  # output shape without the batch dimension: (C, H, W), (tokens, C) or (C,)

    @property
    def channels(self) -> int:
        return self.shape[-1] if len(self.shape) == 2 else self.shape[0]


def point_name(module: str, call: int) -> str:
    return module if call == 0 else f"{module}_{call}"


def is_poolable(output) -> bool:
    """(N, C, H, W) feature maps, (N, tokens, C) token sequences (ViTs) and (N, C) vectors; tuples are no hook point."""
    return isinstance(output, torch.Tensor) and output.dim() in (2, 3, 4) and output.is_floating_point()


def discover_hook_points(module: torch.nn.Module, preprocessing: Preprocessing) -> tuple[list[HookPoint], int | None]:
    """Every module call of one forward on a blank image, in the order the outputs appear; and the class count."""
    points: list[HookPoint] = []
    calls: dict[str, int] = {}

    def record(name, _module, _inputs, output):
        call = calls.get(name, 0)
        calls[name] = call + 1
        if is_poolable(output):
            points.append(HookPoint(point_name(name, call), name, call, tuple(output.shape[1:])))

    handles = [
        m.register_forward_hook(lambda mod, i, o, name=name: record(name, mod, i, o))
        for name, m in module.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            output = module(torch.zeros(1, 3, preprocessing.crop, preprocessing.crop))
    finally:
        for handle in handles:
            handle.remove()
    n_classes = output.shape[1] if isinstance(output, torch.Tensor) and output.dim() == 2 else None
    return points, n_classes


def select_hook_points(
    points: list[HookPoint], patterns: list[str], aliases: dict[str, str] | None = None
) -> list[HookPoint]:
    """The points matching any glob, in forward order; a pattern that matches nothing is an error.

    With ``aliases`` ({alias: canonical}) only canonical points are returned: an alias selects its canonical.
    """
    aliases = aliases or {}
    chosen = {
        aliases.get(name, name)
        for name in select_by_globs([p.name for p in points], patterns, more=" (see --list-layers)")
    }
    return [p for p in points if p.name in chosen]


# Pooled values this close are one tensor computed twice (a mean over a 7x7 map by another kernel differs
# by ~1e-7); BatchNorm at its initial statistics scales by 1/sqrt(1 + 1e-5), 5e-6 away, and stays apart.
ALIAS_RTOL = 1e-6


def find_aliases(
    module: torch.nn.Module, points: list[HookPoint], preprocessing: Preprocessing, pools: tuple[str, ...] = ("mean",)
) -> dict[str, str]:
    """Hook points whose pooled outputs equal another's (the same tensor, or a view or mean of one): {alias: canonical}.

    Compared on a fixed noise batch in fp32, so every run on a store finds the same aliases whatever its images
    are. A group's canonical is its shortest name, then the first in forward order: ``layer4`` for
    ``layer4.2.relu_2``, ``layer4.2``, ``layer4`` and ``avgpool`` in ResNet-50. Constant outputs alias nothing.
    """
    noise = torch.randn(2, 3, preprocessing.crop, preprocessing.crop, generator=torch.Generator().manual_seed(0))
    with PoolingHooks(module, points, pools) as hooks, torch.no_grad():
        module(noise)
        pooled = hooks.take()
    columns = column_slices(points)
    groups: list[tuple[np.ndarray, list[HookPoint]]] = []  # (values, members in forward order)
    for point in points:
        values = np.concatenate([pooled[pool][:, columns[point.name]] for pool in pools], axis=1)
        if np.ptp(values) == 0:
            continue
        scale = np.abs(values).max()
        group = next(
            (
                members
                for first, members in groups
                if first.shape == values.shape and np.allclose(values, first, rtol=ALIAS_RTOL, atol=ALIAS_RTOL * scale)
            ),
            None,
        )
        if group is None:
            groups.append((values, [point]))
        else:
            group.append(point)
    aliases = {}
    for _, members in groups:
        canonical = min(members, key=lambda p: len(p.name)).name
        aliases.update({p.name: canonical for p in members if p.name != canonical})
    return aliases


def recorded_aliases(store: Path) -> dict[str, str] | None:
    """The aliases an existing store was made with ({} for a store made before aliases), None without a store."""
    try:
        attrs = json.loads((store / "zarr.json").read_text(encoding="utf-8")).get("attributes", {})
    except (OSError, ValueError):  # no store yet, or one StoreWriter reports on
        return None
    return dict(attrs.get("hook_aliases", {}))


def column_slices(points: list[HookPoint]) -> dict[str, slice]:
    """Where each point's channels sit in the concatenated (N, total channels) batch arrays."""
    ends = np.cumsum([p.channels for p in points])
    return {p.name: slice(int(end) - p.channels, int(end)) for p, end in zip(points, ends)}


def pool_output(output: torch.Tensor, pools: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Spatial mean and/or max of one output, as fp32 (N, C); a token sequence is pooled over its tokens.

    On channels-last maps the mean is ``avg_pool2d`` over the whole map: its CPU and CUDA kernels
    accumulate in fp32 and run 10-40x faster than ``mean(dim=(2, 3), dtype=float32)`` on bf16, at the
    cost of one rounding of the result to the map's dtype (bf16: 0.4%, below the error of the bf16 map
    itself). Other layouts take the plain reduction, accumulated in fp32.
    """
    if output.dim() == 2:
        vector = output.float()
        return {pool: vector for pool in pools}
    if output.dim() == 3:  # (N, tokens, C), class token included
        return {
            pool: (output.mean(dim=1, dtype=torch.float32) if pool == "mean" else output.amax(dim=1).float())
            for pool in pools
        }
    pooled = {}
    if "mean" in pools:
        if output.is_contiguous(memory_format=torch.channels_last):
            pooled["mean"] = F.avg_pool2d(output, output.shape[2:]).flatten(1).float()
        else:
            pooled["mean"] = output.mean(dim=(2, 3), dtype=torch.float32)
    if "max" in pools:
        pooled["max"] = output.amax(dim=(2, 3)).float()  # max is exact in any dtype
    return pooled


class PoolingHooks:
    """Forward hooks on the modules behind ``points`` that pool each chosen call's output as it is produced.

    Use as a context manager around forwards; ``take()`` returns one batch's
    pooled values, per pool an (N, total channels) fp32 array, columns in
    ``points`` order (``column_slices`` says where each point's are).
    """

    def __init__(self, module: torch.nn.Module, points: list[HookPoint], pools: tuple[str, ...]):
        self.module = module
        self.points = points
        self.pools = pools
        self.wanted = {(p.module, p.call): p.name for p in points}
        self.handles: list = []
        self._reset()

    def _reset(self) -> None:
        self.calls: dict[str, int] = {}
        self.pooled: dict[str, dict[str, torch.Tensor]] = {}
        self.last: tuple | None = None

    def __enter__(self) -> PoolingHooks:
        names = {p.module for p in self.points}
        for name, module in self.module.named_modules():
            if name in names:
                self.handles.append(module.register_forward_hook(self._hook_for(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _hook_for(self, name: str):
        def hook(_module, _inputs, output):
            call = self.calls.get(name, 0)
            self.calls[name] = call + 1
            point = self.wanted.get((name, call))
            if point is None or not is_poolable(output):
                return
            # A block returns its last module's output object unchanged: pool it once. The version
            # counter tells an in-place change (BatchNorm output, then ReLU(inplace=True)) apart.
            if self.last is not None and self.last[0] is output and self.last[1] == output._version:
                self.pooled[point] = self.last[2]
                return
            pooled = pool_output(output, self.pools)
            self.pooled[point] = pooled
            self.last = (output, output._version, pooled)

        return hook

    def take(self) -> dict[str, np.ndarray]:
        missing = [p.name for p in self.points if p.name not in self.pooled]
        if missing:
            raise RuntimeError(f"hook points not reached in this forward: {', '.join(missing[:5])}")
        result = {
            pool: torch.cat([self.pooled[p.name][pool] for p in self.points], dim=1).cpu().numpy()
            for pool in self.pools
        }
        self._reset()
        return result


# ---- the run ---------------------------------------------------------------------------------


class ImageDataset(torch.utils.data.Dataset):
    """Decoding in DataLoader workers: (uint8 image, sha256 of the file, error or '') per row; a bad file gives
    zeros."""

    def __init__(self, files: list[Path], expected_sha256: list[str], preprocessing: Preprocessing):
        self.files = files
        self.expected = expected_sha256  # from the manifest, "" where unknown
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        digest = ""
        try:
            data = self.files[index].read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if self.expected[index] and digest != self.expected[index]:
                raise ValueError("the file's sha256 differs from the one in the manifest")
            return self.preprocessing.to_uint8(decode_rgb(data, self.preprocessing.resize)), digest, ""
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad files
            blank = torch.zeros(3, self.preprocessing.crop, self.preprocessing.crop, dtype=torch.uint8)
            return blank, digest, error_line(exc)


@dataclass
class RunSettings:
    layers: list[str] = field(default_factory=list)
    pools: tuple[str, ...] = ("mean",)
    dtype: str = "float32"
    precision: str | None = None  # None: default_precision(device)
    device: str = "auto"
    batch_size: int = 16
    workers: int | None = 0  # None: decode_workers(device)
    skip_bad: bool = False
    rows_per_write: int = ROWS_PER_WRITE
    rebuild: bool = False  # delete the store first
    silent: bool = False
    class_names: list[str] | None = None  # for a head other than ImageNet-1k's (default class_0, class_1, ...)


@dataclass
class RunResult:
    written: int
    failed: int
    skipped: int  # already in the store
    seconds: float


def store_attrs(
    network: Network,
    precision: str,
    n_classes: int | None,
    folder: ImageFolder,
    class_names: list[str] | None = None,
    aliases: dict[str, str] | None = None,
) -> dict:
    from .imagenet import N_IMAGENET_CLASSES, imagenet_names, imagenet_wnids

    attrs = {
        "model": network.name,
        "weights": network.weights,
        "weights_source": network.weights_source,
        "preprocessing": network.preprocessing.attrs(),
        "precision": precision,
        "source_folder": str(folder.root.resolve()),
        "source_layout": folder.layout,
        "source_sha256": folder.source_sha256,
        "hook_aliases": aliases or {},
        "versions": library_versions("torch", "torchvision", "timm", "zarr", "numpy", "pillow"),
    }
    if class_names is not None:
        if len(class_names) != n_classes:
            raise InputError(
                f"--class-names gives {len(class_names)} names; {network.name}'s head has {n_classes} classes"
            )
        attrs["class_names"] = list(class_names)
    elif n_classes == N_IMAGENET_CLASSES:  # torchvision's classifiers and timm's default heads: ImageNet-1k order
        attrs["classes"] = list(imagenet_wnids())
        attrs["class_names"] = list(imagenet_names())
    elif n_classes:
        attrs["class_names"] = [f"class_{i}" for i in range(n_classes)]
    return attrs


def run_hooks(folder: ImageFolder, out: Path, network: Network, settings: RunSettings) -> RunResult:
    """Append every image of ``folder`` that ``out`` does not hold yet; resumable at any moment."""
    device = resolve_device(settings.device, auto_mps=False)
    precision = settings.precision or default_precision(device)
    # Discovery and aliases run on the CPU in fp32; an earlier run may have left the model on a GPU.
    network.module.cpu()
    points, n_classes = discover_hook_points(network.module, network.preprocessing)
    aliases = None if settings.rebuild else recorded_aliases(out)  # a store keeps the aliases it was made with
    if aliases is None:
        aliases = find_aliases(network.module, points, network.preprocessing, settings.pools)
    points = select_hook_points(points, settings.layers, aliases)
    kept = {alias: canonical for alias, canonical in aliases.items() if canonical in {p.name for p in points}}
    writer = StoreWriter(
        out,
        store_attrs(network, precision, n_classes, folder, settings.class_names, kept),
        {p.name: p.channels for p in points},
        settings.pools,
        settings.dtype,
        n_classes,
        rows_per_write=settings.rows_per_write,
        rebuild=settings.rebuild,
    )
    memo = source_memo(folder)
    stored = writer.committed_rows(("id", "sha256", "status"))
    done = stored[stored["status"] != "failed"]
    check_unchanged(folder, done, out, memo)
    # Rows that failed (--skip-bad) are tried again and written over in place when they decode now.
    retry = {row_id: index for index, row_id in stored["id"][stored["status"] == "failed"].items()}
    todo = folder.rows[~folder.rows["id"].isin(set(done["id"]))].reset_index(drop=True)
    started = time.perf_counter()
    failed = 0
    if len(todo):
        retried = todo["id"].isin(retry).sum()
        log.info(
            "%s: %d images to run (%d already in the store%s), %d hook points, %s on %s",
            out,
            len(todo),
            len(done),
            f", {retried} failed before" if retried else "",
            len(points),
            precision,
            device,
        )
        module = network.module.to(device, memory_format=torch.channels_last)
        try:
            failed = _run_batches(
                todo, folder, module, network.preprocessing, points, writer, device, precision, settings, memo, retry
            )
        finally:
            memo.save()
    writer.finish()
    return RunResult(len(todo), failed, len(folder.rows) - len(todo), time.perf_counter() - started)


def source_memo(folder: ImageFolder) -> Sha256Memo:
    """The file hashes of an ImageFolder tree, remembered per folder in the user cache."""
    name = hashlib.sha256(str(folder.root.resolve()).encode("utf-8")).hexdigest()[:16]
    return Sha256Memo(cache_root() / "sha256-memo" / f"{name}.json")


def check_unchanged(folder: ImageFolder, stored: pd.DataFrame, out: Path, memo: Sha256Memo) -> None:
    """Refuse images that differ from those already in the store under the same ids.

    A manifest lists every image's sha256; the files of an ImageFolder tree are hashed here, reading
    only those whose size or mtime changed since they were last hashed.
    """
    if stored.empty:
        return
    current = folder.rows
    if folder.layout == "imagefolder":
        current = current[current["id"].isin(set(stored["id"]))]
        current = current.assign(sha256=[memo.sha256(folder.file(p).resolve()) for p in current["path"]])
        memo.save()
    both = current.merge(stored, on="id", suffixes=("", "_stored"))
    changed = both[(both["sha256"] != "") & (both["sha256_stored"] != "") & (both["sha256"] != both["sha256_stored"])]
    if len(changed):
        names = ", ".join(changed["path"].iloc[:3]) + (", ..." if len(changed) > 3 else "")
        raise InputError(
            f"{len(changed)} images of {folder.root} changed since {out} recorded them ({names}); "
            "rerun with --rebuild to start the store again, or write to a new store"
        )


def _run_batches(
    todo: pd.DataFrame,
    folder: ImageFolder,
    module,
    preprocessing: Preprocessing,
    points: list[HookPoint],
    writer: StoreWriter,
    device: torch.device,
    precision: str,
    settings: RunSettings,
    memo: Sha256Memo,
    retry: dict[str, int],
) -> int:
    files = [folder.file(p).resolve() for p in todo["path"]]
    # Stamps taken before the workers read the files: a file changed in between is hashed again next time.
    stamps = [Sha256Memo.stamp(f) if f.is_file() else None for f in files]
    dataset = ImageDataset(files, list(todo["sha256"]), preprocessing)
    workers = decode_workers(device) if settings.workers is None else settings.workers
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=settings.batch_size, num_workers=workers, pin_memory=device.type == "cuda"
    )
    normalize = preprocessing.normalizer(device)
    failed = 0
    bar = progress(None, total=len(todo), desc="cnn-hooks", unit="img", silent=settings.silent)
    with (
        WriteBuffer(writer, points, settings.pools, retry) as buffer,
        PoolingHooks(module, points, settings.pools) as hooks,
        torch.no_grad(),
        autocast(device, precision),
    ):
        start = 0
        for images, digests, errors in loader:
            rows = todo.iloc[start : start + len(images)].copy()
            rows["sha256"] = digests
            for i, digest in enumerate(digests):
                if digest and stamps[start + i]:
                    memo.remember(files[start + i], digest, stamps[start + i])
            start += len(images)
            bad = [i for i, error in enumerate(errors) if error]
            if bad and not settings.skip_bad:
                raise InputError(
                    f"cannot decode {folder.file(rows['path'].iloc[bad[0]])} ({errors[bad[0]]}); "
                    "--skip-bad records such images as failed and goes on"
                )
            for i in bad:
                log.warning("skipped %s: %s", folder.file(rows["path"].iloc[i]), errors[i])
            logits = module(normalize(images))
            pooled = hooks.take()
            logits = logits.float().cpu().numpy() if isinstance(logits, torch.Tensor) and logits.dim() == 2 else None
            rows["status"] = "ok"
            if bad:
                rows.iloc[bad, rows.columns.get_loc("status")] = "failed"
                for values in (*pooled.values(), *(() if logits is None else (logits,))):
                    values[bad] = np.nan
            failed += len(bad)
            buffer.add(rows, pooled, logits)
            bar.update(len(images))
    bar.close()
    return failed


class WriteBuffer:
    """Batches gathered until ``rows_per_write`` rows, then appended and committed in one go (whole shards).

    The append runs on a writer thread while the next batches compute (compression and file writes
    overlap the forward on a GPU); at most one write is in flight, and commits keep their order.
    """

    def __init__(self, writer: StoreWriter, points: list[HookPoint], pools: tuple[str, ...], retry: dict[str, int]):
        self.writer = writer
        self.pools = pools
        self.retry = retry  # id -> store row of a failed row being retried
        self.columns = column_slices(points)
        self.batches: list[tuple[pd.DataFrame, dict[str, np.ndarray], np.ndarray | None]] = []
        self.rows = 0
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self.pending: Future | None = None

    def __enter__(self) -> WriteBuffer:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                self.flush()
            self.wait()  # an interrupted run still commits what it handed to the writer
        finally:
            self.thread.shutdown()

    def add(self, rows: pd.DataFrame, pooled: dict[str, np.ndarray], logits: np.ndarray | None) -> None:
        self.batches.append((rows, pooled, logits))
        self.rows += len(rows)
        if self.rows >= self.writer.rows_per_write:
            self.flush()

    def flush(self) -> None:
        if not self.batches:
            return
        rows = pd.concat([b[0] for b in self.batches], ignore_index=True)
        blocks = {pool: np.concatenate([b[1][pool] for b in self.batches]) for pool in self.pools}
        logits = None if self.batches[0][2] is None else np.concatenate([b[2] for b in self.batches])
        hooks = {
            name: {pool: blocks[pool][:, columns] for pool in self.pools} for name, columns in self.columns.items()
        }
        self.batches, self.rows = [], 0
        self.wait()
        self.pending = self.thread.submit(self.write, rows, hooks, logits)

    def write(self, rows: pd.DataFrame, hooks: dict[str, dict[str, np.ndarray]], logits: np.ndarray | None) -> None:
        """Retried rows over their failed ones, the rest appended."""
        over = rows["id"].isin(self.retry).to_numpy()
        if over.any():
            self.writer.overwrite(
                rows["id"][over].map(self.retry).to_numpy(),
                rows[over],
                {h: {p: v[over] for p, v in pooled.items()} for h, pooled in hooks.items()},
                None if logits is None else logits[over],
            )
        if not over.all():
            new = ~over
            self.writer.append(
                rows[new].reset_index(drop=True),
                {h: {p: v[new] for p, v in pooled.items()} for h, pooled in hooks.items()},
                None if logits is None else logits[new],
            )

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()  # re-raises the writer's error here
