"""What the sd-generate test modules share: prompt records, the fast options, the tool as a subprocess."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from synthprobe.formats.prompts import PromptRecord
from synthprobe.sd_generate.run import run_generation

FAST = ["--size", "32", "--steps", "2", "--quantize", "none", "--silent"]


def make_records(count: int, start: int = 0) -> list[PromptRecord]:
    """Records ``start`` .. ``start + count - 1`` over five subjects, every fourth with a negative prompt."""
    subjects = ["bee", "frog", "guitar", "strawberry", "airplane"]
    return [
        PromptRecord(
            id=f"{subjects[i % 5]}.n.01-{i:03d}",
            synset=f"{subjects[i % 5]}.n.01",
            lemma=subjects[i % 5],
            group="concept",
            target=f"{subjects[i % 5]}.n.01",
            prompt=f"a photo of a {subjects[i % 5]}, view {i}",
            seed=1000 + i,
            negative_prompt="blurry" if i % 4 == 3 else None,
        )
        for i in range(start, start + count)
    ]


def read_rows(path: Path) -> list[dict]:
    """The rows of an images.jsonl."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def run_in_process(records, settings, cache, out, pipeline):
    """sd-generate's library path with an already loaded pipeline."""
    return run_generation(records, settings, cache, out, build_pipeline=lambda s: pipeline, silent=True)


def tool_command(prompt_path, out, model, cache, *extra):
    """sd-generate as a subprocess, with the fast options."""
    return [
        sys.executable,
        "-m",
        "synthprobe.tools.sd_generate",
        str(prompt_path),
        "--out",
        str(out),
        "--model",
        str(model),
        "--cache",
        str(cache),
        *FAST,
        *map(str, extra),
    ]


def subprocess_env():
    """One thread (a tiny pipeline runs fastest so) and no network."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def failing_pipeline(pipeline):
    """The tiny pipeline, except that 'boom' prompts raise (like an OOM) and 'nan' prompts give NaN pixels."""

    def pipe(**kwargs):
        if any("boom" in prompt for prompt in kwargs["prompt"]):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")
        output = pipeline(**kwargs)
        for index, prompt in enumerate(kwargs["prompt"]):
            if "nan" in prompt:
                output.images[index][0, 0, 0] = np.nan
        return output

    return pipe
