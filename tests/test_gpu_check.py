"""bench/gpu_check.py, the one command for a lent GPU, must not rot where there is none: its CPU path runs here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
CUDA_STEPS = {
    "generate-cuda-nf4",
    "generate-cuda-bf16",
    "generate-cuda-offload",
    "generate-cuda-families",
    "generate-cuda-compile",
    "cnn-hooks-cuda-bf16",
    "pytest-cuda",
}


@pytest.mark.slow
def test_quick_run_passes_the_cpu_steps_and_writes_the_json(tmp_path):
    """The CPU path even on a GPU machine (CUDA hidden): the CUDA steps take minutes and make gpu-check's own run."""
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=360,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if re.match(r"(PASS|FAIL|SKIP) ", line)]
    result = json.loads(out.read_text())
    steps = {step["name"]: step for step in result["steps"]}
    assert len(steps) == 14 and CUDA_STEPS < set(steps)
    assert [f"{s['status']} {s['name']}: {s['figure']}" for s in result["steps"]] == lines
    assert (
        result["cuda"] is False
        and result["device"]
        and {"torch", "diffusers", "bitsandbytes"} <= set(result["versions"])
    )
    for name, step in steps.items():
        assert step["status"] == ("SKIP" if name in CUDA_STEPS else "PASS"), (name, step["figure"])
    assert done.stdout.splitlines()[0].startswith("No CUDA GPU here")
    assert steps["cnn-hooks-cpu-default"]["data"]["min_cosine"] >= 0.999
    assert set(steps["generate-cpu-families"]["data"]) == {"sdxl", "flux", "pixart-sigma"}
    compiled = steps["bench-compile-cpu"]["data"]
    assert compiled["backend"] == "aot_eager" and compiled["compile_seconds"] > 0 and compiled["max_rel_diff"] < 1e-5
    generation = steps["bench-sd-generate-cpu"]["data"]
    assert set(generation) == {"batch_1", "batch_4"} and all(v["ratio"] > 0 for v in generation.values())
    hooks = steps["bench-cnn-hooks-cpu"]["data"]
    assert hooks["ceiling_images_per_s"] == min(
        hooks["bare_images_per_s"], hooks["workers"] * hooks["decode_images_per_s"]
    )
    assert hooks["whole_run_images_per_s"] > 0 and hooks["store"]["float16"]["bytes_per_image"] > 0
    steady = hooks["end_to_end_images_per_s"]  # None where the machine's load hid the marginal rate
    assert steady is None or hooks["end_to_end_over_ceiling"] == pytest.approx(steady / hooks["ceiling_images_per_s"])
