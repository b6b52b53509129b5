"""bias-report: does the classifier need the object, or only its usual surroundings?"""

from __future__ import annotations

import click

from synthprobe.bias_report import Params, analyse, read_inputs, write
from synthprobe.bias_report.targets import MAPPINGS
from synthprobe.common.cli import run_guarded, silent_option
from synthprobe.common.options import (
    FiniteFloat,
    allow_incomplete_option,
    checks_options,
    class_dir_option,
    list_option,
    one_writer,
    setting_option,
    unit_option,
    wordnet_dir_option,
)

DEFAULTS = Params()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="synthprobe")
@click.argument("store", type=click.Path())
@click.option(
    "-o", "--out", required=True, type=click.Path(), help="Output folder (CSV tables, PNG figures, summary.json)."
)
@list_option(
    "--classes",
    default=DEFAULTS.classes,
    show_default=True,
    metavar="CLASS[,CLASS...]",
    help="Bias classes to audit (files in data/bias_classes/ or --class-dir).",
)
@class_dir_option("the --classes")
@setting_option(
    "--mapping",
    DEFAULTS,
    type=click.Choice(MAPPINGS),
    help="Target classes: every classifier class under the synset in WordNet, or the definition's imagenet_classes.",
)
@unit_option
@click.option(
    "--prompts",
    "prompts_path",
    type=click.Path(),
    default=None,
    help="The prompt JSONL the images were made from: texts to show for rows without one (images of an "
    "ImageFolder tree; default: from row ids and class definitions).",
)
@setting_option(
    "--level",
    DEFAULTS,
    type=FiniteFloat(0, 1, min_open=True, max_open=True),
    help="Confidence level of the intervals.",
)
@setting_option("--top", DEFAULTS, type=click.IntRange(min=1), help="Top prompts per class across groups.")
@allow_incomplete_option
@checks_options
@wordnet_dir_option
@silent_option
@run_guarded
@one_writer("out", inputs=("store",))
def main(
    store,
    out,
    classes,
    class_dir,
    mapping,
    unit,
    prompts_path,
    level,
    top,
    allow_incomplete,
    checks,
    drop,
    wordnet_dir,
    silent,
):
    """Classifier confidence on object-only, context-only and mixed images of chosen classes.

    STORE is the activation store cnn-hooks made (with a classifier, so it
    holds logits) from the images of 'wn-prompts bias' prompts.

    \b
    Example:
        bias-report out/acts/bias.zarr --out out/bias --classes bee,frog
        bias-report acts.zarr --out bias/ --mapping exact --unit image --level 0.9
        bias-report acts.zarr --out bias/ --checks checks/checks.jsonl --drop object-missing,object-leaked
    """
    params = Params(
        classes=tuple(classes),
        mapping=mapping,
        unit=unit,
        level=level,
        top=top,
        drop=tuple(drop),
        class_dir=class_dir,
        wordnet_dir=wordnet_dir,
        allow_incomplete=allow_incomplete,
    )
    write(analyse(read_inputs(store, params, prompts=prompts_path, checks=checks), params), out)


if __name__ == "__main__":
    main()
