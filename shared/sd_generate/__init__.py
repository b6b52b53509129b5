"""sd-generate: prompt records to images through a diffusers pipeline and the image cache.

The notebook API: ``generate(Selection(prompts), out, Params(...))`` reads the records, generates what the cache
lacks and writes images.jsonl and run.json; ``plan_run`` lists what a run would do. ``run_generation`` is the
compute step alone (records and resolved settings in, rows out).
"""

from synthprobe.sd_generate.run import RunResult, run_generation
from synthprobe.sd_generate.settings import Params, ResolvedParams, resolve_settings
from synthprobe.sd_generate.stage import Generation, Selection, generate, plan_run

__all__ = [
    "Generation",
    "Params",
    "ResolvedParams",
    "RunResult",
    "Selection",
    "generate",
    "plan_run",
    "resolve_settings",
    "run_generation",
]
