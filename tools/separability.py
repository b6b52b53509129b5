"""separability: which layers of a CNN tell concepts apart, and which channels prefer which concept."""

from __future__ import annotations

import click

from synthprobe.common.cli import run_guarded, seed_option, silent_option
from synthprobe.common.options import (
    FiniteFloat,
    allow_incomplete_option,
    checks_options,
    list_option,
    one_writer,
    setting_option,
    unit_option,
)
from synthprobe.separability.analysis import Params
from synthprobe.separability.design import BLOCKS
from synthprobe.separability.run import run_separability
from synthprobe.separability.selectivity import FDR_METHODS

count = click.IntRange(min=0)
positive = click.IntRange(min=1)
DEFAULTS = Params()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="synthprobe")
@click.argument("store", type=click.Path())
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="Output folder.")
@list_option(
    "--group",
    default=DEFAULTS.groups,
    show_default=True,
    metavar="GROUP[,GROUP...]",
    help="Rows to analyse by their group; ImageFolder rows are 'concept'.",
)
@list_option(
    "--layers",
    default=DEFAULTS.layers,
    show_default=True,
    metavar="GLOB[,GLOB...]",
    help="Hook points to analyse (globs).",
)
@setting_option("--pool", DEFAULTS, help="Spatial pooling to read (mean or max, as stored).")
@setting_option("--top-layers", DEFAULTS, type=positive, help="Layers in the top-K table and heatmap.")
@setting_option("--top-synsets", DEFAULTS, type=positive, help="Synsets listed per top layer.")
@setting_option("--top-neurons", DEFAULTS, type=positive, help="Most active channels per layer.")
@setting_option("--top-images", DEFAULTS, type=positive, help="Images listed per top channel.")
@unit_option
@click.option(
    "--block",
    type=click.Choice(BLOCKS),
    default=None,
    help="Relabel synsets only within templates, fold by template and test channels within templates "
    "[default: template where the rows have templates shared by two or more synsets, else none].",
)
@setting_option("--permutations", DEFAULTS, type=count, help="Label permutations over units for p-values (0: none).")
@setting_option(
    "--sample",
    DEFAULTS,
    type=click.IntRange(min=4),
    help="Rows (at most) for the scale-free measures and selectivity; more are subsampled by synset.",
)
@setting_option(
    "--dims",
    DEFAULTS,
    type=positive,
    help="Wider layers are reduced to this many principal components for the scale-free measures.",
)
@setting_option("--folds", DEFAULTS, type=click.IntRange(min=2), help="Linear-probe cross-validation folds.")
@setting_option(
    "--jobs",
    DEFAULTS,
    type=click.IntRange(min=0),
    help="Worker processes over the layers, one BLAS thread each (0: one per core from 8 layers on).",
)
@setting_option(
    "--alpha",
    DEFAULTS,
    type=FiniteFloat(0, 1, min_open=True, max_open=True),
    help="False-discovery rate for concept-selective channels.",
)
@setting_option(
    "--fdr",
    DEFAULTS,
    type=click.Choice(FDR_METHODS),
    help="Multiple-testing correction over all (layer, synset, channel) tests: Benjamini-Hochberg, or "
    "Benjamini-Yekutieli (valid under any dependence between channels).",
)
@allow_incomplete_option
@checks_options
@seed_option()
@silent_option
@run_guarded
@one_writer("out_dir", inputs=("store",))
def main(store, out_dir, group, layers, allow_incomplete, silent, **settings):
    """Measure how well each layer of an activation STORE separates synsets.

    Writes layers.csv, synset_max_activation.csv, top_synsets.csv,
    top_neurons.csv, top_images.csv, selective_channels.csv, two PNG figures
    and, last, summary.json into --out.

    \b
    Example:
        separability out/acts/concepts.zarr --out out/separability/concepts
        separability acts.zarr --out sep/ --group object-only,mixed --layers 'layer4.*' --permutations 200
        separability photos.zarr --out sep/ --unit image        # every image its own unit
        separability acts.zarr --out sep/ --checks checks/checks.jsonl --drop object-missing
    """
    params = Params(groups=group, layers=layers or DEFAULTS.layers, **settings)
    run_separability(store, out_dir, params, allow_incomplete=allow_incomplete, silent=silent)


if __name__ == "__main__":
    main()
