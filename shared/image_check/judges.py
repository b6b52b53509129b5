"""image-check's judges: what each synset's images should show (``Target``), and the two kinds of judge that
score them.

- zero-shot CLIP (``clip:<hub id or folder>``): "a photo of a {lemma}, {gloss}"
  for every synset of the run plus a few generic backgrounds are the candidate
  captions; ``object_score`` is the softmax probability of the image's own
  synset among them. ``context_score`` adds the class definition's
  context-only prompts to the candidates and is their summed probability.
- an ImageNet classifier (a torchvision name, or ``timm:<name>``):
  ``object_score`` is the softmax mass of the classes in the synset's WordNet
  hyponym closure; a synset above no ImageNet class is ``unscored``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from scipy.special import softmax

from synthprobe.common.files import InputError, error_line, sha256_file
from synthprobe.common.imagenet import N_IMAGENET_CLASSES, hierarchy_indices, is_wnid, wnid_synset
from synthprobe.common.wordnet import get_synset, indefinite, lemma_text
from synthprobe.formats.bias_classes import BIAS_GROUPS, known_bias_classes, load_bias_class
from synthprobe.formats.prompts import SYNSET_PATTERN

CLIP_PREFIX = "clip:"
DEFAULT_JUDGE = "clip:openai/clip-vit-large-patch14"
# Generic scenes without an object, so that an empty image has somewhere to put its probability.
BACKGROUND_PROMPTS = (
    "a photo of an empty room",
    "a photo of a landscape",
    "a photo of a plain background",
    "a photo of a city street",
    "a photo of a texture",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class Target:
    """What the images of one synset should show, as the judges need it."""

    synset: str  # as the image rows name it: bee.n.01, or an ImageFolder class folder (n02206856, cats)
    wordnet: str | None  # the WordNet synset name, None when the name is not in WordNet
    caption: str  # "a photo of a bee, any of numerous hairy-bodied insects ..."
    context: tuple[str, ...]  # the bias class's context-only prompts, () when no bias class has this synset


def resolve_targets(synsets, wn, class_dir: Path | None = None) -> dict[str, Target]:
    """A Target per distinct synset; bias contexts come from the class definitions with that synset."""
    contexts = {}
    for name in known_bias_classes(class_dir):
        bias_class = load_bias_class(name, class_dir)
        contexts[bias_class.synset] = bias_class.prompts["context-only"]
    targets = {}
    for synset in sorted(set(synsets)):
        found = wordnet_synset(wn, synset)
        if found is None:
            caption = f"a photo of {indefinite(synset.replace('_', ' '))}"
            targets[synset] = Target(synset, None, caption, ())
            continue
        gloss = found.definition().split(";")[0].strip()
        caption = f"a photo of {indefinite(lemma_text(found))}, {gloss}"
        targets[synset] = Target(synset, found.name(), caption, tuple(contexts.get(found.name(), ())))
    return targets


def wordnet_synset(wn, name: str):
    """The WordNet synset of a row's synset (a name or an ImageNet wnid), or None for other folder names."""
    if not (is_wnid(name) or SYNSET_PATTERN.match(name)):
        return None
    try:
        return wnid_synset(wn, name) if is_wnid(name) else get_synset(wn, name)
    except InputError:
        return None


# ---- judges ----------------------------------------------------------------------------------


def parse_judge(spec: str, weights: str):
    """A judge from its command-line spec. CLIP loads nothing until it has images to score; a classifier is
    built at once, since its weights name the judge."""
    if spec.startswith(CLIP_PREFIX):
        return ClipJudge(*hub_source(spec, CLIP_PREFIX, DEFAULT_JUDGE))
    return ClassifierJudge(spec, weights)


def hub_source(spec: str, prefix: str, example: str) -> tuple[str, str | None]:
    """(hub id or folder, revision or None) of ``prefix:SOURCE[@REVISION]``: @REVISION pins a hub model."""
    source = spec[len(prefix) :]
    revision = None
    if not Path(source).is_dir() and "@" in source:
        source, revision = source.rsplit("@", 1)
    if not source or revision == "":
        raise InputError(f"--judge {prefix} needs a hub id (optionally @REVISION) or a local folder, e.g. {example}")
    return source, revision


