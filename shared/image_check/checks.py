"""The image check (the ``image-check`` logic): does each image show what its prompt says?

A *judge* independent of the classifier under study scores every image:
``object_score`` says how strongly it shows the record's synset and, for bias
records, ``context_score`` how strongly it shows the class's usual
surroundings. Two kinds of judge, CLIP and an ImageNet classifier (shared/image_check/judges.py).

The verdict thresholds the object score: ``object-missing`` for an object-only,
mixed or concept image below ``missing_below``, ``object-leaked`` for a
context-only image above ``leaked_above``. Scores are cached in checks.jsonl by
(judge, image sha256, synset, group, contrast set): a rerun scores only new
images, and a rerun with other thresholds scores nothing and loads no model.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from synthprobe import library_versions
from synthprobe.common.files import InputError, atomic_write, begin_outputs, os_reason, sha256_file
from synthprobe.common.progress import progress
from synthprobe.common.wordnet import load_wordnet
from synthprobe.formats.analysis_folder import SUMMARY_FILE, provenance_of, table_entry, write_summary
from synthprobe.formats.image_checks import CHECKS_FILE, CHECKS_SCHEMA, VERDICTS, read_checks, write_checks
from synthprobe.formats.image_folder import ImageFolder, read_image_folder
from synthprobe.image_check.judges import BACKGROUND_PROMPTS, ClipJudge, Target, resolve_targets, unscored_note
from synthprobe.image_check.rates import RATES_FILE, flag_rates

log = logging.getLogger("synthprobe")

RATES_DESCRIPTION = (
    "share of scored images flagged per synset, group and negative prompt (made with one or not) "
    "(object-leaked for context-only, object-missing otherwise) with a 95% interval over "
    "prompt units (Wilson's on the design-effect sample size)"
)
# docs/methods.md says why: a leak is the object as the judge's majority reading of an image meant to
# show none; a miss needs the object to get less than a tenth of the judge's belief.
DEFAULT_MISSING_BELOW = 0.1
DEFAULT_LEAKED_ABOVE = 0.5
ROWS_PER_WRITE = 256
SCORE_DIGITS = 6  # significant: a leak score of 2e-5 keeps its digits


@dataclass(frozen=True)
class Thresholds:
    missing_below: float = DEFAULT_MISSING_BELOW
    leaked_above: float = DEFAULT_LEAKED_ABOVE


def verdict(group: str, object_score: float | None, thresholds: Thresholds) -> str:
    if object_score is None or math.isnan(object_score):
        return "unscored"
    if group == "context-only":
        return "object-leaked" if object_score > thresholds.leaked_above else "ok"
    return "object-missing" if object_score < thresholds.missing_below else "ok"


# ---- the checks file -------------------------------------------------------------------------


def cache_key(row: dict) -> tuple:
    """A hand-written row without these fields is no cache entry: its images are scored again."""
    return row["judge"], row.get("sha256"), row.get("synset"), row.get("group"), row.get("contrast")


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
class Params:
    thresholds: Thresholds = Thresholds()
    device: str = "auto"
    batch_size: int = 32
    workers: int = 0
    rows_per_write: int = ROWS_PER_WRITE
    wordnet_dir: str | None = None
    class_dir: Path | None = None
    silent: bool = False
    audit: Path | None = None  # the audit folder whose thresholds were taken


@dataclass
class CheckResult:
    scored: int
    reused: int
    summary: dict


@dataclass
class Judged:
    """One judge's verdicts on every image of a folder (``rows``, in folder order) beside the other judges' rows
    (``kept``), and how many were scored now or reused from the checks file."""

    rows: list[dict]
    kept: list[dict]
    contrast: str
    scored: int
    reused: int


def run_image_check(images: str | Path, out: str | Path, judge, settings: Params) -> CheckResult:
    """Score every image of ``images`` that ``out``'s checks.jsonl has not scored with this judge; summary last."""
    folder = read_image_folder(images)
    out = begin_outputs(out, SUMMARY_FILE)
    checks_path = out / CHECKS_FILE
    previous = read_checks(checks_path) if checks_path.is_file() else []
    check_same_images(previous, folder, checks_path)
    judged = judge_images(folder, previous, judge, settings, checks_path)
    summary = write_check_outputs(out, folder, judge, judged, settings)
    return CheckResult(judged.scored, judged.reused, summary)


def judge_images(folder: ImageFolder, previous: list[dict], judge, settings: Params, checks_path: Path) -> Judged:
    """Verdicts from the cache of ``previous`` rows, or scored now; checks.jsonl is rewritten as scores come in
    (every ``rows_per_write`` and at the end, even on an error), so an interrupted run keeps them."""
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
        write_checks(checks_path, kept + [done[i] for i in rows["id"] if i in done])

    try:
        if todo:
            log.info(
                "%s: %d images to score with %s (%d already scored)", folder.root, len(todo), judge.identity, reused
            )
            todo_rows = pd.DataFrame(todo).reset_index(drop=True)
            scored = score_images(judge, folder, todo_rows, targets, wn, settings)
            for image, (object_score, context_score, *box) in scored:
                note = unscored_note(targets[image["synset"]]) if math.isnan(object_score) else ""
                done[image["id"]] = check_row(
                    image, judge.identity, contrast, object_score, context_score, settings.thresholds, note
                )
                if box:  # a detector's best box
                    done[image["id"]]["box"] = box[0]
                if (len(done) - reused) % settings.rows_per_write == 0:  # a hard kill loses at most this many
                    save()
    finally:
        save()  # an interrupt or an error keeps every score made so far
    return Judged([done[i] for i in rows["id"]], kept, contrast, len(todo), reused)


def write_check_outputs(out: Path, folder: ImageFolder, judge, judged: Judged, settings: Params) -> dict:
    """The flag rates table, then summary.json (which marks the folder complete); returns the summary."""
    rates = flag_rates(pd.DataFrame(judged.rows, columns=["id", "synset", "group", "verdict"]), folder.rows)
    with atomic_write(out / RATES_FILE) as handle:
        rates.to_csv(handle, index=False, float_format="%.6g", lineterminator="\n")
    return write_summary(
        out,
        "image-check",
        build_summary(folder, judge, judged.contrast, judged.rows, judged.kept, settings),
        tables={"rates": table_entry(RATES_FILE, len(rates), RATES_DESCRIPTION)},
        figures={},
        provenance=provenance_of(images=folder.root.resolve(), audit=settings.audit and Path(settings.audit).resolve()),
    )


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


def score_images(judge, folder: ImageFolder, todo: pd.DataFrame, targets: dict[str, Target], wn, settings: Params):
    """Yield (image row, (object score, context score)) in ``todo`` order, decoding in DataLoader workers."""
    import torch

    from synthprobe.common.devices import resolve_device
    from synthprobe.common.image_dataset import ImageDataset
    from synthprobe.common.precision import autocast, default_precision

    device = resolve_device(settings.device, auto_mps=False)
    preprocessing = judge.load(targets, device, wn)
    # fp32 on the CPU keeps the scores close across machines (they still differ in their last digits
    # between instruction sets and thread counts); half precision on the GPU is fast and close.
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
    folder: ImageFolder, judge, contrast: str, rows: list[dict], kept: list[dict], settings: Params
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
