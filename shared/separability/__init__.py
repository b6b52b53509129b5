"""separability: per-layer concept separability and per-channel concept statistics.

In a notebook: ``inputs = read(store, Params())``, ``result = compute(inputs, params)`` (or ``analyse(store,
params)`` for both), ``write_outputs(result, params, store, out)``.
"""

from synthprobe.separability.analysis import Params, Result, analyse, compute, read
from synthprobe.separability.outputs import write_outputs

__all__ = ["Params", "Result", "analyse", "compute", "read", "write_outputs"]
