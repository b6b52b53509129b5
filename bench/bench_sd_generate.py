"""Benchmark sd-generate on the tiny SD3 pipeline (nothing is downloaded).

Prints (a) seconds per record for a fully cached 10,000-record rerun of the
real command (a subprocess, Python start-up included), and (b) the ratio of
sd-generate's throughput to a bare diffusers loop (pipe(...) then
image.save()) on the same loaded pipeline, prompts and seeds, in the same run
at batch sizes 1 and 4 (target >= 0.9 on the CPU, >= 0.95 on a GPU).
Usage: python bench/bench_sd_generate.py [--records 10000] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from synthprobe.formats.image_cache import ImageCache, cache_key
from synthprobe.formats.prompts import PromptRecord, write_prompts
from synthprobe.sd_generate.pipeline import load_pipeline
from synthprobe.sd_generate.run import png_bytes, run_generation
from synthprobe.tiny_models import save_tiny_sd3, tiny_sd3_settings


def records(count: int) -> list[PromptRecord]:
    return [
        PromptRecord(
            id=f"bee.n.01-{i:05d}",
            synset="bee.n.01",
            lemma="bee",
            group="concept",
            target="bee.n.01",
            prompt=f"a photo of a bee, number {i}",
            seed=i,
        )
        for i in range(count)
    ]


def cached_rerun(work: Path, model: Path, count: int) -> float:
    """Fill the cache for ``count`` records (one small PNG each), then time the real command on them."""
    cache = ImageCache(work / "cache")
    prompts = work / "many.jsonl"
    write_prompts(prompts, records(count))
    settings = tiny_sd3_settings(model, cache)
    png = png_bytes(torch.zeros(32, 32, 3, dtype=torch.uint8).numpy(), {"prompt": "bench"})
    for record in records(count):
        fields = settings.key_fields(record)
        cache.store(cache_key(fields), png, fields)
    command = [
        sys.executable,
        "-m",
        "synthprobe.tools.sd_generate",
        str(prompts),
        "--out",
        str(work / "many-out"),
        "--model",
        str(model),
        "--cache",
        str(cache.root),
        "--size",
        "32",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--quantize",
        "none",
        "--silent",
    ]
    for _run in ("first link pass", "rerun"):  # the first run also links the output folder
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
    summary = json.loads((work / "many-out" / "run.json").read_text())["summary"]
    assert summary["cached"] == count and summary["generated"] == 0, summary
    return seconds


def bare_loop(pipe, batch: list[PromptRecord], out: Path, size: int, steps: int, batch_size: int) -> None:
    for start in range(0, len(batch), batch_size):
        chunk = batch[start : start + batch_size]
        images = pipe(
            prompt=[r.prompt for r in chunk],
            num_inference_steps=steps,
            guidance_scale=3.5,
            width=size,
            height=size,
            generator=[torch.Generator("cpu").manual_seed(r.seed) for r in chunk],
        ).images
        for record, image in zip(chunk, images):
            image.save(out / f"{record.id}.png")


def timed_run(function, device: str) -> tuple[float, float]:
    """(wall, CPU) seconds of ``function()``, waiting for the GPU's queue to drain."""
    start, start_cpu = time.perf_counter(), time.process_time()
    function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - start_cpu


def throughput_ratio(
    work: Path, model: Path, count: int, size: int, steps: int, repeats: int, batch_size: int, device: str = "cpu"
) -> tuple[tuple, tuple]:
    """Best-of-``repeats`` (wall, CPU) seconds of the bare loop and of sd-generate (empty cache each time)."""
    batch = records(count)
    settings = tiny_sd3_settings(
        model, ImageCache(work / "unused"), steps=steps, size=(size, size), batch_size=batch_size, device=device
    )
    pipe = load_pipeline(settings)
    bare_loop(pipe, batch[:batch_size], Path(tempfile.mkdtemp(dir=work)), size, steps, batch_size)  # warm-up
    bare, ours = [], []

    def generate(out: Path) -> None:
        result = run_generation(
            batch,
            settings,
            ImageCache(Path(tempfile.mkdtemp(dir=work))),
            out,
            build_pipeline=lambda s: pipe,
            silent=True,
        )
        assert result.generated == count, result.summary()

    for repeat in range(repeats):  # alternate which goes first: the machine's load drifts
        for contender in ("bare", "ours") if repeat % 2 == 0 else ("ours", "bare"):
            out = Path(tempfile.mkdtemp(dir=work))
            if contender == "bare":
                bare.append(timed_run(partial(bare_loop, pipe, batch, out, size, steps, batch_size), device))
            else:
                ours.append(timed_run(partial(generate, out), device))
    return tuple(map(min, zip(*bare))), tuple(map(min, zip(*ours)))


def run(
    work: Path,
    model: Path,
    images: int = 96,
    size: int = 64,
    steps: int = 4,
    repeats: int = 5,
    batch_sizes: tuple[int, ...] = (1, 4),
    device: str = "cpu",
) -> dict:
    """sd-generate against the bare loop at each batch size; prints one line each."""
    figures = {}
    for batch_size in batch_sizes:
        (bare, bare_cpu), (ours, ours_cpu) = throughput_ratio(
            work, model, images, size, steps, repeats, batch_size, device
        )
        figures[f"batch_{batch_size}"] = {
            "bare_images_per_s": images / bare,
            "sd_generate_images_per_s": images / ours,
            "ratio": bare / ours,
            "ratio_by_cpu_time": bare_cpu / ours_cpu,
        }
        print(
            f"batch {batch_size}: {images} images {size}px {steps} steps on {device}, best of {repeats}: "
            f"bare diffusers "
            f"loop {images / bare:.2f} img/s, sd-generate {images / ours:.2f} img/s, ratio {bare / ours:.3f} "
            f"(target >= 0.9 on the CPU, 0.95 on a GPU); by CPU time {bare_cpu / ours_cpu:.3f}",
            flush=True,
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000, help="records in the cached rerun (0: skip it)")
    parser.add_argument("--images", type=int, default=96, help="images per throughput run")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 there, as sd-generate's --precision auto)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SYNTHPROBE_CACHE"] = str(work / "home-cache")
        model = save_tiny_sd3(work / "tiny-sd3")
        if args.records:
            seconds = cached_rerun(work, model, args.records)
            print(
                f"(a) fully cached rerun of {args.records} records: {seconds:.2f} s, "
                f"{seconds / args.records * 1000:.3f} ms per record (command start-up included)"
            )
        print(f"(b) sd-generate vs a bare diffusers loop, torch threads {torch.get_num_threads()}:")
        run(work, model, args.images, args.size, args.steps, args.repeats, device=args.device)
        print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
