"""report: one HTML page from the analysis folders.

The notebook API: ``write_report(out, separability_dirs=[...], bias_dirs=[...], ...)``, or its steps
``read_inputs`` -> ``build_context`` -> ``render`` -> ``write_page``; ``load_analysis`` reads one analysis folder.
"""

from synthprobe.report.data import Analysis, Table, load_analysis
from synthprobe.report.page import ReportInputs, build_context, read_inputs, render, write_page, write_report

__all__ = [
    "Analysis",
    "ReportInputs",
    "Table",
    "build_context",
    "load_analysis",
    "read_inputs",
    "render",
    "write_page",
    "write_report",
]
