"""image-check: does each image show what its prompt says? One verdict per image and judge, into checks.jsonl."""

from __future__ import annotations

import logging

import click

from synthprobe.common.cli import run_guarded, silent_option
from synthprobe.common.options import (
    FiniteFloat,
    batch_size_option,
    class_dir_option,
    device_option,
    setting_option,
    wordnet_dir_option,
    workers_option,
)
from synthprobe.image_check import Params, Thresholds, parse_judge, run_image_check
from synthprobe.image_check.judges import DEFAULT_JUDGE

log = logging.getLogger("synthprobe")
score = FiniteFloat(0, 1)
DEFAULTS = Params()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="synthprobe")
@click.argument("images", type=click.Path(file_okay=False))
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder: checks.jsonl (also the cache of earlier scores) and summary.json.",
)
@click.option(
    "--judge",
    default=DEFAULT_JUDGE,
    show_default=True,
    help="clip:<hub id[@revision] or local folder>, a torchvision ImageNet classifier name (resnet50), or timm:<name>.",
)
@click.option(
    "--weights",
    default="DEFAULT",
    show_default=True,
    help="Classifier judges only, as in cnn-hooks: DEFAULT, none, a torchvision weights name or a local state dict.",
)
@setting_option(
    "--missing-below",
    DEFAULTS.thresholds,
    type=score,
    help="object-missing: an object-only, mixed or concept image whose object score is below this.",
)
@setting_option(
    "--leaked-above",
    DEFAULTS.thresholds,
    type=score,
    help="object-leaked: a context-only image whose object score is above this.",
)
@class_dir_option("context-only prompts")
@device_option(DEFAULTS.device, "CUDA when present, else the CPU")
@batch_size_option(DEFAULTS.batch_size, "Images per forward pass of the judge.")
@workers_option(DEFAULTS.workers, "0: in the main process")
@wordnet_dir_option
@silent_option
@run_guarded
def main(
    images,
    out,
    judge,
    weights,
    missing_below,
    leaked_above,
    class_dir,
    device,
    batch_size,
    workers,
    wordnet_dir,
    silent,
):
    """Check that each image in IMAGES shows its synset, and that context-only images do not.

    IMAGES is an image folder with images.jsonl (from sd-generate) or an
    ImageFolder tree (IMAGES/<synset>/*.png|jpg). Verdicts: ok,
    object-missing (an object-only, mixed or concept image without its
    object), object-leaked (a context-only image with the object), unscored
    (a classifier judge with no ImageNet class under the synset). A rerun
    scores only images this judge has not scored; rerunning with other
    thresholds scores nothing and only rewrites the verdicts.

    \b
    Example:
        image-check out/images/bias --out out/checks/bias
        image-check images/ --out checks/ --judge clip:models/tiny-clip --missing-below 0.2
        image-check photos/ --out checks/ --judge resnet50 --weights IMAGENET1K_V2
    """
    params = Params(
        thresholds=Thresholds(missing_below, leaked_above),
        device=device,
        batch_size=batch_size,
        workers=workers,
        wordnet_dir=wordnet_dir,
        class_dir=class_dir,
        silent=silent,
    )
    result = run_image_check(images, out, parse_judge(judge, weights), params)
    verdicts = ", ".join(f"{count} {name}" for name, count in result.summary["verdicts"].items() if count)
    log.info(
        "%s: scored %d images, reused %d; %s; wrote %s",
        result.summary["judge"],
        result.scored,
        result.reused,
        verdicts,
        out,
    )


if __name__ == "__main__":
    main()
