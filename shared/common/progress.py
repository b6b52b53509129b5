"""The progress bar every stage shows: quiet with ``--silent`` or off a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "", silent: bool = False, unit: str = "it"):
    """A tqdm bar that is quiet with ``--silent`` or when stderr is not a terminal."""
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, unit=unit, disable=silent or not sys.stderr.isatty(), dynamic_ncols=True)
