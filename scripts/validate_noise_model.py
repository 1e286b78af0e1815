"""Check spectgan.cohorts.noise against the truth of the simulated acquisition: the same phantoms acquired twice
with other Poisson seeds give the noise itself ((a - b) / sqrt 2) and the expected image ((a + b) / 2). Prints the
model estimated from the noisy slices alone beside the one fitted to that noise.

    python scripts/validate_noise_model.py [--slices 48] [--seed 0]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from spectgan.cohorts import simulated
from spectgan.cohorts.noise import BRAIN_SHARE, estimate_noise_model, fit_correlation, fit_count_dependence
from spectgan.simulation.acquisition import acquire
from spectgan.simulation.protocol import axial_profile

MATRIX = 64


def acquire_twice(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` train slices of cohort ``seed``, acquired and reconstructed twice: counts [2, N, S, S]."""
    weights = axial_profile(simulated.PLANE_STEP_MM, simulated.SLAB_THICKNESS_MM, simulated.PLANE_HALF_DEPTH_MM)
    activities, mus, levels = [], [], []
    for job in simulated.cohort_jobs(seed)[:count]:
        rng = np.random.default_rng(job.seed)
        grid = simulated.canonical_grid(job.condition.level, MATRIX, simulated.PLANE_HALF_DEPTH_MM,
                                        simulated.PLANE_STEP_MM)
        subject = simulated.random_subject(job.condition, rng)
        activity, mu = simulated.perfusion_phantom(subject, grid)
        activities.append(np.tensordot(weights, activity, axes=1))
        mus.append(mu[len(weights) // 2])
        levels.append(subject.count_level)
    stack = (np.stack(activities), np.stack(mus), simulated.pixel_spacing(MATRIX), simulated.SLAB_THICKNESS_MM,
             simulated.protocol_for(MATRIX), np.array(levels))
    return acquire(*stack, list(range(1, count + 1))), acquire(*stack, list(range(1001, 1001 + count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unit", type=float, default=956.73, help="count scale (the default cohort's)")
    args = parser.parse_args()
    first, second = (x.astype(np.float64) / args.unit for x in acquire_twice(args.seed, args.slices))
    noise, expected = (first - second) / np.sqrt(2), (first + second) / 2
    inside = expected > BRAIN_SHARE * expected.max(axis=(1, 2), keepdims=True)
    a, b = fit_count_dependence(expected, noise, inside)
    sigma_px, _ = fit_correlation(noise / np.sqrt(a * np.clip(expected, 1e-3, None) ** b), inside)
    truth = {"gain": round(float(np.sqrt(a)), 4), "exponent": round(b / 2, 3), "sigma_px": round(sigma_px, 3)}
    estimate = estimate_noise_model(first * args.unit, args.unit).network_arguments()
    print(json.dumps({"slices": args.slices, "truth": truth, "estimated_from_noisy_slices": estimate}))


if __name__ == "__main__":
    main()
