"""image-check: does each image show what its prompt says? One verdict per image and judge, into checks.jsonl;
``label`` and ``audit`` measure how often the judge is wrong."""

from __future__ import annotations

import logging

import click

from synthprobe.common.cli import run_guarded, seed_option, silent_option
from synthprobe.common.files import InputError
from synthprobe.common.options import (
    FiniteFloat,
    batch_size_option,
    class_dir_option,
    device_option,
    one_writer,
    setting_option,
    wordnet_dir_option,
    workers_option,
)
from synthprobe.image_check import audit as A
from synthprobe.image_check import checks as C
from synthprobe.image_check import labels as L
from synthprobe.image_check import owlv2 as O
from synthprobe.image_check.judges import DEFAULT_JUDGE

log = logging.getLogger("synthprobe")
DEFAULTS = C.Params()
AUDITED = "audited"


class ScoreOrAudited(click.ParamType):
    """A score in 0..1, or ``audited``: the threshold of the audit named by --audit."""

    name = "score|audited"

    def convert(self, value, param, ctx):
        if value == AUDITED:
            return value
        return FiniteFloat(0, 1).convert(value, param, ctx)


class CheckByDefault(click.Group):
    """``image-check IMAGES ...`` runs ``check``: the command existed before its subcommands did."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help", "--version"):
            args = ["check", *args]
        return super().parse_args(ctx, args)


@click.group(cls=CheckByDefault, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="synthprobe")
def main():
    """Check that images show what their prompts say, and measure how often the check is wrong.

    A first argument that is not a command runs check: `image-check IMAGES --out DIR` is `image-check check IMAGES
    --out DIR` (an image folder named check, label or audit needs the explicit form, or ./audit).

    \b
    Example (the three steps of an audit):
        image-check out/images/bias --out out/checks/bias
        image-check label out/images/bias --checks out/checks/bias -o labels.html --sample 100
        image-check audit --checks out/checks/bias --labels labels.jsonl -o out/checks/bias-audit
    """


@main.command(context_settings={"help_option_names": ["-h", "--help"]})
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
    help="clip:<hub id[@revision] or local folder>, owlv2:<the same> (a detector: "
    f"{O.OWLV2_PREFIX}{O.DEFAULT_OWLV2}), a torchvision ImageNet classifier name (resnet50), or timm:<name>.",
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
    type=ScoreOrAudited(),
    help="object-missing: an object-only, mixed or concept image whose object score is below this; "
    "audited: the --audit folder's threshold for this judge.",
)
@setting_option(
    "--leaked-above",
    DEFAULTS.thresholds,
    type=ScoreOrAudited(),
    help="object-leaked: a context-only image whose object score is above this; audited: as for --missing-below.",
)
@click.option(
    "--audit",
    type=click.Path(file_okay=False),
    help="An image-check audit folder, whose thresholds 'audited' takes (recorded in summary.json's provenance).",
)
@class_dir_option("context-only prompts")
@device_option(DEFAULTS.device, "CUDA when present, else the CPU")
@batch_size_option(DEFAULTS.batch_size, "Images per forward pass of the judge.")
@workers_option(DEFAULTS.workers, "0: in the main process")
@wordnet_dir_option
@silent_option
@run_guarded
@one_writer("out")
def check(
    images,
    out,
    judge,
    weights,
    missing_below,
    leaked_above,
    audit,
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
        image-check images/ --out checks/ --missing-below audited --leaked-above audited --audit audit/
        image-check photos/ --out checks/ --judge resnet50 --weights IMAGENET1K_V2
        image-check images/ --out checks/ --judge owlv2:google/owlv2-base-patch16-ensemble
    """
    judge = O.parse_any_judge(judge, weights)
    if AUDITED in (missing_below, leaked_above) and audit is None:
        raise InputError("'audited' thresholds need --audit AUDIT_DIR (the output of image-check audit)")
    if missing_below == AUDITED:
        missing_below = A.threshold_from_audit(audit, judge.identity, "missing_below")
    if leaked_above == AUDITED:
        leaked_above = A.threshold_from_audit(audit, judge.identity, "leaked_above")
    settings = C.Params(
        thresholds=C.Thresholds(missing_below, leaked_above),
        audit=audit,
        device=device,
        batch_size=batch_size,
        workers=workers,
        wordnet_dir=wordnet_dir,
        class_dir=class_dir,
        silent=silent,
    )
    result = C.run_image_check(images, out, judge, settings)
    verdicts = ", ".join(f"{count} {name}" for name, count in result.summary["verdicts"].items() if count)
    log.info(
        "%s: scored %d images, reused %d; %s; wrote %s",
        result.summary["judge"],
        result.scored,
        result.reused,
        verdicts,
        out,
    )


checks_option = click.option(
    "--checks", "checks_dir", required=True, type=click.Path(file_okay=False), help="The image-check output folder."
)


@main.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("images", type=click.Path(file_okay=False))
@checks_option
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="The labelling page, - for stdout.")
@click.option("--sample", type=click.IntRange(min=1), default=100, show_default=True, help="Images to label.")
@seed_option()
@silent_option
@run_guarded
def label(images, checks_dir, out, sample, seed, silent):
    """Write a labelling page: a sample of the checked images of IMAGES, one question each.

    The page is one self-contained HTML file: open it in a browser, answer with
    y (the object is there), n (it is not), s (skip, unsure) or u (undo); answers
    survive a reload; the export button downloads labels.jsonl for image-check
    audit. The sample is stratified by group, synset and verdict, flagged
    images drawn four times as densely; each label carries its design weight.

    \b
    Example:
        image-check label out/images/bias --checks out/checks/bias -o labels.html --sample 100 --seed 0
    """
    drawn = L.write_label_page(images, checks_dir, out, sample, seed)
    log.info("%d images in %d strata on %s", len(drawn.rows), len(drawn.strata), out)


@main.command(context_settings={"help_option_names": ["-h", "--help"]})
@checks_option
@click.option("--labels", "labels_path", required=True, type=click.Path(dir_okay=False), help="labels.jsonl (- stdin).")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="The audit's analysis folder.")
@click.option(
    "--target-precision",
    type=FiniteFloat(0, 1),
    default=A.Params.precision,
    show_default=True,
    help="The audited threshold reaches this precision with the most recall ...",
)
@click.option("--target-recall", type=FiniteFloat(0, 1), help="... or, if given, this recall.")
@silent_option
@run_guarded
def audit(checks_dir, labels_path, out, target_precision, target_recall, silent):
    """Measure each judge of a checks folder against a person's labels.

    Writes audit.csv (sensitivity, specificity, precision per judge and verdict
    kind, weighted by the sample's design, 95% intervals over prompt units, and
    the AUC), roc.csv, thresholds.csv (for --missing-below audited) and
    corrected_rates.csv (rates.csv corrected for the judge's error), then
    summary.json. A label whose image changed since it was labelled is refused.

    \b
    Example:
        image-check audit --checks out/checks/bias --labels labels.jsonl -o out/checks/bias-audit
    """
    result = A.run_audit(checks_dir, labels_path, out, A.Params(precision=target_precision, recall=target_recall))
    for _, row in result.audit.iterrows():
        log.info(
            "%s %s: sensitivity %.3g, specificity %.3g, precision %.3g (%d labels)",
            row["judge"],
            row["kind"],
            row["sensitivity"],
            row["specificity"],
            row["precision"],
            row["n"],
        )


if __name__ == "__main__":
    main()
