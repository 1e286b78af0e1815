"""Where model A's texture tells come from: its spectrum gap at the top band and its exactly-zero pixels, with the
fixed noise stage as shipped, switched off, and with noise that falls linearly with the counts below m0 (as OSEM's
positivity makes it), all on the same expected images (the generator's output before the noise stage).

    python scripts/output_stage_diagnostic.py [--bundle models/spect_fastgan_A] [--cohort sample_data/cohorts/default]

Prints, per variant, the share of exactly-zero pixels and the largest spectrum gap per level (decades, at
cycles/mm), against the cohort's test split.
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
from spectgan.models.fastgan.networks import _separable_blur


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="models/spect_fastgan_A")
    parser.add_argument("--cohort", default="sample_data/cohorts/default")
    args = parser.parse_args()
    counts, records = load_split(args.cohort, "test")
    bundle = load_bundle(args.bundle)
    generator, scale = bundle.generator, bundle.metadata["count_scale"]
    stage = generator.noise_stage
    if stage is None:
        raise SystemExit(f"{args.bundle} has no noise stage")
    conditions = generator.territories and [r.labelled_condition for r in records] or [r.condition for r in records]
    generator.noise_stage = None
    try:
        expected = ((generate(generator, conditions, seed=5) + 1) * 0.5).clamp(min=0)  # [N, 1, S, S], share of scale
    finally:
        generator.noise_stage = stage
    correlated = _separable_blur(torch.randn(expected.shape, generator=torch.Generator().manual_seed(1)),
                                 stage.profile)
    shipped_sd = stage.gain * expected.pow(stage.exponent)
    variants = {"shipped noise stage": shipped_sd, "no noise": torch.zeros_like(expected)}
    for m0 in (0.01, 0.1):
        variants[f"linear below m0 = {m0}"] = shipped_sd * (expected / m0).clamp(max=1).pow(1 - stage.exponent)
    print(f"real: exactly-zero pixels {np.mean(counts == 0):.3f}")
    for name, sd in variants.items():
        synthetic = (expected + correlated * sd).clamp(min=0)[:, 0].numpy() * scale
        gaps = []
        for level in Level:
            index = [i for i, record in enumerate(records) if record.condition.level is level]
            comparison = compare_spectra(counts[index], synthetic[index], bundle.metadata["pixel_spacing_mm"], scale)
            gaps.append(f"{level.value} {comparison.max_gap_decades:.2f} at {comparison.frequency_of_max_gap:.3f}")
        print(f"{name}: exactly-zero pixels {np.mean(synthetic == 0):.3f}; largest gap {', '.join(gaps)}")


if __name__ == "__main__":
    main()
