"""Benchmark cnn-hooks: ResNet-50, every hook point, end to end, against a bare forward and the naive way.

    .venv/bin/python bench/bench_cnn_hooks.py [--images 128] [--batch-size 16] [--repeats 3]

Three rates in images/s, same batch size, same run, best of ``--repeats``:

* end to end: ``run_hooks`` on a folder of PNGs (decode in DataLoader workers,
  forward, pooling in every hook, Zarr writes), at the default precision,
  appending to a store made beforehand from one batch of other images (so the
  one-off creation of ~190 arrays is not counted, as it is not in a long run);
* bare: the forward alone at that precision, channels-last, on tensors decoded beforehand;
* naive: fp32 eager, default memory format, a hook on every hook point that
  casts the output to fp32 before pooling, on tensors decoded beforehand.

Targets: end to end / bare >= 0.85, end to end / naive >= 3. The CPU may be
shared; rerun when the numbers look noisy.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthprobe import hooks as H
from synthprobe.images import load_rgb, read_image_folder


def make_images(folder: Path, count: int, size: int) -> None:
    """Smooth colour fields with texture: PNGs that decode like photos, not like noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        synset = folder / f"class{i % 4}.n.01"
        synset.mkdir(parents=True, exist_ok=True)
        waves = [np.sin(rng.uniform(2, 12) * x + rng.uniform(0, 6)) * np.cos(rng.uniform(2, 12) * y) for _ in range(3)]
        image = (np.stack(waves, -1) + 1) * 110 + rng.normal(0, 10, (size, size, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(synset / f"{i:04d}.png")


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bare_forward(module, batches: list[torch.Tensor], precision: str) -> None:
    device = torch.device("cpu")
    with torch.no_grad(), H.autocast(device, precision):
        for batch in batches:
            module(batch)


def naive_forward(module, points: list[H.HookPoint], batches: list[torch.Tensor]) -> None:
    """The obvious implementation: hooks keyed by module and call, each output cast to fp32, then pooled."""
    calls: dict[str, int] = {}
    wanted = {(p.module, p.call) for p in points}
    pooled = []

    def hook_for(name):
        def hook(_module, _inputs, output):
            call = calls.get(name, 0)
            calls[name] = call + 1
            if (name, call) in wanted and H.is_poolable(output):
                value = output.float()
                pooled.append((value.mean(dim=(2, 3)) if value.dim() == 4 else value).cpu().numpy())
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in module.named_modules() if n in {p.module for p in points}]
    try:
        with torch.no_grad():
            for batch in batches:
                module(batch)
                calls.clear()
                pooled.clear()
    finally:
        for handle in handles:
            handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", type=int, default=256, help="PNG side in pixels (resized to 232, cropped to 224)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="resnet50")
    args = parser.parse_args()

    network = H.build_network(args.model, "none")
    device = torch.device("cpu")
    precision = H.default_precision(device)
    points, _ = H.discover_hook_points(network.module, network.preprocessing)
    naive_model = copy.deepcopy(network.module)
    fast_model = network.module.to(memory_format=torch.channels_last)
    print(f"{args.model}, {len(points)} hook points, {args.images} images of {args.size} px, batch {args.batch_size}, "
          f"{precision} (end to end and bare), {torch.get_num_threads()} torch threads, {args.workers} decode workers")

    with tempfile.TemporaryDirectory() as tmp:
        folder_path = Path(tmp) / "images"
        make_images(folder_path, args.images, args.size)
        folder = read_image_folder(folder_path)
        make_images(Path(tmp) / "first-batch", args.batch_size, args.size)
        first_batch = read_image_folder(Path(tmp) / "first-batch")
        first_batch.rows["id"] = "first-" + first_batch.rows["id"]
        decoded = torch.stack([network.preprocessing.to_uint8(load_rgb(folder.file(p))) for p in folder.rows["path"]])
        normalize = network.preprocessing.normalizer(device)
        fast_batches = [normalize(b) for b in decoded.split(args.batch_size)]
        naive_batches = [b.contiguous() for b in fast_batches]
        settings = H.RunSettings(pools=("mean",), precision=precision, batch_size=args.batch_size,
                                 workers=args.workers, silent=True)

        def end_to_end(repeat: int) -> float:
            store = Path(tmp) / f"acts-{repeat}.zarr"
            H.run_hooks(first_batch, store, network, settings)
            return timed(lambda: H.run_hooks(folder, store, network, settings))

        bare_forward(fast_model, fast_batches[:1], precision)  # warm-up: oneDNN builds its kernels once
        naive_forward(naive_model, points, naive_batches[:1])
        rates: dict[str, list[float]] = {"end to end": [], "bare": [], "naive": []}
        for repeat in range(args.repeats):  # interleaved, so a burst of load hits all three alike
            rates["bare"].append(args.images / timed(lambda: bare_forward(fast_model, fast_batches, precision)))
            rates["end to end"].append(args.images / end_to_end(repeat))
            rates["naive"].append(args.images / timed(lambda: naive_forward(naive_model, points, naive_batches)))
            print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()), flush=True)

    best = {k: max(v) for k, v in rates.items()}
    print(f"\nimages/s (best of {args.repeats}): end to end {best['end to end']:.1f}, bare {precision} forward "
          f"{best['bare']:.1f}, naive fp32 {best['naive']:.1f}")
    print(f"end to end / bare forward = {best['end to end'] / best['bare']:.2f}  (target >= 0.85)")
    print(f"end to end / naive        = {best['end to end'] / best['naive']:.2f}  (target >= 3)")


if __name__ == "__main__":
    main()
