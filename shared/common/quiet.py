"""Third-party output kept out of the tools' logs.

Libraries' own progress bars are off (each stage shows one bar of its own, on a
terminal only; a model download keeps the hub's bars there); their warnings
that repeat per batch or per run are dropped, and the stage that causes them
says it once in its own words (for example how many prompts CLIP truncates).
``--silent`` leaves only their errors.
"""

from __future__ import annotations

import logging
import os
import sys

LIBRARIES = ("diffusers", "transformers", "bitsandbytes", "accelerate", "huggingface_hub", "timm")
# Warnings that repeat per batch or per process; the message starts are stable across releases.
REPEATED = (
    "Token indices sequence length is longer than",  # transformers' tokenizer, once per long prompt
    "The following part of your input was truncated",  # diffusers, once per CLIP encoder and batch
    "Failed to load CPU gemm_4bit_forward",  # bitsandbytes on every CPU import; quantization is CUDA-only here
)


class DropRepeated(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(REPEATED)


DROP_REPEATED = DropRepeated()


def quiet_libraries(silent: bool) -> None:
    """Set before the libraries load (their log levels come from the environment then) and after."""
    level = logging.ERROR if silent else logging.WARNING
    if silent or not sys.stderr.isatty():  # a first download (many GB, once) keeps its bars on a terminal
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    for variable in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ[variable] = logging.getLevelName(level).lower()
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(level)
    for handler in logging.getLogger().handlers:  # bitsandbytes and others log through the root logger
        handler.addFilter(DROP_REPEATED)
    quiet_loaded_libraries()


def quiet_loaded_libraries() -> None:
    """diffusers and transformers log through handlers of their own and draw their own bars: call after importing
    them."""
    for name in ("diffusers", "transformers"):
        if name in sys.modules:
            for handler in logging.getLogger(name).handlers:
                handler.addFilter(DROP_REPEATED)
            sys.modules[name].utils.logging.disable_progress_bar()  # transformers' turns the hub's off too
    if "huggingface_hub" in sys.modules and os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") != "1":
        sys.modules["huggingface_hub"].utils.enable_progress_bars()  # downloads on a terminal keep theirs
