"""The classifier classes that count as each bias class (``--mapping``), and readable names for every class."""

from __future__ import annotations

from dataclasses import dataclass

from synthprobe.common.files import InputError
from synthprobe.common.imagenet import hierarchy_indices, imagenet_names, is_imagenet_1k, is_wnid
from synthprobe.formats.bias_classes import BiasClass

MAPPINGS = ("hierarchy", "exact")


@dataclass(frozen=True)
class TargetSet:
    """The classifier classes that count as one bias class."""

    name: str
    synset: str
    indices: tuple[int, ...]
    n_classes: int  # the classifier's

    @property
    def chance(self) -> float:
        """The confidence of a classifier that spreads its mass evenly over all its classes."""
        return len(self.indices) / self.n_classes


def resolve_targets(
    bias_class: BiasClass, mapping: str, model_classes: list[str] | None, n_classes: int, wn=None
) -> TargetSet:
    if mapping == "hierarchy":
        if not model_classes or not all(is_wnid(c) for c in model_classes):
            raise InputError(
                "--mapping hierarchy needs an ImageNet classifier, but the store's classes are not "
                "ImageNet wnids; use --mapping exact with class indices in the bias class definition"
            )
        synsets = (bias_class.synset, *bias_class.extra_synsets)
        indices = sorted({i for synset in synsets for i in hierarchy_indices(wn, synset, model_classes)})
    else:
        indices = exact_indices(bias_class, model_classes, n_classes)
    return TargetSet(bias_class.name, bias_class.synset, tuple(indices), n_classes)


def exact_indices(bias_class: BiasClass, model_classes: list[str] | None, n_classes: int) -> list[int]:
    """The definition's ``imagenet_classes``: wnids looked up in the classifier's classes, or integer indices."""
    if not bias_class.imagenet_classes:
        raise InputError(f"bias class {bias_class.name!r} lists no imagenet_classes, which --mapping exact needs")
    position = {wnid: i for i, wnid in enumerate(model_classes or [])}
    indices = set()
    for entry in bias_class.imagenet_classes:
        if isinstance(entry, int) and not isinstance(entry, bool):
            if not 0 <= entry < n_classes:
                raise InputError(
                    f"bias class {bias_class.name!r}: class index {entry} is out of range "
                    f"(the classifier has {n_classes} classes)"
                )
            indices.add(entry)
        elif entry in position:
            indices.add(position[entry])
        else:
            hint = "" if model_classes else " (the store does not list the classifier's classes; give integer indices)"
            raise InputError(f"bias class {bias_class.name!r}: {entry!r} is not one of the classifier's classes{hint}")
    return sorted(indices)


def class_labels(attrs: dict, n_classes: int) -> list[str]:
    """A readable name for every classifier output: the store's names, ImageNet's, the ids, or 'class <i>'."""
    names, classes = attrs.get("class_names"), attrs.get("classes")
    if names and len(names) == n_classes:
        return [str(n) for n in names]
    if is_imagenet_1k(classes):
        return list(imagenet_names())
    if classes and len(classes) == n_classes:
        return [str(c) for c in classes]
    return [f"class {i}" for i in range(n_classes)]
