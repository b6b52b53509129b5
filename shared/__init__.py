"""synthprobe: explain what a CNN has learned by showing it images made to order.

The package root maps to the repository's ``shared/`` folder; the command-line
tools live in ``synthprobe.tools`` (the ``tools/`` folder).
"""

__version__ = "0.1.0"
