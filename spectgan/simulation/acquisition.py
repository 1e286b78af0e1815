"""Physical SPECT acquisition and reconstruction of 123I-IMP activity with pytomography.

Parallel-hole projection over 360 degrees with attenuation (mu map of the head) and a distance-dependent collimator
blur, Poisson noise at clinical count levels, OSEM with attenuation and resolution modelling, a Gaussian post-filter.

Axial planes are reconstructed as a stack of independent slices with an in-plane (1D) collimator blur, so each slice
sees only its own activity; the axial part of the system blur is applied to the 3D activity before a plane is taken
(``spectgan.simulation.protocol.axial_profile``, where the system resolution is defined). Units: activity in CBF
units (mL/100 g/min), mu in 1/cm, lengths in mm unless named ``_cm``.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

import pytomography
from pytomography.algorithms import OSEM
from pytomography.likelihoods import PoissonLogLikelihood
from pytomography.metadata.SPECT import SPECTObjectMeta, SPECTProjMeta, SPECTPSFMeta
from pytomography.projectors.SPECT import SPECTSystemMatrix
from pytomography.transforms.SPECT import SPECTAttenuationTransform, SPECTPSFTransform

from spectgan.simulation.protocol import FWHM_INTRINSIC_CM, FWHM_SLOPE, RADIUS_OF_ROTATION_CM, START_ANGLE_DEG, Protocol

SENSITIVITY = 5.5  # expected counts per view per (CBF unit x mL) of unattenuated activity: ~1.5e5 counts per
#                    4-mm normal basal-ganglia slice over the whole orbit (measured with spectgan bench cohort)


def acquire(activity: np.ndarray, mu: np.ndarray, pixel_mm: float, slab_mm: float, protocol: Protocol,
            count_levels: np.ndarray, seeds: list[int]) -> np.ndarray:
    """Simulate and reconstruct a stack of independent axial slices.

    activity: [N, H, W] CBF units in canonical orientation (row = +y, col = +x); mu: [N, H, W] 1/cm; pixel_mm and
    slab_mm: in-plane pixel size and slice thickness; count_levels: [N] relative count level per slice; seeds: one
    per slice for its Poisson noise. Returns reconstructed counts [N, H, W] float32 (counts per voxel over the whole orbit), same
    orientation.
    """
    n_slices, height, width = activity.shape
    if n_slices < 2:  # pytomography squeezes a single-slice stack away: pad with an empty slice
        padded = acquire(np.concatenate([activity, np.zeros_like(activity)]), np.concatenate([mu, mu]), pixel_mm,
                         slab_mm, protocol, np.concatenate([count_levels, count_levels]), list(seeds) + [0])
        return padded[:1]
    pixel_cm, slab_cm = pixel_mm / 10.0, slab_mm / 10.0
    # pytomography objects are [x, y, z]: canonical [slice, row=y, col=x] -> [col, row, slice]
    to_object = lambda array: torch.from_numpy(np.ascontiguousarray(np.transpose(array, (2, 1, 0)))).to(
        pytomography.device, pytomography.dtype)
    amount = to_object(activity * (pixel_cm * pixel_cm * slab_cm))  # CBF units x mL per voxel
    object_meta = SPECTObjectMeta((pixel_cm, pixel_cm, slab_cm), (width, height, n_slices))
    angles = START_ANGLE_DEG + np.arange(protocol.n_views) * protocol.angular_step_deg
    proj_meta = SPECTProjMeta((width, n_slices), (pixel_cm, slab_cm), angles,
                              radii=np.full(protocol.n_views, RADIUS_OF_ROTATION_CM))
    psf_meta = SPECTPSFMeta((FWHM_SLOPE / 2.3548, FWHM_INTRINSIC_CM / 2.3548), kernel_dimensions="1D")
    system_matrix = SPECTSystemMatrix(
        obj2obj_transforms=[SPECTAttenuationTransform(to_object(mu)), SPECTPSFTransform(psf_meta)],
        proj2proj_transforms=[], object_meta=object_meta, proj_meta=proj_meta)
    with torch.no_grad():
        expected = system_matrix.forward(amount) * SENSITIVITY
        levels = torch.as_tensor(np.asarray(count_levels, dtype=np.float32), device=expected.device)
        expected = expected * levels[None, None, :]
        measured = torch.empty_like(expected)
        for index, seed in enumerate(seeds):
            generator = torch.Generator(device=expected.device).manual_seed(int(seed))
            measured[..., index] = torch.poisson(expected[..., index].contiguous(), generator=generator)
    likelihood = PoissonLogLikelihood(system_matrix, measured)
    reconstruction = OSEM(likelihood)(n_iters=protocol.n_iterations, n_subsets=protocol.n_subsets)
    # counts per voxel summed over the orbit, independent of the number of views
    counts = np.transpose(reconstruction.detach().cpu().numpy(), (2, 1, 0)) * protocol.n_views
    sigma_pixels = protocol.post_filter_fwhm_mm / 2.3548 / pixel_mm
    return ndimage.gaussian_filter(counts, (0.0, sigma_pixels, sigma_pixels)).astype(np.float32)
