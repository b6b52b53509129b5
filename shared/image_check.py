"""The image check (the ``image-check`` logic): does each image show what its prompt says?

A *judge* independent of the classifier under study scores every image:
``object_score`` says how strongly it shows the record's synset and, for bias
records, ``context_score`` how strongly it shows the class's usual
surroundings. Two kinds of judge:

- zero-shot CLIP (``clip:<hub id or folder>``): "a photo of a {lemma}, {gloss}"
  for every synset of the run plus a few generic backgrounds are the candidate
  captions; ``object_score`` is the softmax probability of the image's own
  synset among them. ``context_score`` adds the class definition's
  context-only prompts to the candidates and is their summed probability.
- an ImageNet classifier (a torchvision name, or ``timm:<name>``):
  ``object_score`` is the softmax mass of the classes in the synset's WordNet
  hyponym closure; a synset above no ImageNet class is ``unscored``.

The verdict thresholds the object score: ``object-missing`` for an object-only,
mixed or concept image below ``missing_below``, ``object-leaked`` for a
context-only image above ``leaked_above``. Scores are cached in checks.jsonl by
(judge, image sha256, synset, group, contrast set): a rerun scores only new
images, and a rerun with other thresholds scores nothing and loads no model.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy.special import softmax

from . import library_versions
from .check_rates import RATES_FILE, flag_rates
from .files import InputError, atomic_write, begin_outputs, error_line, os_reason, sha256_file
from .formats.analysis_folder import SUMMARY_FILE, provenance_of, table_entry, write_summary
from .formats.image_checks import CHECKS_FILE, CHECKS_SCHEMA, VERDICTS, read_checks, write_checks
from .formats.image_folder import ImageFolder, read_image_folder
from .formats.prompts import SYNSET_PATTERN
from .imagenet import N_IMAGENET_CLASSES, hierarchy_indices, is_wnid, wnid_synset
from .progress import progress
from .prompts import BIAS_GROUPS, indefinite, known_bias_classes, load_bias_class
from .wordnet import get_synset, lemma_text, load_wordnet

log = logging.getLogger("synthprobe")

RATES_DESCRIPTION = (
    "share of scored images flagged per synset and group "
    "(object-leaked for context-only, object-missing otherwise) with a 95% interval over "
    "prompt units (Wilson's on the design-effect sample size)"
)
CLIP_PREFIX = "clip:"
DEFAULT_JUDGE = "clip:openai/clip-vit-large-patch14"
# docs/methods.md says why: a leak is the object as the judge's majority reading of an image meant to
# show none; a miss needs the object to get less than a tenth of the judge's belief.
DEFAULT_MISSING_BELOW = 0.1
DEFAULT_LEAKED_ABOVE = 0.5
# Generic scenes without an object, so that an empty image has somewhere to put its probability.
BACKGROUND_PROMPTS = (
    "a photo of an empty room",
    "a photo of a landscape",
    "a photo of a plain background",
    "a photo of a city street",
    "a photo of a texture",
)
ROWS_PER_WRITE = 256
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
SCORE_DIGITS = 6  # significant: a leak score of 2e-5 keeps its digits


@dataclass(frozen=True)
class Thresholds:
    missing_below: float = DEFAULT_MISSING_BELOW
    leaked_above: float = DEFAULT_LEAKED_ABOVE


@dataclass(frozen=True)
class Target:
    """What the images of one synset should show, as the judges need it."""

    synset: str  # as the image rows name it: bee.n.01, or an ImageFolder class folder (n02206856, cats)
    wordnet: str | None  # the WordNet synset name, None when the name is not in WordNet
    caption: str  # "a photo of a bee, any of numerous hairy-bodied insects ..."
    context: tuple[str, ...]  # the bias class's context-only prompts, () when no bias class has this synset


def verdict(group: str, object_score: float | None, thresholds: Thresholds) -> str:
    if object_score is None or math.isnan(object_score):
        return "unscored"
    if group == "context-only":
        return "object-leaked" if object_score > thresholds.leaked_above else "ok"
    return "object-missing" if object_score < thresholds.missing_below else "ok"


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
        source = spec[len(CLIP_PREFIX) :]
        if not source:
            raise InputError("--judge clip: needs a hub id or a local folder, e.g. clip:openai/clip-vit-large-patch14")
        return ClipJudge(source)
    return ClassifierJudge(spec, weights)


class ClipJudge:
    """Zero-shot CLIP through transformers, from a hub id or a folder saved with save_pretrained."""

    def __init__(self, source: str):
        self.source = source
        folder = Path(source)
        # A local folder is named by its content, so the same folder anywhere gives the same cache keys.
        self.identity = f"clip:{folder.name}@{folder_digest(folder)}" if folder.is_dir() else f"clip:{source}"
        self.model = None

    def captions(self, targets: dict[str, Target]) -> list[str]:
        """Every candidate caption: the synsets (in name order), the backgrounds, then the bias contexts."""
        contexts = [text for t in targets.values() for text in t.context]
        return [t.caption for t in targets.values()] + list(BACKGROUND_PROMPTS) + contexts

    def contrast(self, targets: dict[str, Target]) -> str:
        return hashlib.sha256("\n".join(self.captions(targets)).encode("utf-8")).hexdigest()[:16]

    def load(self, targets: dict[str, Target], device, wn):
        import torch

        from .cnn.preprocessing import Preprocessing

        self.model, processor = load_clip(self.source)
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


def load_clip(source: str):
    """CLIPModel and CLIPProcessor from a hub id or a local folder; any failure is one line."""
    from transformers import CLIPModel, CLIPProcessor
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the stage has its own bar, on a terminal only
    transformers_logging.set_verbosity_error()  # one warning per caption cut at 77 tokens; docs/methods.md says so
    try:
        model = CLIPModel.from_pretrained(source)
        processor = CLIPProcessor.from_pretrained(source)
    except Exception as exc:  # offline, unknown id, not a CLIP folder: all end in the same advice
        raise InputError(
            f"cannot load the CLIP judge {source!r} ({error_line(exc)}); with no internet, give a "
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
        from .cnn.models import build_network

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


# ---- the checks file -------------------------------------------------------------------------


def cache_key(row: dict) -> tuple:
    return row["judge"], row["sha256"], row["synset"], row["group"], row["contrast"]


def check_row(
    image: pd.Series,
    judge: str,
    contrast: str,
    object_score: float,
    context_score: float | None,
    thresholds: Thresholds,
    note: str = "",
) -> dict:
    row = {
        "schema": CHECKS_SCHEMA,
        "id": image["id"],
        "judge": judge,
        "synset": image["synset"],
        "group": image["group"],
        "target": image["target"],
        "path": image["path"],
        "sha256": image["sha256"],
        "object_score": rounded(object_score),
        "context_score": rounded(context_score),
        "verdict": verdict(image["group"], object_score, thresholds),
        "missing_below": thresholds.missing_below,
        "leaked_above": thresholds.leaked_above,
        "contrast": contrast,
    }
    if note:
        row["note"] = note
    return row


def rounded(value: float | None) -> float | None:
    """JSON has no NaN: an undefined score is null."""
    return None if value is None or math.isnan(value) else float(f"{value:.{SCORE_DIGITS}g}")


def rethreshold(row: dict, thresholds: Thresholds) -> dict:
    score = math.nan if row["object_score"] is None else row["object_score"]
    return {
        **row,
        "verdict": verdict(row["group"], score, thresholds),
        "missing_below": thresholds.missing_below,
        "leaked_above": thresholds.leaked_above,
    }


# ---- the run ---------------------------------------------------------------------------------


@dataclass
class RunSettings:
    thresholds: Thresholds = Thresholds()
    device: str = "auto"
    batch_size: int = 32
    workers: int = 0
    rows_per_write: int = ROWS_PER_WRITE
    wordnet_dir: str | None = None
    class_dir: Path | None = None
    silent: bool = False


@dataclass
class CheckResult:
    scored: int
    reused: int
    summary: dict


def run_image_check(images: str | Path, out: str | Path, judge, settings: RunSettings) -> CheckResult:
    """Score every image of ``images`` that ``out``'s checks.jsonl has not scored with this judge; summary last."""
    folder = read_image_folder(images)
    out = begin_outputs(out, SUMMARY_FILE)
    checks_path = out / CHECKS_FILE
    previous = read_checks(checks_path) if checks_path.is_file() else []
    check_same_images(previous, folder, checks_path)
    rows = hashed_rows(folder)
    wn = load_wordnet(settings.wordnet_dir)
    targets = resolve_targets(rows["synset"], wn, settings.class_dir)
    contrast = judge.contrast(targets)
    ids = set(rows["id"])
    # Other judges' rows of these images stay; this judge's are rebuilt from the cache or rescored.
    kept = [r for r in previous if r["judge"] != judge.identity and r["id"] in ids]
    cached = {cache_key(r): r for r in previous if r["judge"] == judge.identity}
    done: dict[str, dict] = {}
    todo = []
    for _, image in rows.iterrows():
        hit = cached.get((judge.identity, image["sha256"], image["synset"], image["group"], contrast))
        if hit is None:
            todo.append(image)
        else:
            done[image["id"]] = rethreshold(
                {**hit, "id": image["id"], "path": image["path"], "target": image["target"]}, settings.thresholds
            )
    reused = len(done)

    def save():
        ordered = [done[i] for i in rows["id"] if i in done]
        write_checks(checks_path, kept + ordered)

    if todo:
        log.info("%s: %d images to score with %s (%d already scored)", images, len(todo), judge.identity, reused)
        todo_rows = pd.DataFrame(todo).reset_index(drop=True)
        try:
            for image, (object_score, context_score) in score_images(judge, folder, todo_rows, targets, wn, settings):
                note = unscored_note(targets[image["synset"]]) if math.isnan(object_score) else ""
                done[image["id"]] = check_row(
                    image, judge.identity, contrast, object_score, context_score, settings.thresholds, note
                )
                if (len(done) - reused) % settings.rows_per_write == 0:  # a hard kill loses at most this many
                    save()
        finally:
            save()  # an interrupt or an error keeps every score made so far
    else:
        save()
    judged = [done[i] for i in rows["id"]]
    rates = flag_rates(pd.DataFrame(judged, columns=["id", "synset", "group", "verdict"]), folder.rows)
    with atomic_write(out / RATES_FILE) as handle:
        rates.to_csv(handle, index=False, float_format="%.6g", lineterminator="\n")
    summary = write_summary(
        out,
        "image-check",
        build_summary(folder, judge, contrast, judged, kept, settings),
        tables={"rates": table_entry(RATES_FILE, len(rates), RATES_DESCRIPTION)},
        figures={},
        provenance=provenance_of(images=folder.root.resolve()),
    )
    return CheckResult(len(todo), reused, summary)


