"""What the C2ST sees: the classifier two-sample test of a bundle's slices against the held-out test split, as is and
with both sides smoothed (Gaussian, sigma 1.5 px) so that only coarse anatomy and perfusion remain.

    python scripts/c2st_coarse.py --bundle models/spect_fastgan_A --cohort sample_data/cohorts/default [--gain G]

``--gain`` multiplies the bundle's counts (e.g. a bundle trained on a cohort of another count scale).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from scipy import ndimage

from spectgan.cohorts.format import read_cohort_info
from spectgan.evaluation.data import BundleSource, read_split
from spectgan.evaluation.features import to_inputs
from spectgan.evaluation.metrics import two_sample_test
from spectgan.evaluation.pipeline import FULL, synthesize

SMOOTHING_PX = 1.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--gain", type=float, default=1.0)
    args = parser.parse_args()
    scale = read_cohort_info(args.cohort)["count_scale"]
    source = BundleSource(args.bundle)
    real = read_split(args.cohort, "test", image_size=source.image_size)
    fake = synthesize(source, real, FULL.seed).counts * np.float32(args.gain)
    result = {}
    for name, smooth in (("as is", 0.0), (f"both smoothed (sigma {SMOOTHING_PX} px)", SMOOTHING_PX)):
        a, b = (ndimage.gaussian_filter(x, (0, smooth, smooth)) if smooth else x for x in (real.counts, fake))
        test = two_sample_test(to_inputs(a, scale), to_inputs(b, scale), FULL.c2st_folds, FULL.c2st_steps, FULL.seed)
        result[name] = {"accuracy": round(test["accuracy"], 3), "ci95": [round(v, 3) for v in test["ci95"]]}
    print(json.dumps({"bundle": args.bundle, "cohort": args.cohort, "c2st": result}))


if __name__ == "__main__":
    main()
