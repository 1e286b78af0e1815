"""The physics baseline: a defect as the simulation makes it, applied to the patient's own canonical slice.

A defect of a side, territory and severity is the simulation's fractional CBF reduction in template space
(``spectgan.simulation.phantom.defect_reduction``: the same territory maps and soft edges, and for a unilateral MCA
defect the crossed cerebellar diaschisis at its expected fraction). Its factor ``1 - reduction`` is taken on the
planes of the level's slab, weighted by the axial profile of the acquisition (slab thickness and the system's axial
blur) and blurred in-plane with the system's resolution combined with the reconstruction's post-filter. A defect is
added by multiplying the patient's slice by that factor and removed by dividing by it. Left is +x; nothing is
flipped: the slice and the factor share the canonical grid (``spectgan.geometry.template``).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from spectgan.conditions import Lesion, Level
from spectgan.counterfactual import PHYSICS
from spectgan.counterfactual.paired import Method
from spectgan.errors import InvalidRequestError
from spectgan.geometry.registration import MIN_LEVEL_COVERAGE, Registration, extract_level, level_coverage
from spectgan.geometry.template import SLAB_THICKNESS_MM, canonical_grid, pixel_spacing
from spectgan.lesions import DefectAxes
from spectgan.simulation.phantom import (DIASCHISIS_FRACTION, GREY_MATTER_CBF, GREY_TO_WHITE, SEVERITY_RANGE,
                                         TERRITORIES_AT_LEVEL, Defect, Subject, perfusion_phantom)
from spectgan.simulation.protocol import (DEFAULT_MATRIX, PLANE_HALF_DEPTH_MM, PLANE_STEP_MM, PROTOCOLS,
                                          axial_profile, system_fwhm_mm)

METHOD = PHYSICS
FACTOR_FLOOR = 0.01  # below this fraction of the slab's maximum (outside the head) the factor is 1
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
# The territories per level and the severities the simulation draws: what this method can add or remove.
PHYSICS_AXES = DefectAxes({level.value: territories for level, territories in TERRITORIES_AT_LEVEL.items()},
                          SEVERITY_RANGE)


def expected_diaschisis(lesions: Sequence[Lesion]) -> float:
    """The contralateral cerebellar reduction (fraction of CBF) the simulation gives these lesions on average: a
    single (unilateral) MCA lesion's severity times the mean diaschisis fraction, 0 otherwise."""
    if len(lesions) == 1 and lesions[0].territory == "MCA":
        return float(np.mean(DIASCHISIS_FRACTION)) * float(lesions[0].severity)
    return 0.0


def resolution_fwhm_mm(matrix: int) -> float:
    """In-plane FWHM (mm) of a reconstructed slice: the system's resolution combined with the post-filter of the
    matrix's protocol (the default matrix's for a matrix without one)."""
    post_filter = PROTOCOLS.get(matrix, PROTOCOLS[DEFAULT_MATRIX]).post_filter_fwhm_mm
    return math.hypot(system_fwhm_mm(), post_filter)


def _template_subject(lesions: tuple[Lesion, ...]) -> Subject:
    """The simulation's average subject in the template's pose, with these lesions."""
    return Subject(grey_cbf=GREY_MATTER_CBF[0], grey_to_white=GREY_TO_WHITE[0], count_level=1.0,
                   rotation_deg=(0.0, 0.0, 0.0), translation_mm=(0.0, 0.0, 0.0), scale=(1.0, 1.0, 1.0),
                   heterogeneity_seed=0, defects=tuple(Defect(lesion.territory, lesion.side, float(lesion.severity))
                                                       for lesion in lesions),
                   diaschisis=expected_diaschisis(lesions))


def _reconstructed_slab(subject: Subject, level: Level, matrix: int) -> np.ndarray:
    """The subject's activity on the level's slab [H, W] as the reconstruction resolves it: the planes weighted by
    the axial profile, blurred in-plane with ``resolution_fwhm_mm``."""
    grid = canonical_grid(level, matrix, PLANE_HALF_DEPTH_MM, PLANE_STEP_MM)
    activity, _ = perfusion_phantom(subject, grid)
    slab = np.tensordot(axial_profile(PLANE_STEP_MM, SLAB_THICKNESS_MM, PLANE_HALF_DEPTH_MM), activity, axes=1)
    sigma_px = resolution_fwhm_mm(matrix) * FWHM_TO_SIGMA / pixel_spacing(matrix)
    return ndimage.gaussian_filter(slab, sigma_px, mode="nearest")


@functools.lru_cache(maxsize=64)
def _factor(lesions: tuple[Lesion, ...], level: Level, matrix: int) -> np.ndarray:
    without = _reconstructed_slab(_template_subject(()), level, matrix)
    with_defect = _reconstructed_slab(_template_subject(lesions), level, matrix)
    floor = FACTOR_FLOOR * float(without.max())
    factor = np.where(without > floor, with_defect / np.maximum(without, floor), 1.0).astype(np.float32)
    factor.setflags(write=False)
    return factor


def defect_factor(lesions: Sequence[Lesion], level: Level, matrix: int) -> np.ndarray:
    """The factor [H, W] (0..1, 1 away from the defect) by which these lesions (complete: side, territory,
    severity) scale a canonical slice of ``level`` at ``matrix`` (read-only; cached)."""
    return _factor(tuple(lesions), Level(level), matrix)


def add_defect(counts: np.ndarray, lesions: Sequence[Lesion], level: Level) -> np.ndarray:
    """The canonical slice ``counts`` [H, W] with these lesions added (counts times ``defect_factor``)."""
    return (counts * defect_factor(lesions, level, counts.shape[-1])).astype(np.float32)


def remove_defect(counts: np.ndarray, lesions: Sequence[Lesion], level: Level) -> np.ndarray:
    """The canonical slice ``counts`` [H, W] with these lesions removed (counts divided by ``defect_factor``)."""
    return (counts / defect_factor(lesions, level, counts.shape[-1])).astype(np.float32)


def patient_slice(study: sitk.Image, registration: Registration, level: Level, matrix: int) -> np.ndarray:
    """The reference patient's canonical slice [H, W] (counts of the study) at a level on a ``matrix`` grid, through
    the registration; InvalidRequestError when the level's slab lies less than ``MIN_LEVEL_COVERAGE`` inside the
    study's field of view (the registration cannot place it)."""
    coverage = level_coverage(study, registration.transform, level, matrix)
    if coverage < MIN_LEVEL_COVERAGE:
        raise InvalidRequestError(f"the reference study holds {coverage:.0%} of the {Level(level).value} level's "
                                  f"brain in its field of view; a slice made from the reference needs "
                                  f"{MIN_LEVEL_COVERAGE:.0%}: choose another level or study")
    return extract_level(study, registration.transform, level, matrix)


PHYSICS_METHOD = Method(METHOD, add_defect, remove_defect)
