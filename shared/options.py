"""Option bundles used by more than one tool."""

from __future__ import annotations

import click

from .units import UNITS

wordnet_dir_option = click.option(
    "--wordnet-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="A WordNet 3.0 dict folder (default: nltk's corpus, else /usr/share/wordnet).",
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


def _drop_verdicts(ctx, param, value: str) -> tuple[str, ...]:
    from .cli import comma_list
    from .formats.image_checks import FLAGS

    verdicts = tuple(dict.fromkeys(comma_list(value)))
    unknown = [v for v in verdicts if v not in FLAGS]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)} is not a flag verdict; choose from {', '.join(FLAGS)}")
    return verdicts


def checks_options(func):
    """``--checks`` and ``--drop``: leave out the images an image-check flagged (default: drop none, count them)."""
    func = click.option(
        "--drop",
        default="",
        callback=_drop_verdicts,
        help="Comma list of image-check verdicts whose images to leave out: object-missing, "
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
    from .cluster import DaskEngine
    from .files import InputError

    try:
        engine = DaskEngine(value)
    except InputError as exc:
        raise click.ClickException(str(exc)) from None
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
