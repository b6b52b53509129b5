"""Benchmark sd-generate on Dask: images/s with 1 and 2 local worker processes (tiny SD3, nothing downloaded).

Each worker runs one torch thread. Prints images/s of one process without Dask (one torch thread), of
local:1 and of local:2, the ratio local:2 / local:1 (aim >= 1.6 on 2 free cores), and the per-task
overhead: milliseconds per task of tasks whose images are all cached (one cache lookup each), run one
after another on one worker. Pipelines are loaded before the clock starts.
Usage: python bench/bench_dask.py [--records 48] [--size 64] [--steps 4] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from synthprobe.cluster import DaskEngine, worker_model
from synthprobe.formats.image_cache import ImageCache
from synthprobe.formats.prompts import PromptRecord
from synthprobe.sd import run
from synthprobe.sd.pipeline import load_pipeline
from synthprobe.sd.settings import resolve_settings
from synthprobe.tiny_models import save_tiny_sd3


def records(count: int, first_seed: int) -> list[PromptRecord]:
    return [
        PromptRecord(
            id=f"bee.n.01-{first_seed + i:05d}",
            synset="bee.n.01",
            lemma="bee",
            group="concept",
            target="bee.n.01",
            prompt=f"a photo of a bee, number {i}",
            seed=first_seed + i,
        )
        for i in range(count)
    ]


def load_once(settings) -> None:
    """On a worker: build its pipeline now, so that the timed run measures generation only."""
    worker_model(load_pipeline, settings)


def setup(work: Path, model: Path, args, first_seed: int):
    """Settings, an empty cache and fresh records (new seeds) for one measurement."""
    cache = ImageCache(work / f"cache-{first_seed}")
    settings = resolve_settings(
        model=str(model),
        revision=None,
        steps=args.steps,
        guidance=3.5,
        size=str(args.size),
        batch_size=1,
        device="cpu",
        dtype="float32",
        quantize="none",
        offload=False,
        cache=cache,
    )
    return settings, cache, records(args.records, first_seed), work / f"out-{first_seed}"


def images_per_second(settings, cache, batch, out: Path, engine) -> float:
    if engine is None:
        pipe = load_pipeline(settings)
        build = lambda s: pipe
    else:
        engine.client.run(load_once, settings)
        build = load_pipeline
    started = time.perf_counter()
    result = run.run_generation(batch, settings, cache, out, build_pipeline=build, silent=True, engine=engine)
    seconds = time.perf_counter() - started
    assert result.generated == len(batch) and not result.failed
    return len(batch) / seconds


def task_overhead_ms(settings, cache, batch, out: Path, engine) -> float:
    """Milliseconds per task of one record whose image is cached: what a task costs beyond its work."""
    tasks = [
        ([planned], settings, cache.root.resolve(), out.resolve(), load_pipeline)
        for planned in run.plan(batch, settings, cache)
    ]
    started = time.perf_counter()
    list(engine.run_tasks(run.generate_task, tasks, [1] * len(tasks), desc="cached", unit="task", silent=True))
    return (time.perf_counter() - started) / len(tasks) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=48)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="Also write the figures to this JSON file.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    figures = {"records": args.records, "size": args.size, "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = save_tiny_sd3(work / "tiny-sd3")
        figures["one_process_images_per_s"] = images_per_second(*setup(work, model, args, 0), None)
        for workers in (1, 2):
            engine = DaskEngine(f"local:{workers}")
            try:
                engine.client.wait_for_workers(workers)
                run_setup = setup(work, model, args, 1000 * workers)
                figures[f"local_{workers}_images_per_s"] = images_per_second(*run_setup, engine)
                if workers == 1:  # one worker runs the tasks one after another
                    figures["task_overhead_ms"] = task_overhead_ms(*run_setup, engine)
            finally:
                engine.close()
    figures["ratio_2_to_1"] = figures["local_2_images_per_s"] / figures["local_1_images_per_s"]
    print(f"one process, 1 thread : {figures['one_process_images_per_s']:.1f} images/s")
    print(f"local:1               : {figures['local_1_images_per_s']:.1f} images/s")
    print(f"local:2               : {figures['local_2_images_per_s']:.1f} images/s")
    print(f"ratio local:2/local:1 : {figures['ratio_2_to_1']:.2f} (aim >= 1.6)")
    print(f"per-task overhead     : {figures['task_overhead_ms']:.1f} ms (a task of one cached record, one worker)")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
