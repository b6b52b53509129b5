"""Prompt records for concept images and for bias audits (the ``wn-prompts`` logic)."""

from __future__ import annotations

import hashlib
import logging
import random
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from synthprobe.common.files import InputError, read_json
from synthprobe.common.wordnet import get_synset, indefinite, lemma_text
from synthprobe.formats.bias_classes import BIAS_GROUPS, BiasClass
from synthprobe.formats.prompts import PromptRecord, safe_id

log = logging.getLogger("synthprobe")

# Lexicographer files whose nouns are things a camera can see.
PICTURABLE_LEXNAMES = frozenset({"noun.animal", "noun.artifact", "noun.food", "noun.object", "noun.plant"})
PHYSICAL_ENTITY = "physical_entity.n.01"
TEMPLATE_FIELDS = frozenset({"lemma", "a_lemma", "hypernym", "gloss"})
# A negative prompt names the object in a few words: CLIP reads 77 tokens, and rare lemmas (salientian) add little.
NEGATIVE_TERMS = 6


def record_seed(base_seed: int, record_id: str) -> int:
    """A seed that depends only on the run's seed and the record id (stable under reordering)."""
    digest = hashlib.sha256(f"{base_seed}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def is_picturable(synset) -> bool:
    """A noun whose lexicographer file holds visible things and that is a physical entity."""
    if synset.pos() != "n" or synset.lexname() not in PICTURABLE_LEXNAMES:
        return False
    return any(PHYSICAL_ENTITY == h.name() for path in synset.hypernym_paths() for h in path)


@dataclass(frozen=True)
class Template:
    id: str
    text: str


def load_templates(path: str | Path | None = None) -> list[Template]:
    source = Path(path) if path else resources.files("synthprobe.data") / "concept_templates.json"
    doc = read_json(source)
    try:
        templates = [Template(t["id"], t["text"]) for t in doc["templates"]]
    except KeyError as exc:
        raise InputError(f"{source}: not a template file (no {exc} field)") from None
    except TypeError as exc:
        raise InputError(f"{source}: not a template file ({exc})") from None
    if not templates:
        raise InputError(f"{source}: no templates")
    ids = [safe_id(t.id) for t in templates]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise InputError(f"{source}: template id {twice[0]!r} names two templates (ids name the records)")
    for template in templates:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(template.text) if name is not None}
        except ValueError as exc:
            raise InputError(f"{source}: template {template.id!r}: {exc}") from None
        if fields - TEMPLATE_FIELDS:
            raise InputError(
                f"{source}: template {template.id!r} uses {', '.join(sorted(fields - TEMPLATE_FIELDS))}; "
                f"known fields: {', '.join(sorted(TEMPLATE_FIELDS))}"
            )
    return templates


def fill_template(template: Template, synset) -> str:
    lemma = lemma_text(synset)
    # nltk keeps pointers in a set, whose order changes between processes: sort for identical output.
    hypernyms = sorted(synset.hypernyms() or synset.instance_hypernyms(), key=lambda s: s.name())
    hypernym = lemma_text(hypernyms[0]) if hypernyms else "object"
    gloss = synset.definition().split(";")[0].strip()
    return template.text.format(lemma=lemma, a_lemma=indefinite(lemma), hypernym=hypernym, gloss=gloss)


def select_synsets(candidates: list, n_synsets: int | None, seed: int, exclude: set[str]) -> list:
    """Picturable candidates minus ``exclude``; a seeded sample of ``n_synsets`` in name order."""
    chosen = sorted({s.name(): s for s in candidates if is_picturable(s) and s.name() not in exclude}.items())
    if n_synsets is not None and n_synsets < len(chosen):
        chosen = sorted(random.Random(seed).sample(chosen, n_synsets))
    return [synset for _, synset in chosen]


@dataclass(frozen=True)
class ConceptDesign:
    """What every synset gets: the same templates, each text rendered with the same number of seeds."""

    templates: tuple[Template, ...]
    seeds_per_prompt: int

    @property
    def per_synset(self) -> int:
        return len(self.templates) * self.seeds_per_prompt


