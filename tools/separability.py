"""separability: which layers of a CNN tell concepts apart, and which channels prefer which concept."""

from __future__ import annotations

import logging

import click

from synthprobe.common.cli import run_guarded, seed_option, silent_option
from synthprobe.common.files import InputError, check_writable_dir
from synthprobe.common.options import allow_incomplete_option, checks_options, list_option, setting_option, unit_option
from synthprobe.common.progress import progress
from synthprobe.formats.activation_store import ActivationStore
from synthprobe.separability import analysis as S
from synthprobe.separability.measures import FDR_METHODS
from synthprobe.separability.outputs import write_outputs

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
@setting_option("--pool", DEFAULTS, help="Spatial pooling to read (mean or max, as stored).")
@setting_option("--top-layers", DEFAULTS, type=positive, help="Layers in the top-K table and heatmap.")
@setting_option("--top-synsets", DEFAULTS, type=positive, help="Synsets listed per top layer.")
@setting_option("--top-neurons", DEFAULTS, type=positive, help="Most active channels per layer.")
@setting_option("--top-images", DEFAULTS, type=positive, help="Images listed per top channel.")
@unit_option
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
    "--alpha",
    DEFAULTS,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
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
