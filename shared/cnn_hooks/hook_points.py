"""Hook points: every module call of one forward, named and pooled.

Hook points are module calls named as torchvision.models.feature_extraction
names graph nodes: the module's qualified name, with ``_1``, ``_2`` for its
second and third call in one forward (ResNet's Bottleneck calls one ``relu``
three times). Container modules (``layer1.0``, ``layer1``) are hook points too:
their output is the block or stage output. Every output is pooled over its
spatial dimensions the moment it is produced, so no feature map outlives its
layer; the pooled vectors of a batch leave the device in one transfer.

An output's layout is read from its shape on the square discovery input:
(C, H, W) maps have H == W last, (H, W, C) maps (timm's Swin, ConvNeXt in
NHWC) have H == W first; only C == H == W is ambiguous, and is taken as (C, H, W).
Outputs whose first dimension is not the batch (a Swin block's attention runs
over batch x windows) are no hook points.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthprobe.common.globs import select_by_globs
from synthprobe.common.preprocessing import Preprocessing


@dataclass(frozen=True)
class HookPoint:
    name: str  # "layer4.2.relu_2"
    module: str  # "layer4.2.relu"
    call: int  # 2: the third call of that module in one forward
    shape: tuple[int, ...]  # output shape without the batch dimension: (C, H, W), (H, W, C), (tokens, C) or (C,)

    @property
    def layout(self) -> str:
        return output_layout(self.shape)

    @property
    def channels(self) -> int:
        return self.shape[0] if self.layout in ("NCHW", "NC") else self.shape[-1]


# Two images, so that an output whose first dimension is not the batch shows it.
DISCOVERY_BATCH = 2


def output_layout(shape: tuple[int, ...]) -> str:
    """NC, NLC (tokens), NCHW or NHWC, from an output's shape without the batch on the square discovery input."""
    if len(shape) == 1:
        return "NC"
    if len(shape) == 2:
        return "NLC"
    first, second, last = shape
    return "NHWC" if first == second != last else "NCHW"


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
        if is_poolable(output) and output.shape[0] == DISCOVERY_BATCH:
            points.append(HookPoint(point_name(name, call), name, call, tuple(output.shape[1:])))

    handles = [
        m.register_forward_hook(lambda mod, i, o, name=name: record(name, mod, i, o))
        for name, m in module.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            output = module(torch.zeros(DISCOVERY_BATCH, 3, preprocessing.crop, preprocessing.crop))
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
    """The aliases an existing store was made with, None without a store."""
    try:
        attrs = json.loads((store / "zarr.json").read_text(encoding="utf-8")).get("attributes", {})
    except (OSError, ValueError):  # no store yet, or one StoreWriter reports on
        return None
    return dict(attrs.get("hook_aliases", {}))


def column_slices(points: list[HookPoint]) -> dict[str, slice]:
    """Where each point's channels sit in the concatenated (N, total channels) batch arrays."""
    ends = np.cumsum([p.channels for p in points])
    return {p.name: slice(int(end) - p.channels, int(end)) for p, end in zip(points, ends)}


def pool_output(output: torch.Tensor, pools: tuple[str, ...], layout: str) -> dict[str, torch.Tensor]:
    """Spatial mean and/or max of one output, as fp32 (N, C); a token sequence is pooled over its tokens.

    On channels-last maps the mean is ``avg_pool2d`` over the whole map: its CPU and CUDA kernels
    accumulate in fp32 and run 10-40x faster than ``mean(dim=(2, 3), dtype=float32)`` on bf16, at the
    cost of one rounding of the result to the map's dtype (bf16: 0.4%, below the error of the bf16 map
    itself). Other layouts take the plain reduction, accumulated in fp32.
    """
    if layout == "NC":
        vector = output.float()
        return {pool: vector for pool in pools}
    if layout != "NCHW":  # (N, tokens, C) with the class token, or (N, H, W, C)
        axes = (1,) if layout == "NLC" else (1, 2)
        return {
            pool: (output.mean(dim=axes, dtype=torch.float32) if pool == "mean" else output.amax(dim=axes).float())
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
        self.wanted = {(p.module, p.call): (p.name, p.layout) for p in points}
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
            wanted = self.wanted.get((name, call))
            if wanted is None or not is_poolable(output):
                return
            point, layout = wanted
            # A block returns its last module's output object unchanged: pool it once. The version
            # counter tells an in-place change (BatchNorm output, then ReLU(inplace=True)) apart.
            if self.last is not None and self.last[0] is output and self.last[1] == output._version:
                self.pooled[point] = self.last[2]
                return
            pooled = pool_output(output, self.pools, layout)
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
