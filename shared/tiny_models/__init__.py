"""Tiny models built from configs alone, for tests, the benchmarks and the offline demo: a text-to-image pipeline
per generator family (generators.py) and the judges of image-check (judges.py).

Usage: ``python -m synthprobe.tiny_models [--family sd3|sdxl|flux|pixart-sigma] DIR`` writes a tiny pipeline (SD3
by default); ``--clip DIR`` writes the tiny CLIP judge of ``image-check``, ``--owlv2 DIR`` its tiny detector judge.
"""

from synthprobe.tiny_models.generators import (
    BUILDERS,
    TINY_SD3_MULTIPLE,
    build_tiny_sd3_pipeline,
    save_tiny_pipeline,
    save_tiny_sd3,
    tiny_sd3_settings,
)
from synthprobe.tiny_models.judges import build_tiny_clip, build_tiny_owlv2, save_tiny_clip, save_tiny_model
from synthprobe.tiny_models.text import tiny_clip_tokenizer

__all__ = [
    "BUILDERS",
    "TINY_SD3_MULTIPLE",
    "build_tiny_clip",
    "build_tiny_owlv2",
    "build_tiny_sd3_pipeline",
    "save_tiny_clip",
    "save_tiny_model",
    "save_tiny_pipeline",
    "save_tiny_sd3",
    "tiny_clip_tokenizer",
    "tiny_sd3_settings",
]
