"""Conditional FastGAN for canonical SPECT slices: networks, augmentation, training, sampling, bundles.

    from spectgan.gan import sample, load_bundle
    counts, seed = sample("models/spect_fastgan_A", "BG", "unilateral", side="left", seed=3, n=4)
"""
from spectgan.gan.bundle import Bundle, export_bundle, load_bundle
from spectgan.gan.sample import sample

__all__ = ["Bundle", "export_bundle", "load_bundle", "sample"]
