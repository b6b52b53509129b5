"""Every CUDA path of synthprobe on tiny models built here, then the benchmarks: one command for a lent GPU.

    make gpu-check                      # or: .venv/bin/python bench/gpu_check.py [--quick] [--out FILE]

Each step prints one line ``PASS|FAIL|SKIP name: figure``; the run writes
bench/results/gpu-<date>.json (device, library versions, every figure).
Nothing is downloaded: the tiny SD3 pipeline comes from
synthprobe.tiny_models, the classifier is ResNet-50 with random weights at
64 px (ResNet-18 with ``--quick``). On CUDA: sd-generate with the transformer in 4-bit NF4
(bitsandbytes), in bf16, with --offload; cnn-hooks in bf16 channels-last
against CPU fp32 (cosine >= 0.999 per hook point); the ``cuda``-marked
tests; then both benchmarks on the GPU. Without CUDA the CUDA steps are
SKIP and the CPU parts run. Also: the tiny SDXL, FLUX and PixArt-Sigma pipelines
on the CPU and in bf16 on CUDA, sd-generate --compile on CUDA, and torch.compile
of an SD3 transformer against eager (bench_compile.py; on a CPU only a smoke run
with the aot_eager backend). Exits 1 if a step failed. ``--quick`` shrinks
everything to a smoke test (the test suite runs it). Benchmark steps
pass when they ran; whether a figure meets its aim is in the figure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the network, even by accident

import bench_cnn_hooks  # noqa: E402
import bench_compile  # noqa: E402
import bench_sd_generate  # noqa: E402
import torch  # noqa: E402
from gpu_check_steps import (  # noqa: E402
    CheckFailed,
    Context,
    check,
    compare_hooks,
    generate_bf16,
    generate_compiled,
    generate_cpu_fp32,
    generate_families,
    generate_nf4,
    generate_offload,
    tiny_models,
)

from synthprobe import library_versions  # noqa: E402
from synthprobe.common.files import error_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Sizes: a CUDA run must finish in under 5 minutes on 16 cores, a CPU one in about 2 (the benchmark scripts
# measure the CPU in earnest); --quick is a smoke test (ResNet-18: a store of ResNet-50's 182 hook points
# takes seconds to create on a CPU).
SIZES = {
    "cuda": {
        "classifier": "resnet50",
        "sd": {"images": 32, "size": 64, "steps": 4, "repeats": 3},
        "hooks": {"images": 512, "size": 1024, "batch_size": 16, "repeats": 2},
    },
    "cpu": {
        "classifier": "resnet50",
        "sd": {"images": 8, "size": 64, "steps": 4, "repeats": 2},
        "hooks": {"images": 32, "size": 1024, "batch_size": 16, "repeats": 1, "naive": False},
    },
    "quick": {
        "classifier": "resnet18",
        "sd": {"images": 4, "size": 32, "steps": 2, "repeats": 1},
        "hooks": {
            "images": 4,
            "size": 256,
            "batch_size": 2,
            "repeats": 1,
            "model": "resnet18",
            "naive": False,
            "image_size": 64,
        },
    },
}


@dataclass
class Step:
    name: str
    status: str  # PASS, FAIL or SKIP
    figure: str
    data: dict = field(default_factory=dict)
    seconds: float = 0.0


# ---- the steps that run the cuda tests and the benchmarks (the others: gpu_check_steps.py) -----------


def cuda_tests() -> tuple[str, dict]:
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "tests"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-2000:])
    check(done.returncode == 0, f"pytest -m cuda exited {done.returncode}: {summary}")
    return f"pytest -m cuda: {summary}", {"summary": summary}


def bench_compile_step(device: str, quick: bool) -> tuple[str, dict]:
    """torch.compile of an SD3 transformer against eager: inductor on a GPU; on a CPU a smoke run of the tiny
    shape with dynamo's aot_eager backend (inductor's code generation takes minutes on 2 cores)."""
    if device == "cuda":
        figures = bench_compile.run("cuda", layers=1 if quick else 4)
    else:
        figures = bench_compile.run("cpu", 1, 2, 3, bench_compile.TINY, backend="aot_eager", dtype="float32")
    return (
        f"{figures['backend']}, {figures['layers']} layers x {figures['shape']['heads']} heads, batch "
        f"{figures['batch']}: first call {figures['compile_seconds']:.1f} s; {figures['eager_images_per_s']:.2f} vs "
        f"{figures['compiled_images_per_s']:.2f} images/s at {bench_compile.STEPS} steps (eager vs compiled, "
        f"x{figures['speedup']:.2f}); max relative difference {figures['max_rel_diff']:.1e}"
    ), figures


def aim(value: float | None, target: float) -> str:
    if value is None:
        return f"not measured (the machine's load hid it; aim >= {target})"
    return f"{value:.2f} ({'meets' if value >= target else 'MISSES'} aim >= {target})"


def bench_generation(ctx: Context, device: str, sizes: dict) -> tuple[str, dict]:
    figures = bench_sd_generate.run(ctx.work, ctx.sd3, device=device, **sizes)
    target = 0.95 if device == "cuda" else 0.9
    ratios = ", ".join(f"batch {key.split('_')[1]} {aim(value['ratio'], target)}" for key, value in figures.items())
    return f"sd-generate / bare diffusers loop, images/s: {ratios}", figures


def bench_hooks(ctx: Context, device: str, sizes: dict) -> tuple[str, dict]:
    figures = bench_cnn_hooks.run(device=device, **sizes)
    bench_cnn_hooks.print_table(figures)
    store = figures["store"]
    return (
        f"end to end {bench_cnn_hooks.number(figures['end_to_end_images_per_s'])} img/s, ceiling "
        f"{figures['ceiling_images_per_s']:.1f} (bare {figures['bare_images_per_s']:.1f}, {figures['workers']} x "
        f"decode {figures['decode_images_per_s']:.1f}), end to end / ceiling "
        f"{aim(figures['end_to_end_over_ceiling'], 0.85)}; store {store['float32']['bytes_per_image'] / 1e3:.0f} kB "
        f"per image float32, {store['float16']['bytes_per_image'] / 1e3:.0f} kB float16"
    ), figures


# ---- the run ---------------------------------------------------------------------------------


def run_step(steps: list[Step], name: str, action: Callable[[], tuple[str, dict]], skip: str | None = None) -> None:
    started = time.perf_counter()
    if skip:
        step = Step(name, "SKIP", skip)
    else:
        try:
            figure, data = action()
            step = Step(name, "PASS", figure, data)
        except CheckFailed as exc:
            step = Step(name, "FAIL", str(exc))
        except Exception as exc:  # a step's crash is its FAIL line; the traceback goes to stderr for the record
            traceback.print_exc()
            step = Step(name, "FAIL", error_line(exc))
    step.seconds = round(time.perf_counter() - started, 1)
    steps.append(step)
    print(f"{step.status} {step.name}: {step.figure}", flush=True)


def device_name(cuda: bool) -> str:
    if cuda:
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores (no CUDA)"


def quiet_libraries() -> None:
    """diffusers and transformers log progress bars and notices on every load; the step lines are the output."""
    import diffusers
    import transformers

    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes for the benchmarks")
    parser.add_argument("--out", type=Path, help="the JSON file (default: bench/results/gpu-<date>.json)")
    args = parser.parse_args()
    quiet_libraries()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    sizes = SIZES["quick" if args.quick else device]
    no_cuda = None if cuda else "no CUDA GPU"
    if not cuda:
        print("No CUDA GPU here (torch.cuda.is_available() is False): CUDA steps are SKIP, the CPU parts run.")
    started = time.perf_counter()
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        os.environ["SYNTHPROBE_CACHE"] = str(Path(tmp) / "synthprobe-cache")  # the user's cache stays untouched
        ctx = Context(Path(tmp), cuda)
        run_step(steps, "tiny-models", lambda: tiny_models(ctx, sizes["classifier"]))
        built = None if ctx.sd3 is not None else "the tiny models were not built"
        run_step(steps, "generate-cpu-fp32", lambda: generate_cpu_fp32(ctx), built)
        run_step(steps, "generate-cpu-families", lambda: generate_families(ctx, "cpu"), built)
        run_step(steps, "generate-cuda-nf4", lambda: generate_nf4(ctx), no_cuda or built)
        run_step(steps, "generate-cuda-bf16", lambda: generate_bf16(ctx), no_cuda or built)
        run_step(
            steps,
            "generate-cuda-offload",
            lambda: generate_offload(ctx),
            no_cuda or built or (None if "cuda-bf16" in ctx.pixels else "bf16 generation failed"),
        )
        run_step(
            steps,
            "generate-cuda-families",
            lambda: generate_families(ctx, "cuda"),
            no_cuda or built or (None if "cpu-flux" in ctx.pixels else "the CPU family run failed"),
        )
        run_step(
            steps,
            "generate-cuda-compile",
            lambda: generate_compiled(ctx),
            no_cuda or built or (None if "cuda-bf16" in ctx.pixels else "bf16 generation failed"),
        )
        run_step(steps, "cnn-hooks-cpu-default", lambda: compare_hooks(ctx, "cpu-default", "cpu", None), built)
        run_step(
            steps, "cnn-hooks-cuda-bf16", lambda: compare_hooks(ctx, "cuda-bf16", "cuda", "bf16"), no_cuda or built
        )
        run_step(steps, "pytest-cuda", cuda_tests, no_cuda)
        run_step(steps, f"bench-sd-generate-{device}", lambda: bench_generation(ctx, device, sizes["sd"]), built)
        run_step(steps, f"bench-cnn-hooks-{device}", lambda: bench_hooks(ctx, device, sizes["hooks"]))
        run_step(steps, f"bench-compile-{device}", lambda: bench_compile_step(device, args.quick))
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": device_name(cuda),
        "cuda": cuda,
        "cuda_version": torch.version.cuda,
        "quick": args.quick,
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "python": platform.python_version(),
        "versions": library_versions(
            "torch", "torchvision", "diffusers", "transformers", "accelerate", "bitsandbytes", "zarr", "numpy", "pillow"
        ),
        "steps": [asdict(step) for step in steps],
    }
    out = args.out or REPO / "bench" / "results" / f"gpu-{datetime.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    failed = [step.name for step in steps if step.status == "FAIL"]
    print(
        f"{len(steps) - len(failed)} of {len(steps)} steps passed or skipped in {result['seconds']:.0f} s on "
        f"{result['device']}; results in {out}" + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
