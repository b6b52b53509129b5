"""image-check: an independent judge's verdict on each generated image.

The notebook API: ``run_image_check(images, out, parse_judge("clip:..."), Params(...))`` reads the folder and the
checks so far, judges the images (``judge_images``) and writes checks.jsonl, rates.csv and summary.json
(``write_check_outputs``); ``read_checks`` (formats.image_checks) reads the verdicts back.
"""

from synthprobe.formats.image_checks import read_checks
from synthprobe.image_check.checks import (
    CheckResult,
    Judged,
    Params,
    Thresholds,
    judge_images,
    run_image_check,
    write_check_outputs,
)
from synthprobe.image_check.judges import parse_judge

__all__ = [
    "CheckResult",
    "Judged",
    "Params",
    "Thresholds",
    "judge_images",
    "parse_judge",
    "read_checks",
    "run_image_check",
    "write_check_outputs",
]
