"""transfer: does what generated images say about a classifier hold on real photos of the same synsets?"""

from __future__ import annotations

import logging

import click

from synthprobe.common.cli import run_guarded, seed_option, silent_option
from synthprobe.common.files import InputError, check_writable_dir
from synthprobe.common.options import (
    FiniteFloat,
    allow_incomplete_option,
    list_option,
    one_writer,
    setting_option,
    unit_option,
)
from synthprobe.common.progress import progress
from synthprobe.formats.activation_store import ActivationStore
from synthprobe.transfer import analysis as T
from synthprobe.transfer.outputs import write_outputs
from synthprobe.transfer.pairing import check_same_classifier

log = logging.getLogger("synthprobe")
count = click.IntRange(min=0)
positive = click.IntRange(min=1)
DEFAULTS = T.Params()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="synthprobe")
@click.argument("generated", type=click.Path())
@click.argument("photos", type=click.Path())
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="Output folder.")
@list_option(
    "--group",
    default=DEFAULTS.groups,
    show_default=True,
    metavar="GROUP[,GROUP...]",
    help="Rows of both stores to compare, by group; ImageFolder rows are 'concept'.",
)
@list_option(
    "--layers", default=DEFAULTS.layers, show_default=True, metavar="GLOB[,GLOB...]", help="Hook points (globs)."
)
@setting_option("--pool", DEFAULTS, help="Spatial pooling to read (mean or max, as stored in both stores).")
@unit_option
@setting_option(
    "--dims", DEFAULTS, type=positive, help="Principal axes (of both sources pooled) the probes are fitted on."
)
@setting_option("--folds", DEFAULTS, type=click.IntRange(min=2), help="Cross-validation folds, grouped by unit.")
@setting_option(
    "--permutations", DEFAULTS, type=count, help="Relabellings for the transfer and CKA/RSA p-values (0: none)."
)
@setting_option(
    "--alpha",
    DEFAULTS,
    type=FiniteFloat(0, 1, min_open=True, max_open=True),
    help="Level for the headline and the selective channels' false-discovery rate.",
)
@allow_incomplete_option
@seed_option()
@silent_option
@run_guarded
@one_writer("out_dir", inputs=("generated", "photos"))
def main(
    generated,
    photos,
    out_dir,
    group,
    layers,
    pool,
    unit,
    dims,
    folds,
    permutations,
    alpha,
    allow_incomplete,
    seed,
    silent,
):
    """Compare, layer by layer, what a GENERATED images' store and a PHOTOS store of the same classifier say.

    Both stores come from cnn-hooks with the same --model, --weights and preprocessing (refused otherwise); only
    the synsets both hold are compared. Writes layers.csv, synset_layers.csv, synsets.csv, transfer_by_depth.png
    and, last, summary.json into --out.

    \b
    Example:
        cnn-hooks ~/imagenet/val --out out/resnet50/acts/photos.zarr --model resnet50
        transfer out/resnet50/acts/concepts.zarr out/resnet50/acts/photos.zarr -o out/resnet50/transfer
        transfer gen.zarr photos.zarr -o transfer/ --layers 'layer*' --permutations 200
    """
    if not group:
        raise InputError("--group is empty; give one group or a comma list, e.g. concept")
    params = T.Params(
        groups=group,
        layers=layers or DEFAULTS.layers,
        pool=pool,
        unit=unit,
        dims=dims,
        folds=folds,
        permutations=permutations,
        alpha=alpha,
        seed=seed,
    )
    generated_store = ActivationStore(generated, allow_incomplete)
    photo_store = ActivationStore(photos, allow_incomplete)
    check_same_classifier(generated_store, photo_store)
    for store in (generated_store, photo_store):
        if pool not in store.pools:
            raise InputError(f"--pool {pool} is not in {store.path}; it has: {', '.join(store.pools)}")
    check_writable_dir(out_dir)
    result = T.analyse(
        generated_store, photo_store, params, progress=lambda items, **kw: progress(items, silent=silent, **kw)
    )
    summary = write_outputs(result, params, generated_store, photo_store, out_dir)
    for sentence in summary["headline"]:
        log.info("%s", sentence)
    for note in summary["notes"]:
        log.warning("%s", note)
    log.info(
        "%d layers, %d shared synsets; wrote %s", len(summary["layers"]), len(summary["synsets"]["shared"]), out_dir
    )


if __name__ == "__main__":
    main()
