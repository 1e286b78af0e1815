"""The MNI152 template in LPS and the canonical slice grid: the one place that defines both.

Canonical 2D slice (what the GAN sees): an axial plane of the template, array ``[row, col]`` where ``col`` increases
toward the patient's left (+x, LPS) and ``row`` toward posterior (+y, LPS) - the radiological display. As an image
it is a one-slice SimpleITK volume of size (matrix, matrix, 1) with an identity direction, centred on the brain,
its z origin on the level's plane.
"""
from __future__ import annotations

import functools

import numpy as np
import SimpleITK as sitk

from spectgan.conditions import LEVEL_Z_MM, Level

FIELD_OF_VIEW_MM = 224.0  # canonical in-plane field of view (square)
SLICE_CENTRE_MM = (0.0, 18.0)  # (x, y) LPS of the slice centre: MNI (0, -18), the middle of the brain
SLAB_THICKNESS_MM = 4.0  # axial thickness every canonical slice represents (simulated and imported alike)
MATRICES = (128, 64, 32)  # canonical matrices; 32 (7 mm pixels) only for small models and tests


def pixel_spacing(matrix: int) -> float:
    """In-plane pixel spacing in mm for a canonical matrix (1.75 mm at 128, 3.5 mm at 64, 7 mm at 32)."""
    if matrix not in MATRICES:
        raise ValueError(f"matrix must be one of {MATRICES}, got {matrix}")
    return FIELD_OF_VIEW_MM / matrix


def canonical_origin(level: Level, matrix: int) -> tuple[float, float, float]:
    """LPS position (mm) of pixel [0, 0] of a canonical slice."""
    spacing = pixel_spacing(matrix)
    half = (matrix - 1) / 2.0 * spacing
    return (SLICE_CENTRE_MM[0] - half, SLICE_CENTRE_MM[1] - half, LEVEL_Z_MM[Level(level)])


def canonical_image(array: np.ndarray, level: Level, matrix: int | None = None) -> sitk.Image:
    """Wrap a canonical slice array [H, W] (or [1, H, W]) in counts as a one-slice LPS image on its level's plane."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(f"a canonical slice is a square 2D array, got shape {array.shape}")
    matrix = matrix or array.shape[0]
    image = sitk.GetImageFromArray(array[None])
    spacing = pixel_spacing(matrix)
    image.SetSpacing((spacing, spacing, SLAB_THICKNESS_MM))
    image.SetOrigin(canonical_origin(level, matrix))
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return image


def canonical_array(image: sitk.Image) -> np.ndarray:
    """The [H, W] float32 array of a canonical one-slice image."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    return array[0] if array.ndim == 3 else array


def canonical_grid(level: Level, matrix: int, depth_mm: float = 0.0, step_mm: float = 2.0) -> sitk.Image:
    """An empty float32 reference grid: the canonical slice extended to ``depth_mm`` on each side in z."""
    n_z = 2 * int(round(depth_mm / step_mm)) + 1
    spacing = pixel_spacing(matrix)
    grid = sitk.Image(matrix, matrix, n_z, sitk.sitkFloat32)
    grid.SetSpacing((spacing, spacing, step_mm))
    x0, y0, z0 = canonical_origin(level, matrix)
    grid.SetOrigin((x0, y0, z0 - (n_z - 1) / 2.0 * step_mm))
    return grid


def _nifti_to_sitk(nifti) -> sitk.Image:
    """nibabel image (RAS affine) -> SimpleITK image in LPS with the same physical geometry."""
    affine = np.asarray(nifti.affine, dtype=float)
    data = np.asarray(nifti.get_fdata(), dtype=np.float32)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = ras_to_lps @ affine[:3, :3] / spacing
    image = sitk.GetImageFromArray(np.transpose(data, (2, 1, 0)).copy())
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(d) for d in direction.ravel()))
    image.SetOrigin(tuple(float(o) for o in ras_to_lps @ affine[:3, 3]))
    return image


@functools.lru_cache(maxsize=None)
def mni_maps() -> dict[str, sitk.Image]:
    """MNI152 2009 maps at 1 mm from nilearn's wheel (no download): ``t1``, ``gm``, ``wm``, ``brain`` (LPS)."""
    from nilearn import datasets

    loaders = {"t1": datasets.load_mni152_template, "gm": datasets.load_mni152_gm_template,
               "wm": datasets.load_mni152_wm_template, "brain": datasets.load_mni152_brain_mask}
    return {name: _nifti_to_sitk(load(resolution=1)) for name, load in loaders.items()}
