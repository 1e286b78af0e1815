"""The simulated SPECT acquisition protocol, without the simulator: what a DICOM NM header states about a scan.

``spectgan.simulation.acquisition`` simulates with these settings and the system resolution defined here
(``system_fwhm_mm``, ``axial_profile``); ``spectgan.export.dicom`` records them and ``spectgan.counterfactual`` blurs
with them. This module imports no torch, so the export and serving sides stay light.

A parallel-hole collimator, one detector on a circular 360-degree orbit of ``RADIUS_OF_ROTATION_CM``, views at
equal steps from 0 degrees with increasing angles (counter-clockwise in pytomography's DICOM convention), a 20 %
photopeak window on the 159 keV line of 123I.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

RADIUS_OF_ROTATION_CM = 14.0
SCAN_ARC_DEG = 360.0
START_ANGLE_DEG = 0.0
ROTATION_DIRECTION = "CC"  # angles increase, as pytomography reads a DICOM "CC" rotation
COLLIMATOR_TYPE = "PARA"  # DICOM Collimator Type: parallel hole
PHOTOPEAK_KEV = 159.0  # the 123I gamma line
ENERGY_WINDOW_FRACTION = 0.20  # full width of the photopeak window, relative to the photopeak
# The simulation has no time axis: its counts are set to a clinical 123I-IMP brain SPECT's (``SENSITIVITY`` in
# spectgan.simulation.acquisition). The orbit is stated as taking this nominal time, which DICOM needs (Actual Frame
# Duration is type 1); it is an assumption, not a simulated quantity.
NOMINAL_ORBIT_DURATION_S = 24 * 60.0
FWHM_SLOPE = 0.045  # cm of collimator FWHM per cm of source-to-collimator distance (123I, LEHR-type)
FWHM_INTRINSIC_CM = 0.30
PLANE_STEP_MM = 2.0  # activity planes of a slice's slab, in template space, for the axial blur (``axial_profile``)
PLANE_HALF_DEPTH_MM = 12.0  # planes taken on each side of a level


def energy_window_kev() -> tuple[float, float]:
    """(lower, upper) limits of the photopeak window in keV: (143.1, 174.9) for 123I with a 20 % window."""
    half = PHOTOPEAK_KEV * ENERGY_WINDOW_FRACTION / 2
    return round(PHOTOPEAK_KEV - half, 3), round(PHOTOPEAK_KEV + half, 3)


def system_fwhm_mm(distance_cm: float = RADIUS_OF_ROTATION_CM) -> float:
    """Collimator-plus-intrinsic FWHM (mm) at a source-to-collimator distance; about 9.3 mm at the brain centre."""
    return 10.0 * (FWHM_INTRINSIC_CM + FWHM_SLOPE * distance_cm)


def axial_profile(step_mm: float, slab_mm: float, half_depth_mm: float) -> np.ndarray:
    """Weights (sum 1) of planes at ``-half_depth..+half_depth`` in ``step_mm`` steps that make one slab-thick
    slice with the system's axial blur: a box of ``slab_mm`` convolved with a Gaussian of the system FWHM."""
    offsets = np.arange(-half_depth_mm, half_depth_mm + step_mm / 2, step_mm)
    fine = np.arange(-half_depth_mm - slab_mm, half_depth_mm + slab_mm + 0.05, 0.1)
    sigma = system_fwhm_mm() / 2.3548
    blurred_box = ndimage.gaussian_filter1d((np.abs(fine) <= slab_mm / 2).astype(float), sigma / 0.1)
    weights = np.interp(offsets, fine, blurred_box)
    return weights / weights.sum()


@dataclass(frozen=True)
class Protocol:
    """Acquisition and reconstruction settings for one matrix size."""

    n_views: int
    n_subsets: int
    n_iterations: int = 4
    post_filter_fwhm_mm: float = 8.0

    @property
    def angular_step_deg(self) -> float:
        """Degrees between consecutive views of the ``SCAN_ARC_DEG`` orbit."""
        return SCAN_ARC_DEG / self.n_views

    @property
    def view_duration_ms(self) -> int:
        """Nominal time per view in ms: ``NOMINAL_ORBIT_DURATION_S`` shared by the views."""
        return round(NOMINAL_ORBIT_DURATION_S * 1000 / self.n_views)

    def to_dict(self) -> dict:
        return asdict(self)


PROTOCOLS: dict[int, Protocol] = {128: Protocol(n_views=96, n_subsets=8), 64: Protocol(n_views=60, n_subsets=6)}
DEFAULT_MATRIX = 128  # the matrix of a default cohort (``spectgan cohort``), which the bundled models learned from


def protocol_for(matrix: int) -> Protocol:
    if matrix not in PROTOCOLS:
        raise ValueError(f"matrix must be one of {sorted(PROTOCOLS)}, got {matrix}")
    return PROTOCOLS[matrix]
