"""Benchmark separability: time and peak memory on synthetic stores of growing row counts.

Stores get ResNet-50's hook points and channel counts (from torchvision's
feature extraction on a tiny forward pass). By default only the stem and the
16 bottleneck outputs are used (``--layers blocks``, 15,168 channels a row);
``--layers all`` takes all 173 four-dimensional hook points (93,000 channels
a row, 7.4 GB of store at 20,000 rows). Each analysis runs in a fresh
subprocess, so its peak resident memory (VmHWM, which unlike ru_maxrss does
not carry over the parent's peak across fork and exec) and tracemalloc peak
are its own. Memory must not grow with the row count; time should grow at most
linearly (the resampling part is bounded by --sample and does not grow).

    python bench/bench_separability.py                       # 2,000 and 20,000 rows
    python bench/bench_separability.py --rows 500,5000 --permutations 200
    python bench/bench_separability.py --layers all --rows 1000 --permutations 0,1000,10000   # what relabellings cost
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (separability's layer workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def resnet50_hook_channels(which: str) -> dict[str, int]:
    """Hook point -> channels for torchvision's ResNet-50 (random weights; only shapes matter)."""
    import torch
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    model = torchvision.models.resnet50(weights=None).eval()
    _, nodes = get_graph_node_names(model)
    with torch.no_grad():
        outputs = create_feature_extractor(model, nodes[1:])(torch.zeros(1, 3, 64, 64))
    channels = {name: int(out.shape[1]) for name, out in outputs.items() if out.ndim == 4}
    if which == "blocks":
        channels = {
            name: c
            for name, c in channels.items()
            if name == "relu" or (name.startswith("layer") and name.endswith("relu_2"))
        }
    return channels


def build(path: Path, n_rows: int, channels: dict[str, int], n_synsets: int, seed: int) -> None:
    """Rectified Gaussian activations with a small per-synset shift on every channel; four images a prompt."""
    from synthprobe.formats.activation_store import StoreWriter

    rng = np.random.default_rng(seed)
    shifts = {name: rng.normal(scale=0.3, size=(n_synsets, c)).astype(np.float32) for name, c in channels.items()}
    writer = StoreWriter(
        path,
        attrs={"model": "resnet50", "weights": "none", "preprocessing": "synthetic"},
        hook_channels=channels,
        pools=("mean",),
    )
    batch = 500
    for start in range(0, n_rows, batch):
        codes = np.arange(start, min(start + batch, n_rows)) % n_synsets
        rows = pd.DataFrame(
            {
                "id": [f"r{i:06d}" for i in range(start, start + len(codes))],
                "synset": [f"synset{c:03d}.n.01" for c in codes],
                "group": "concept",
                "target": [f"synset{c:03d}.n.01" for c in codes],
                "path": [f"images/{i:06d}.png" for i in range(start, start + len(codes))],
                # four seeds per prompt text, as `wn-prompts --seeds-per-prompt 4` makes them
                "prompt": [f"prompt {i // n_synsets // 4}" for i in range(start, start + len(codes))],
                "status": "ok",
            }
        )
        hooks = {
            name: {"mean": np.maximum(rng.standard_normal((len(codes), c), dtype=np.float32) + shifts[name][codes], 0)}
            for name, c in channels.items()
        }
        writer.append(rows, hooks)
    writer.finish()


def measure(store: str, out: str, permutations: int) -> None:
    """Run in the child: one analysis, then print time and memory as JSON."""
    from synthprobe.formats.activation_store import ActivationStore
    from synthprobe.separability import analysis as S
    from synthprobe.separability.outputs import write_outputs

    tracemalloc.start()
    started, cpu_started = time.perf_counter(), cpu_seconds()
    params = S.Params(permutations=permutations)
    activations = ActivationStore(store)
    write_outputs(S.analyse(activations, params), params, activations, out)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    _, traced_peak = tracemalloc.get_traced_memory()
    print(
        json.dumps(
            {"seconds": seconds, "cpu_s": cpu, "traced_peak_mb": traced_peak / 2**20, "maxrss_mb": peak_rss_mb()}
        )
    )


def peak_rss_mb() -> float:
    """This process's peak resident set size since exec."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(store: Path, out: Path, permutations: int) -> dict:
    """One analysis in a fresh process; its time, CPU time, memory and the load average after it."""
    child = subprocess.run(
        [sys.executable, __file__, "--measure", str(store), str(out), "--permutations", str(permutations)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {"load": os.getloadavg()[0], **json.loads(child.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="2000,20000", help="Row counts, comma list (first is the baseline).")
    parser.add_argument("--layers", choices=("blocks", "all"), default="blocks")
    parser.add_argument("--synsets", type=int, default=20)
    parser.add_argument(
        "--permutations",
        default="1000",
        help="Permutation counts, comma list: each row count is analysed with each, against the first.",
    )
    parser.add_argument("--workdir", default=None, help="Where to build the stores (default: a temp folder).")
    parser.add_argument("--measure", nargs=2, metavar=("STORE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    counts = [int(p) for p in args.permutations.split(",")]
    if args.measure:
        measure(*args.measure, counts[0])
        return

    channels = resnet50_hook_channels(args.layers)
    print(
        f"ResNet-50 hook points: {len(channels)} ({args.layers}), {sum(channels.values())} channels a row; "
        f"{args.synsets} synsets, {args.permutations} permutations; load average before: {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        results = []
        for n_rows in [int(r) for r in args.rows.split(",")]:
            store = Path(tmp) / f"bench-{n_rows}.zarr"
            started = time.perf_counter()
            build(store, n_rows, channels, args.synsets, seed=0)
            built = time.perf_counter() - started
            for permutations in counts:
                result = run_child(store, Path(tmp) / f"out-{n_rows}-{permutations}", permutations)
                result.update(rows=n_rows, permutations=permutations, build_s=built)
                results.append(result)
                print(
                    f"{n_rows:>7} rows, {permutations:>6} permutations: analysis {result['seconds']:7.1f} s "
                    f"(CPU {result['cpu_s']:7.1f} s), peak RSS {result['maxrss_mb']:7.1f} MB, tracemalloc peak "
                    f"{result['traced_peak_mb']:7.1f} MB, load average {result['load']:.2f} "
                    f"(store built in {built:.0f} s)",
                    flush=True,
                )
        print_ratios(results, counts)


def print_ratios(results: list[dict], counts: list[int]) -> None:
    """Each permutation count against the first on the same rows; each row count against the first."""
    for result in results:
        base = next(r for r in results if r["rows"] == result["rows"] and r["permutations"] == counts[0])
        if result is not base:
            print(
                f"{result['rows']} rows: {result['permutations']} / {base['permutations']} permutations: "
                f"time ratio {result['seconds'] / base['seconds']:.2f}, "
                f"CPU ratio {result['cpu_s'] / base['cpu_s']:.2f}"
            )
    base = results[0]
    for result in results[len(counts) :: len(counts)]:
        print(
            f"{result['rows']}/{base['rows']} rows ({result['rows'] / base['rows']:.0f}x): "
            f"time ratio {result['seconds'] / base['seconds']:.2f}, "
            f"peak RSS ratio {result['maxrss_mb'] / base['maxrss_mb']:.2f}, "
            f"tracemalloc peak ratio {result['traced_peak_mb'] / base['traced_peak_mb']:.2f}"
        )


if __name__ == "__main__":
    main()