def check_same_images(previous: list[dict], folder: ImageFolder, path: Path) -> None:
    if previous and not set(folder.rows["id"]) & {r["id"] for r in previous}:
        raise InputError(
            f"{path} holds checks of other images (none of its ids is in {folder.root}); give another --out"
        )


def hashed_rows(folder: ImageFolder) -> pd.DataFrame:
    """The folder's rows with every file's sha256 (the cache key); a file that differs from its manifest stops the
    run."""
    rows = folder.rows.copy()
    digests = []
    for path, expected in zip(rows["path"], rows["sha256"]):
        try:
            digest = sha256_file(folder.file(path))
        except OSError as exc:
            raise InputError(f"cannot read {folder.file(path)}: {os_reason(exc)}") from None
        if expected and digest != expected:
            raise InputError(f"{folder.file(path)} differs from the sha256 in its manifest; regenerate the folder")
        digests.append(digest)
    rows["sha256"] = digests
    return rows


def score_images(judge, folder: ImageFolder, todo: pd.DataFrame, targets: dict[str, Target], wn, settings: RunSettings):
    """Yield (image row, (object score, context score)) in ``todo`` order, decoding in DataLoader workers."""
    import torch

    from .cnn.precision import autocast, default_precision
    from .cnn.reader import ImageDataset
    from .devices import resolve_device

    device = resolve_device(settings.device, auto_mps=False)
    preprocessing = judge.load(targets, device, wn)
    # fp32 on the CPU keeps the scores identical across machines; half precision on the GPU is fast and close.
    precision = default_precision(device) if device.type == "cuda" else "fp32"
    dataset = ImageDataset([folder.file(p) for p in todo["path"]], list(todo["sha256"]), preprocessing)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=settings.batch_size, num_workers=settings.workers, pin_memory=device.type == "cuda"
    )
    normalize = preprocessing.normalizer(device)
    bar = progress(None, total=len(todo), desc="image-check", unit="img", silent=settings.silent)
    start = 0
    with autocast(device, precision):
        for pixels, _, errors in loader:
            batch = todo.iloc[start : start + len(pixels)]
            start += len(pixels)
            bad = next((i for i, error in enumerate(errors) if error), None)
            if bad is not None:
                raise InputError(f"cannot decode {folder.file(batch['path'].iloc[bad])} ({errors[bad]})")
            scores = judge.score(normalize(pixels), [targets[s] for s in batch["synset"]], list(batch["group"]))
            for (_, image), score in zip(batch.iterrows(), scores):
                yield image, score
            bar.update(len(pixels))
    bar.close()


