"""Which synsets wn-prompts makes prompts for: named ones (``--synsets``, ``@FILE``) or a Core WordNet sample,
less the exclusions (synsets or bias class names)."""

from __future__ import annotations

import logging
from pathlib import Path

from synthprobe.common.files import InputError, os_reason
from synthprobe.common.wordnet import get_synset
from synthprobe.formats import bias_classes
from synthprobe.wn_prompts import prompts as P
from synthprobe.wn_prompts.core_wordnet import core_wordnet_file, parse_core_wordnet, resolve_entries

log = logging.getLogger("synthprobe")


def read_synset_names(items: tuple[str, ...]) -> list[str]:
    """Synset names, each item a name or ``@FILE`` / an existing file path with one synset name per line."""
    return [name for item in items for name in read_synset_item(item)]


def read_synset_item(item: str) -> list[str]:
    path = Path(item[1:] if item.startswith("@") else item)
    if not (item.startswith("@") or path.is_file()):
        return [item]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read synset list {path}: {os_reason(exc)}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text (a binary file?)") from None
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def resolve_exclusions(wn, names: list[str]) -> set[str]:
    """Bias class names map to their synsets; anything else must be a synset name."""
    known = set(bias_classes.known_bias_classes())
    return {bias_classes.load_bias_class(n).synset if n in known else get_synset(wn, n).name() for n in names}


def choose_synsets(wn, core_source: str | None, synsets, n_synsets: int | None, exclude: list[str], seed: int) -> list:
    """The ``synsets`` as given (names or @FILEs), else a seeded sample of ``n_synsets`` picturable Core WordNet
    synsets (all of them for None); minus the excluded ones."""
    excluded = resolve_exclusions(wn, exclude)
    if synsets:
        candidates = [get_synset(wn, name) for name in read_synset_names(synsets)]
        return [s for s in candidates if s.name() not in excluded]
    resolution = resolve_entries(wn, parse_core_wordnet(core_wordnet_file(core_source)))
    if resolution.unresolved:
        log.warning("%s", resolution.report())
    return P.select_synsets(resolution.synsets, n_synsets, seed, excluded)
