"""The detector judge (``owlv2:<hub id[@revision] or folder>``): is the object anywhere in the image?

Presence of a small object is a detection question, which a whole-image
caption answers badly. OWLv2 (transformers' Owlv2ForObjectDetection) scores
every image patch's box against text queries, "a photo of a {lemma}" for each
lemma of the synset; ``object_score`` is the best box's score (a sigmoid, 0..1)
over the synset's queries, and that box is kept (``box``: x0, y0, x1, y1 as
fractions of the judged square). A context-only image is judged by the same
presence question, never by scoring a negated text. The judge sees the centre
square of an image, as the CLIP judge does; generated images are square.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from synthprobe.common.files import InputError, error_line
from synthprobe.image_check.judges import Target, folder_digest, hub_source, parse_judge

OWLV2_PREFIX = "owlv2:"
DEFAULT_OWLV2 = "google/owlv2-base-patch16-ensemble"
QUERY_TEMPLATE = "a photo of {}"
BOX_DIGITS = 4


def lemma_queries(target: Target, wn) -> list[str]:
    """The synset's lemmas as queries ("a photo of a tree frog"); the class name where it is not in WordNet."""
    from synthprobe.common.wordnet import indefinite

    if target.wordnet is None:
        names = [target.synset.replace("_", " ")]
    else:
        names = list(dict.fromkeys(lemma.name().replace("_", " ") for lemma in wn.synset(target.wordnet).lemmas()))
    return [QUERY_TEMPLATE.format(indefinite(name)) for name in names]


def parse_any_judge(spec: str, weights: str):
    """A judge from its command-line spec: ``owlv2:...`` here, the others as judges.parse_judge makes them."""
    if spec.startswith(OWLV2_PREFIX):
        return Owlv2Judge(*hub_source(spec, OWLV2_PREFIX, f"{OWLV2_PREFIX}{DEFAULT_OWLV2}"))
    return parse_judge(spec, weights)


class Owlv2Judge:
    """OWLv2 through transformers, from a hub id (optionally @revision) or a folder saved with save_pretrained."""

    def __init__(self, source: str, revision: str | None = None):
        self.source = source
        self.revision = revision
        folder = Path(self.source)
        # As for CLIP: a folder is named by its weights, a hub model by its id and pinned revision.
        if folder.is_dir():
            self.identity = f"owlv2:{folder.name}@{folder_digest(folder)}"
        else:
            self.identity = f"owlv2:{self.source}" + (f"@{revision}" if revision else "")
        self.queries: dict[str, list[str]] = {}

    def contrast(self, targets: dict[str, Target]) -> str:
        """The query template: a synset's score depends on its own lemmas only, so the run's synsets do not matter."""
        return hashlib.sha256(QUERY_TEMPLATE.encode("utf-8")).hexdigest()[:16]

    def load(self, targets: dict[str, Target], device, wn):
        from synthprobe.common.preprocessing import Preprocessing

        self.model, processor = load_owlv2(self.source, self.revision)
        self.model.to(device)
        self.device = device
        texts, self.columns = [], {}
        for synset, target in targets.items():
            queries = lemma_queries(target, wn)
            self.columns[synset] = list(range(len(texts), len(texts) + len(queries)))
            texts += queries
        length = self.model.config.text_config.max_position_embeddings
        self.tokens = processor.tokenizer(
            texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        ).to(device)
        images = processor.image_processor
        side, source = int(images.size["height"]), f"OWLv2 processor of {self.source}"
        return Preprocessing(side, side, "bilinear", tuple(images.image_mean), tuple(images.image_std), source)

    def score(self, pixels, targets: list[Target], groups: list[str]) -> list[tuple[float, None, list[float]]]:
        """(best box score over the synset's queries, no context score, that box) per image."""
        import torch

        batch = len(pixels)
        with torch.no_grad():
            output = self.model(
                input_ids=self.tokens["input_ids"].repeat(batch, 1),
                attention_mask=self.tokens["attention_mask"].repeat(batch, 1),
                pixel_values=pixels.float(),
            )
        scores = torch.sigmoid(output.logits.double()).cpu().numpy()  # (images, boxes, queries)
        boxes = output.pred_boxes.double().cpu().numpy()  # (images, boxes, 4): centre x, centre y, width, height
        judged = []
        for image_scores, image_boxes, target in zip(scores, boxes, targets):
            mine = image_scores[:, self.columns[target.synset]]
            best = int(mine.max(axis=1).argmax())
            judged.append((float(mine[best].max()), None, corners(image_boxes[best])))
        return judged


def corners(box) -> list[float]:
    """A (centre x, centre y, width, height) box as [x0, y0, x1, y1], clipped to the image."""
    cx, cy, w, h = (float(v) for v in box)
    return [round(min(1.0, max(0.0, v)), BOX_DIGITS) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)]


def load_owlv2(source: str, revision: str | None = None):
    """Owlv2ForObjectDetection and Owlv2Processor from a hub id (at ``revision``) or a local folder; failures are one
    line."""
    from transformers import Owlv2ForObjectDetection, Owlv2Processor
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    try:
        model = Owlv2ForObjectDetection.from_pretrained(source, revision=revision)
        processor = Owlv2Processor.from_pretrained(source, revision=revision)
    except Exception as exc:  # offline, unknown id, not an OWLv2 folder: the same advice
        raise InputError(
            f"cannot load the OWLv2 judge {source!r}{f' at revision {revision}' if revision else ''} "
            f"({error_line(exc)}); with no internet, give a local folder saved with save_pretrained"
        ) from None
    return model.eval().requires_grad_(False), processor
