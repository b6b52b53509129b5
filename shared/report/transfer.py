"""The report's "Generated images vs photos" section: transfer folders, led by their headline sentences, and the
context audit's classes that the photos cover."""

from __future__ import annotations

from synthprobe.report.compare import classifier_name
from synthprobe.report.data import Analysis


def transfer_classifier(analysis: Analysis) -> str:
    return str(analysis.summary.get("classifier", {}).get("model") or analysis.folder)


def audited_classes_with_photos(transfer: Analysis, biases: list[Analysis]) -> list[dict]:
    """The bias classes of the same classifier whose synset the photo store holds (compared or not)."""
    synsets = transfer.summary.get("synsets", {})
    shared = set(synsets.get("shared", []))
    in_photos = shared | set(synsets.get("only_photos", []))
    rows = []
    for bias in biases:
        if classifier_name(bias) != transfer_classifier(transfer):
            continue
        for name, entry in bias.summary.get("classes", {}).items():
            synset = entry.get("synset")
            if synset in in_photos:
                rows.append({"class": name, "synset": synset, "compared": synset in shared, "bias": str(bias.folder)})
    return rows


def transfer_entries(transfers: list[Analysis], biases: list[Analysis]) -> list[dict]:
    return [
        {
            "analysis": transfer,
            "classifier": transfer_classifier(transfer),
            "headline": transfer.summary.get("headline", []),
            "audited": audited_classes_with_photos(transfer, biases),
        }
        for transfer in transfers
    ]
