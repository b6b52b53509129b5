"""Relabellings reuse freed memory instead of faulting fresh pages in every batch (common/memory.py)."""

import subprocess
import sys
import textwrap

import pytest

RELABELLINGS = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from synthprobe.common.memory import keep_freed_memory
    from synthprobe.separability.design import Design, block_permutations, design_folds, permutation_strata
    from synthprobe.separability.measures import LayerMeasures

    kept = keep_freed_memory() if sys.argv[1] == "keep" else False
    rng = np.random.default_rng(0)
    n, k = 1000, 20
    codes = np.arange(n) % k
    design = Design.of(codes, np.arange(n) // (k * 4) * k + codes, k)
    x = rng.standard_normal((n, 256))
    folds = design_folds(design, 5, 0)
    measures = LayerMeasures.build(x[:, :64], x, design, folds, 64)
    labels = block_permutations(design.unit_codes, permutation_strata(design, folds), 25, rng)
    measures(labels)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        measures(labels)
    print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def page_faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", RELABELLINGS, mode], capture_output=True, text=True, check=True)
    kept, faults = out.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_relabellings_stop_faulting_pages_once_freed_memory_is_kept():
    kept, faults_kept = page_faults("keep")
    _, faults_default = page_faults("default")
    assert kept == "True"
    assert faults_default > 10_000  # the default thresholds map each batch's temporaries anew
    assert faults_kept < faults_default / 100
