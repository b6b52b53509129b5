"""report at the end of the whole chain (opened in Chromium), with 250 hook points, and with several
classifiers side by side.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import HOSTILE_PROMPT, build_store

from synthprobe.formats.analysis_folder import KINDS
from synthprobe.report import build_context, read_inputs, render
from synthprobe.tiny_models import save_tiny_sd3
from synthprobe.tools import bias_report, cnn_hooks, report, sd_generate, separability, wn_prompts


@pytest.mark.slow
def test_whole_chain_in_chromium(tmp_path, wn, cli):
    """prompts -> images -> activations -> analyses -> report, then the page in headless Chromium."""
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing (make test installs it as root)"
    model = save_tiny_sd3(tmp_path / "tiny-sd3")
    gen = [
        "--model",
        model,
        "--steps",
        2,
        "--size",
        32,
        "--quantize",
        "none",
        "--cache",
        tmp_path / "cache",
        "--silent",
    ]

    concepts = tmp_path / "concepts.jsonl"
    cli(wn_prompts.main, "concepts", "--synsets", "dog.n.01,cat.n.01,car.n.01", "--per-synset", 3, "-o", concepts)
    first = json.loads(concepts.read_text().splitlines()[0])
    lines = concepts.read_text().splitlines()
    lines[0] = json.dumps({**first, "prompt": HOSTILE_PROMPT})
    concepts.write_text("\n".join(lines) + "\n")
    bias = tmp_path / "bias.jsonl"
    cli(wn_prompts.main, "bias", "--classes", "bee,frog", "--per-group", 2, "--seeds-per-prompt", 2, "-o", bias)

    for name, prompts in (("concepts", concepts), ("bias", bias)):
        cli(sd_generate.main, prompts, "--out", tmp_path / "images" / name, *gen)
        cli(
            cnn_hooks.main,
            tmp_path / "images" / name,
            "--out",
            tmp_path / f"{name}.zarr",
            "--model",
            "resnet18",
            "--weights",
            "none",
            "--batch-size",
            8,
            "--workers",
            0,
            "--silent",
        )
    stats = ["--permutations", 20]
    cli(separability.main, tmp_path / "concepts.zarr", "--out", tmp_path / "sep", "--group", "concept", *stats)
    cli(bias_report.main, tmp_path / "bias.zarr", "--out", tmp_path / "biasout", "--classes", "bee,frog")
    html = tmp_path / "report.html"
    cli(
        report.main,
        "--separability",
        tmp_path / "sep",
        "--bias",
        tmp_path / "biasout",
        "--images",
        tmp_path / "images" / "concepts",
        "--images",
        tmp_path / "images" / "bias",
        "--notice",
        "toy models",
        "-o",
        html,
    )

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(html.as_uri())
        page.wait_for_load_state("load")
        assert errors == []
        for section in ("summary", "galleries", "separability", "bias", "methods"):
            assert page.locator(f"section#{section} h2").count() == 1, section
        widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) > 10 and min(widths) > 0
        assert page.evaluate("window.__pwned") is None
        assert HOSTILE_PROMPT in page.inner_text("section#galleries")  # shown as text, not run
        assert "the prompt: the images of one (synset, prompt text) are one unit" in page.inner_text("section#methods")
        # Clicking a column header sorts its table.
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        for table in (
            page.locator("section#separability table.sortable").first,
            page.locator("section#bias table.sortable").last,
        ):
            header = table.locator("th")
            position = next(
                i
                for i, text in enumerate(header.all_inner_texts())
                if text.strip() in ("avg_centroid_distance", "confidence_mean")
            )
            header.nth(position).click()
            column = table.locator(f"tbody tr td:nth-child({position + 1})").all_inner_texts()
            numbers = [float(v) for v in column if v]
            assert numbers == sorted(numbers) and len(numbers) > 1
        page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
        browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.slow
def test_report_of_250_hook_points_stays_under_5_mb(tmp_path, cli):
    """A real separability analysis of a 250-hook-point store (58,000 selective channels): the report stays small."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    layers = {}
    for i in range(250):
        means = rng.normal(0, 1, (3, (64, 128, 256, 512)[i % 4]))
        layers[f"block{i // 10}.layer{i % 10}"] = means[labels] + rng.normal(0, 0.7, (60, means.shape[1]))
    store = build_store(
        tmp_path / "acts.zarr", layers, [("ant.n.01", "bee.n.01", "cat.n.01")[k] for k in labels], batch=30
    )
    cli(separability.main, store, "--out", tmp_path / "sep", "--permutations", 5, "--silent")
    assert len(pd.read_csv(tmp_path / "sep" / "selective_channels.csv")) > 10_000
    html = tmp_path / "report.html"
    cli(report.main, "--separability", tmp_path / "sep", "-o", html, "--silent")
    assert html.stat().st_size < 5_000_000
    linked = re.findall(r'<a href="(report_files/[^"]+)">', html.read_text())
    assert "report_files/sep-selective_channels.csv" in linked
    assert all((tmp_path / link).is_file() for link in linked)


