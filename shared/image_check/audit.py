"""``image-check audit``: how often each judge is wrong, measured against a person's labels.

For each judge and verdict kind an image either deserves the flag (its
*condition*) or not, and the judge flags it or not:

- ``missing``: object-only, mixed and concept images; the condition is the
  person's "no" (the object is absent), the flag ``object-missing``, and a
  lower object score flags sooner.
- ``leaked``: context-only images; the condition is "yes" (the object is
  there after all), the flag ``object-leaked``, and a higher score flags sooner.

Sensitivity, specificity and precision are weighted by the sample's design
(each label's ``weight``) and their intervals treat a prompt's images as one
unit (``stats.clustered_proportion``); the apparent flag rates of rates.csv are
corrected for the measured error (Rogan-Gladen). docs/methods.md has the
definitions; tests/image_check/test_audit.py measures the intervals' coverage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from synthprobe.common.files import InputError, atomic_write, begin_outputs
from synthprobe.common.stats import NAN, Estimate, wilson_on_variance
from synthprobe.formats.analysis_folder import SUMMARY_FILE, provenance_of, read_summary, table_entry, write_summary
from synthprobe.formats.image_checks import CHECKS_FILE, read_checks
from synthprobe.formats.labels import Label, read_labels
from synthprobe.image_check.correction import corrected_rates
from synthprobe.image_check.rates import RATES_FILE, flag_of
from synthprobe.image_check.roc import ROC_FIGURE, auc, chosen_threshold, cuts, roc_figure

AUDIT_FILE = "audit.csv"
ROC_FILE = "roc.csv"
THRESHOLDS_FILE = "thresholds.csv"
CORRECTED_FILE = "corrected_rates.csv"
MEASURES = ("sensitivity", "specificity", "precision")
AUDIT_COLUMNS = ["judge", "kind", "n", "n_units", "n_condition", "n_flagged"]
AUDIT_COLUMNS += [f"{m}{s}" for m in MEASURES for s in ("", "_low", "_high")] + ["auc"]


@dataclass(frozen=True)
class Kind:
    name: str  # missing | leaked
    flag: str  # the verdict that flags it
    condition: str  # the person's answer that makes the flag right
    threshold: str  # the check's option
    low_flags: bool  # a lower object score flags sooner


KINDS = (
    Kind("missing", "object-missing", "no", "missing_below", True),
    Kind("leaked", "object-leaked", "yes", "leaked_above", False),
)


def kind_of_group(group: str) -> Kind:
    return KINDS[0] if flag_of(group) == KINDS[0].flag else KINDS[1]


@dataclass
class Params:
    precision: float | None = 0.9  # the threshold reaches this precision with the most recall ...
    recall: float | None = None  # ... or this recall with the most precision
    level: float = 0.95


# ---- joining labels to checks ----------------------------------------------------------------


def labelled_checks(checks: list[dict], labels: list[Label], labels_path: str | Path) -> pd.DataFrame:
    """One row per (judge, labelled image with an answer): kind, condition, flagged, score, weight, unit.

    A label whose image is not in the checks, or whose sha256 differs from the checked image's, is refused.
    """
    by_id: dict[str, list[dict]] = {}
    for row in checks:
        by_id.setdefault(row["id"], []).append(row)
    lines = []
    for label in labels:
        rows = by_id.get(label.id)
        if rows is None:
            raise InputError(f"{labels_path}:{label.line}: {label.id} is not among the checked images")
        changed = next((r for r in rows if r.get("sha256") and r["sha256"] != label.sha256), None)
        if changed is not None:
            raise InputError(
                f"{labels_path}:{label.line}: the image {label.id} has changed since it was labelled "
                f"(sha256 {label.sha256[:12]}... labelled, {changed['sha256'][:12]}... checked); label it again"
            )
        if label.answer == "skip":
            continue
        for row in rows:
            if row["verdict"] == "unscored":
                continue
            kind = kind_of_group(row["group"])
            lines.append(
                {
                    "judge": row["judge"],
                    "kind": kind.name,
                    "id": label.id,
                    "unit": f"{row['synset']}\x00{label.prompt}" if label.prompt else f"\x00{label.id}",
                    "weight": label.weight,
                    "stratum": label.stratum,
                    "condition": label.answer == kind.condition,
                    "flagged": row["verdict"] == kind.flag,
                    "score": float(row["object_score"]),
                }
            )
    columns = ["judge", "kind", "id", "unit", "weight", "stratum", "condition", "flagged", "score"]
    return pd.DataFrame(lines, columns=columns)


# ---- the measures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Design:
    """How the labelled rows were sampled: each row's weight and prompt unit, and each unit's stratum (a unit
    whose images lie in two strata counts as two, one per stratum)."""

    weight: np.ndarray
    units: np.ndarray  # row -> (stratum, unit) code
    strata: np.ndarray  # (stratum, unit) code -> stratum code

    @classmethod
    def of(cls, part: pd.DataFrame) -> Design:
        units, pairs = pd.MultiIndex.from_arrays([part["stratum"], part["unit"]]).factorize()
        return cls(part["weight"].to_numpy(dtype=float), units, pd.factorize(pairs.get_level_values(0))[0])


def weighted_share(design: Design, hit: np.ndarray, inside: np.ndarray, level: float) -> Estimate:
    """sum(w; hit and inside) / sum(w; inside), with an interval from the stratified design.

    The variance is the design's for a ratio over a domain: each row's linearised value
    w (y - p) / sum(w) (0 outside the domain) is summed per prompt unit within its stratum,
    and the strata's between-unit variances add up. The sample is stratified by verdict, so a share
    of verdicts within a stratum is known exactly and only the answers vary.
    """
    if not inside.any():
        return Estimate(NAN)
    weight = design.weight * inside
    p = float((weight * hit).sum() / weight.sum())
    per_unit = np.bincount(design.units, weights=weight * (hit - p) / weight.sum())
    sizes = np.bincount(design.strata)
    centred = per_unit - (np.bincount(design.strata, weights=per_unit) / sizes)[design.strata]
    spread = np.bincount(design.strata, weights=centred**2)
    several = sizes > 1  # a stratum of one unit has no variance to estimate
    variance = float((sizes[several] / (sizes[several] - 1) * spread[several]).sum())
    df = len(per_unit) - len(sizes)
    if df < 1:
        return Estimate(p)
    return wilson_on_variance(p, variance, float(inside.sum()), df, level, at_most_n=False)


def measure(part: pd.DataFrame, kind: Kind, level: float = 0.95) -> dict:
    """Sensitivity, specificity and precision of one judge and kind, each with its interval, and the AUC."""
    condition, flagged = part["condition"].to_numpy(dtype=bool), part["flagged"].to_numpy(dtype=bool)
    design = Design.of(part)
    estimates = {
        "sensitivity": weighted_share(design, flagged, condition, level),
        "specificity": weighted_share(design, ~flagged, ~condition, level),
        "precision": weighted_share(design, condition, flagged, level),
    }
    row = {
        "n": len(part),
        "n_units": part["unit"].nunique(),
        "n_condition": int(condition.sum()),
        "n_flagged": int(flagged.sum()),
    }
    for name, estimate in estimates.items():
        row |= {name: estimate.value, f"{name}_low": estimate.low, f"{name}_high": estimate.high}
    return row | {"auc": auc(part, kind.low_flags)}


# ---- the run ---------------------------------------------------------------------------------


@dataclass
class AuditResult:
    audit: pd.DataFrame
    thresholds: pd.DataFrame
    summary: dict


def measure_all(joined: pd.DataFrame, settings: Params) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(audit, roc, thresholds) tables over every (judge, kind) with labels."""
    audit, roc, thresholds = [], [], []
    for (judge, name), part in joined.groupby(["judge", "kind"], sort=True):
        kind = next(k for k in KINDS if k.name == name)
        audit.append({"judge": judge, "kind": name, **measure(part, kind, settings.level)})
        table = cuts(part, kind.low_flags)
        roc.append(table.assign(judge=judge, kind=name))
        chosen = chosen_threshold(table, settings.precision, settings.recall)
        thresholds.append({"judge": judge, "kind": name, "option": kind.threshold, **chosen})
    roc_columns = ["judge", "kind", "threshold", "precision", "recall", "false_positive_rate"]
    return (
        pd.DataFrame(audit, columns=AUDIT_COLUMNS),
        pd.concat(roc, ignore_index=True)[roc_columns] if roc else pd.DataFrame(columns=roc_columns),
        pd.DataFrame(thresholds, columns=["judge", "kind", "option", "criterion", "threshold", "precision", "recall"]),
    )