def concept_design(templates: list[Template], per_synset: int, seeds_per_prompt: int, seed: int) -> ConceptDesign:
    """Template crossed with synset (docs/methods.md, "The design").

    Below the template count, one seeded subset of ``per_synset`` templates (in file order) for every synset;
    from it upwards, whole rounds of all templates: a template's text is the same in every round, so a round
    adds seeds to each prompt text. A remainder is rounded down to whole rounds, with one log line.
    """
    if per_synset < len(templates):
        chosen = sorted(random.Random(record_seed(seed, "templates")).sample(range(len(templates)), per_synset))
        return ConceptDesign(tuple(templates[i] for i in chosen), seeds_per_prompt)
    rounds, remainder = divmod(per_synset, len(templates))
    if remainder:
        log.warning(
            "--per-synset %d is not a whole number of rounds of the %d templates: %d per synset (%d round(s)), "
            "so that every synset gets every template equally often",
            per_synset,
            len(templates),
            rounds * len(templates),
            rounds,
        )
    return ConceptDesign(tuple(templates), rounds * seeds_per_prompt)


def concept_records(synsets: list, design: ConceptDesign, seed: int) -> list[PromptRecord]:
    """Every synset x every template of ``design`` x its seeds; ids name synset, template and seed index."""
    if not synsets:
        raise InputError("the selection is empty: no synsets left to make prompts for")
    records = []
    for synset in synsets:
        lemma = lemma_text(synset)
        for template in design.templates:
            text = fill_template(template, synset)
            for s in range(design.seeds_per_prompt):
                record_id = safe_id(f"{synset.name()}-{template.id}-s{s:02d}")
                records.append(
                    PromptRecord(
                        id=record_id,
                        synset=synset.name(),
                        lemma=lemma,
                        group="concept",
                        target=synset.name(),
                        prompt=text,
                        seed=record_seed(seed, record_id),
                        template=template.id,
                        seed_index=s,
                    )
                )
    return records


def negative_prompt_for(bias_class: BiasClass, wn) -> str:
    """The class file's own negative prompt, else the lemmas of its synset and extra synsets as words, in WordNet's
    order, each once, at most NEGATIVE_TERMS of them ("frog, toad, toad frog, anuran, batrachian, salientian")."""
    if bias_class.negative_prompt:
        return bias_class.negative_prompt
    terms: dict[str, None] = {}
    for name in (bias_class.synset, *bias_class.extra_synsets):
        for lemma in get_synset(wn, name).lemma_names():
            terms.setdefault(lemma.replace("_", " ").lower(), None)
    return ", ".join(list(terms)[:NEGATIVE_TERMS])


def bias_records(
    classes: list[BiasClass],
    wn,
    per_group: int | None,
    seeds_per_prompt: int,
    seed: int,
    negative_prompts: bool = True,
) -> list[PromptRecord]:
    """Every class x group x prompt text x seed; ``synset`` and ``target`` are the class's synset.

    With ``negative_prompts`` a context-only record names the object in ``negative_prompt`` (negation in the prompt
    text does not keep it out; docs/formats.md); the other groups get none.
    """
    records = []
    for bias_class in classes:
        synset = get_synset(wn, bias_class.synset)
        lemma = lemma_text(synset)
        negative = negative_prompt_for(bias_class, wn) if negative_prompts else None
        for group in BIAS_GROUPS:
            for t, text in enumerate(bias_class.prompts[group][:per_group]):
                for s in range(seeds_per_prompt):
                    record_id = safe_id(f"bias-{bias_class.name}-{group}-{t:02d}-s{s:02d}")
                    records.append(
                        PromptRecord(
                            id=record_id,
                            synset=synset.name(),
                            lemma=lemma,
                            group=group,
                            target=synset.name(),
                            prompt=text,
                            seed=record_seed(seed, record_id),
                            negative_prompt=negative if group == "context-only" else None,
                            template=f"{bias_class.name}/{group}/{t:02d}",
                            seed_index=s,
                        )
                    )
    if not records:
        raise InputError("the selection is empty: no bias prompts")
    return records
