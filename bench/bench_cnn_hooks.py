"""Benchmark cnn-hooks on images like sd-generate's: ResNet-50, every hook point, 1024 px PNGs.

    .venv/bin/python bench/bench_cnn_hooks.py [--images 64] [--batch-size 16] [--workers N] [--device auto]

Same run, same batch size, best of ``--repeats``, images/s:

* decode: one worker (this process) reading, hashing, decoding and resizing
  the PNGs exactly as cnn-hooks' DataLoader workers do;
* bare: the forward alone at the default precision, channels-last, on
  tensors decoded beforehand;
* end to end: ``run_hooks`` on the folder (decode in ``--workers``
  processes, forward, pooling in every hook, Zarr writes), appending to a
  store made beforehand from one batch of other images (so the one-off
  creation of ~190 arrays is not counted, as it is not in a long run). A
  run also pays fixed costs (opening the store, starting the workers, the
  last write, which nothing overlaps) that a short benchmark would mistake
  for a slow pipeline, so the steady rate is the marginal one: the images
  of the second half over the time the whole run takes beyond a run on the
  first half. The whole-run rate and the fixed seconds are reported too;
* naive: fp32 eager, default memory format, a hook on every hook point that
  casts the output to fp32 before pooling.

The ceiling is ``min(bare, workers x decode)``; end to end / ceiling is the
figure to raise (target >= 0.85). On a CPU the decode workers and the
forward share the same cores, so there the ceiling is out of reach by
construction; the CPU bound adds the core-seconds of an image instead
(decode + torch threads x forward + write) and divides the cores by them.
Then the store: bytes written per image and the time of one
append, float32 against float16, with float16's error against float32.
PNGs are photo-like (smooth colour fields, hard-edged shapes, sensor noise)
and 1.5-2 MB at 1024 px, like SD output; ``--size 256`` gives small ones.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from photos import make_images

from synthprobe.cnn_hooks.hook_points import HookPoint, discover_hook_points, is_poolable
from synthprobe.cnn_hooks.run import Params, run_hooks
from synthprobe.common.devices import resolve_device
from synthprobe.common.image_dataset import ImageDataset, decode_workers
from synthprobe.common.networks import build_network
from synthprobe.common.precision import autocast, default_precision
from synthprobe.formats.activation_store import ActivationStore, StoreWriter
from synthprobe.formats.image_folder import ImageFolder, read_image_folder


def timed(function, device: torch.device = torch.device("cpu")) -> float:
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def decode_all(dataset: ImageDataset) -> None:
    for index in range(len(dataset)):
        _, _, error = dataset[index]
        assert not error, error


def bare_forward(module, batches: list[torch.Tensor], normalize, device: torch.device, precision: str) -> None:
    with torch.no_grad(), autocast(device, precision):
        for batch in batches:
            module(normalize(batch))


def naive_forward(module, points: list[HookPoint], batches: list[torch.Tensor], device: torch.device) -> None:
    """The obvious implementation: hooks keyed by module and call, each output cast to fp32, then pooled."""
    calls: dict[str, int] = {}
    wanted = {(p.module, p.call) for p in points}
    pooled = []

    def hook_for(name):
        def hook(_module, _inputs, output):
            call = calls.get(name, 0)
            calls[name] = call + 1
            if (name, call) in wanted and is_poolable(output):
                value = output.float()
                pooled.append((value.mean(dim=(2, 3)) if value.dim() == 4 else value).cpu().numpy())

        return hook

    handles = [
        m.register_forward_hook(hook_for(n)) for n, m in module.named_modules() if n in {p.module for p in points}
    ]
    try:
        with torch.no_grad():
            for batch in batches:
                module(batch.to(device))
                calls.clear()
                pooled.clear()
    finally:
        for handle in handles:
            handle.remove()


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def store_writes(source: Path, work: Path) -> dict:
    """Bytes per image and seconds per append of one store's rows, rewritten as float32 and as float16."""
    store = ActivationStore(source)
    points = store.hook_points
    values = {p: {"mean": store.read_layer(p)} for p in points}
    rows = store.rows()
    logits = store.logits() if store.has_logits() else None
    channels = {p: values[p]["mean"].shape[1] for p in points}
    figures: dict = {"images": len(rows)}
    for dtype in ("float32", "float16"):
        path = work / f"writes-{dtype}.zarr"
        writer = StoreWriter(
            path,
            {"model": "bench"},
            channels,
            ("mean",),
            dtype,
            None if logits is None else logits.shape[1],
            rows_per_write=len(rows),
        )
        before = folder_bytes(path)
        seconds = timed(partial(writer.append, rows, values, logits))
        writer.finish()
        figures[dtype] = {
            "bytes_per_image": (folder_bytes(path) - before) / len(rows),
            "ms_per_image": seconds / len(rows) * 1000,
        }
    half = ActivationStore(work / "writes-float16.zarr")
    full = np.concatenate([values[p]["mean"] for p in points], axis=1).astype(np.float64)
    rounded = np.concatenate([half.read_layer(p) for p in points], axis=1).astype(np.float64)
    cosine = (full * rounded).sum(1) / (np.linalg.norm(full, axis=1) * np.linalg.norm(rounded, axis=1))
    normal = np.abs(full) >= np.finfo(np.float16).tiny  # below it float16 keeps fewer digits
    figures["float16_vs_float32"] = {
        "max_abs": float(np.abs(rounded - full).max()),
        "max_relative": float((np.abs(rounded - full)[normal] / np.abs(full[normal])).max()),
        "min_cosine": float(cosine.min()),
    }
    return figures


