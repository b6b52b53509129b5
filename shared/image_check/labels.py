"""``image-check label``: a stratified sample of checked images on a self-contained labelling page.

The sample is stratified by (group, synset, verdict), the verdict being
"flagged" when any judge flagged the image; flagged strata are sampled
``OVERSAMPLE_FLAGGED`` times as densely, since the audit's precision rests on
them and they are rare. Each sampled image carries its design weight, the
stratum's images over its sampled ones, so the audit's estimates describe all
checked images, not the sample (docs/methods.md, The audit).
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from synthprobe.common.decode import load_rgb
from synthprobe.common.files import InputError, open_output, sha256_file
from synthprobe.common.wordnet import indefinite
from synthprobe.formats.image_checks import CHECKS_FILE, FLAGS, read_checks
from synthprobe.formats.image_folder import read_image_folder

OVERSAMPLE_FLAGGED = 4
PAGE_IMAGE_PX = 384  # the longer side of an image on the page: enough to see a small object, about 30 kB each
TEMPLATE = "label.html.j2"


@dataclass(frozen=True)
class Sample:
    rows: pd.DataFrame  # id, synset, group, path, sha256, prompt, stratum, weight, boxes; in page order
    strata: pd.DataFrame  # stratum, flagged, n_images, n_sampled, weight


def checked_images(checks: list[dict], folder_rows: pd.DataFrame) -> pd.DataFrame:
    """One row per checked image: its synset, group, path, prompt, whether any judge flagged it, and the judges'
    boxes ({judge: [x0, y0, x1, y1] as fractions of the image})."""
    prompts = dict(zip(folder_rows["id"], folder_rows["prompt"].fillna("")))
    images: dict[str, dict] = {}
    for row in checks:
        image = images.setdefault(
            row["id"],
            {
                "id": row["id"],
                "synset": row.get("synset", ""),
                "group": row.get("group", ""),
                "path": row.get("path", ""),
                "prompt": prompts.get(row["id"], ""),
                "flagged": False,
                "boxes": {},
            },
        )
        image["flagged"] |= row["verdict"] in FLAGS
        if row.get("box"):
            image["boxes"][row["judge"]] = row["box"]
    return pd.DataFrame(list(images.values()))


def allocate(sizes: np.ndarray, factors: np.ndarray, n: int) -> np.ndarray:
    """Images to draw from each stratum: at least one from each (the largest strata first when ``n`` is short),
    the rest in proportion to size x factor, never more than a stratum holds."""
    sizes = np.asarray(sizes, dtype=np.int64)
    n = min(n, int(sizes.sum()))
    take = np.zeros_like(sizes)
    order = np.argsort(-(sizes * factors), kind="stable")
    take[order[: min(n, len(sizes))]] = 1
    while take.sum() < n:
        room = sizes - take
        demand = np.where(room > 0, sizes * factors, 0).astype(float)
        share = (n - take.sum()) * demand / demand.sum()
        step = np.minimum(np.floor(share).astype(np.int64), room)
        if step.sum() == 0:  # the remainder goes one at a time to the largest shares
            step = np.zeros_like(take)
            step[np.argmax(share)] = 1
        take += step
    return take


def draw_sample(images: pd.DataFrame, n: int, seed: int) -> Sample:
    """``n`` images stratified by (group, synset, flagged), flagged strata oversampled, in a shuffled page order."""
    if n < 1:
        raise InputError(f"--sample {n}: give at least one image to label")
    rng = np.random.default_rng(seed)
    flagged = images["flagged"].to_numpy(dtype=bool)
    stratum = (images["group"] + "|" + images["synset"]).to_numpy(dtype=str)
    names, codes = np.unique(np.char.add(stratum, np.where(flagged, "|flagged", "|ok")), return_inverse=True)
    codes = codes.ravel()
    strata = pd.DataFrame({"stratum": names, "flagged": np.char.endswith(names, "|flagged")})
    strata["n_images"] = np.bincount(codes, minlength=len(names))
    factors = np.where(strata["flagged"], OVERSAMPLE_FLAGGED, 1)
    strata["n_sampled"] = allocate(strata["n_images"].to_numpy(), factors, n)
    strata["weight"] = np.where(strata["n_sampled"] > 0, strata["n_images"] / strata["n_sampled"].clip(lower=1), 0.0)
    picked = np.concatenate(
        [
            np.sort(rng.choice(np.flatnonzero(codes == h), size=int(size), replace=False))
            for h, size in enumerate(strata["n_sampled"])
        ]
    )
    picked = picked[rng.permutation(len(picked))]
    sample = images.iloc[picked].assign(stratum=names[codes[picked]], weight=strata["weight"].to_numpy()[codes[picked]])
    return Sample(sample.reset_index(drop=True), strata)


def question(synset: str) -> str:
    """ "Is there a frog in this image?" from the synset's name (frog.n.01) or an ImageFolder class name."""
    head = synset.split(".")[0] if synset.count(".") >= 2 else synset
    return f"Is there {indefinite(head.replace('_', ' '))} in this image?"


def inline_image(path: Path) -> tuple[str, str]:
    """(sha256 of the file, a JPEG data URI at page size): the hash is of what the person is shown."""
    image = load_rgb(path)
    image.thumbnail((PAGE_IMAGE_PX, PAGE_IMAGE_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return sha256_file(path), "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def page_items(sample: Sample, folder) -> list[dict]:
    items = []
    for _, row in sample.rows.iterrows():
        try:
            digest, uri = inline_image(folder.file(row["path"]))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {folder.file(row['path'])} ({exc})") from None
        items.append(
            {
                "id": row["id"],
                "sha256": digest,
                "question": question(row["synset"]),
                "group": row["group"],
                "prompt": row["prompt"],
                "weight": round(float(row["weight"]), 6),
                "stratum": row["stratum"],
                "boxes": row["boxes"],
                "image": uri,
            }
        )
    return items


def render_page(items: list[dict], title: str) -> str:
    from importlib import resources

    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(resources.files("synthprobe.templates"))),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
    )
    # Answers are kept per sample: a page for another sample starts empty.
    key = hashlib.sha256("\n".join(f"{i['id']} {i['sha256']}" for i in items).encode("utf-8")).hexdigest()[:16]
    return env.get_template(TEMPLATE).render(items=items, storage_key=f"synthprobe-labels:{key}", title=title)


def write_label_page(images: str | Path, checks_dir: str | Path, out: str | Path, n: int, seed: int) -> Sample:
    """Sample the checked images of ``images`` and write the labelling page to ``out`` (``-``: stdout)."""
    checks_path = Path(checks_dir) / CHECKS_FILE
    if not checks_path.is_file():
        raise InputError(f"{checks_dir} has no {CHECKS_FILE}; run image-check on the images first")
    folder = read_image_folder(images)
    images_checked = checked_images(read_checks(checks_path), folder.rows)
    missing = sorted(set(images_checked["id"]) - set(folder.rows["id"]))
    if missing:
        raise InputError(
            f"{checks_path}: {len(missing)} checked images are not in {folder.root} (first {missing[0]}); "
            "give the image folder that was checked"
        )
    sample = draw_sample(images_checked, n, seed)
    html = render_page(page_items(sample, folder), f"Label {len(sample.rows)} images of {folder.root.name}")
    with open_output(out) as handle:
        handle.write(html)
    return sample