def count_table(rows: list[dict]) -> list[dict]:
    """Verdict counts per (synset, group), in synset then group order."""
    table = pd.DataFrame(rows, columns=["synset", "group", "verdict"])
    counts = []
    for (synset, group), part in table.groupby(["synset", "group"], sort=True):
        verdicts = part["verdict"].value_counts()
        counts.append(
            {"synset": synset, "group": group, "n": len(part), **{v: int(verdicts.get(v, 0)) for v in VERDICTS}}
        )
    return counts


def build_summary(
    folder: ImageFolder, judge, contrast: str, rows: list[dict], kept: list[dict], settings: RunSettings
) -> dict:
    by_group = pd.DataFrame(rows, columns=["group", "verdict"])
    groups = {
        group: {v: int((part["verdict"] == v).sum()) for v in VERDICTS} | {"n": len(part)}
        for group, part in by_group.groupby("group", sort=True)
    }
    return {
        "judge": judge.identity,
        "judges": sorted({judge.identity, *(r["judge"] for r in kept)}),
        "contrast": contrast,
        "background_prompts": list(BACKGROUND_PROMPTS) if isinstance(judge, ClipJudge) else [],
        "thresholds": {
            "missing_below": settings.thresholds.missing_below,
            "leaked_above": settings.thresholds.leaked_above,
        },
        "source": {"folder": str(folder.root.resolve()), "layout": folder.layout, "sha256": folder.source_sha256},
        "n_images": len(rows),
        "verdicts": {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS},
        "groups": groups,
        "counts": count_table(rows),
        "files": {"checks": CHECKS_FILE},
        "versions": library_versions("torch", "torchvision", "timm", "transformers"),
    }
