"""separability: which layers of a CNN tell concepts apart, and which channels prefer which concept."""

from __future__ import annotations

import logging

import click

from synthprobe import separability as S
from synthprobe.cli import run_guarded, seed_option, silent_option
from synthprobe.files import InputError, check_writable_dir
from synthprobe.formats.activation_store import ActivationStore
from synthprobe.options import allow_incomplete_option, checks_options, list_option, unit_option
from synthprobe.progress import progress
from synthprobe.separability_outputs import write_outputs
from synthprobe.separation import FDR_METHODS

log = logging.getLogger("synthprobe")
count = click.IntRange(min=0)
positive = click.IntRange(min=1)
DEFAULTS = S.Params()


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
@click.option(
    "--pool", default=DEFAULTS.pool, show_default=True, help="Spatial pooling to read (mean or max, as stored)."
)
@click.option(
    "--top-layers",
    type=positive,
    default=DEFAULTS.top_layers,
    show_default=True,
    help="Layers in the top-K table and heatmap.",
)
@click.option(
    "--top-synsets",
    type=positive,
    default=DEFAULTS.top_synsets,
    show_default=True,
    help="Synsets listed per top layer.",
)
@click.option(
    "--top-neurons",
    type=positive,
    default=DEFAULTS.top_neurons,
    show_default=True,
    help="Most active channels per layer.",
)
@click.option(
    "--top-images", type=positive, default=DEFAULTS.top_images, show_default=True, help="Images listed per top channel."
)
@unit_option
@click.option(
    "--permutations",
    type=count,
    default=DEFAULTS.permutations,
    show_default=True,
    help="Label permutations over units for p-values (0: none).",
)
@click.option(
    "--sample",
    type=click.IntRange(min=4),
    default=DEFAULTS.sample,
    show_default=True,
    help="Rows (at most) for the scale-free measures and selectivity; more are subsampled by synset.",
)
@click.option(
    "--dims",
    type=positive,
    default=DEFAULTS.dims,
    show_default=True,
    help="Wider layers are reduced to this many principal components for the scale-free measures.",
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=DEFAULTS.folds,
    show_default=True,
    help="Linear-probe cross-validation folds.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=DEFAULTS.alpha,
    show_default=True,
    help="False-discovery rate for concept-selective channels.",
)
@click.option(
    "--fdr",
    type=click.Choice(FDR_METHODS),
    default=DEFAULTS.fdr,
    show_default=True,
    help="Multiple-testing correction over all (layer, synset, channel) tests: Benjamini-Hochberg, or "
    "Benjamini-Yekutieli (valid under any dependence between channels).",
)
@allow_incomplete_option
@checks_options
@seed_option()
@silent_option
@run_guarded
def main(
    store,
    out_dir,
    group,
    layers,
    pool,
    unit,
    top_layers,
    top_synsets,
    top_neurons,
    top_images,
    permutations,
    sample,
    dims,
    folds,
    alpha,
    fdr,
    allow_incomplete,
    checks,
    drop,
    seed,
    silent,
):
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
    if not group:
        raise InputError("--group is empty; give one group or a comma list, e.g. concept")
    params = S.Params(
        groups=group,
        layers=layers or DEFAULTS.layers,
        pool=pool,
        top_layers=top_layers,
        top_synsets=top_synsets,
        top_neurons=top_neurons,
        top_images=top_images,
        unit=unit,
        permutations=permutations,
        sample=sample,
        dims=dims,
        folds=folds,
        alpha=alpha,
        fdr=fdr,
        seed=seed,
        checks=checks,
        drop=drop,
    )
    activations = ActivationStore(store, allow_incomplete)
    if pool not in activations.pools:
        raise InputError(f"--pool {pool} is not in the store; it has: {', '.join(activations.pools)}")
    check_writable_dir(out_dir)
    result = S.analyse(activations, params, progress=lambda items, **kw: progress(items, silent=silent, **kw))
    summary = write_outputs(result, params, activations, out_dir)
    log.info(
        "%d layers, %d images in %d %s units of %d synsets; top layers by centroid distance: %s; wrote %s",
        len(summary["layers"]),
        summary["n_images"],
        summary["n_units"],
        summary["unit"],
        summary["n_synsets"],
        ", ".join(summary["top_layers"]),
        out_dir,
    )


if __name__ == "__main__":
    main()
