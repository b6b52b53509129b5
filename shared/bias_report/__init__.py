"""bias-report: the classifier's confidence on each bias group.

A notebook runs the stage in its three steps::

    from synthprobe.bias_report import Params, analyse, read_inputs, write

    params = Params(classes=("bee", "frog"))
    result = analyse(read_inputs("acts.zarr", params), params)
    write(result, "bias/")
"""

from synthprobe.bias_report.audit import Result, analyse
from synthprobe.bias_report.outputs import write
from synthprobe.bias_report.read import Inputs, Params, read_inputs

__all__ = ["Inputs", "Params", "Result", "analyse", "read_inputs", "write"]
