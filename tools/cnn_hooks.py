"""cnn-hooks: every hook point's pooled response to every image of a folder, into a resumable Zarr store."""

from __future__ import annotations

import logging

import click

from synthprobe.cnn_hooks import Params, classifiers, layer_lines, read_class_names, record_classifiers
from synthprobe.common.cli import run_guarded, silent_option
from synthprobe.common.files import InputError
from synthprobe.common.options import (
    batch_size_option,
    dask_option,
    device_option,
    list_option,
    one_writer,
    precision_option,
    setting_option,
    workers_option,
)

log = logging.getLogger("synthprobe")

POOL_CHOICES = {"mean": ("mean",), "max": ("max",), "both": ("mean", "max")}
DEFAULTS = Params()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="synthprobe")
@click.argument("images", type=click.Path(), required=False)
@click.option(
    "-o",
    "--out",
    type=click.Path(),
    help="The activation store to write or resume (a .zarr folder); with several --model, a path with {model} "
    "where each classifier's name goes (':' as '-').",
)
@click.option(
    "--model",
    multiple=True,
    default=("resnet50",),
    show_default=True,
    help="A torchvision classification model name, or timm:<name>; MODEL=WEIGHTS gives it its own weights. "
    "Repeat it to run several classifiers in one pass over the images (each image decoded once).",
)
@click.option(
    "--weights",
    multiple=True,
    default=("DEFAULT",),
    show_default=True,
    help="DEFAULT (downloaded once), none (random, seed 0), a torchvision weights name, "
    "or a local state dict (.pth/.safetensors); once for every --model without its own, or once per --model in order.",
)
@list_option("--layers", metavar="GLOB[,GLOB...]", help="Glob patterns of hook points (default: all).")
@click.option(
    "--list-layers", is_flag=True, help="Print every hook point with its channel count and output shape; stop."
)
@click.option(
    "--pool",
    type=click.Choice(list(POOL_CHOICES)),
    default=next(name for name, pools in POOL_CHOICES.items() if pools == DEFAULTS.pools),
    show_default=True,
    help="Spatial pooling of each feature map.",
)
@setting_option(
    "--store-dtype",
    DEFAULTS,
    type=click.Choice(["float32", "float16"]),
    help="Type of the stored values (float16 holds bf16 results exactly).",
)
@precision_option("auto", "bf16 on CUDA (fp16 where the GPU lacks bf16) or on a CPU with AMX/AVX-512-BF16, else fp32")
@device_option(DEFAULTS.device, "CUDA when present, else the CPU")
@batch_size_option(DEFAULTS.batch_size, "Images per forward pass.")
@workers_option(None, "default: all CPU cores but one with a GPU, half of them, at most 8, without")
@click.option(
    "--image-size",
    type=click.IntRange(min=16),
    default=None,
    help="Crop size instead of the weights' own (the resize keeps its ratio to the crop).",
)
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Record undecodable images as failed rows (NaN values) and go on; a rerun tries them again.",
)
@click.option(
    "--class-names",
    type=click.Path(dir_okay=False),
    default=None,
    help="A file with one name per classifier output, for a head other than ImageNet-1k's "
    "(default class_0, class_1, ...).",
)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False),
    default=None,
    help="A CSV path,synset naming the images of IMAGES (paths relative to it; synsets as WordNet names or "
    "ImageNet wnids), for photos in any layout, e.g. ImageNet's flat validation folder.",
)
@click.option(
    "--rebuild",
    is_flag=True,
    help="Delete the store at --out and start it again (after a damaged store or changed images).",
)
@setting_option(
    "--rows-per-write",
    DEFAULTS,
    type=click.IntRange(min=1),
    help="Rows gathered before each write and commit; a kill loses at most this many.",
)
@dask_option
@silent_option
@run_guarded
@one_writer("out", outs=lambda options: [store for store, _, _ in stores_of(options)])
def main(
    images,
    out,
    model,
    weights,
    layers,
    list_layers,
    pool,
    store_dtype,
    precision,
    device,
    batch_size,
    workers,
    image_size,
    skip_bad,
    class_names,
    labels,
    rebuild,
    rows_per_write,
    dask,
    silent,
):
    """Record the pooled response of every hook point of a CNN to every image in IMAGES.

    IMAGES is an image folder with images.jsonl (from sd-generate), an
    ImageFolder tree (IMAGES/<synset>/*.png|jpg; ImageNet's wnid folders
    IMAGES/n01440764/*.JPEG become WordNet 3.0 synsets), or any folder with
    --labels. Rerunning the same command resumes an interrupted store, or
    appends images added to the folder.

    \b
    Example:
        cnn-hooks images/ --out acts.zarr --model resnet50 --weights DEFAULT --batch-size 16
        cnn-hooks images/ -o 'out/{model}/acts.zarr' --model resnet50 --model timm:efficientnet_lite0=lite0.pth
        cnn-hooks photos/ --out acts.zarr --model timm:efficientnet_lite0 --weights lite0.pth --layers 'blocks.*'
        cnn-hooks ~/imagenet/val --labels val-labels.csv --out photos.zarr   # a CSV path,synset
        cnn-hooks --list-layers --model resnet50 --layers 'layer4.*'
    """
    patterns = list(layers)
    if list_layers:
        for name in model:
            name = name.partition("=")[0]
            click.echo("\n".join(([f"# {name}"] if len(model) > 1 else []) + layer_lines(name, image_size, patterns)))
        return
    if not images or not out:
        raise InputError("give IMAGES and --out STORE.zarr (or --list-layers)")
    stores = stores_of({"out": out, "model": model, "weights": weights})
    params = Params(
        layers=patterns,
        pools=POOL_CHOICES[pool],
        store_dtype=store_dtype,
        precision=None if precision == "auto" else precision,
        device=device,
        batch_size=batch_size,
        workers=workers,
        skip_bad=skip_bad,
        rows_per_write=rows_per_write,
        rebuild=rebuild,
        silent=silent,
        class_names=read_class_names(class_names) if class_names else None,
    )
    results = record_classifiers(images, stores, params, image_size=image_size, labels=labels, engine=dask)
    for (store, _, _), result in zip(stores, results):
        if result.written == 0:
            log.info("%s already holds all %d images of %s", store, result.skipped, images)
            continue
        log.info(
            "wrote %d rows (%d failed) to %s in %.1f s, %.1f images/s",
            result.written,
            result.failed,
            store,
            result.seconds,
            result.written / max(result.seconds, 1e-9),
        )


def stores_of(options: dict) -> list[tuple[str, str, str]]:
    """(store, model, weights) per --model; none without --out (--list-layers)."""
    # --weights left at its default is none given: then a model's own =WEIGHTS leaves it nothing to apply to.
    context = click.get_current_context(silent=True)
    default = context is not None and context.get_parameter_source("weights") is click.core.ParameterSource.DEFAULT
    weights = () if default else options["weights"]
    return classifiers(options["model"], weights, options["out"]) if options["out"] else []


if __name__ == "__main__":
    main()
