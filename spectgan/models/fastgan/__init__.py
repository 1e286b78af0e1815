"""Conditional FastGAN for canonical SPECT slices: networks, augmentation, training, sampling, bundles.

    from spectgan.models.fastgan import sample, load_bundle
    counts, seed = sample("models/spect_fastgan_A", "BG", "unilateral", side="left", seed=3, n=4)
"""
from spectgan.models.fastgan.bundle import Bundle, export_bundle, load_bundle
from spectgan.models.fastgan.sample import sample

__all__ = ["Bundle", "export_bundle", "load_bundle", "sample"]
