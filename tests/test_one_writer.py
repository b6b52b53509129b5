"""One writer per store and output folder: every tool that writes one refuses to start while another process
writes it, naming that process (issue: two cnn-hooks on one store used to interleave their rows silently)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import fails_with, lock_holder
from helpers.cnn_hooks import SMALL, make_tree

from synthprobe.formats.activation_store import ActivationStore
from synthprobe.tools import bias_report, cnn_hooks, image_check, sd_generate, separability, transfer

REPO = Path(__file__).resolve().parents[1]

WRITERS = {
    "sd-generate": (sd_generate.main, lambda inputs, out: [inputs / "prompts.jsonl", "--out", out]),
    "cnn-hooks": (cnn_hooks.main, lambda inputs, out: [inputs, "--out", out]),
    "image-check": (image_check.main, lambda inputs, out: [inputs, "--out", out]),
    "separability": (separability.main, lambda inputs, out: [inputs, "--out", out]),
    "bias-report": (bias_report.main, lambda inputs, out: [inputs, "--out", out]),
    "transfer": (transfer.main, lambda inputs, out: [inputs, inputs, "--out", out]),
}


@pytest.mark.parametrize("tool", sorted(WRITERS))
def test_a_second_writer_is_refused_in_one_line(tool, tmp_path, cli):
    main, args = WRITERS[tool]
    (tmp_path / "prompts.jsonl").write_text("")
    out = tmp_path / "out"
    holder = lock_holder(out, 60)
    try:
        result = cli(main, *args(tmp_path, out), exit_code=None)
    finally:
        holder.kill()
        holder.wait()
    fails_with(result, f"{out} is being written by pid {holder.pid} on ", "--wait")
    assert sorted(p.name for p in out.iterdir()) == [".synthprobe.lock"]  # the refused run wrote nothing


def test_two_cnn_hooks_on_one_store(tmp_path):
    """A second cnn-hooks on a store that another is writing stops at once, or with --wait waits and then finds the
    store complete; the store holds each image once, as one run would. The first run is paused (SIGSTOP) while it
    holds the lock, so that the two overlap on any machine."""
    images = make_tree(tmp_path / "images", per_synset=6)
    store = tmp_path / "acts.zarr"
    command = [sys.executable, "-m", "synthprobe.tools.cnn_hooks", str(images), *map(str, SMALL[:-1])]
    command += ["--precision", "fp32", "--rows-per-write", "2", "--layers", "fc", "--out", str(store)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    lock = store / ".synthprobe.lock"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        if lock.is_file() and lock.read_text().startswith(f"pid {first.pid} "):
            break
        time.sleep(0.005)
    first.send_signal(signal.SIGSTOP)
    try:
        refused = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        waiting = subprocess.Popen([*command, "--wait"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(f"Error: {store} is being written by pid {first.pid} ")
    assert waiting.wait(timeout=300) == 0 and "already holds all 18 images" in waiting.stderr.read()
    written = ActivationStore(store)
    rows = written.rows()
    assert len(rows) == 18 and rows["id"].is_unique
    assert written.attrs["complete"] and written.attrs["rows_committed"] == 18
    assert np.isfinite(written.logits()).all()
    assert not lock.exists()  # the writer removes its lock file when done


@pytest.mark.parametrize("tool", ["separability", "bias-report", "transfer"])
def test_an_output_inside_the_store_read_is_refused(tool, tmp_path, cli):
    from helpers import build_store

    store = build_store(tmp_path / "s.zarr", {"h": np.zeros((4, 2))}, ["a.n.01", "b.n.01"] * 2)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    main, args = WRITERS[tool]
    for out in (store, store / "analysis"):
        result = cli(main, *args(store, out), exit_code=None)
        fails_with(result, f"--out {out} lies inside the store {store} it reads")
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
