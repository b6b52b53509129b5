"""Option bundles and parameter types used by more than one tool; docs/cli.md states the conventions they keep."""

from __future__ import annotations

import contextlib
import functools
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from synthprobe.common.cli import comma_list
from synthprobe.common.files import InputError
from synthprobe.common.locks import LOCK_FILE, exclusive_writer
from synthprobe.common.units import UNITS


class CommaList(click.ParamType):
    """One occurrence of a list option, split at commas; ``list_option`` joins the occurrences.

    With ``choices`` every item must be one of them (else a usage error naming the option and the value).
    """

    name = "list"

    def __init__(self, choices: Sequence[str] | None = None):
        self.choices = tuple(choices) if choices is not None else None

    def convert(self, value, param, ctx) -> tuple[str, ...]:
        if isinstance(value, tuple):  # already converted: click hands defaults and values set in code here too
            return value
        items = tuple(comma_list(value))
        unknown = [item for item in items if self.choices is not None and item not in self.choices]
        if unknown:
            self.fail(f"{', '.join(unknown)} is not one of {', '.join(self.choices)}", param, ctx)
        return items


def list_option(*decls: str, default: Sequence[str] = (), choices: Sequence[str] | None = None, **kwargs):
    """A list option: ``--x a --x b`` and ``--x a,b`` give the same tuple, in the order given.

    Items of a list of ``choices`` are a set, so a repeated one counts once.
    """

    kwargs["help"] = f"{kwargs['help']} Repeat the option or give a comma list."

    def join(ctx, param, values) -> tuple[str, ...]:
        items = tuple(item for value in values for item in value)
        return tuple(dict.fromkeys(items)) if choices is not None else items

    return click.option(*decls, type=CommaList(choices), multiple=True, default=tuple(default), callback=join, **kwargs)


def setting_option(decl: str, settings: object, *, field: str | None = None, **kwargs) -> Callable:
    """An option whose default, shown in --help, is the field of ``settings`` (a settings dataclass) that the
    option names (``--top-layers``: ``top_layers``; ``field`` where the names differ): each default is written
    once, in the dataclass (docs/cli.md, Defaults)."""
    default = getattr(settings, field or decl.lstrip("-").replace("-", "_"))
    return click.option(decl, default=default, show_default=True, **kwargs)


class SizeType(click.ParamType):
    """``1024`` (square) or ``768x1024`` (width x height), both positive, to (width, height)."""

    name = "size"

    def convert(self, value, param, ctx) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", value)
        if not match or int(match[1]) == 0 or (match[2] is not None and int(match[2]) == 0):
            self.fail(
                f"{value!r}: expected a positive number such as 1024, or WIDTHxHEIGHT such as 768x1024", param, ctx
            )
        width = int(match[1])
        return width, int(match[2]) if match[2] else width

    @staticmethod
    def format(size: tuple[int, int]) -> str:
        return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"


class ShardType(click.ParamType):
    """``K/N`` to (K, N), with 0 <= K < N."""

    name = "shard"

    def convert(self, value, param, ctx) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        match = re.fullmatch(r"(\d+)/(\d+)", value.strip())
        if not match:
            self.fail(f"{value!r}: expected K/N, such as 0/4", param, ctx)
        index, count = int(match[1]), int(match[2])
        if count < 1:
            self.fail(f"{value}: N must be at least 1", param, ctx)
        if index >= count:
            self.fail(f"{value}: K must be in 0..N-1, here 0/{count} to {count - 1}/{count}", param, ctx)
        return index, count


class FiniteFloat(click.FloatRange):
    """A float that is a number: NaN and infinities are usage errors (click's FLOAT and FloatRange accept them, and
    a NaN passes every range check), with optional bounds as in click.FloatRange."""

    name = "float"

    def convert(self, value, param, ctx) -> float:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


def precision_option(default: str, auto: str) -> Callable:
    """``--precision``: the compute precision (``auto`` resolves per device, as ``auto`` explains)."""
    return click.option(
        "--precision",
        type=click.Choice(PRECISION_CHOICES),
        default=default,
        show_default=True,
        help=f"Compute precision; auto: {auto}.",
    )


def device_option(default: str, auto: str) -> Callable:
    return click.option(
        "--device", default=default, show_default=True, help=f"auto ({auto}), cpu, cuda, cuda:N or mps."
    )


def batch_size_option(default: int, help: str) -> Callable:
    """``--batch-size``: images per forward pass of the tool's model."""
    return click.option("--batch-size", type=click.IntRange(min=1), default=default, show_default=True, help=help)


