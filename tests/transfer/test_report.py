"""The report's "Generated images vs photos" section: led by one sentence per classifier, read in Chromium."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers.transfer import simulated_layers, write_store

from synthprobe.formats.analysis_folder import KINDS
from synthprobe.report.page import build_context, read_inputs, render
from synthprobe.tools import report
from synthprobe.tools import transfer as transfer_tool


@pytest.fixture(scope="module")
def transfer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("transfer-report")
    layers_g, layers_p = {}, {}
    for depth, scenario in enumerate(("generated-only", "shared", "shared")):
        x_g, rows_g, x_p, rows_p = simulated_layers(np.random.default_rng(depth), scenario, prompts=8)
        layers_g[f"layer{depth + 1}"], layers_p[f"layer{depth + 1}"] = x_g, x_p
    rows_p = rows_p.assign(synset=rows_p["synset"].replace({"s5.n.01": "bee.n.01"}))
    write_store(folder / "generated.zarr", rows_g, layers_g)
    write_store(folder / "photos.zarr", rows_p, layers_p)
    out = folder / "out"
    transfer_tool.main(
        [
            str(folder / "generated.zarr"),
            str(folder / "photos.zarr"),
            "-o",
            str(out),
            "--permutations",
            "99",
            "--silent",
        ],
        standalone_mode=False,
    )
    return out


def bias_folder(tmp_path):
    """A minimal bias-report summary for the same classifier, with a class whose synset the photos hold."""
    folder = tmp_path / "bias"
    folder.mkdir()
    summary = {
        "schema": KINDS["bias-report"],
        "kind": "bias-report",
        "store": {"attrs": {"model": "resnet50"}},
        "classes": {"bee": {"synset": "bee.n.01"}, "frog": {"synset": "frog.n.01"}},
        "tables": {},
        "figures": {},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_section_leads_with_the_headline(transfer_folder, tmp_path):
    context = build_context(read_inputs([], [bias_folder(tmp_path)], [], transfer_dirs=[transfer_folder]))
    html = render(context)
    section = html[html.index('<section id="transfer">') :]
    assert section.index("The probe trained on generated images keeps") < section.index("<img")
    assert "from layer2 on" in section and "before layer2 it is at chance" in section
    assert "<b>bee</b> (bee.n.01, photos only: no generated concept images to compare)" in section
    assert "frog" not in section.split("Context audit classes")[1].split("</p>")[0]
    assert 'href="#transfer"' in html


def test_section_in_chromium(transfer_folder, tmp_path, cli):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("Debian's chromium is missing (make test installs it as root)")
    html = tmp_path / "report.html"
    cli(report.main, "--transfer", transfer_folder, "-o", html)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(html.as_uri())
        assert errors == []
        lines = [line for line in page.inner_text("section#transfer").splitlines() if line.strip()]
        assert lines[:2] == ["Generated images vs photos", "resnet50"]
        assert lines[2].startswith("The probe trained on generated images keeps")
        assert page.eval_on_selector("section#transfer img", "i => i.complete && i.naturalWidth") > 500
        assert "Domain accuracy" in page.inner_text("section#methods")
        page.screenshot(path=str(tmp_path / "transfer.png"), full_page=True)
        browser.close()
