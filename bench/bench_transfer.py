"""Benchmark transfer: every ResNet-50 hook point for 1,000 generated + 1,000 photo rows (issue 21: under a minute
on 2 cores).

Both stores get ResNet-50's four-dimensional hook points and channel counts (bench_separability's
``resnet50_hook_channels``; ``--layers all``: 173 hook points, 93,000 channels a row, aliases included, so a
little more than cnn-hooks stores). Generated rows come four seeds to a prompt text; photos are their own units.
The analysis runs in a fresh subprocess, after a pass that only reads both stores' layers in the same process:
the ratio analysis / read says what the statistics cost over the I/O floor.

    python bench/bench_transfer.py                      # 1,000 + 1,000 rows, all hook points, 1000 permutations
    python bench/bench_transfer.py --layers blocks --rows 500
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_separability import peak_rss_mb, resnet50_hook_channels


def build(path: Path, n_rows: int, channels: dict[str, int], n_synsets: int, generated: bool, seed: int) -> None:
    """Rectified Gaussian activations with a per-synset shift shared by both sources (seed 0) plus noise."""
    from synthprobe.formats.activation_store import StoreWriter

    shifts = np.random.default_rng(0)
    shift = {name: shifts.normal(scale=0.3, size=(n_synsets, c)).astype(np.float32) for name, c in channels.items()}
    rng = np.random.default_rng(seed)
    attrs = {"model": "resnet50", "weights": "none", "preprocessing": "synthetic"}
    writer = StoreWriter(path, attrs=attrs, hook_channels=channels, pools=("mean",))
    for start in range(0, n_rows, 500):
        index = np.arange(start, min(start + 500, n_rows))
        codes = index % n_synsets
        rows = pd.DataFrame(
            {
                "id": [f"r{i:06d}" for i in index],
                "synset": [f"synset{c:03d}.n.01" for c in codes],
                "group": "concept",
                "target": [f"synset{c:03d}.n.01" for c in codes],
                "path": [f"images/{i:06d}.png" for i in index],
                "prompt": [f"prompt {i // n_synsets // 4}" if generated else "" for i in index],
                "template": [f"template {i // n_synsets // 4 % 2}" if generated else "" for i in index],
                "status": "ok",
            }
        )
        hooks = {
            name: {"mean": np.maximum(rng.standard_normal((len(codes), c), dtype=np.float32) + shift[name][codes], 0)}
            for name, c in channels.items()
        }
        writer.append(rows, hooks)
    writer.finish()


def measure(generated: str, photos: str, out: str, permutations: int) -> None:
    """Run in the child: a read-only pass over both stores, then the analysis; print both times as JSON."""
    from synthprobe.formats.activation_store import ActivationStore
    from synthprobe.transfer import analysis as T
    from synthprobe.transfer.outputs import write_outputs

    stores = ActivationStore(generated), ActivationStore(photos)
    started = time.perf_counter()
    for hook in stores[0].hook_points:
        for store in stores:
            store.read_layer(hook)
    read = time.perf_counter() - started
    started = time.perf_counter()
    params = T.Params(permutations=permutations)
    write_outputs(T.analyse(*stores, params), params, *stores, out)
    seconds = time.perf_counter() - started
    print(json.dumps({"read_s": read, "seconds": seconds, "maxrss_mb": peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000, help="Rows in each store.")
    parser.add_argument("--layers", choices=("blocks", "all"), default="all")
    parser.add_argument("--synsets", type=int, default=20)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--workdir", default=None, help="Where to build the stores (default: a temp folder).")
    parser.add_argument("--measure", nargs=3, metavar=("GENERATED", "PHOTOS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(*args.measure, args.permutations)
        return
    channels = resnet50_hook_channels(args.layers)
    print(
        f"ResNet-50 hook points: {len(channels)} ({args.layers}), {sum(channels.values())} channels a row; "
        f"{args.rows} + {args.rows} rows, {args.synsets} synsets, {args.permutations} permutations; "
        f"{os.cpu_count()} CPUs, load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        paths = [Path(tmp) / "generated.zarr", Path(tmp) / "photos.zarr"]
        started = time.perf_counter()
        build(paths[0], args.rows, channels, args.synsets, generated=True, seed=1)
        build(paths[1], args.rows, channels, args.synsets, generated=False, seed=2)
        built = time.perf_counter() - started
        command = [sys.executable, __file__, "--measure", *map(str, paths), str(Path(tmp) / "out")]
        child = subprocess.run(
            [*command, "--permutations", str(args.permutations)], capture_output=True, text=True, check=True
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
    print(
        f"transfer: {result['seconds']:.1f} s (reading both stores alone: {result['read_s']:.1f} s, "
        f"ratio {result['seconds'] / result['read_s']:.2f}); peak RSS {result['maxrss_mb']:.0f} MB; "
        f"stores built in {built:.0f} s; load average after {', '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
