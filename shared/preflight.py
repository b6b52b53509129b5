"""Check, before ``make all`` starts, that the generator and the CNN weights can be had.

Run as ``python -m synthprobe.preflight --generator ID --cnn NAME --weights W``:
it exits non-zero with one line saying what to do (log in, accept a licence,
connect, or try ``make demo``) instead of failing an hour into the run.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import click

from .files import InputError
from .generate import hub_error_message, offline_message, read_model_json, resolve_model_source

DEMO_HINT = "; to see the whole pipeline work offline, run `make demo`"


def check_generator(model: str, revision: str | None = None) -> str:
    source = resolve_model_source(model, revision)
    try:
        index = read_model_json(source, "model_index.json", download=True)
    except InputError as exc:
        raise InputError(f"{exc}{DEMO_HINT}") from None
    except Exception as exc:  # any hub failure: say what it means if we can
        raise InputError(f"{hub_error_message(exc, source) or exc}{DEMO_HINT}") from None
    if index is None:
        raise InputError(offline_message(source) + DEMO_HINT)
    return f"generator {model}: ok"


def url_reachable(url: str, timeout: float = 10) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except OSError:
        return False


def check_cnn_weights(cnn: str, weights: str) -> str:
    if weights.lower() == "none" or cnn.startswith("timm:"):
        return f"cnn {cnn} ({weights}): nothing to fetch" if weights.lower() == "none" else f"cnn {cnn}: timm fetches its own weights"
    if Path(weights).exists():
        return f"cnn weights {weights}: local file"
    import torch
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(cnn)
    except ValueError:
        raise InputError(f"unknown torchvision model {cnn!r}") from None
    chosen = enum.DEFAULT if weights.upper() == "DEFAULT" else enum.__members__.get(weights)
    if chosen is None:
        raise InputError(f"--weights {weights}: not DEFAULT, none, a file, or one of {', '.join(enum.__members__)}")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(chosen.url).name
    if cached.is_file() or url_reachable(chosen.url):
        return f"cnn {cnn} weights {chosen}: ok"
    raise InputError(f"cannot reach the {chosen} weights ({chosen.url}) and they are not in {cached.parent}: "
                     f"connect once, or pass a local state-dict file as WEIGHTS=PATH{DEMO_HINT}")


@click.command()
@click.option("--generator", required=True, help="Hub id or local pipeline folder.")
@click.option("--revision", default=None)
@click.option("--cnn", required=True, help="torchvision model name or timm:<name>.")
@click.option("--weights", default="DEFAULT")
def main(generator, revision, cnn, weights):
    """Check that the models of a run can be had.

    \b
    Example:
        python -m synthprobe.preflight --generator stabilityai/stable-diffusion-3.5-large --cnn resnet50 --weights DEFAULT
    """
    try:
        for line in (check_generator(generator, revision), check_cnn_weights(cnn, weights)):
            click.echo(line)
    except InputError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
