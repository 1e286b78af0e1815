"""Where model A's texture tells come from: its spectrum gap at the top band, its exactly-zero pixels and its
border, for the same expected images (the generator's output before the noise stage) with the noise stage as
shipped, switched off, and with a wider noise correlation.

    python scripts/output_stage_diagnostic.py [--bundle models/spect_fastgan_A] [--cohort sample_data/cohorts/default]

Prints, per variant, the share of exactly-zero pixels, the mean counts on the image border, and the largest spectrum
gap per level (decades, at cycles/mm) against the cohort's test split: as the evaluation measures it, and with both
sides under a Hann window (which takes the image border out of the spectrum: the DFT sees a slice as periodic, so
counts on the border reach every frequency).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from spectgan.cohorts.format import load_split
from spectgan.conditions import Level
from spectgan.evaluation.texture import compare_spectra
from spectgan.models.fastgan.bundle import load_bundle
from spectgan.models.fastgan.inference import generate
from spectgan.models.fastgan.networks import _gaussian_profile, _separable_blur

WIDER_SIGMA_PX = 1.5  # a noise correlation wider than the estimated one


def border_mean(counts: np.ndarray) -> float:
    """Mean counts of the outermost rows and columns of slices [N, S, S]."""
    return float(np.concatenate([counts[:, 0], counts[:, -1], counts[:, :, 0], counts[:, :, -1]], axis=1).mean())


def largest_gaps(real: np.ndarray, synthetic: np.ndarray, levels: list[Level], pixel_mm: float, scale: float,
                 window: np.ndarray) -> str:
    """The largest spectrum gap per level of slices [N, S, S] multiplied by ``window`` [S, S]."""
    gaps = []
    for level in Level:
        index = [i for i, other in enumerate(levels) if other is level]
        comparison = compare_spectra(real[index] * window, synthetic[index] * window, pixel_mm, scale)
        gaps.append(f"{level.value} {comparison.max_gap_decades:.2f} at {comparison.frequency_of_max_gap:.3f}")
    return ", ".join(gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="models/spect_fastgan_A")
    parser.add_argument("--cohort", default="sample_data/cohorts/default")
    args = parser.parse_args()
    counts, records = load_split(args.cohort, "test")
    bundle = load_bundle(args.bundle)
    generator, scale = bundle.generator, bundle.metadata["count_scale"]
    pixel_mm = bundle.metadata["pixel_spacing_mm"]
    stage = generator.noise_stage
    if stage is None:
        raise SystemExit(f"{args.bundle} has no noise stage")
    conditions = generator.territories and [r.labelled_condition for r in records] or [r.condition for r in records]
    levels = [record.condition.level for record in records]
    generator.noise_stage = None
    try:
        expected = ((generate(generator, conditions, seed=5) + 1) * 0.5).clamp(min=0)  # [N, 1, S, S], share of scale
    finally:
        generator.noise_stage = stage
    white = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1))
    sd = stage.gain * expected.pow(stage.exponent)
    variants = {"no noise": torch.zeros_like(expected)}
    for sigma in (stage.sigma_px, WIDER_SIGMA_PX):
        profile = _gaussian_profile(sigma)
        variants[f"noise, correlation sigma {sigma:g} px"] = _separable_blur(white, profile / profile.pow(2).sum().sqrt())
    hann = np.hanning(counts.shape[-1])
    windows = {"as evaluated": np.ones((counts.shape[-1],) * 2), "Hann-windowed": np.outer(hann, hann)}
    print(f"real: exactly-zero pixels {np.mean(counts == 0):.3f}, border {border_mean(counts):.2f} counts")
    for name, noise in variants.items():
        synthetic = (expected + noise * sd).clamp(min=0)[:, 0].numpy() * scale
        print(f"{name}: exactly-zero pixels {np.mean(synthetic == 0):.3f}, border {border_mean(synthetic):.2f} counts")
        for window_name, window in windows.items():
            print(f"  largest gap, {window_name}: {largest_gaps(counts, synthetic, levels, pixel_mm, scale, window)}")


if __name__ == "__main__":
    main()
