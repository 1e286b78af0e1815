"""Measure approaches to realism on one evaluation (`spectgan.evaluation`), for the model docs: each approach is a
source of synthetic slices evaluated on the default cohort and on a second cohort of another seed.

Approaches measured here without retraining (the retrained model is a bundle and goes through `spectgan evaluate`):
- ``v1``: the first shipped generator (ends in tanh), its network output mapped through this cohort's count scale;
- ``v1_postfiltered``: the same, then the reconstruction's post-filter (Gaussian, the cohort's FWHM) and clipped at
  zero afterwards: the filter applied to the pictures instead of being part of the model.

    python scripts/compare_realism_approaches.py --bundle V1_BUNDLE --out DIR --cohort C1 --cohort C2
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from spectgan.cohorts.format import read_cohort_info
from spectgan.conditions import Condition
from spectgan.evaluation.data import BundleSource
from spectgan.evaluation.pipeline import FULL
from spectgan.evaluation.report import run_evaluation

FWHM_PER_SIGMA = 2.3548


class RescaledBundle(BundleSource):
    """A bundle whose network output is read with another count scale (a cohort's), optionally post-filtered."""

    def __init__(self, bundle_dir: Path, name: str, count_scale: float, post_filter_sigma_px: float = 0.0):
        super().__init__(bundle_dir)
        self.name = name
        self.gain = count_scale / self.count_scale
        self.sigma = post_filter_sigma_px

    def generate(self, condition: Condition, n: int, seed: int) -> np.ndarray:
        counts = super().generate(condition, n, seed) * np.float32(self.gain)
        if self.sigma > 0:
            counts = np.clip(ndimage.gaussian_filter(counts, (0, self.sigma, self.sigma)), 0, None)
        return counts.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, type=Path, help="the first shipped bundle (v1)")
    parser.add_argument("--cohort", action="append", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    info = read_cohort_info(args.cohort[0])
    pixel_mm = float(info["pixel_spacing_mm"]) * int(info["matrix"]) / 64
    sigma = float(info["acquisition"]["post_filter_fwhm_mm"]) / FWHM_PER_SIGMA / pixel_mm
    sources = [RescaledBundle(args.bundle, "v1", info["count_scale"]),
               RescaledBundle(args.bundle, "v1_postfiltered", info["count_scale"], sigma)]
    run_evaluation(sources, args.cohort[0], args.out, FULL, progress=False, other_cohorts=args.cohort[1:])


if __name__ == "__main__":
    main()