def write_csv(path: Path, table: pd.DataFrame) -> None:
    with atomic_write(path) as handle:
        table.to_csv(handle, index=False, float_format="%.6g", lineterminator="\n")


def run_audit(checks_dir: str | Path, labels_path: str | Path, out: str | Path, settings: Params) -> AuditResult:
    """Measure every judge of ``checks_dir`` against ``labels_path``; tables, then summary.json, into ``out``."""
    checks_dir = Path(checks_dir)
    checks_summary = read_summary(checks_dir).summary
    labels = read_labels(labels_path)
    joined = labelled_checks(read_checks(checks_dir / CHECKS_FILE), labels, labels_path)
    if joined.empty:
        raise InputError(f"{labels_path}: no yes or no answer for a scored image; label some images first")
    out = begin_outputs(out, SUMMARY_FILE)
    audit, roc, thresholds = measure_all(joined, settings)
    judge = checks_summary.get("judge", "")
    rates_path = checks_dir / RATES_FILE
    rates = pd.read_csv(rates_path) if rates_path.is_file() else pd.DataFrame(columns=["group"])
    corrected = corrected_rates(rates, judge, audit, settings.level)
    files = {"audit": AUDIT_FILE, "roc": ROC_FILE, "thresholds": THRESHOLDS_FILE, "corrected_rates": CORRECTED_FILE}
    for key, table in zip(files, (audit, roc, thresholds, corrected)):
        write_csv(out / files[key], table)
    tables = {
        key: table_entry(files[key], len(table), TABLE_DESCRIPTIONS[key])
        for key, table in zip(files, (audit, roc, thresholds, corrected))
    }
    answers = pd.Series([label.answer for label in labels]).value_counts()
    fields = {
        "checks": str(checks_dir.resolve()),
        "labels": {"file": str(labels_path), **{a: int(answers.get(a, 0)) for a in ("yes", "no", "skip")}},
        "judges": sorted(set(joined["judge"])),
        "rates_judge": judge if not corrected.empty else None,
        "level": settings.level,
        "thresholds": audited_thresholds(thresholds),
    }
    provenance = provenance_of(checks=checks_dir.resolve(), labels=Path(labels_path).resolve())
    figures = {}
    if not roc.empty:
        roc_figure(roc, audit, out / ROC_FIGURE)
        figures["roc"] = ROC_FIGURE
    summary = write_summary(out, "image-check-audit", fields, tables=tables, figures=figures, provenance=provenance)
    return AuditResult(audit, thresholds, summary)