def write_summary(folder: Path, tool: str, **fields) -> None:
    """An analysis folder's summary.json as the tool writes it, with only ``fields`` besides its name."""
    (folder / "summary.json").write_text(json.dumps({"schema": KINDS[tool], "kind": tool, **fields}))


def classifier_analyses(root: Path, model: str, scale: float) -> tuple[Path, Path]:
    """A separability and a bias-report folder as the stages write them for one classifier."""
    sep, bias = root / model / "separability", root / model / "bias"
    sep.mkdir(parents=True)
    bias.mkdir(parents=True)
    depth = np.arange(5)
    pd.DataFrame(
        {
            "layer": [f"l{d}" for d in depth],
            "depth": depth,
            "probe_accuracy": scale * (depth + 1) / 5,
            "fisher": scale * (depth + 1.0),
            "silhouette": scale * depth / 10,
        }
    ).to_csv(sep / "layers.csv", index=False)
    write_summary(
        sep,
        "separability",
        store={"model": model, "weights": "w"},
        tables={"layers": {"file": "layers.csv"}},
        figures={},
    )
    pd.DataFrame(
        {
            "class": ["bee", "bee", "frog"],
            "group": ["object-only", "mixed", "mixed"],
            "confidence_mean": [0.5 * scale, 0.7 * scale, 0.2 * scale],
        }
    ).to_csv(bias / "groups.csv", index=False)
    pd.DataFrame(
        {"class": ["bee", "frog"], "context_reliance": [0.2 * scale, -0.1 * scale], "context_sufficiency": [0.1, 0.3]}
    ).to_csv(bias / "classes.csv", index=False)
    tables = {"groups": {"file": "groups.csv"}, "classes": {"file": "classes.csv"}}
    write_summary(bias, "bias-report", store={"attrs": {"model": model}}, tables=tables)
    return sep, bias


def test_classifiers_side_by_side(tmp_path):
    first, second = (
        classifier_analyses(tmp_path, "resnet50", 1.0),
        classifier_analyses(tmp_path, "timm:efficientnet_lite0", 0.5),
    )
    context = build_context(read_inputs([first[0], second[0]], [first[1], second[1]]))
    figures, tables = context["comparison"]["figures"], context["comparison"]["tables"]
    assert list(figures) == ["linear-probe accuracy", "silhouette (cosine)", "Fisher ratio (log)"]
    groups, classes = tables
    assert groups.columns == ["class", "group", "resnet50", "timm:efficientnet_lite0"]
    assert groups.rows[1] == ["bee", "mixed", "0.7", "0.35"]
    assert classes.columns[:3] == ["class", "resnet50 context reliance", "resnet50 context sufficiency"]
    assert classes.rows[1][1] == "-0.1" and classes.rows[1][3] == "-0.05"
    html = render(context)
    assert '<section id="classifiers">' in html and html.count('by relative depth"') == 3
    # One classifier: nothing to compare.
    assert build_context(read_inputs([first[0]], [first[1]]))["comparison"] == {"figures": {}, "tables": []}
