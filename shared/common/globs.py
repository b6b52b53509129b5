"""Choosing names (hook points, store layers) by glob patterns, as ``--layers`` does."""

from __future__ import annotations

from synthprobe.common.files import InputError


def select_by_globs(names: list[str], patterns, what: str = "hook point", more: str = "") -> list[str]:
    """The names matching any glob, in their order; a pattern that matches nothing is an error.

    The error suggests close names; ``more`` is appended to it (e.g. where to see them all).
    """
    import difflib
    from fnmatch import fnmatchcase

    if not patterns:
        return list(names)
    for pattern in patterns:
        if not any(fnmatchcase(name, pattern) for name in names):
            close = difflib.get_close_matches(pattern, names, n=3)
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise InputError(f"--layers {pattern!r} matches no {what}{hint}{more}")
    return [name for name in names if any(fnmatchcase(name, pattern) for pattern in patterns)]
