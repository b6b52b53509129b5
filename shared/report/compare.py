"""Classifiers side by side in the report: separability by relative depth, bias numbers one column per classifier.

Reads only what the analyses wrote (layers.csv, groups.csv, classes.csv through the report's loaded
analyses). Relative depth puts networks of any length on one axis: a layer's position among the
analysed hook points in forward order, from just above 0 (the first, next to the input) to 1 (the
last, the logits).
"""

from __future__ import annotations

import io

import pandas as pd

from synthprobe.common.plots import pyplot
from synthprobe.report.data import Table, figure_uri, format_cell

DEPTH_MEASURES = {
    "probe_accuracy": "linear-probe accuracy",
    "silhouette": "silhouette (cosine)",
    "fisher": "Fisher ratio (log)",
}
BIAS_MEASURES = {"context_reliance": "context reliance", "context_sufficiency": "context sufficiency"}


def classifier_name(analysis) -> str:
    """The model an analysis was made from, as cnn-hooks recorded it."""
    return str(analysis.store.get("model", analysis.folder))


def full_frame(analysis, key: str) -> pd.DataFrame | None:
    """A table of an analysis as its stage wrote it (the report may show only its top rows)."""
    table = analysis.tables.get(key)
    return None if table is None or table.source is None else pd.read_csv(table.source)


def compared(analyses: list) -> bool:
    return len({classifier_name(a) for a in analyses}) > 1


def depth_figures(separability: list) -> dict[str, str]:
    """{measure: PNG data URI}: one plot per measure, one line per classifier and analysis folder."""
    plt = pyplot()
    figures = {}
    for measure, label in DEPTH_MEASURES.items():
        fig, ax = plt.subplots(figsize=(8, 3.6))
        drawn = False
        for analysis in separability:
            layers = full_frame(analysis, "layers")
            if layers is None or measure not in layers or "depth" not in layers:
                continue
            layers = layers.sort_values("depth")
            relative = (layers["depth"].rank(method="first")) / len(layers)
            ax.plot(
                relative,
                layers[measure],
                marker="o",
                markersize=2,
                label=f"{classifier_name(analysis)} · {analysis.folder.name}",
            )
            drawn = True
        if not drawn:
            plt.close(fig)
            continue
        if measure == "fisher":
            ax.set_yscale("log")
        ax.set_xlim(0, 1.02)
        ax.set_xlabel("relative depth (0 = input, 1 = logits)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        figures[label] = figure_uri(buffer.getvalue())
    return figures


def bias_tables(biases: list) -> list:
    """Two tables with one column per classifier: confidence by class and group; context reliance and sufficiency."""

    def side_by_side(key: str, index: list[str], columns: dict[str, str]) -> pd.DataFrame | None:
        parts = []
        for analysis in biases:
            frame = full_frame(analysis, key)
            if frame is None or not set(index) | set(columns) <= set(frame.columns):
                continue
            name = classifier_name(analysis)
            renamed = {column: f"{name} {label}" if len(columns) > 1 else name for column, label in columns.items()}
            parts.append(frame.set_index(index)[list(columns)].rename(columns=renamed))
        return pd.concat(parts, axis=1).reset_index() if parts else None

    tables = []
    for key, index, columns, description in (
        (
            "groups",
            ["class", "group"],
            {"confidence_mean": "confidence"},
            "mean confidence (softmax mass of the class's target set) per class and group, one column per classifier",
        ),
        (
            "classes",
            ["class"],
            BIAS_MEASURES,
            "context reliance (mixed minus object-only) and sufficiency (context-only over object-only) per classifier",
        ),
    ):
        frame = side_by_side(key, index, columns)
        if frame is not None:
            rows = [[format_cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]
            tables.append(
                Table(f"{key} by classifier", f"{key}.csv", description, [str(c) for c in frame.columns], rows)
            )
    return tables
