"""The checking steps of bench/gpu_check.py: each builds or runs something on the tiny models and returns its figure
and data, or raises CheckFailed with the figure. gpu_check.py imports this after it has set HF_HUB_OFFLINE."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import bench_sd_generate
import numpy as np
from photos import make_images
from PIL import Image

from synthprobe.cnn_hooks.hook_points import discover_hook_points
from synthprobe.cnn_hooks.run import Params, run_hooks
from synthprobe.common.networks import Network, build_network
from synthprobe.formats.activation_store import ActivationStore
from synthprobe.formats.image_cache import ImageCache
from synthprobe.formats.image_folder import read_image_folder
from synthprobe.sd_generate.pipeline import load_pipeline
from synthprobe.sd_generate.run import run_generation
from synthprobe.tiny_models import save_tiny_pipeline, save_tiny_sd3, tiny_sd3_settings

MIN_COSINE = 0.999
GENERATION = {"steps": 4, "guidance": 3.5, "size": (64, 64), "batch_size": 4}
FAMILIES = ("sdxl", "flux", "pixart-sigma")  # beside SD3, whose steps are the ones above


class CheckFailed(Exception):
    """A step ran but its result is wrong; the message is the figure."""


@dataclass
class Context:
    """What the steps share: the work folder, the tiny models, and results later steps compare with."""

    work: Path
    cuda: bool
    sd3: Path | None = None
    families: dict[str, Path] = field(default_factory=dict)  # the other tiny generator families' folders
    classifier: Network | None = None
    images: Path | None = None  # a small ImageFolder tree for cnn-hooks
    pixels: dict[str, np.ndarray] = field(default_factory=dict)  # generated images by step
    stores: dict[str, Path] = field(default_factory=dict)


def check(condition: bool, figure: str) -> None:
    if not condition:
        raise CheckFailed(figure)


def tiny_models(ctx: Context, classifier: str) -> tuple[str, dict]:
    ctx.sd3 = save_tiny_sd3(ctx.work / "tiny-sd3")
    ctx.families = {family: save_tiny_pipeline(ctx.work / f"tiny-{family}", family) for family in FAMILIES}
    ctx.classifier = build_network(classifier, "none", image_size=64)
    ctx.images = ctx.work / "photos"
    make_images(ctx.images, 8, 256)
    points, _ = discover_hook_points(ctx.classifier.module, ctx.classifier.preprocessing)
    megabytes = sum(f.stat().st_size for f in ctx.sd3.rglob("*") if f.is_file()) / 1e6
    return (
        f"tiny SD3 ({megabytes:.1f} MB) and {', '.join(FAMILIES)}, {classifier} random weights at 64 px "
        f"({len(points)} hook points), 8 photo-like PNGs",
        {"sd3_mb": megabytes, "hook_points": len(points)},
    )


def generate(ctx: Context, label: str, device: str, model: Path | None = None, **options):
    """sd-generate's library path on 8 records with the tiny SD3 (or ``model``) and ``options`` (Params fields);
    keeps the pixels, returns settings, pipeline and seconds (the pipeline's first call included)."""
    cache = ImageCache(ctx.work / f"cache-{label}")
    settings = tiny_sd3_settings(
        model or ctx.sd3, cache, device=device, **{"quantize": "none", **options, **GENERATION}
    )
    pipe = load_pipeline(settings)
    records = bench_sd_generate.records(8)
    out = ctx.work / f"images-{label}"
    start = time.perf_counter()
    result = run_generation(records, settings, cache, out, build_pipeline=lambda s: pipe, silent=True)
    seconds = time.perf_counter() - start
    errors = sorted({str(row.get("error")) for row in result.rows if row["status"] != "ok"})
    check(result.generated == len(records), f"{result.failed} of {len(records)} images failed: {', '.join(errors)}")
    ctx.pixels[label] = np.stack([np.asarray(Image.open(out / row["path"]), dtype=np.float64) for row in result.rows])
    return settings, pipe, seconds


def difference(ctx: Context, label: str, reference: str) -> float:
    """Mean absolute pixel difference (0-255) between two steps' images."""
    return float(np.abs(ctx.pixels[label] - ctx.pixels[reference]).mean())


def generate_cpu_fp32(ctx: Context) -> tuple[str, dict]:
    settings, _, seconds = generate(ctx, "cpu-fp32", "cpu")
    check(settings.dtype == "float32", f"dtype {settings.dtype}")
    return f"8 images 64 px in {seconds:.1f} s (first call included)", {"seconds": seconds}


def generate_nf4(ctx: Context) -> tuple[str, dict]:
    import bitsandbytes as bnb

    settings, pipe, seconds = generate(ctx, "cuda-nf4", "cuda", quantize="4bit")
    layers = [m for m in pipe.transformer.modules() if isinstance(m, bnb.nn.Linear4bit)]
    check(bool(layers), "no bitsandbytes Linear4bit layer in the transformer")
    kinds = {m.weight.quant_type for m in layers}
    check(kinds == {"nf4"} and settings.dtype == "bfloat16", f"quant types {kinds}, dtype {settings.dtype}")
    delta = difference(ctx, "cuda-nf4", "cpu-fp32")
    return (
        f"{len(layers)} Linear4bit nf4 layers, 8 images in {seconds:.1f} s, mean |diff| vs CPU fp32 {delta:.1f}/255",
        {"linear4bit_layers": len(layers), "seconds": seconds, "mean_abs_diff": delta},
    )


def generate_bf16(ctx: Context) -> tuple[str, dict]:
    settings, _, seconds = generate(ctx, "cuda-bf16", "cuda")
    check(
        settings.dtype == "bfloat16" and settings.quantization == "none", f"{settings.dtype}, {settings.quantization}"
    )
    delta = difference(ctx, "cuda-bf16", "cpu-fp32")
    return (
        f"8 images in {seconds:.1f} s, mean |diff| vs CPU fp32 {delta:.1f}/255",
        {"seconds": seconds, "mean_abs_diff": delta},
    )


def generate_offload(ctx: Context) -> tuple[str, dict]:
    _, _, seconds = generate(ctx, "cuda-offload", "cuda", offload=True)
    largest = float(np.abs(ctx.pixels["cuda-offload"] - ctx.pixels["cuda-bf16"]).max())
    check(largest <= 2, f"pixels differ from bf16 without offload by up to {largest:.0f}/255")
    return (
        f"8 images in {seconds:.1f} s, max |diff| vs bf16 without offload {largest:.0f}/255",
        {"seconds": seconds, "max_abs_diff": largest},
    )


def generate_families(ctx: Context, device: str) -> tuple[str, dict]:
    """Each tiny family's 8 images on ``device``; on CUDA (bf16) compared with the same family on the CPU (fp32)."""
    figures = {}
    for family, folder in ctx.families.items():
        settings, _, seconds = generate(ctx, f"{device}-{family}", device, folder)
        check(settings.family.name == family, f"{folder} resolved as family {settings.family.name}")
        figures[family] = {"seconds": seconds}
        if device == "cuda":
            figures[family]["mean_abs_diff"] = difference(ctx, f"cuda-{family}", f"cpu-{family}")
    described = ", ".join(
        f"{family} {f['seconds']:.1f} s"
        + (f" (mean |diff| vs CPU fp32 {f['mean_abs_diff']:.1f}/255)" if device == "cuda" else "")
        for family, f in figures.items()
    )
    return f"8 images each: {described}", figures


def generate_compiled(ctx: Context) -> tuple[str, dict]:
    """sd-generate --compile on CUDA: the tiny SD3's images against bf16 eager, and the cost of the first batch."""
    _, pipe, seconds = generate(ctx, "cuda-compile", "cuda", compile=True)
    check(pipe.transformer._compiled_call_impl is not None, "the transformer was not compiled")
    largest = float(np.abs(ctx.pixels["cuda-compile"] - ctx.pixels["cuda-bf16"]).max())
    check(largest <= 4, f"compiled pixels differ from eager bf16 by up to {largest:.0f}/255")
    return (
        f"8 images in {seconds:.1f} s (compilation included), max |diff| vs eager bf16 {largest:.0f}/255",
        {"seconds": seconds, "max_abs_diff": largest},
    )


def hooks_store(ctx: Context, label: str, device: str, precision: str | None) -> str:
    """cnn-hooks' library path on the photos; the store path is kept for comparisons. Returns the precision used."""
    store = ctx.work / f"acts-{label}.zarr"
    settings = Params(pools=("mean", "max"), precision=precision, device=device, workers=None, silent=True)
    run_hooks(read_image_folder(ctx.images), store, ctx.classifier, settings)
    ctx.stores[label] = store
    return ActivationStore(store).attrs["precision"]


def worst_cosine(reference: Path, other: Path) -> tuple[float, str]:
    """The smallest per-image cosine between two stores, over every hook point and pooling, and where."""
    first, second = ActivationStore(reference), ActivationStore(other)
    worst, where = 2.0, ""  # above any cosine, so the first point sets both
    for point in first.hook_points:
        for pool in first.pools:
            a = first.read_layer(point, pool).astype(np.float64)
            b = second.read_layer(point, pool).astype(np.float64)
            norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            both_zero = (np.abs(a).max(1) == 0) & (np.abs(b).max(1) == 0)  # a dead unit agrees with itself
            cosine = np.where(both_zero, 1.0, (a * b).sum(1) / np.maximum(norms, 1e-300))
            if cosine.min() < worst:
                worst, where = float(cosine.min()), f"{point}/{pool}"
    return worst, where


def compare_hooks(ctx: Context, label: str, device: str, precision: str | None) -> tuple[str, dict]:
    if "cpu-fp32" not in ctx.stores:
        hooks_store(ctx, "cpu-fp32", "cpu", "fp32")
    used = hooks_store(ctx, label, device, precision)
    worst, where = worst_cosine(ctx.stores["cpu-fp32"], ctx.stores[label])
    figure = f"{used} channels-last vs CPU fp32: min cosine {worst:.5f} ({where}) over every hook point, mean and max"
    check(worst >= MIN_COSINE, figure + f" < {MIN_COSINE}")
    return figure, {"precision": used, "min_cosine": worst, "worst_point": where}
