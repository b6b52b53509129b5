"""Benchmark sd-generate on Dask: images/s with 1 and 2 local worker processes (tiny SD3, nothing downloaded).

Each worker runs one torch thread. Prints images/s of one process without Dask (one torch thread), of
local:1 and of local:2, the ratio local:2 / local:1 (aim >= 1.6 on 2 free cores), and the per-task
overhead: milliseconds per task of tasks whose images are all cached (one cache lookup each), run one
after another on one worker. Pipelines are loaded before the clock starts; each figure is the best of
--rounds rounds that alternate the set-ups.
Usage: python bench/bench_dask.py [--records 48] [--size 64] [--steps 4] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import torch
from bench_sd_generate import records

from synthprobe.common.cluster import DaskEngine, worker_model
from synthprobe.formats.image_cache import ImageCache
from synthprobe.sd_generate import run
from synthprobe.sd_generate.pipeline import load_pipeline
from synthprobe.tiny_models import save_tiny_sd3, tiny_sd3_settings


def load_once(settings) -> None:
    """On a worker: build its pipeline now, so that the timed run measures generation only."""
    worker_model(load_pipeline, settings)


def setup(work: Path, model: Path, args, name: str):
    """The resolved parameters, an empty cache and the records for one measurement."""
    cache = ImageCache(work / f"cache-{name}")
    settings = tiny_sd3_settings(model, cache, steps=args.steps, size=(args.size, args.size), precision="fp32")
    return settings, cache, records(args.records), work / f"out-{name}"


def cpu_seconds(engine) -> float:
    """CPU time of this process and of every worker process so far."""
    workers = engine.client.run(time.process_time) if engine is not None else {}
    return time.process_time() + sum(workers.values())


def images_per_second(settings, cache, batch, out: Path, engine) -> tuple[float, float]:
    """Images per second of wall time, and per CPU second of every process of the run."""
    if engine is None:
        pipe = load_pipeline(settings)
        build = lambda s: pipe
    else:
        engine.client.run(load_once, settings)
        build = load_pipeline
    cpu = cpu_seconds(engine)
    started = time.perf_counter()
    result = run.run_generation(batch, settings, cache, out, build_pipeline=build, silent=True, engine=engine)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(engine) - cpu
    assert result.generated == len(batch) and not result.failed
    return len(batch) / seconds, len(batch) / cpu


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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="Also write the figures to this JSON file.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    figures = {"records": args.records, "size": args.size, "steps": args.steps, "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        model = save_tiny_sd3(work / "tiny-sd3")
        engines = {None: None}
        for workers in (1, 2):
            engines[workers] = DaskEngine(f"local:{workers}")
            stack.callback(engines[workers].close)
            engines[workers].client.wait_for_workers(workers)
            engines[workers].client.run(torch.set_num_threads, 1)  # the same one thread per process everywhere
        best: dict = {}
        # Rounds alternate the three set-ups, so that load from other jobs reaches each alike; best of the rounds.
        for round_ in range(args.rounds):
            for workers, engine in engines.items():
                rate = images_per_second(*setup(work, model, args, f"{workers}-{round_}"), engine)
                best[workers] = max(best.get(workers, (0.0, 0.0)), rate)
        for workers, name in ((None, "one_process"), (1, "local_1"), (2, "local_2")):
            figures[f"{name}_images_per_s"], figures[f"{name}_images_per_cpu_s"] = best[workers]
        # One worker runs these tasks one after another: their time is the overhead.
        figures["task_overhead_ms"] = task_overhead_ms(*setup(work, model, args, "1-0"), engines[1])
    figures["ratio_2_to_1"] = figures["local_2_images_per_s"] / figures["local_1_images_per_s"]
    for name, label in (("one_process", "one process, 1 thread"), ("local_1", "local:1"), ("local_2", "local:2")):
        rate, per_cpu = figures[f"{name}_images_per_s"], figures[f"{name}_images_per_cpu_s"]
        print(f"{label:22}: {rate:.1f} images/s, {per_cpu:.1f} images per CPU second")
    print(f"ratio local:2/local:1 : {figures['ratio_2_to_1']:.2f} (aim >= 1.6)")
    print(f"per-task overhead     : {figures['task_overhead_ms']:.1f} ms (a task of one cached record, one worker)")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
