"""Bias class files (data/bias_classes/*.json): a class's synset, classifier classes and its prompt texts for
each bias group (docs/formats.md)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from synthprobe.common.files import InputError, read_json
from synthprobe.formats.prompts import GROUPS

BIAS_GROUPS = GROUPS[1:]
# A paired class file writes these two lists as matched pairs: text k of each shows the same object, the
# mixed one in a context (docs/formats.md, "Bias class files").
PAIRED_GROUPS = ("object-only", "mixed")
DEFAULT_BIAS_CLASSES = ("bee", "frog", "airplane", "guitar", "strawberry")


@dataclass(frozen=True)
class BiasClass:
    name: str
    synset: str
    imagenet_classes: tuple[str, ...]
    prompts: dict[str, tuple[str, ...]]
    # Synsets whose classifier classes also count as this class's targets (with their hyponyms under
    # --mapping hierarchy): WordNet files warplane beside airplane, not under it.
    extra_synsets: tuple[str, ...] = ()
    paired: bool = False  # object-only and mixed texts are matched pairs, text k with text k
    negative_prompt: str | None = None  # for its context-only prompts; None: wn-prompts names the synset's lemmas

    def pair_of(self, group: str, text: str) -> int | None:
        """The pair a prompt text belongs to: its index in its group's list, for the paired groups of a paired
        class; else None."""
        texts = self.prompts.get(group, ())
        if not self.paired or group not in PAIRED_GROUPS or text not in texts:
            return None
        return texts.index(text)


def bias_class_dir() -> Path:
    return Path(str(resources.files("synthprobe.data") / "bias_classes"))


def known_bias_classes(folder: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (folder or bias_class_dir()).glob("*.json"))


def bias_class_problem(doc: object) -> str | None:
    """What is wrong with a bias class file's JSON value, or None (docs/formats.md has the fields)."""
    if not isinstance(doc, dict):
        return "expected a JSON object with name, synset and prompts"
    for name in ("name", "synset"):
        if not isinstance(doc.get(name), str):
            return f"{name!r}: a string"
    if not isinstance(doc.get("prompts"), dict):
        return f"'prompts': an object with a list of texts for each of {', '.join(BIAS_GROUPS)}"
    for group in BIAS_GROUPS:
        texts = doc["prompts"].get(group)
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return f"'prompts.{group}': a list of texts"
    for name in ("imagenet_classes", "extra_synsets"):
        if not isinstance(doc.get(name, []), list):
            return f"{name!r}: a list"
    if not all(isinstance(x, str) for x in doc.get("extra_synsets", [])):
        return "'extra_synsets': a list of synset names"
    negative = doc.get("negative_prompt")
    if negative is not None and (not isinstance(negative, str) or not negative.strip()):
        return "'negative_prompt': a non-empty text (leave the key out for the synset's lemmas)"
    if not isinstance(doc.get("paired", False), bool):
        return "'paired': true or false"
    if doc.get("paired") and len({len(doc["prompts"][g]) for g in PAIRED_GROUPS}) > 1:
        return f"'paired': the {' and '.join(PAIRED_GROUPS)} lists must be equally long (text k with text k)"
    if doc.get("paired") and any(len(set(doc["prompts"][g])) < len(doc["prompts"][g]) for g in PAIRED_GROUPS):
        return "'paired': a text may appear once in each list (its place names its pair)"
    return None


def load_bias_class(name: str, folder: Path | None = None) -> BiasClass:
    folder = folder or bias_class_dir()
    path = folder / f"{name}.json"
    if not path.is_file():
        raise InputError(f"unknown bias class {name!r}; known classes: {', '.join(known_bias_classes(folder))}")
    doc = read_json(path)
    problem = bias_class_problem(doc)
    if problem:
        raise InputError(f"{path}: not a bias class definition ({problem})")
    prompts = {group: tuple(doc["prompts"][group]) for group in BIAS_GROUPS}
    bias_class = BiasClass(
        doc["name"],
        doc["synset"],
        tuple(doc.get("imagenet_classes", ())),
        prompts,
        tuple(doc.get("extra_synsets", ())),
        doc.get("paired", False),
        doc.get("negative_prompt"),
    )
    for group, texts in prompts.items():
        if not texts:
            raise InputError(f"{path}: no {group} prompts")
    return bias_class
