"""How often the image checks flag images: leak and miss rates per synset and group, on prompt units.

An object-only, mixed or concept image can miss its object; a context-only
image can leak it. Images made with a negative prompt (wn-prompts gives context-only records one naming the
object) are counted apart, so a table shows whether leaks fall with it. A rate is the share of flagged images
among the scored ones,
with an interval that treats the images of one prompt as correlated
(``stats.clustered_proportion``; coverage measured in tests/image_check/test_rates.py).
"""

from __future__ import annotations

import pandas as pd

from synthprobe.common.stats import clustered_proportion
from synthprobe.common.units import assign_units

RATES_FILE = "rates.csv"
RATES_COLUMNS = ["synset", "group", "negative_prompt", "flag", "n", "n_units", "n_flagged", "rate", "rate_low"]
RATES_COLUMNS += ["rate_high"]


def flag_of(group: str) -> str:
    """The verdict that flags an image of ``group``."""
    return "object-leaked" if group == "context-only" else "object-missing"


def flag_rates(checks: pd.DataFrame, images: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per (synset, group, made with a negative prompt or not): scored images and prompt units, flagged images,
    the rate and its interval.

    ``checks`` holds one judge's rows (id, synset, group, verdict); ``images`` the
    image folder's rows (id, synset, prompt, optionally negative_prompt), which give each image its unit.
    Unscored images (no score from this judge) are left out.
    """
    units = assign_units(images, None)
    unit_of = dict(zip(images["id"], units.codes))
    negative = images["negative_prompt"].fillna("") != "" if "negative_prompt" in images else False
    negative_of = dict(zip(images["id"], pd.Series(negative, index=images.index, dtype=bool)))
    scored = checks[checks["verdict"] != "unscored"].assign(
        unit=lambda t: t["id"].map(unit_of), negative_prompt=lambda t: t["id"].map(negative_of).fillna(False)
    )
    lines = []
    for (synset, group, negative), part in scored.groupby(["synset", "group", "negative_prompt"], sort=True):
        flag = flag_of(group)
        per_unit = part.assign(flagged=part["verdict"] == flag).groupby("unit")["flagged"].agg(["sum", "size"])
        estimate = clustered_proportion(per_unit["sum"], per_unit["size"], level)
        lines.append(
            {
                "synset": synset,
                "group": group,
                "negative_prompt": bool(negative),
                "flag": flag,
                "n": len(part),
                "n_units": len(per_unit),
                "n_flagged": int(per_unit["sum"].sum()),
                "rate": estimate.value,
                "rate_low": estimate.low,
                "rate_high": estimate.high,
            }
        )
    return pd.DataFrame(lines, columns=RATES_COLUMNS)
