"""Keep freed memory in the process for loops that allocate the same large temporaries again and again.

glibc's malloc serves blocks above a threshold (128 KiB, raised on the fly up to 32 MiB) with mmap and trims the
heap's free top above another; a loop whose temporaries cross those lines maps and unmaps fresh pages every turn and
pays a page fault per 4 KiB touched. separability's relabellings (a few MiB of temporaries a batch) spent more than
half their time so on narrow layers (0.39 vs 0.16 ms a relabelling, measured). Fixing both thresholds keeps those
pages in the process; the peak memory is unchanged, since the same temporaries are alive at the peak either way.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest on 64-bit; bigger blocks (a store's arrays) are still mapped apart
TRIM_THRESHOLD = 256 * 2**20


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed blocks of up to 32 MiB; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
