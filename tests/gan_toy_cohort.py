"""A toy cohort in the real cohort format for the fast GAN tests (the simulated cohort takes minutes to build).

Each slice is a smooth elliptical 'brain' at 64 x 64 whose size depends on the level; defects lower the lateral part
of one hemisphere (unilateral: the recorded side; column index increases toward the patient's left) or of both
(bilateral), then Poisson noise. Small and honest: it exercises formats and code paths, not image fidelity.

``build_toy_cohort(..., lesions=True)`` also records a territory and a severity per affected hemisphere in the
manifest (drawn from ``TOY_TERRITORIES`` and ``TOY_SEVERITY``; the images' defects do not follow them), for models
with defect axes (``toy_axes_bundle``).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest

from spectgan.cohorts.format import CohortRecord, compute_count_scale, write_cohort_info, write_manifest
from spectgan.conditions import Condition, Lesion, Level, Pattern, Side, valid_conditions
from spectgan.files import atomic_write_image
from spectgan.lesions import parse_lesions
from spectgan.geometry.template import SLAB_THICKNESS_MM, canonical_image, pixel_spacing

MATRIX = 64
SLICES_PER_CONDITION = {"train": 6, "test": 2}
SEMI_AXES = {Level.CER: (18, 22), Level.BG: (24, 20), Level.COR: (20, 16)}  # (rows, cols) in pixels
DEFECT_FACTOR = 0.55
MEAN_COUNTS = 120.0
TOY_TERRITORIES = {Level.CER: ("MCA", "PICA"), Level.BG: ("ACA", "MCA", "PCA"), Level.COR: ("ACA", "MCA")}
TOY_SEVERITY = (0.15, 0.5)


def toy_slice(level: Level, pattern: Pattern, side: Side | None, rng: np.random.Generator) -> np.ndarray:
    """One noisy slice in counts [64, 64]."""
    rows, cols = np.mgrid[0:MATRIX, 0:MATRIX].astype(float)
    centre = (MATRIX - 1) / 2 + rng.normal(0, 0.7, size=2)
    semi_rows, semi_cols = np.array(SEMI_AXES[level]) * rng.uniform(0.92, 1.08)
    radius = np.hypot((rows - centre[0]) / semi_rows, (cols - centre[1]) / semi_cols)
    brain = 1.0 / (1.0 + np.exp((radius - 1.0) / 0.06))  # soft edge
    uptake = brain * (0.8 + 0.2 * np.cos(3 * radius))  # brighter cortex ring
    lateral = np.clip((np.abs(cols - centre[1]) / semi_cols - 0.35) / 0.3, 0, 1) * brain
    hemispheres = {Side.LEFT: cols > centre[1], Side.RIGHT: cols < centre[1]}
    affected = {Pattern.NORMAL: [], Pattern.UNILATERAL: [side], Pattern.BILATERAL: list(Side)}[pattern]
    for hemisphere in affected:
        uptake = uptake * (1 - (1 - DEFECT_FACTOR) * lateral * hemispheres[hemisphere])
    expected = uptake * MEAN_COUNTS * rng.uniform(0.85, 1.15)
    return rng.poisson(expected).astype(np.float32)


def toy_lesions(condition: Condition, rng: np.random.Generator) -> tuple[Lesion, ...]:
    """A territory of the condition's level and a severity per affected hemisphere (left before right)."""
    sides = {Pattern.NORMAL: [], Pattern.UNILATERAL: [condition.side], Pattern.BILATERAL: list(Side)}[condition.pattern]
    return tuple(Lesion(side, str(rng.choice(TOY_TERRITORIES[condition.level])),
                        round(float(rng.uniform(*TOY_SEVERITY)), 4)) for side in sides)


def build_toy_cohort(out: Path, seed: int = 1, lesions: bool = False) -> Path:
    """Write a toy cohort (all valid conditions at all levels) to ``out``; returns ``out``. ``lesions``: the
    manifest records each defect's territory and severity (``toy_lesions``; drawn apart from the images)."""
    rng, lesion_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    records, train_arrays = [], []
    for split, count in SLICES_PER_CONDITION.items():
        for condition in valid_conditions():
            for index in range(count):
                array = toy_slice(condition.level, condition.pattern, condition.side, rng)
                slice_id = f"{condition.label}-{index:02d}"
                file = f"{split}/{slice_id}.nii.gz"
                atomic_write_image(canonical_image(array, condition.level), out / file)
                labels = toy_lesions(condition, lesion_rng) if lesions else parse_lesions(condition.pattern,
                                                                                          condition.side)
                records.append(CohortRecord(split, slice_id, condition, labels, file))
                if split == "train":
                    train_arrays.append(array)
    write_manifest(out, records)
    write_cohort_info(out, {"matrix": MATRIX, "pixel_spacing_mm": pixel_spacing(MATRIX),
                            "slab_thickness_mm": SLAB_THICKNESS_MM,
                            "count_scale": compute_count_scale(np.stack(train_arrays)), "source": "toy", "seed": seed})
    return out


@pytest.fixture(scope="session")
def toy_cohort(tmp_path_factory) -> Path:
    return build_toy_cohort(tmp_path_factory.mktemp("toy") / "cohort")


@pytest.fixture(scope="session")
def toy_lesion_cohort(tmp_path_factory) -> Path:
    """The toy cohort with each defect's territory and severity in its manifest."""
    return build_toy_cohort(tmp_path_factory.mktemp("toy_lesions") / "cohort", lesions=True)


@contextlib.contextmanager
def one_thread():
    """One torch thread for the tiny models (on shared cores, two threads spend more time waiting for each other
    than computing); subprocesses get OMP_NUM_THREADS=1 so that they compute exactly like this process."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OMP_NUM_THREADS", "1")
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


TINY_NETWORK = {"generator_width": 4, "discriminator_width": 4, "latent_dim": 16, "condition_dim": 8}


@pytest.fixture(scope="session")
def toy_run(toy_cohort, tmp_path_factory) -> Path:
    """A tiny 64 x 64 model trained for a few steps on the toy cohort (a run folder)."""
    from spectgan.models.fastgan.train import train

    run = tmp_path_factory.mktemp("toy_run") / "run"
    with one_thread():
        train(run, progress=False, cohort=str(toy_cohort), iterations=4, batch_size=4, sample_every=100,
              checkpoint_every=100, log_every=2, **TINY_NETWORK)
    return run


@pytest.fixture(scope="session")
def toy_bundle(toy_run, tmp_path_factory) -> Path:
    """The tiny run exported as a model bundle."""
    from spectgan.models.fastgan import export_bundle

    with one_thread():
        return export_bundle(toy_run, tmp_path_factory.mktemp("bundles") / "toy_A")


@pytest.fixture(scope="session")
def toy_axes_bundle(toy_lesion_cohort, tmp_path_factory) -> Path:
    """A tiny model with defect axes (territory and severity) after two training steps on the toy cohort with
    lesions, exported as the bundle ``toy_axes``."""
    from spectgan.models.fastgan.train import train

    folder = tmp_path_factory.mktemp("axes")
    with one_thread():
        train(folder / "run", progress=False, export_bundle_dir=folder / "toy_axes", cohort=str(toy_lesion_cohort),
              iterations=2, batch_size=4, sample_every=100, checkpoint_every=100, log_every=1, defect_axes=True,
              **TINY_NETWORK)
    return folder / "toy_axes"
