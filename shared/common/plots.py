"""Figures shared by the analyses: pyplot without a display, PNGs written atomically."""

from __future__ import annotations

import io
from pathlib import Path

from synthprobe.common.files import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the Agg backend, so figures render on headless machines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path) -> None:
    """Write ``fig`` as a PNG (atomically: no half-written figure) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
