"""report's page on fixed inputs: the template (golden), escaping, long tables, galleries, bad input."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import HOSTILE_PROMPT, fails_with, page_content
from PIL import Image

from synthprobe.common.files import InputError
from synthprobe.formats.analysis_folder import KINDS
from synthprobe.formats.image_folder import RUN_SCHEMA
from synthprobe.report import build_context, read_inputs, render, write_report
from synthprobe.report.data import TABLE_ROWS_SHOWN
from synthprobe.tools import report


def write_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def fixed_inputs(tmp_path):
    """Small hand-written analysis and image folders, as the stages would write them."""
    images = tmp_path / "images"
    rows = [
        {"id": "cat-0", "synset": "cat.n.01", "group": "concept", "target": "cat.n.01", "prompt": HOSTILE_PROMPT},
        {
            "id": "bias-bee-mixed-00-s00",
            "synset": "bee.n.01",
            "group": "mixed",
            "target": "bee.n.01",
            "prompt": "a bee & a flower",
        },
    ]
    for value, row in enumerate(rows):
        row.update(path=f"{row['id']}.png", status="ok")
        write_png(images / row["path"], 40 + 100 * value)
    (images / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (images / "run.json").write_text(
        json.dumps(
            {
                "schema": RUN_SCHEMA,
                "config": {"model": "tiny", "width": 8, "height": 8, "steps": 2},
                "summary": {"records": 2, "generated": 1, "cached": 1, "failed": 0},
            }
        )
    )
    sep = tmp_path / "sep"
    sep.mkdir()
    (sep / "layers.csv").write_text("layer,avg_centroid_distance,fisher\nconv1,1.5,0.25\nlayer1,2.5,\n")
    (sep / "top_images.csv").write_text(
        "layer,rank,channel,image_rank,id,path,synset,activation\nlayer1,1,3,1,cat-0,cat-0.png,cat.n.01,0.9\n"
    )
    write_png(sep / "heatmap.png", 200)
    (sep / "summary.json").write_text(
        json.dumps(
            {
                "schema": KINDS["separability"],
                "kind": "separability",
                "n_images": 2,
                "n_synsets": 2,
                "unit": "image",
                "n_units": 2,
                "top_layers": ["layer1"],
                "parameters": {"seed": 0},
                "store": {
                    "model": "resnet50",
                    "weights": "none",
                    "hook_aliases": {"layer1.1.relu_1": "layer1", "layer1.1": "layer1"},
                },
                "tables": {
                    "layers": {"file": "layers.csv", "description": "per layer"},
                    "top_images": {"file": "top_images.csv", "description": "top images"},
                },
                "figures": {"heatmap": "heatmap.png"},
            }
        )
    )
    bias = tmp_path / "bias"
    bias.mkdir()
    (bias / "prompts.csv").write_text(
        f'class,group,prompt,confidence_mean\nbee,mixed,"{HOSTILE_PROMPT.replace(chr(34), 2 * chr(34))}",0.5\n'
    )
    (bias / "summary.json").write_text(
        json.dumps(
            {
                "schema": KINDS["bias-report"],
                "kind": "bias-report",
                "tables": {"prompts": {"file": "prompts.csv", "rows": 1}},
                "store": {"attrs": {"model": "resnet50", "weights": "none"}},
                "figures": {},
                "definitions": {"confidence": "softmax mass"},
            }
        )
    )
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "rates.csv").write_text(
        "synset,group,flag,n,n_units,n_flagged,rate,rate_low,rate_high\nbee.n.01,mixed,object-missing,1,1,1,1,,\n"
    )
    (checks / "checks.jsonl").write_text(
        json.dumps(
            {
                "schema": 1,
                "id": "bias-bee-mixed-00-s00",
                "judge": "clip:tiny",
                "synset": "bee.n.01",
                "group": "mixed",
                "path": "bias-bee-mixed-00-s00.png",
                "object_score": 0.02,
                "verdict": "object-missing",
            }
        )
        + "\n"
    )
    (checks / "summary.json").write_text(
        json.dumps(
            {
                "schema": KINDS["image-check"],
                "kind": "image-check",
                "judge": "clip:tiny",
                "thresholds": {"missing_below": 0.1, "leaked_above": 0.5},
                "n_images": 1,
                "files": {"checks": "checks.jsonl"},
                "tables": {"rates": {"file": "rates.csv", "description": "flag rates"}},
            }
        )
    )
    return {"separability_dirs": [sep], "bias_dirs": [bias], "image_dirs": [images], "check_dirs": [checks]}


def test_template_golden(fixed_inputs, golden, tmp_path):
    html = render(build_context(read_inputs(**fixed_inputs), title="golden", notice="toy & test"))
    golden.check("report/fixed-content.txt", page_content(html.replace(str(tmp_path), "TMP")))


def test_a_stylesheet_edit_leaves_the_compared_content_alone(fixed_inputs, tmp_path, monkeypatch):
    """The golden holds what the page says: a restyled template (new rules, other classes) compares the same."""
    from importlib import resources

    templates = resources.files("synthprobe.templates")
    restyled = tmp_path / "restyled"
    restyled.mkdir()
    page = (templates / "report.html.j2").read_text(encoding="utf-8")
    assert "<style>\n" in page and 'class="notice"' in page
    page = page.replace("<style>\n", "<style>\n  body { color: #c00; font-size: 17px; }\n")
    (restyled / "report.html.j2").write_text(page.replace('class="notice"', 'class="notice boxed"'), encoding="utf-8")
    context = build_context(read_inputs(**fixed_inputs), title="golden", notice="toy & test")
    html = render(context)
    monkeypatch.setattr(resources, "files", lambda package: restyled)
    restyled_html = render(context)
    assert restyled_html != html
    assert page_content(restyled_html) == page_content(html)


def test_text_is_escaped(fixed_inputs):
    html = render(build_context(read_inputs(**fixed_inputs)))
    assert "<script>window.__pwned" not in html
    assert "a &lt;script&gt;window.__pwned = 1&lt;/script&gt; cat &amp; " in html
    assert "random weights" in html  # weights "none" is called out
    assert "Top layers by average centroid distance: layer1 (= layer1.1.relu_1, layer1.1)." in html
    assert "<li><b>layer1</b> = layer1.1.relu_1, layer1.1</li>" in html
    assert "2 images of 2 synsets in 2 image units (the unit of every test)" in html
    checks = html[html.index('<section id="checks">') : html.index('<section id="separability">')]
    assert "Judge <b>clip:tiny</b>; object-missing below 0.1" in checks and "object-missing" in checks
    assert "bee.n.01 · mixed: object-missing (object score 0.02)" in checks  # the flagged image, as a thumbnail


def test_the_summary_says_which_image_runs_used_negative_prompts(fixed_inputs):
    def summary_text():
        html = render(build_context(read_inputs(**fixed_inputs)))
        return html[html.index('<section id="summary">') : html.index("</section>")]

    assert "0 failed; none made with a negative prompt." in summary_text()
    manifest = fixed_inputs["image_dirs"][0] / "images.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[1]["negative_prompt"] = "bee, honeybee"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "1 made with a negative prompt (image-check's leak rates count them apart)." in summary_text()


def test_checks_show_the_judges_measured_error_or_say_it_is_unaudited(fixed_inputs, tmp_path):
    from synthprobe.image_check.audit import Params, run_audit

    checks = fixed_inputs["check_dirs"][0]
    html = render(build_context(read_inputs(**fixed_inputs)))
    assert "Unaudited judge." in html and "How often clip:tiny is wrong has not been measured" in html
    label = {"id": "bias-bee-mixed-00-s00", "sha256": "0" * 64, "answer": "no", "time": 0}
    (tmp_path / "labels.jsonl").write_text(json.dumps(label) + "\n")
    run_audit(checks, tmp_path / "labels.jsonl", tmp_path / "audit", Params())
    html = render(build_context(read_inputs(**{**fixed_inputs, "check_dirs": [checks, tmp_path / "audit"]})))
    section = html[html.index('<section id="checks">') : html.index('<section id="separability">')]
    assert "Unaudited judge." not in section and "The judge's measured error" in section
    assert "(0 yes, 1 no, 0 skipped;" in section
    assert "<b>audit</b>" in section and "<b>corrected_rates</b>" in section
    with pytest.raises(InputError, match="which is not among the --checks folders"):
        read_inputs(**{**fixed_inputs, "check_dirs": [tmp_path / "audit"]})


def test_missing_summary_is_one_clear_error(tmp_path, cli):
    result = cli(report.main, "--separability", tmp_path, "-o", tmp_path / "r.html", exit_code=None)
    fails_with(result, "no summary.json")
    assert not (tmp_path / "r.html").exists()


def test_nothing_to_report(tmp_path):
    with pytest.raises(InputError, match="nothing to report"):
        write_report(tmp_path / "r.html", separability_dirs=[], bias_dirs=[], image_dirs=[])


def add_long_table(sep: Path) -> np.ndarray:
    """A selective_channels table of 1000 rows in a separability folder; its AUROCs."""
    aurocs = np.random.default_rng(0).uniform(0.5, 1, 1000)
    pd.DataFrame({"layer": "layer1", "channel": np.arange(1000), "synset": "cat.n.01", "auroc": aurocs}).to_csv(
        sep / "selective_channels.csv", index=False
    )
    summary = json.loads((sep / "summary.json").read_text())
    summary["tables"]["selective_channels"] = {"file": "selective_channels.csv"}
    (sep / "summary.json").write_text(json.dumps(summary))
    return aurocs


def test_building_the_page_changes_none_of_its_inputs(fixed_inputs, tmp_path):
    add_long_table(fixed_inputs["separability_dirs"][0])
    inputs = read_inputs(**fixed_inputs)
    analyses = inputs.separability + inputs.biases + inputs.checks
    before = copy.deepcopy([a.tables for a in analyses])
    first = build_context(inputs, output=tmp_path / "report.html")
    shown = first["separability"][0]["analysis"].tables["selective_channels"]
    assert shown.partial and shown.href == "report_files/sep-selective_channels.csv"
    assert [a.tables for a in analyses] == before  # whole, unlinked
    assert render(build_context(inputs, output=tmp_path / "report.html")) == render(first)


def test_long_table_shows_its_top_rows_and_links_the_full_csv(fixed_inputs, tmp_path, cli):
    sep = fixed_inputs["separability_dirs"][0]
    aurocs = add_long_table(sep)
    html_path = tmp_path / "out" / "report.html"
    html_path.parent.mkdir()
    write_report(html_path, **fixed_inputs)
    html = html_path.read_text()
    assert f"Shown: the {TABLE_ROWS_SHOWN} rows with the largest auroc ({TABLE_ROWS_SHOWN} of 1000)" in html
    assert '<a href="report_files/sep-selective_channels.csv">' in html
    copied = tmp_path / "out" / "report_files" / "sep-selective_channels.csv"
    assert copied.read_bytes() == (sep / "selective_channels.csv").read_bytes()
    shown = [float(v) for v in re.findall(r"<tr><td>layer1</td><td>\d+</td><td>cat.n.01</td><td>([\d.]+)</td>", html)]
    assert len(shown) == TABLE_ROWS_SHOWN and min(shown) >= float(f"{np.sort(aurocs)[-TABLE_ROWS_SHOWN]:.4g}")
    # Tables that fit are whole and linked to nothing; stdout names the original CSV.
    assert "report_files/sep-layers.csv" not in html
    assert (sep / "selective_channels.csv").resolve().as_uri() in cli(
        report.main, "--separability", sep, "-o", "-"
    ).output


def test_galleries_share_a_thumbnail_budget(tmp_path):
    from synthprobe.report.data import Thumbnails

    for synset in range(10):
        for image in range(3):
            write_png(tmp_path / f"s{synset}.n.01" / f"{image}.png", 10 * synset + image)
    thumbnails = Thumbnails([tmp_path])
    assert [len(g.images) for g in thumbnails.galleries(per_set=8, budget=100)] == [3] * 10
    assert [len(g.images) for g in thumbnails.galleries(per_set=8, budget=25)] == [2] * 10
    assert [len(g.images) for g in thumbnails.galleries(per_set=8, budget=4)] == [1] * 4
