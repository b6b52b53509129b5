"""Benchmark sd-generate on the tiny SD3 pipeline (nothing is downloaded).

Prints (a) seconds per record for a fully cached 10,000-record rerun of the
real command (a subprocess, Python start-up included), and (b) the ratio of
sd-generate's throughput to a bare diffusers loop (pipe(...) then
image.save()) on the same loaded pipeline, prompts and seeds, in the same run
(target >= 0.9). Usage: python bench/bench_sd_generate.py [--records 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from synthprobe import generate as G
from synthprobe.image_cache import ImageCache, cache_key
from synthprobe.records import PromptRecord, write_prompts
from synthprobe.tiny_models import save_tiny_sd3


def records(count: int) -> list[PromptRecord]:
    return [PromptRecord(id=f"bee.n.01-{i:05d}", synset="bee.n.01", lemma="bee", group="concept", target="bee.n.01",
                         prompt=f"a photo of a bee, number {i}", seed=i) for i in range(count)]


def cached_rerun(work: Path, model: Path, count: int) -> float:
    """Fill the cache for ``count`` records (one small PNG each), then time the real command on them."""
    cache = ImageCache(work / "cache")
    prompts = work / "many.jsonl"
    write_prompts(prompts, records(count))
    settings = G.resolve_settings(model=str(model), revision=None, steps=2, guidance=3.5, size="32", batch_size=1,
                                  device="cpu", dtype="auto", quantize="none", offload=False, cache=cache)
    png = G.png_bytes(torch.zeros(32, 32, 3, dtype=torch.uint8).numpy(), {"prompt": "bench"})
    for record in records(count):
        fields = settings.key_fields(record)
        cache.store(cache_key(fields), png, fields)
    command = [sys.executable, "-m", "synthprobe.tools.sd_generate", str(prompts), "--out", str(work / "many-out"),
               "--model", str(model), "--cache", str(cache.root), "--size", "32", "--steps", "2", "--device", "cpu",
               "--quantize", "none", "--silent"]
    for attempt in ("first link pass", "rerun"):  # the first run also links the output folder
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
    summary = json.loads((work / "many-out" / "run.json").read_text())["summary"]
    assert summary["cached"] == count and summary["generated"] == 0, summary
    return seconds


def bare_loop(pipe, batch: list[PromptRecord], out: Path, size: int, steps: int) -> None:
    for start in range(0, len(batch), 4):
        chunk = batch[start:start + 4]
        images = pipe(prompt=[r.prompt for r in chunk], num_inference_steps=steps, guidance_scale=3.5, width=size,
                      height=size, generator=[torch.Generator("cpu").manual_seed(r.seed) for r in chunk]).images
        for record, image in zip(chunk, images):
            image.save(out / f"{record.id}.png")


def throughput_ratio(work: Path, model: Path, count: int, size: int, steps: int, repeats: int) -> tuple[tuple, tuple]:
    """Best-of-``repeats`` (wall, CPU) seconds of the bare loop and of sd-generate (empty cache each time)."""
    batch = records(count)
    settings = G.resolve_settings(model=str(model), revision=None, steps=steps, guidance=3.5, size=str(size),
                                  batch_size=4, device="cpu", dtype="auto", quantize="none", offload=False,
                                  cache=ImageCache(work / "unused"))
    pipe = G.load_pipeline(settings)
    bare_loop(pipe, batch[:4], Path(tempfile.mkdtemp(dir=work)), size, steps)  # warm-up
    bare, ours = [], []
    for repeat in range(repeats):  # alternate which goes first: the machine's load drifts
        for contender in ("bare", "ours") if repeat % 2 == 0 else ("ours", "bare"):
            out = Path(tempfile.mkdtemp(dir=work))
            start, start_cpu = time.perf_counter(), time.process_time()
            if contender == "bare":
                bare_loop(pipe, batch, out, size, steps)
                bare.append((time.perf_counter() - start, time.process_time() - start_cpu))
            else:
                result = G.run_generation(batch, settings, ImageCache(Path(tempfile.mkdtemp(dir=work))), out,
                                          build_pipeline=lambda s: pipe, silent=True)
                ours.append((time.perf_counter() - start, time.process_time() - start_cpu))
                assert result.generated == count
    return tuple(map(min, zip(*bare))), tuple(map(min, zip(*ours)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000, help="records in the cached rerun")
    parser.add_argument("--images", type=int, default=96, help="images per throughput run")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SYNTHPROBE_CACHE"] = str(work / "home-cache")
        model = save_tiny_sd3(work / "tiny-sd3")
        seconds = cached_rerun(work, model, args.records)
        print(f"(a) fully cached rerun of {args.records} records: {seconds:.2f} s, "
              f"{seconds / args.records * 1000:.3f} ms per record (command start-up included)")
        (bare, bare_cpu), (ours, ours_cpu) = throughput_ratio(work, model, args.images, args.size, args.steps, args.repeats)
        print(f"(b) {args.images} images {args.size}px {args.steps} steps, batch 4, torch threads {torch.get_num_threads()}, "
              f"best of {args.repeats}: bare diffusers loop {args.images / bare:.2f} img/s, sd-generate {args.images / ours:.2f} img/s, "
              f"ratio {bare / ours:.3f} (target >= 0.9); by CPU time {bare_cpu / ours_cpu:.3f}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
