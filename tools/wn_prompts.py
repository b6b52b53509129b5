"""wn-prompts: WordNet synsets to JSON Lines prompt records."""

from __future__ import annotations

import logging

import click

from synthprobe.common.cli import run_guarded, seed_option, silent_option
from synthprobe.common.files import InputError
from synthprobe.common.options import list_option, wordnet_dir_option
from synthprobe.common.wordnet import load_wordnet
from synthprobe.formats import bias_classes
from synthprobe.formats.prompts import write_prompts
from synthprobe.wn_prompts import prompts as P
from synthprobe.wn_prompts.selection import choose_synsets

log = logging.getLogger("synthprobe")
out_option = click.option("-o", "--out", default="-", show_default=True, help="Output JSONL file, or - for stdout.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="synthprobe")
def main():
    """Make prompt records (JSON Lines, one per image) from WordNet synsets."""


@main.command()
@click.option(
    "--core-wordnet",
    "core_source",
    metavar="PATH|URL",
    default=None,
    help="Core WordNet list: a file, or a URL downloaded once into the cache (default: the bundled copy).",
)
@list_option(
    "--synsets",
    metavar="SYNSET[,SYNSET...]",
    help="Explicit synsets instead of Core WordNet: dog.n.01,cat.n.01, or @FILE with one per line.",
)
@click.option(
    "--n-synsets",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="How many Core WordNet synsets to sample (not applied to --synsets).",
)
@click.option("--all-synsets", is_flag=True, help="Keep every picturable synset (ignores --n-synsets).")
@click.option(
    "--per-synset",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Template slots per synset, the same for every synset: below the template count, one seeded subset "
    "of the templates; above it, whole rounds of all of them (each round one more seed a prompt text; a "
    "remainder is rounded down, with a log line).",
)
@click.option(
    "--seeds-per-prompt",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Images per prompt text (images per synset: --per-synset x this).",
)
@list_option(
    "--exclude",
    default=bias_classes.DEFAULT_BIAS_CLASSES,
    show_default=True,
    metavar="NAME[,NAME...]",
    help="Synsets or bias class names to leave out ('' for none).",
)
@click.option(
    "--templates",
    "templates_path",
    type=click.Path(),
    help="Template JSON file (default: the bundled photographic templates).",
)
@out_option
@seed_option()
@wordnet_dir_option
@silent_option
@run_guarded
def concepts(
    core_source,
    synsets,
    n_synsets,
    all_synsets,
    per_synset,
    seeds_per_prompt,
    exclude,
    templates_path,
    out,
    seed,
    wordnet_dir,
    silent,
):
    """Concept prompts for picturable Core WordNet nouns (or for --synsets).

    \b
    Example:
        wn-prompts concepts --n-synsets 10 --per-synset 8 -o prompts.jsonl
        wn-prompts concepts --synsets dog.n.01,cat.n.01 --per-synset 4 --seeds-per-prompt 2 | sd-generate - -o img/
    """
    wn = load_wordnet(wordnet_dir)
    design = P.concept_design(P.load_templates(templates_path), per_synset, seeds_per_prompt, seed)
    chosen = choose_synsets(wn, core_source, synsets, None if all_synsets else n_synsets, list(exclude), seed)
    records = P.concept_records(chosen, design, seed)
    count = write_prompts(out, records)
    log.info(
        "wrote %d concept prompts for %d synsets to %s: %d each, templates %s, %d seed(s) a prompt text",
        count,
        len(chosen),
        out,
        design.per_synset,
        ",".join(t.id for t in design.templates),
        design.seeds_per_prompt,
    )


@main.command()
@list_option(
    "--classes",
    default=bias_classes.DEFAULT_BIAS_CLASSES,
    show_default=True,
    metavar="CLASS[,CLASS...]",
    help="Bias classes (files in data/bias_classes/).",
)
@click.option("--per-group", type=click.IntRange(min=1), default=None, help="At most this many prompt texts per group.")
@click.option(
    "--seeds-per-prompt", type=click.IntRange(min=1), default=2, show_default=True, help="Images per prompt text."
)
@click.option(
    "--negative-prompts/--no-negative-prompts",
    default=True,
    show_default=True,
    help="Give context-only records a negative prompt naming the object (the class file's negative_prompt, else "
    "its synset's lemmas), so that fewer images show it.",
)
@out_option
@seed_option()
@wordnet_dir_option
@silent_option
@run_guarded
def bias(classes, per_group, seeds_per_prompt, negative_prompts, out, seed, wordnet_dir, silent):
    """Object-only, context-only and mixed prompts for chosen ImageNet classes.

    \b
    Example:
        wn-prompts bias --classes bee,frog --per-group 4 --seeds-per-prompt 2 -o bias.jsonl
        wn-prompts bias --no-negative-prompts -o bias-plain.jsonl
    """
    names = list(classes)
    if not names:
        raise InputError("--classes is empty; known classes: " + ", ".join(bias_classes.known_bias_classes()))
    definitions = [bias_classes.load_bias_class(name) for name in names]
    records = P.bias_records(
        definitions, load_wordnet(wordnet_dir), per_group, seeds_per_prompt, seed, negative_prompts
    )
    count = write_prompts(out, records)
    log.info("wrote %d bias prompts for %d classes to %s", count, len(definitions), out)


if __name__ == "__main__":
    main()
