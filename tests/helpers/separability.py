"""What the separability test modules share: a store with one layer of signal and one of noise."""

from __future__ import annotations

import numpy as np

from . import build_store


def two_layer_signal_store(path, seed=0):
    """Four synsets of 15 images: 'noise' carries no synset information, 'signal' puts each synset apart."""
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(4), 15)
    synsets = [f"s{c}.n.01" for c in codes]
    centres = rng.normal(size=(4, 12)) * 3
    layers = {"noise": rng.normal(size=(60, 12)), "signal": centres[codes] + rng.normal(size=(60, 12))}
    return build_store(path, layers, synsets), layers, codes
