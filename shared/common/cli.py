"""Click building blocks shared by the tools: option bundles, errors, comma lists.

The only modules that import click are this one and ``options``; the library modules stay usable without it.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable

import click

from synthprobe.common.files import InputError, error_line


def run_guarded(func: Callable) -> Callable:
    """Turn the library's InputError (and OS, decoding and JSON errors) into one-line click errors.

    Readers name the file in their own InputError; the fallbacks here keep any error they miss to one line.
    Path options leave existence and file-or-folder checks to the readers: click's own checks print
    three lines (usage, hint, error).
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # disk full, permissions, a vanished file: say which file
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None
        except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, zarr's checksum mismatch, ...
            if not isinstance(exc, (UnicodeDecodeError, json.JSONDecodeError)) and "checksum" not in str(exc):
                raise
            raise click.ClickException(error_line(exc)) from None
        except RuntimeError as exc:
            if type(exc).__name__ != "OutOfMemoryError":  # torch's CUDA OOM, without importing torch here
                raise
            raise click.ClickException(
                "out of GPU memory; try a smaller --batch-size (sd-generate: also --offload or --quantize 4bit)"
            ) from None
        except KeyboardInterrupt:
            click.echo("Interrupted; rerun the same command to resume.", err=True)
            sys.exit(130)

    return wrapper


def silent_option(func: Callable) -> Callable:
    """``--silent``: no progress bar and no info log lines (and only errors from diffusers, transformers,
    bitsandbytes)."""

    def callback(ctx, param, value):
        from synthprobe.common.quiet import quiet_libraries

        logging.basicConfig(format="%(message)s", level=logging.WARNING if value else logging.INFO)
        quiet_libraries(silent=value)
        return value

    return click.option(
        "--silent",
        is_flag=True,
        callback=callback,
        help="No progress bar and no log lines; libraries report errors only.",
    )(func)


def seed_option(default: int = 0) -> Callable:
    return click.option("--seed", type=int, default=default, show_default=True, help="Seed for every random choice.")


def comma_list(value: str | None) -> list[str]:
    """Split a comma list, dropping blanks."""
    if not value:
        return []
    return [item.strip() for item in value.split(",") if item.strip()]
