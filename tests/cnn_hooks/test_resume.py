"""cnn-hooks reruns: resume after kill -9, appending new rows, refusing changed images."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import fails_with, smooth_image, write_manifest
from helpers.cnn_hooks import SMALL, make_tree, manifest_row, store_arrays
from PIL import Image

from synthprobe.formats.activation_store import ActivationStore
from synthprobe.tools.cnn_hooks import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[2]


def committed(store: Path) -> int:
    try:
        return json.loads((store / "zarr.json").read_text())["attributes"]["rows_committed"]
    except (OSError, ValueError, KeyError):
        return 0


def test_resume_after_kill_9_equals_an_uninterrupted_run(tmp_path, cli):
    images = make_tree(tmp_path / "images", per_synset=14)  # 42 images
    args = [
        images,
        *SMALL[:-1],
        "--precision",
        "fp32",
        "--batch-size",
        "2",
        "--rows-per-write",
        "4",
        "--layers",
        "layer4*,fc",
    ]
    killed = tmp_path / "killed.zarr"
    command = [sys.executable, "-m", "synthprobe.tools.cnn_hooks", *map(str, args), "--out", str(killed), "--silent"]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    deadline = time.monotonic() + 120
    while committed(killed) < 8 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    output = process.communicate()[0].decode()
    assert process.returncode == -signal.SIGKILL, output
    interrupted_at = committed(killed)
    assert 8 <= interrupted_at < 42, interrupted_at
    cli(main, *args, "--out", killed)
    reference = tmp_path / "reference.zarr"
    cli(main, *args, "--out", reference)
    got, want = store_arrays(killed), store_arrays(reference)
    assert got.keys() == want.keys() and len(want) == 9 + 1 + 19 - 4  # row table, logits, hook points less aliases
    for name in want:
        assert got[name].shape[0] == 42, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert ActivationStore(killed).attrs == ActivationStore(reference).attrs


def test_rerun_appends_new_manifest_rows_only_and_refuses_changed_images(tmp_path, caplog, cli):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    sha = {}
    for i in range(4):
        Image.fromarray(smooth_image(rng)).save(folder / f"im{i}.png")
        sha[i] = hashlib.sha256((folder / f"im{i}.png").read_bytes()).hexdigest()
    a, b = (
        manifest_row("a", "im0.png", sha256=sha[0]),
        manifest_row("b", "im1.png", "frog.n.01", "object-only", sha256=sha[1]),
    )
    write_manifest(folder, [a, manifest_row("gone", None, status="failed"), b])
    out = tmp_path / "acts.zarr"
    cli(main, folder, "--out", out, *SMALL, "--layers", "layer1")
    first = ActivationStore(out)
    assert list(first.rows()["id"]) == ["a", "b"] and list(first.rows()["group"]) == ["concept", "object-only"]
    assert list(first.rows()["sha256"]) == [sha[0], sha[1]]
    # The prompt unit of the analyses: the manifest's prompt text and template travel into the row table.
    assert list(first.rows()["prompt"]) == ["a photo of a bee.n.01", "a photo of a frog.n.01"]
    assert list(first.rows()["template"]) == ["photo", "photo"]
    source = first.attrs["source_sha256"]
    write_manifest(folder, [a, b, manifest_row("c", "im2.png"), manifest_row("d", "im3.png", group="mixed")])
    cli(main, folder, "--out", out, *SMALL, "--layers", "layer1")
    second = ActivationStore(out)
    assert list(second.rows()["id"]) == ["a", "b", "c", "d"] and second.attrs["source_sha256"] != source
    assert list(second.rows()["sha256"]) == [sha[i] for i in range(4)]  # hashed while decoding where unlisted
    np.testing.assert_array_equal(second.read_layer("layer1")[:2], first.read_layer("layer1"))
    caplog.set_level(logging.INFO, logger="synthprobe")
    cli(main, folder, "--out", out, *SMALL[:-1], "--layers", "layer1")
    assert "already holds all 4 images" in caplog.text
    # Regenerated images under the same ids must not be mixed with the recorded ones.
    write_manifest(folder, [manifest_row("a", "im0.png", sha256=sha[3]), b])
    fails_with(
        cli(main, folder, "--out", out, *SMALL, "--layers", "layer1", exit_code=None),
        "1 images of",
        "changed since",
        "(im0.png)",
        "--rebuild",
    )
    line = fails_with(
        cli(main, folder, "--out", out, *SMALL, exit_code=None),
        "another hook_points",
        "(['layer1'], now 73 names, 'conv1' ... 'fc')",
    )
    assert len(line) < 300


def test_imagefolder_rerun_rehashes_only_touched_files_and_refuses_changed_content(tmp_path, monkeypatch, cli):
    from synthprobe.common import files

    images = make_tree(tmp_path / "images", per_synset=2)
    out = tmp_path / "acts.zarr"
    args = [images, "--out", out, *SMALL, "--layers", "layer1"]
    cli(main, *args)
    before = ActivationStore(out).read_layer("layer1")
    touched = images / "frog.n.01" / "img 01.png"
    os.utime(touched, ns=(time.time_ns(), time.time_ns()))  # a new mtime, the same content
    read = []
    real_sha256_file = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda path: read.append(Path(path).name) or real_sha256_file(path))
    cli(main, *args)
    assert read == ["img 01.png"], "only the file whose mtime changed is read again"
    Image.fromarray(smooth_image(np.random.default_rng(9))).save(touched)  # new content under the same name
    line = fails_with(
        cli(main, *args, exit_code=None), "1 images of", "changed since", "frog.n.01/img 01.png", "--rebuild"
    )
    assert len(line) < 300
    cli(main, *args, "--rebuild")
    after = ActivationStore(out)
    changed_row = list(after.rows()["path"]).index("frog.n.01/img 01.png")
    assert after.rows()["sha256"][changed_row] == hashlib.sha256(touched.read_bytes()).hexdigest()
    others = np.arange(6) != changed_row
    np.testing.assert_array_equal(after.read_layer("layer1")[others], before[others])
    assert not np.array_equal(after.read_layer("layer1")[changed_row], before[changed_row])


def test_file_that_differs_from_its_manifest_hash_is_a_bad_image(tmp_path, cli):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(smooth_image(np.random.default_rng(2))).save(folder / "im0.png")
    write_manifest(folder, [manifest_row("a", "im0.png", sha256="0" * 64)])
    fails_with(
        cli(main, folder, "--out", tmp_path / "acts.zarr", *SMALL, exit_code=None),
        "im0.png",
        "differs from the one in the manifest",
    )