class ClipJudge:
    """Zero-shot CLIP through transformers, from a hub id or a folder saved with save_pretrained."""

    def __init__(self, source: str, revision: str | None = None):
        self.source = source
        self.revision = revision
        folder = Path(source)
        # A local folder is named by its content, so the same folder anywhere gives the same cache keys; a hub
        # model by its id and, when pinned, its revision (unpinned, the hub may change it under the same name).
        if folder.is_dir():
            self.identity = f"clip:{folder.name}@{folder_digest(folder)}"
        else:
            self.identity = f"clip:{source}" + (f"@{revision}" if revision else "")
        self.model = None

    def captions(self, targets: dict[str, Target]) -> list[str]:
        """Every candidate caption: the synsets (in name order), the backgrounds, then the bias contexts."""
        contexts = [text for t in targets.values() for text in t.context]
        return [t.caption for t in targets.values()] + list(BACKGROUND_PROMPTS) + contexts

    def contrast(self, targets: dict[str, Target]) -> str:
        return hashlib.sha256("\n".join(self.captions(targets)).encode("utf-8")).hexdigest()[:16]

    def load(self, targets: dict[str, Target], device, wn):
        import torch

        from synthprobe.common.preprocessing import Preprocessing

        self.model, processor = load_clip(self.source, self.revision)
        self.model.to(device)
        captions = self.captions(targets)
        tokens = processor.tokenizer(captions, padding=True, truncation=True, return_tensors="pt").to(device)
        with torch.no_grad():
            self.text = unit_rows(features(self.model.get_text_features(**tokens))).double()
        self.scale = float(self.model.logit_scale.exp())
        # Column layout of the caption list, for the per-image softmax subsets.
        n_objects = len(targets)
        self.object_columns = list(range(n_objects + len(BACKGROUND_PROMPTS)))
        self.column = {synset: i for i, synset in enumerate(targets)}
        self.context_columns, start = {}, len(self.object_columns)
        for synset, target in targets.items():
            self.context_columns[synset] = list(range(start, start + len(target.context)))
            start += len(target.context)
        images = processor.image_processor
        size, crop = images.size, images.crop_size
        return Preprocessing(
            int(size.get("shortest_edge", size.get("height"))),
            int(crop["height"]),
            "bicubic",
            tuple(images.image_mean),
            tuple(images.image_std),
            f"CLIP image processor of {self.source}",
        )

    def score(self, pixels, targets: list[Target], groups: list[str]) -> list[tuple[float, float | None]]:
        import torch

        with torch.no_grad():
            image = unit_rows(features(self.model.get_image_features(pixel_values=pixels.float())))
        logits = (self.scale * image.double() @ self.text.T).cpu().numpy()
        scores = []
        for row, target, group in zip(logits, targets, groups):
            probabilities = softmax(row[self.object_columns])
            object_score = float(probabilities[self.column[target.synset]])
            context_score = None
            if group in BIAS_GROUPS and target.context:
                columns = self.object_columns + self.context_columns[target.synset]
                context_score = float(softmax(row[columns])[len(self.object_columns) :].sum())
            scores.append((object_score, context_score))
        return scores


def load_clip(source: str, revision: str | None = None):
    """CLIPModel and CLIPProcessor from a hub id (at ``revision``: a branch, tag or commit) or a local folder; any
    failure is one line."""
    from transformers import CLIPModel, CLIPProcessor
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the stage has its own bar, on a terminal only
    transformers_logging.set_verbosity_error()  # one warning per caption cut at 77 tokens; docs/methods.md says so
    try:
        model = CLIPModel.from_pretrained(source, revision=revision)
        processor = CLIPProcessor.from_pretrained(source, revision=revision)
    except Exception as exc:  # offline, unknown id, not a CLIP folder: all end in the same advice
        raise InputError(
            f"cannot load the CLIP judge {source!r}{f' at revision {revision}' if revision else ''} "
            f"({error_line(exc)}); with no internet, give a "
            "local folder saved with save_pretrained"
        ) from None
    return model.eval().requires_grad_(False), processor


def features(output):
    """The projected embeddings: transformers 4 returns a tensor, 5 an output whose pooler_output holds them."""
    import torch

    return output if isinstance(output, torch.Tensor) else output.pooler_output


def unit_rows(x):
    return x / x.norm(dim=-1, keepdim=True)


def folder_digest(folder: Path) -> str:
    """sha256 over a model folder's weight files (names and contents), 12 hex digits.

    Only the weights: config files carry the transformers version, which would change the identity
    (and throw away every cached score) on an upgrade that changes nothing.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES):
        digest.update(file.relative_to(folder).as_posix().encode("utf-8") + b"\0")
        digest.update(bytes.fromhex(sha256_file(file)))
    return digest.hexdigest()[:12]


class ClassifierJudge:
    """A torchvision or timm ImageNet-1k classifier: the softmax mass of the synset's hyponym closure."""

    def __init__(self, model: str, weights: str):
        from synthprobe.common.networks import build_network

        self.network = build_network(model, weights)  # its weights identity is needed before any scoring
        self.identity = f"{model}@{self.network.weights}"

    def contrast(self, targets: dict[str, Target]) -> str:
        return ""  # a class's mass does not depend on the other synsets of the run

    def load(self, targets: dict[str, Target], device, wn):
        import torch

        self.module = self.network.module.to(device)
        with torch.no_grad():
            n_classes = self.module(
                torch.zeros(1, 3, self.network.preprocessing.crop, self.network.preprocessing.crop, device=device)
            ).shape[-1]
        if n_classes != N_IMAGENET_CLASSES:
            raise InputError(
                f"judge {self.network.name} has {n_classes} classes, not ImageNet-1k's "
                f"{N_IMAGENET_CLASSES}; the classifier judge needs an ImageNet classifier"
            )
        self.indices = {synset: closure_indices(wn, target) for synset, target in targets.items()}
        return self.network.preprocessing

    def score(self, pixels, targets: list[Target], groups: list[str]) -> list[tuple[float, float | None]]:
        import torch

        with torch.no_grad():
            probabilities = torch.softmax(self.module(pixels).double(), dim=1).cpu().numpy()
        return [
            (float(p[self.indices[t.synset]].sum()) if self.indices[t.synset] else math.nan, None)
            for p, t in zip(probabilities, targets)
        ]


def closure_indices(wn, target: Target) -> list[int]:
    """The ImageNet classes under the target's synset; [] (unscored) when none is, or it is not in WordNet."""
    if target.wordnet is None:
        return []
    try:
        return hierarchy_indices(wn, target.wordnet)
    except InputError:
        return []


def unscored_note(target: Target) -> str:
    if target.wordnet is None:
        return f"{target.synset} is not a WordNet synset"
    return f"no ImageNet class lies under {target.wordnet}"
