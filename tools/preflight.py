"""preflight: before ``make all`` starts, check that the generator and the CNN weights can be had."""

from __future__ import annotations

import click

from synthprobe.common.cli import run_guarded
from synthprobe.preflight import check_cnn_weights, check_generator


@click.command()
@click.option("--generator", required=True, help="Hub id or local pipeline folder.")
@click.option("--revision", default=None)
@click.option("--cnn", required=True, help="torchvision model name or timm:<name>.")
@click.option("--weights", default="DEFAULT")
@run_guarded
def main(generator, revision, cnn, weights):
    """Check that the models of a run can be had.

    \b
    Example:
        python -m synthprobe.tools.preflight --generator stabilityai/stable-diffusion-3.5-large --cnn resnet50 --weights DEFAULT
    """  # noqa: E501 (the example is one command line; click prints it unwrapped)
    for line in (check_generator(generator, revision), check_cnn_weights(cnn, weights)):
        click.echo(line)


if __name__ == "__main__":
    main()
