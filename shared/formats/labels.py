"""The labels contract (docs/formats.md): ``labels.jsonl``, a person's answer per image to "is the object in this
image?".

One object a line: ``id`` and ``sha256`` of the image, ``answer`` (yes, no or
skip) and ``time`` (when it was given, ISO 8601 or epoch milliseconds), from the
labelling page of ``image-check label`` or written by hand. The page adds the
sample's design, which a hand-written file may leave out: ``weight`` (the
inverse of the image's chance of being sampled, 1 when absent), ``stratum`` and
``prompt`` (the prompt text, which makes the image's unit).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from synthprobe.formats.prompts import read_records, write_jsonl

LABELS_FILE = "labels.jsonl"
ANSWERS = ("yes", "no", "skip")


@dataclass(frozen=True)
class Label:
    id: str
    sha256: str
    answer: str
    time: str | int | float
    weight: float = 1.0
    stratum: str = ""
    prompt: str = ""
    line: int = 0  # where it came from, for errors

    def to_json(self) -> dict:
        row = {"id": self.id, "sha256": self.sha256, "answer": self.answer, "time": self.time}
        return row | {"weight": self.weight, "stratum": self.stratum, "prompt": self.prompt}


def validate_label(data: object) -> Label:
    """One label from a decoded line; ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("id", "sha256", "answer", "time") if k not in data]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (a label has id, sha256, answer, time)")
    if not isinstance(data["id"], str) or not data["id"]:
        raise ValueError(f"id {data['id']!r} is not a non-empty string")
    if not isinstance(data["sha256"], str) or len(data["sha256"]) != 64:
        raise ValueError(f"sha256 {data['sha256']!r} is not 64 hex digits")
    if data["answer"] not in ANSWERS:
        raise ValueError(f"answer {data['answer']!r} is not one of {', '.join(ANSWERS)}")
    weight = data.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise ValueError(f"weight {weight!r} is not a positive number")
    return Label(
        id=data["id"],
        sha256=data["sha256"].lower(),
        answer=data["answer"],
        time=data["time"],
        weight=float(weight),
        stratum=str(data.get("stratum") or ""),
        prompt=str(data.get("prompt") or ""),
    )


def read_labels(path: str | os.PathLike) -> list[Label]:
    """Read and validate a labels file (``-`` is stdin); one answer per image id."""
    records = read_records(path, validate_label, "a second answer for {id}", "no labels")
    return [Label(**{**label.__dict__, "line": lineno}) for lineno, label in records]


def write_labels(path: str | os.PathLike, labels: list[Label]) -> int:
    return write_jsonl(path, (label.to_json() for label in labels))