def run(
    images: int = 64,
    size: int = 1024,
    batch_size: int = 16,
    workers: int | None = None,
    repeats: int = 2,
    model: str = "resnet50",
    device: str = "auto",
    naive: bool = True,
    image_size: int | None = None,
) -> dict:
    """Every figure of the benchmark, measured in one run; prints a line per repeat."""
    network = build_network(model, "none", image_size)
    device = resolve_device(device, auto_mps=False)
    workers = decode_workers(device) if workers is None else workers
    precision = default_precision(device)
    points, _ = discover_hook_points(network.module, network.preprocessing)
    naive_model = copy.deepcopy(network.module).to(device)
    fast_model = copy.deepcopy(network.module).to(device, memory_format=torch.channels_last)
    figures: dict = {
        "model": model,
        "crop": network.preprocessing.crop,
        "hook_points": len(points),
        "images": images,
        "size": size,
        "batch_size": batch_size,
        "workers": workers,
        "precision": precision,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    print(
        f"{model} at {network.preprocessing.crop} px, {len(points)} hook points, {images} PNGs of {size} px, "
        f"batch {batch_size}, {precision} on {device}, "
        f"{torch.get_num_threads()} torch threads, {workers} decode workers",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        folder_path = Path(tmp) / "images"
        make_images(folder_path, images, size)
        folder = read_image_folder(folder_path)
        files = [folder.file(p) for p in folder.rows["path"]]
        figures["png_mb"] = folder_bytes(folder_path) / images / 1e6
        make_images(Path(tmp) / "first-batch", batch_size, size, seed=1)
        # One folder above both: a timed run appends to a store that already holds the first batch, as a resumed
        # or grown run does (a store holding images its folder does not list is refused).
        first_rows = read_image_folder(Path(tmp) / "first-batch").rows
        first_rows = first_rows.assign(id="first-" + first_rows["id"], path="first-batch/" + first_rows["path"])
        rows = pd.concat([first_rows, folder.rows.assign(path="images/" + folder.rows["path"])], ignore_index=True)

        def leading(count: int) -> ImageFolder:
            return ImageFolder(Path(tmp), rows.iloc[:count].reset_index(drop=True), folder.source_sha256, folder.layout)

        first_batch = leading(batch_size)
        dataset = ImageDataset(files, [""] * images, network.preprocessing)
        decoded = torch.stack([dataset[i][0] for i in range(images)])
        sample = ImageDataset(files[:64], [""] * len(files[:64]), network.preprocessing)  # one core: keep it short
        uint8_batches = [b.pin_memory() if device.type == "cuda" else b for b in decoded.split(batch_size)]
        normalize = network.preprocessing.normalizer(device)
        naive_batches = [normalize(b).contiguous() for b in uint8_batches]
        settings = Params(
            pools=("mean",),
            precision=precision,
            device=str(device),
            batch_size=batch_size,
            workers=workers,
            silent=True,
        )

        whole_folder, half = leading(batch_size + images), leading(batch_size + images // 2)

        def end_to_end(repeat: int, part: ImageFolder) -> float:
            store = Path(tmp) / f"acts-{repeat}-{len(part.rows)}.zarr"
            run_hooks(first_batch, store, network, settings)
            return timed(lambda: run_hooks(part, store, network, settings), device)

        bare_forward(fast_model, uint8_batches[:1], normalize, device, precision)  # warm-up: kernels are built once
        naive_forward(naive_model, points, naive_batches[:1], device)
        rates: dict[str, list[float]] = {"decode": [], "bare": [], "end_to_end": [], "whole_run": []}
        rates |= {"naive": []} if naive else {}
        fixed: list[float] = []
        for repeat in range(repeats):  # interleaved, so a burst of load hits all alike
            rates["decode"].append(len(sample) / timed(lambda: decode_all(sample)))
            rates["bare"].append(
                images / timed(lambda: bare_forward(fast_model, uint8_batches, normalize, device, precision), device)
            )
            whole, first_half = end_to_end(repeat, whole_folder), end_to_end(repeat, half)
            rates["whole_run"].append(images / whole)
            marginal = (len(whole_folder.rows) - len(half.rows)) / (whole - first_half) if whole > first_half else 0.0
            if marginal >= images / whole:  # else load hit one run more than the other: fixed costs would be < 0
                rates["end_to_end"].append(marginal)
                fixed.append(whole - images / marginal)
            if naive:
                rates["naive"].append(
                    images / timed(lambda: naive_forward(naive_model, points, naive_batches, device), device)
                )
            print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items() if v), flush=True)
        figures["store"] = store_writes(Path(tmp) / f"acts-0-{len(whole_folder.rows)}.zarr", Path(tmp))

    best = {k: max(v) if v else None for k, v in rates.items()}  # None: load hid the marginal rate every time
    ceiling = min(best["bare"], workers * best["decode"])
    steady = best["end_to_end"]
    figures |= {f"{k}_images_per_s": v for k, v in best.items()}
    figures |= {"ceiling_images_per_s": ceiling, "fixed_seconds": min(fixed, default=None)}
    if figures["device"] == "cpu":  # decoding, the forward and the writes share the cores: their core-seconds add up
        core_seconds = (
            1 / best["decode"]
            + torch.get_num_threads() / best["bare"]
            + figures["store"]["float32"]["ms_per_image"] / 1000
        )
        figures["cpu_bound_images_per_s"] = len(os.sched_getaffinity(0)) / core_seconds
    for baseline in ("ceiling", "cpu_bound", "bare", "naive"):
        if f"{baseline}_images_per_s" in figures:
            figures[f"end_to_end_over_{baseline}"] = steady and steady / figures[f"{baseline}_images_per_s"]
    return figures


def number(value: float | None, digits: int = 1) -> str:
    return "n/a (the machine's load hid it; rerun with more images)" if value is None else f"{value:.{digits}f}"


def naive_in(figures: dict) -> bool:
    return figures.get("naive_images_per_s") is not None


def print_table(figures: dict) -> None:
    print(
        f"\nimages/s, best of the repeats ({figures['device']}, "
        f"{figures['png_mb']:.2f} MB PNGs of {figures['size']} px):"
    )
    print(f"  decode+preprocess per worker  {figures['decode_images_per_s']:8.1f}")
    print(f"  bare {figures['precision']} forward           {figures['bare_images_per_s']:8.1f}")
    print(f"  ceiling min(bare, {figures['workers']} x decode) {figures['ceiling_images_per_s']:8.1f}")
    if "cpu_bound_images_per_s" in figures:
        print(f"  CPU bound (core-seconds added) {figures['cpu_bound_images_per_s']:7.1f}")
    print(f"  end to end, steady (marginal) {number(figures['end_to_end_images_per_s']):>8}")
    print(
        f"  end to end, whole run         {figures['whole_run_images_per_s']:8.1f}   "
        f"(fixed costs {number(figures['fixed_seconds'])} s)"
    )
    if naive_in(figures):
        print(f"  naive fp32 eager              {figures['naive_images_per_s']:8.1f}")
    print(
        f"end to end / ceiling = {number(figures['end_to_end_over_ceiling'], 2)} (target >= 0.85); "
        + (
            f"end to end / CPU bound = {number(figures['end_to_end_over_cpu_bound'], 2)}; "
            if "cpu_bound_images_per_s" in figures
            else ""
        )
        + f"end to end / bare = {number(figures['end_to_end_over_bare'], 2)}"
        + (f"; end to end / naive = {number(figures['end_to_end_over_naive'], 2)}" if naive_in(figures) else "")
    )
    store = figures["store"]
    print(f"\nstore writes ({store['images']} images, mean pooling, one append):")
    print("  dtype     bytes/image   ms/image   error vs float32")
    error = store["float16_vs_float32"]
    for dtype in ("float32", "float16"):
        detail = (
            "-"
            if dtype == "float32"
            else (
                f"max abs {error['max_abs']:.2g}, max relative {error['max_relative']:.2g}, "
                f"min cosine {error['min_cosine']:.6f}"
            )
        )
        print(f"  {dtype}  {store[dtype]['bytes_per_image']:11,.0f}   {store[dtype]['ms_per_image']:8.2f}   {detail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=1024, help="PNG side in pixels (resized to 232, cropped to 224)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None, help="decode workers (default: as cnn-hooks sizes them)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-naive", dest="naive", action="store_false", help="skip the naive fp32 baseline")
    parser.add_argument("--image-size", type=int, help="crop size instead of the model's own, as cnn-hooks' option")
    args = parser.parse_args()
    print_table(
        run(
            args.images,
            args.size,
            args.batch_size,
            args.workers,
            args.repeats,
            args.model,
            args.device,
            args.naive,
            args.image_size,
        )
    )


if __name__ == "__main__":
    main()
