"""Benchmark several classifiers in one cnn-hooks pass against one run each, on 1024 px PNGs like sd-generate's.

    .venv/bin/python bench/bench_onepass.py [--images 64] [--models resnet50,resnet18,timm:efficientnet_lite0]

Untrained weights (none) are enough for timing. Same process, same images, every hook point, the default precision
and decode workers (as cnn-hooks sizes them), appending to stores made beforehand from one batch of other images;
the two ways alternate over ``--repeats`` and the best of each counts. Printed: the wall-clock ratio one pass /
separate runs (target <= 0.7 on 2 CPU cores) and its CPU-time ratio (this process and its decode workers), then
the decode share: what reading, hashing and decoding a PNG costs against resizing it for each preprocessing, and
the ratio a GPU run would see, where the forward is nearly free and only decoding and resizing remain:
(decode + resizes) / (models x decode + resizes).
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from photos import make_images

from synthprobe.cnn_hooks.run import Params, device_and_precision, run_pass
from synthprobe.common.decode import decode_rgb
from synthprobe.common.image_dataset import decode_workers
from synthprobe.common.networks import build_network
from synthprobe.formats.image_folder import ImageFolder, read_image_folder


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the DataLoader workers of finished runs)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(function) -> tuple[float, float]:
    """(wall, CPU) seconds of ``function()``."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    function()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def decode_costs(files: list[Path], networks: list) -> tuple[float, dict]:
    """Seconds per image of reading, hashing and decoding, and of each distinct resize and crop, on one core."""
    preprocessings = {n.preprocessing.pixels: n.preprocessing for n in networks}
    decode, resize = 0.0, dict.fromkeys(preprocessings, 0.0)
    for file in files:
        start = time.perf_counter()
        data = file.read_bytes()
        hashlib.sha256(data).hexdigest()
        image = decode_rgb(data, max(p.resize for p in preprocessings.values()))
        decode += time.perf_counter() - start
        for key, preprocessing in preprocessings.items():
            start = time.perf_counter()
            preprocessing.to_uint8(image)
            resize[key] += time.perf_counter() - start
    return decode / len(files), {key: seconds / len(files) for key, seconds in resize.items()}


def run(images: int, size: int, models: list[str], batch_size: int, repeats: int, device: str) -> dict:
    networks = [build_network(model, "none") for model in models]
    settings = Params(device=device, batch_size=batch_size, workers=None, silent=True)
    where, precision = device_and_precision(device, None)
    workers = decode_workers(where)
    print(
        f"{', '.join(models)} (untrained), {images} PNGs of {size} px, batch {batch_size}, {precision} on {where}, "
        f"{torch.get_num_threads()} torch threads, {workers} decode workers",
        flush=True,
    )
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        make_images(Path(tmp) / "images", images, size)
        make_images(Path(tmp) / "first-batch", batch_size, size, seed=1)
        # One folder above both: each timed run appends to stores that already hold the first batch, as a resumed
        # or grown run does, so that the one-off creation of ~190 arrays a store (and the first forward's kernel
        # builds) is not counted; what every run pays (finding the hook points, starting the decode workers) is.
        first = read_image_folder(Path(tmp) / "first-batch").rows
        rest = read_image_folder(Path(tmp) / "images")
        first = first.assign(id="first-" + first["id"], path="first-batch/" + first["path"])
        rows = pd.concat([first, rest.rows.assign(path="images/" + rest.rows["path"])], ignore_index=True)
        folder = ImageFolder(Path(tmp), rows, rest.source_sha256, rest.layout)
        first_batch = ImageFolder(Path(tmp), rows.iloc[:batch_size], rest.source_sha256, rest.layout)
        files = [folder.file(p) for p in folder.rows["path"][batch_size:]]

        def stores(way: str, repeat: int) -> list[tuple[Path, object]]:
            made = [(Path(tmp) / f"{way}-{repeat}-{i}.zarr", network) for i, network in enumerate(networks)]
            run_pass(first_batch, made, settings)
            return made

        def one_pass(made: list) -> None:
            run_pass(folder, made, settings)

        def separate(made: list) -> None:
            for store in made:
                run_pass(folder, [store], settings)

        for repeat in range(repeats):  # alternating, so that a burst of load hits both ways alike
            for name, way in (("one_pass", one_pass), ("separate", separate))[:: 1 if repeat % 2 == 0 else -1]:
                made = stores(name, repeat)
                wall, cpu = timed(lambda way=way, made=made: way(made))
                print(f"repeat {repeat + 1}: {name} {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
                best[name] = min(best.get(name, (wall, cpu)), (wall, cpu))
        decode, resizes = decode_costs(files[:16], networks)
    one, apart = best["one_pass"], best["separate"]
    return {
        "models": models,
        "images": images,
        "one_pass_s": one,
        "separate_s": apart,
        "wall_ratio": one[0] / apart[0],
        "cpu_ratio": one[1] / apart[1],
        "decode_ms": decode * 1000,
        "resize_ms": {"/".join(map(str, key)): seconds * 1000 for key, seconds in resizes.items()},
        "decode_share_of_separate_cpu": len(models) * images * decode / apart[1],
        "gpu_ratio": (decode + sum(resizes.values())) / (len(models) * decode + sum(resizes.values())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--models", default="resnet50,resnet18,timm:efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    figures = run(args.images, args.size, args.models.split(","), args.batch_size, args.repeats, args.device)
    (one_wall, one_cpu), (apart_wall, apart_cpu) = figures["one_pass_s"], figures["separate_s"]
    print(f"\nbest of {args.repeats}: one pass {one_wall:.1f} s ({one_cpu:.1f} s CPU), ", end="")
    print(f"{len(figures['models'])} separate runs {apart_wall:.1f} s ({apart_cpu:.1f} s CPU)")
    print(f"one pass / separate: wall {figures['wall_ratio']:.2f} (target <= 0.7), CPU {figures['cpu_ratio']:.2f}")
    resizes = ", ".join(f"{key} {ms:.1f}" for key, ms in figures["resize_ms"].items())
    print(f"per image, one core: read+hash+decode {figures['decode_ms']:.1f} ms; resize+crop (ms) {resizes}")
    print(f"decoding is {figures['decode_share_of_separate_cpu']:.0%} of the separate runs' CPU time")
    print(f"where the forward is free (a GPU): one pass / separate = {figures['gpu_ratio']:.2f}")


if __name__ == "__main__":
    main()