wordnet_dir_option = click.option(
    "--wordnet-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="A WordNet 3.0 dict folder (default: nltk's corpus, else /usr/share/wordnet).",
)


def class_dir_option(use: str) -> Callable:
    """``--class-dir``: bias class definitions instead of the bundled ones; ``use`` says what the tool reads in them."""
    return click.option(
        "--class-dir",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        default=None,
        help=f"Folder of bias class definitions (NAME.json, as in data/bias_classes/) to read {use} from, instead of "
        "the bundled ones.",
    )


def workers_option(default: int | None, note: str) -> Callable:
    """``--workers``: the processes that decode images for the tool's model; ``note`` says what the default means."""
    return click.option(
        "--workers",
        type=click.IntRange(min=0),
        default=default,
        show_default=default is not None,
        help=f"DataLoader processes that decode images ({note}).",
    )


unit_option = click.option(
    "--unit",
    type=click.Choice(UNITS),
    default=None,
    help="Experimental unit of every test and interval: the images of one (synset, prompt text), or each image. "
    "Default: prompt where the store has prompt texts, else image (with a warning).",
)

allow_incomplete_option = click.option(
    "--allow-incomplete",
    is_flag=True,
    help="Analyse the committed rows of a store cnn-hooks has not finished (with a warning).",
)


def checks_options(func):
    """``--checks`` and ``--drop``: leave out the images an image-check flagged (default: drop none, count them)."""
    from synthprobe.formats.image_checks import (
        FLAGS,  # here, not at the top: it imports pandas, which most tools need not
    )

    func = list_option(
        "--drop",
        choices=FLAGS,
        metavar="VERDICT[,VERDICT...]",
        help="Image-check verdicts whose images to leave out: object-missing, "
        "object-leaked (default: none; the flags are only counted).",
    )(func)
    return click.option(
        "--checks",
        type=click.Path(dir_okay=False, exists=True),
        default=None,
        help="checks.jsonl from image-check: flagged images are counted in summary.json, and dropped with --drop.",
    )(func)


def _dask_engine(ctx, param, value: str | None):
    """A DaskEngine (connected on first use, closed when the command ends), or None without --dask."""
    if value is None:
        return None
    from synthprobe.common.cluster import DaskEngine, parse_dask

    try:
        parse_dask(value)
    except ValueError as exc:  # a value of the wrong form is a usage error (docs/cli.md)
        raise click.BadParameter(str(exc), ctx, param) from None
    engine = DaskEngine(value)
    ctx.call_on_close(engine.close)
    return engine


dask_option = click.option(
    "--dask",
    "dask",
    metavar="ADDRESS|local:N",
    default=None,
    callback=_dask_engine,
    help="Run on a Dask cluster: a scheduler address (tcp://host:8786) or scheduler file, or local:N for N worker "
    "processes here (one GPU each where there are GPUs). Needs pip install 'synthprobe[dask]'.",
)


def one_writer(
    out_param: str,
    inputs: Sequence[str] = (),
    lock_name: Callable[[dict], str] | None = None,
    outs: Callable[[dict], list] | None = None,
) -> Callable:
    """``--wait``, and the command's output (folder or store, named by its ``out_param``) written by one process at
    a time: a second run on the same output stops at once naming the first, or waits with --wait (common.locks).
    An output inside one of the ``inputs`` (parameter names of input stores) is refused: it would write into the
    store it reads. ``lock_name(options)`` names the lock where writers share a folder by parts; ``outs(options)``
    lists the outputs where the option names several (cnn-hooks' ``{model}`` stores), each locked on its own.
    Goes below ``run_guarded``, so that a refusal is the one-line error."""

    def decorate(command: Callable) -> Callable:
        @click.option(
            "--wait", is_flag=True, help="If another run is writing the same output, wait for it instead of stopping."
        )
        @functools.wraps(command)
        def locked(*args, wait: bool, **kwargs):
            out = kwargs[out_param]
            if out is None or str(out) == "-":
                return command(*args, **kwargs)
            targets = outs(kwargs) if outs else [out]
            for name in inputs:
                for target in targets:
                    check_outside_store(target, kwargs[name])
            name = lock_name(kwargs) if lock_name else LOCK_FILE
            with contextlib.ExitStack() as stack:
                # In one order, of the resolved paths however they are spelt: two runs that share outputs and
                # --wait never wait for each other.
                for target in sorted({str(Path(t).resolve()) for t in targets}):
                    stack.enter_context(exclusive_writer(target, wait=wait, name=name))
                return command(*args, **kwargs)

        return locked

    return decorate


def check_outside_store(out, store) -> None:
    """Refuse an output that is, or lies inside, the input activation store ``store`` (a Zarr group folder)."""
    if store is None or not (Path(store) / "zarr.json").is_file():
        return
    if Path(out).resolve().is_relative_to(Path(store).resolve()):
        raise InputError(f"--out {out} lies inside the store {store} it reads; write the outputs elsewhere")
