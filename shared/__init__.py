"""synthprobe: explain what a CNN has learned by showing it images made to order.

The package root maps to the repository's ``shared/`` folder; the command-line
tools live in ``synthprobe.tools`` (the ``tools/`` folder).
"""

__version__ = "0.1.0"


def library_versions(*packages: str) -> dict[str, str]:
    """synthprobe's version and the installed ``packages``' (from package metadata: nothing is imported)."""
    from importlib.metadata import version

    return {"synthprobe": __version__, **{name: version(name) for name in packages}}