TABLE_DESCRIPTIONS = {
    "audit": "each judge's sensitivity, specificity and precision per verdict kind against the labels, weighted by "
    "the sample's design, with 95% intervals over prompt units; the AUC of the raw object score",
    "roc": "precision, recall and false-positive rate of every threshold between two labelled scores",
    "thresholds": "the threshold that reaches the chosen precision (or recall), per judge and kind",
    "corrected_rates": "rates.csv's flag rates corrected for the judge's measured error (Rogan-Gladen), 95% interval",
}


def audited_thresholds(thresholds: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """{judge: {missing_below: t, leaked_above: t}} for image-check's ``audited`` thresholds (None: not reached)."""
    found: dict[str, dict[str, float | None]] = {}
    for _, row in thresholds.iterrows():
        value = None if math.isnan(row["threshold"]) else float(f"{row['threshold']:.6g}")
        found.setdefault(row["judge"], {})[row["option"]] = value
    return found


def threshold_from_audit(audit_dir: str | Path, judge: str, option: str) -> float:
    """The audit's threshold for ``judge``'s ``option`` (missing_below or leaked_above), for ``audited``."""
    summary = read_summary(audit_dir)
    flag = f"--{option.replace('_', '-')}"
    if summary.kind != "image-check-audit":
        raise InputError(f"{audit_dir} is a {summary.kind} folder, not an image-check audit; give --audit AUDIT_DIR")
    found = summary.summary.get("thresholds", {}).get(judge, {})
    if option not in found:
        judges = ", ".join(summary.summary.get("thresholds", {})) or "none"
        raise InputError(f"{flag} audited: the audit {audit_dir} has no {option} for judge {judge} (audited: {judges})")
    if found[option] is None:
        raise InputError(f"{flag} audited: in the audit {audit_dir} no threshold of {judge} reached the target")
    return float(found[option])
