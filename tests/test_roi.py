"""Hemisphere ROI statistics: known-answer images in many orientations of the same physical object.

The object is built once on an identity grid (LPS: the patient's left is +x) and resampled with sitk.Resample onto
grids with other direction matrices, so the physical content stays put while the array layout changes: a split in
index space instead of physical space gives the wrong side.
"""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from spectgan import cli
from spectgan.errors import InvalidImageError
from spectgan.geometry.roi import (TEMPLATE_MIDLINE, MidlinePlane, brain_mask, hemisphere_masks, hemisphere_stats,
                          read_image)
from spectgan.geometry.template import canonical_image, pixel_spacing

LEFT_COUNTS, RIGHT_COUNTS = 80.0, 100.0
EXPECTED_LR = LEFT_COUNTS / RIGHT_COUNTS
EXPECTED_AI = 100.0 * (LEFT_COUNTS - RIGHT_COUNTS) / ((LEFT_COUNTS + RIGHT_COUNTS) / 2.0)  # -22.2 %
CENTRE_MM = np.array([6.0, -12.0, 18.0])  # LPS; off the origin so that the plane through the centroid matters
SEMI_AXES_MM = np.array([40.0, 50.0, 30.0])  # left-right, anterior-posterior, inferior-superior
HALF_EXTENT_MM = 56.0  # half side of every grid: holds the object in any orientation


def rotation(axis: int, degrees: float) -> np.ndarray:
    """3 x 3 rotation about LPS axis 0 (x), 1 (y) or 2 (z)."""
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    first, second = [a for a in range(3) if a != axis]
    matrix = np.eye(3)
    matrix[[first, first, second, second], [first, second, first, second]] = [cos, -sin, sin, cos]
    return matrix


DIRECTIONS_3D = {
    "identity": np.eye(3),
    "x-flipped": np.diag([-1.0, 1.0, 1.0]),
    "ras-like": np.diag([-1.0, -1.0, 1.0]),
    "oblique": rotation(2, 25.0) @ rotation(0, 15.0),
}
DIRECTIONS_2D = {
    "identity": np.eye(2),
    "x-flipped": np.diag([-1.0, 1.0]),
    "ras-like": np.diag([-1.0, -1.0]),
    "oblique": rotation(2, 25.0)[:2, :2],
}


def image_from_function(values_at, spacing_mm: float, dimension: int) -> sitk.Image:
    """Identity-direction float32 image centred on CENTRE_MM; ``values_at(points)`` maps (..., D) LPS mm to counts.

    An even number of voxels per axis keeps voxel centres off the object's symmetry planes.
    """
    count = 2 * math.ceil(HALF_EXTENT_MM / spacing_mm)
    axes = [CENTRE_MM[axis] + (np.arange(count) - (count - 1) / 2.0) * spacing_mm for axis in range(dimension)]
    points = np.stack(np.meshgrid(*axes[::-1], indexing="ij")[::-1], axis=-1)  # numpy order, last axis (x, y, z)
    image = sitk.GetImageFromArray(values_at(points).astype(np.float32))
    image.SetSpacing([spacing_mm] * dimension)
    image.SetOrigin([float(axis[0]) for axis in axes])
    return image


def two_hemisphere_ellipsoid(points: np.ndarray) -> np.ndarray:
    """Ellipse / ellipsoid about CENTRE_MM: LEFT_COUNTS on the patient's left (x > centre), RIGHT_COUNTS elsewhere."""
    dimension = points.shape[-1]
    offset = points - CENTRE_MM[:dimension]
    inside = (((offset / SEMI_AXES_MM[:dimension]) ** 2).sum(axis=-1)) <= 1.0
    return np.where(inside, np.where(offset[..., 0] > 0, LEFT_COUNTS, RIGHT_COUNTS), 0.0)


def regrid(source: sitk.Image, direction: np.ndarray, spacing_mm: float, size: tuple[int, ...]) -> sitk.Image:
    """Resample ``source`` (nearest neighbour) onto a grid with ``direction`` whose centre is CENTRE_MM."""
    dimension = len(size)
    grid = sitk.Image(list(size), sitk.sitkFloat32)
    grid.SetSpacing([spacing_mm if length > 1 else 4.0 for length in size])
    grid.SetDirection(direction.ravel().tolist())
    half_size_mm = np.array(grid.GetSpacing()) * (np.array(size) - 1) / 2.0
    grid.SetOrigin((CENTRE_MM[:dimension] - direction @ half_size_mm).tolist())
    return sitk.Resample(source, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0, sitk.sitkFloat32)


def cube(spacing_mm: float, dimension: int, one_slice: bool = False) -> tuple[int, ...]:
    """Grid size covering 2 x HALF_EXTENT_MM per axis (the last axis one voxel thick for a one-slice volume).

    Even lengths keep voxel centres off the object's midline, where either side would be a right answer.
    """
    length = 2 * math.ceil(HALF_EXTENT_MM / spacing_mm)
    return (length,) * (dimension - 1) + (1 if one_slice else length,)


def central_section_area(normal: np.ndarray) -> float:
    """Area (mm2) of the ellipsoid's section through its centre perpendicular to the unit ``normal``."""
    a, b, c = SEMI_AXES_MM
    return math.pi * a * b * c / float(np.linalg.norm(SEMI_AXES_MM * normal))


def assert_two_hemisphere_answer(stats, brain_size: float, size_unit: str, size_tolerance: float = 0.03):
    assert stats.left == pytest.approx(LEFT_COUNTS, abs=0.6)
    assert stats.right == pytest.approx(RIGHT_COUNTS, abs=0.6)
    assert stats.mc == pytest.approx((LEFT_COUNTS + RIGHT_COUNTS) / 2.0, abs=1.0)
    assert stats.lr == pytest.approx(EXPECTED_LR, abs=0.01)
    assert stats.ai == pytest.approx(EXPECTED_AI, abs=1.0)
    assert stats.size_unit == size_unit
    assert stats.brain_size == pytest.approx(brain_size, rel=size_tolerance)
    assert stats.left_size == pytest.approx(brain_size / 2.0, rel=size_tolerance)
    assert stats.right_size == pytest.approx(brain_size / 2.0, rel=size_tolerance)
    assert stats.n_left + stats.n_right <= stats.n_brain
    assert stats.threshold == pytest.approx(0.3 * RIGHT_COUNTS)


@pytest.fixture(scope="module")
def ellipse_2d() -> sitk.Image:
    return image_from_function(two_hemisphere_ellipsoid, 0.5, 2)


@pytest.fixture(scope="module")
def ellipsoid_3d() -> sitk.Image:
    return image_from_function(two_hemisphere_ellipsoid, 1.0, 3)


@pytest.mark.parametrize("name", DIRECTIONS_2D)
def test_2d_split_is_physical_in_every_orientation(ellipse_2d, name):
    image = regrid(ellipse_2d, DIRECTIONS_2D[name], 2.0, cube(2.0, 2))
    assert_two_hemisphere_answer(hemisphere_stats(image), math.pi * SEMI_AXES_MM[0] * SEMI_AXES_MM[1], "mm2")


@pytest.mark.parametrize("name", DIRECTIONS_3D)
def test_3d_split_is_physical_in_every_orientation(ellipsoid_3d, name):
    image = regrid(ellipsoid_3d, DIRECTIONS_3D[name], 2.5, cube(2.5, 3))
    assert_two_hemisphere_answer(hemisphere_stats(image), 4.0 / 3.0 * math.pi * np.prod(SEMI_AXES_MM), "mm3")


@pytest.mark.parametrize("name", DIRECTIONS_3D)
def test_one_slice_volume_split_is_physical_in_every_orientation(ellipsoid_3d, name):
    direction = DIRECTIONS_3D[name]
    image = regrid(ellipsoid_3d, direction, 2.0, cube(2.0, 3, one_slice=True))
    assert_two_hemisphere_answer(hemisphere_stats(image), central_section_area(direction[:, 2]), "mm2")


def test_the_orientations_really_differ_in_index_space(ellipse_2d):
    """The patient's left lies at high columns on the identity grid and at low columns on the x-flipped one."""
    size = cube(2.0, 2)
    for name, left_columns in (("identity", np.s_[:, size[0] // 2:]), ("x-flipped", np.s_[:, :size[0] // 2])):
        array = sitk.GetArrayFromImage(regrid(ellipse_2d, DIRECTIONS_2D[name], 2.0, size))
        assert array[left_columns][array[left_columns] > 0].mean() == pytest.approx(LEFT_COUNTS, abs=1.0)


@settings(max_examples=12, deadline=None)
@given(angles=st.tuples(*[st.floats(-180.0, 180.0)] * 3), mirrored=st.booleans())
def test_any_direction_matrix_gives_the_same_answer(ellipsoid_3d, angles, mirrored):
    direction = rotation(2, angles[0]) @ rotation(1, angles[1]) @ rotation(0, angles[2])
    direction = direction @ np.diag([-1.0 if mirrored else 1.0, 1.0, 1.0])
    image = regrid(ellipsoid_3d, direction, 3.0, cube(3.0, 3))
    assert_two_hemisphere_answer(hemisphere_stats(image), 4.0 / 3.0 * math.pi * np.prod(SEMI_AXES_MM), "mm3",
                                 size_tolerance=0.04)


def test_canonical_slice_columns_toward_the_patients_left():
    """A canonical slice (template.py): columns increase toward the patient's left; the template midline is x = 0."""
    matrix = 128
    x_mm = (np.arange(matrix) - (matrix - 1) / 2.0) * pixel_spacing(matrix)  # canonical slices centre on x = 0
    rows, columns = np.meshgrid(x_mm, x_mm, indexing="ij")
    inside = (columns / SEMI_AXES_MM[0]) ** 2 + (rows / SEMI_AXES_MM[1]) ** 2 <= 1.0
    image = canonical_image(np.where(inside, np.where(columns > 0, LEFT_COUNTS, RIGHT_COUNTS), 0.0), "BG")
    ellipse_area = math.pi * SEMI_AXES_MM[0] * SEMI_AXES_MM[1]
    for midline in (None, TEMPLATE_MIDLINE):
        stats = hemisphere_stats(image, midline)
        assert_two_hemisphere_answer(stats, ellipse_area, "mm2")
        assert stats.n_left == stats.n_right and stats.left == LEFT_COUNTS and stats.right == RIGHT_COUNTS
    assert hemisphere_stats(sitk.Cast(image, sitk.sitkUInt16)) == hemisphere_stats(image)


RADIUS_MM = 45.0
PLANE_OFFSET_MM = 15.0


def tilted_midline(dimension: int) -> MidlinePlane:
    """A plane PLANE_OFFSET_MM from CENTRE_MM with a tilted normal (in 2D the normal's z is ignored)."""
    normal = np.array([1.0, 0.5, 0.4 if dimension == 3 else 7.0])
    unit = normal[:dimension] / np.linalg.norm(normal[:dimension])
    point = CENTRE_MM.copy()
    point[:dimension] += PLANE_OFFSET_MM * unit
    return MidlinePlane(point=tuple(point), normal=tuple(normal))


def split_ball(dimension: int):
    """``values_at`` for a disc / ball of RADIUS_MM about CENTRE_MM whose halves follow tilted_midline(dimension)."""
    plane = tilted_midline(dimension)
    normal = np.array(plane.normal[:dimension]) / np.linalg.norm(plane.normal[:dimension])

    def values_at(points):
        inside = np.linalg.norm(points - CENTRE_MM[:dimension], axis=-1) <= RADIUS_MM
        on_left = (points - plane.point[:dimension]) @ normal > 0
        return np.where(inside, np.where(on_left, LEFT_COUNTS, RIGHT_COUNTS), 0.0)
    return values_at


@pytest.mark.parametrize("dimension, spacing_mm, source_spacing_mm", [(2, 2.0, 0.5), (3, 2.5, 1.0)])
def test_explicit_tilted_offset_midline_is_followed(dimension, spacing_mm, source_spacing_mm):
    source = image_from_function(split_ball(dimension), source_spacing_mm, dimension)
    oblique = (DIRECTIONS_2D if dimension == 2 else DIRECTIONS_3D)["oblique"]
    image = regrid(source, oblique, spacing_mm, cube(spacing_mm, dimension))
    stats = hemisphere_stats(image, tilted_midline(dimension))
    height = RADIUS_MM - PLANE_OFFSET_MM  # of the cap beyond the plane, on the patient's left
    if dimension == 2:
        whole = math.pi * RADIUS_MM ** 2
        cap = RADIUS_MM ** 2 * math.acos(PLANE_OFFSET_MM / RADIUS_MM) - PLANE_OFFSET_MM * math.sqrt(
            RADIUS_MM ** 2 - PLANE_OFFSET_MM ** 2)
    else:
        whole = 4.0 / 3.0 * math.pi * RADIUS_MM ** 3
        cap = math.pi * height ** 2 * (3 * RADIUS_MM - height) / 3.0
    assert (stats.left, stats.right) == (pytest.approx(LEFT_COUNTS, abs=0.6), pytest.approx(RIGHT_COUNTS, abs=0.6))
    assert stats.left_size == pytest.approx(cap, rel=0.03)
    assert stats.right_size == pytest.approx(whole - cap, rel=0.03)
    assert stats.brain_size == pytest.approx(whole, rel=0.03)
    assert stats.mc == pytest.approx((cap * LEFT_COUNTS + (whole - cap) * RIGHT_COUNTS) / whole, abs=0.6)
    assert hemisphere_stats(image).left > LEFT_COUNTS + 5.0  # the centroid plane would mix the halves


def test_masks_keep_the_grid_and_voxels_on_the_plane_go_to_neither_side():
    array = np.zeros((12, 11), np.float32)
    array[2:10, 2:9] = 50.0  # columns 2..8: column 5 is the middle
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 3.0))
    image.SetOrigin((-10.0, 4.0))
    image.SetDirection((-1.0, 0.0, 0.0, 1.0))
    middle = image.TransformIndexToPhysicalPoint((5, 0))
    brain, left, right = hemisphere_masks(image, MidlinePlane(point=(*middle, 0.0), normal=(1.0, 0.0, 0.0)))
    for mask in (brain, left, right):
        assert mask.GetPixelID() == sitk.sitkUInt8
        assert (mask.GetSize(), mask.GetOrigin(), mask.GetSpacing(), mask.GetDirection()) == (
            image.GetSize(), image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    brain, left, right = (sitk.GetArrayFromImage(mask).astype(bool) for mask in (brain, left, right))
    np.testing.assert_array_equal(brain, array > 0)
    np.testing.assert_array_equal(brain[:, 5] & (left[:, 5] | right[:, 5]), False)
    np.testing.assert_array_equal(left, brain & (np.arange(11) < 5))  # x decreases with the column: left is low
    np.testing.assert_array_equal(right, brain & (np.arange(11) > 5))


def test_brain_mask_fills_holes_and_keeps_the_largest_component():
    array = np.zeros((1, 40, 40), np.float32)  # a one-slice volume: holes are filled in its plane
    array[0, 5:35, 5:25] = 100.0
    array[0, 15:20, 10:15] = 5.0  # a cold hole inside the brain
    array[0, 30:33, 30:33] = 100.0  # a separate hot blob outside it
    mask = sitk.GetArrayFromImage(brain_mask(sitk.GetImageFromArray(array)))
    expected = np.zeros_like(mask)
    expected[0, 5:35, 5:25] = 1
    np.testing.assert_array_equal(mask, expected)


def test_stats_dict_is_plain_json():
    array = np.zeros((20, 20), np.float32)
    array[5:15, 3:17] = np.linspace(60.0, 100.0, 14)
    record = hemisphere_stats(sitk.GetImageFromArray(array)).to_dict()
    assert json.loads(json.dumps(record)) == record
    assert {type(value) for value in record.values()} <= {float, int, str}
    assert set(record) >= {"mc", "left", "right", "lr", "ai", "n_brain", "n_left", "n_right", "brain_size",
                           "left_size", "right_size", "size_unit", "threshold"}


def filled(size, value) -> sitk.Image:
    """A float32 image of ITK ``size`` (x, y, ...) holding ``value`` everywhere."""
    return sitk.GetImageFromArray(np.full(size[::-1], value, np.float32), isVector=False)


def with_value_at(image: sitk.Image, index, value) -> sitk.Image:
    image[index] = value
    return image


BAD_IMAGES = {
    "not an image": (lambda: np.ones((8, 8)), "expected a SimpleITK image, got ndarray"),
    "4D": (lambda: filled((8, 8, 8, 2), 1.0), "got a 4D image"),
    "1D": (lambda: filled((16, 1, 1), 1.0), r"line of voxels \(1D\)"),
    "vector": (lambda: sitk.Image([8, 8], sitk.sitkVectorFloat32, 3), "pixel type 'vector of 32-bit float'"),
    "complex": (lambda: sitk.Image([8, 8], sitk.sitkComplexFloat32), "pixel type 'complex of 32-bit float'"),
    "label map": (lambda: sitk.Image([8, 8], sitk.sitkLabelUInt8), "pixel type 'label of 8-bit"),
    "all zero": (lambda: filled((8, 8), 0.0), "no positive counts"),
    "negative": (lambda: filled((8, 8, 4), -3.0), "no positive counts"),
    "NaN": (lambda: with_value_at(filled((8, 8), 1.0), (2, 3), float("nan")), "1 NaN or infinite voxels"),
    "inf": (lambda: with_value_at(filled((8, 8, 3), 1.0), (2, 3, 1), float("inf")), "1 NaN or infinite voxels"),
}


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_bad_images_are_rejected_with_a_message(name):
    make, message = BAD_IMAGES[name]
    with pytest.raises(InvalidImageError, match=message):
        hemisphere_stats(make())


def test_brain_on_one_side_of_the_midline_is_rejected(ellipse_2d):
    beside = MidlinePlane(point=tuple(CENTRE_MM + [SEMI_AXES_MM[0] + 5.0, 0.0, 0.0]), normal=(1.0, 0.0, 0.0))
    with pytest.raises(InvalidImageError, match="only one side of the midline: the left hemisphere has no voxels"):
        hemisphere_stats(ellipse_2d, beside)


@pytest.mark.parametrize("fraction", [0.0, 1.5, float("nan")])
def test_bad_threshold_fraction_is_rejected(fraction):
    with pytest.raises(ValueError, match=r"threshold fraction must be in \(0, 1\]"):
        hemisphere_stats(filled((8, 8), 1.0), threshold_fraction=fraction)


@pytest.mark.parametrize("kwargs, message", [
    ({"point": (0.0, 0.0), "normal": (1.0, 0.0, 0.0)}, "point must be three finite numbers"),
    ({"point": None, "normal": (1.0, 0.0, 0.0)}, "point must be three finite numbers"),
    ({"point": (0.0, 0.0, 0.0), "normal": (1.0, float("nan"), 0.0)}, "normal must be three finite numbers"),
    ({"point": (0.0, 0.0, 0.0), "normal": (0.0, 0.0, 0.0)}, "must not be the zero vector"),
])
def test_bad_midline_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MidlinePlane(**kwargs)


def test_midline_across_a_2d_image_needs_an_in_plane_normal(ellipse_2d):
    with pytest.raises(ValueError, match="no component in the plane of this 2D image"):
        hemisphere_stats(ellipse_2d, MidlinePlane(point=tuple(CENTRE_MM), normal=(0.0, 0.0, 1.0)))


def test_read_image_names_the_file(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    with pytest.raises(InvalidImageError, match=r"cannot read .*notes\.txt as an image"):
        read_image(text)
    with pytest.raises(InvalidImageError, match=r"missing\.nii: no such file"):
        read_image(tmp_path / "missing.nii")
    with pytest.raises(InvalidImageError, match="is not a file"):
        read_image(tmp_path)


def test_stats_command_prints_a_table_and_json(tmp_path, ellipse_2d, capsys):
    path = tmp_path / "ellipse.nii.gz"
    sitk.WriteImage(ellipse_2d, str(path))
    assert cli.main(["stats", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == hemisphere_stats(read_image(path)).to_dict()
    assert cli.main(["stats", str(path), "--threshold", "0.5"]) == 0
    table = capsys.readouterr().out
    assert "LR 0.8000" in table and "AI -22.22 %" in table and "threshold 50.00 counts" in table


@pytest.mark.parametrize("name, make, message", [
    ("notes.txt", None, "as an image"),
    ("series.nii.gz", lambda: filled((6, 6, 6, 2), 1.0), "got a 4D image"),
    ("empty.nii.gz", lambda: filled((6, 6, 6), 0.0), "no positive counts"),
])
def test_stats_command_reports_bad_files_without_a_traceback(tmp_path, name, make, message):
    path = tmp_path / name
    if make is None:
        path.write_text("MC 42\n")
    else:
        sitk.WriteImage(make(), str(path))
    result = subprocess.run([sys.executable, "-m", "spectgan.cli", "stats", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "spectgan stats: error:" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_sizes_on_a_sheared_grid():
    """Pixel area is |a x b| of the physical step vectors, also when the direction matrix is not orthogonal."""
    array = np.zeros((20, 30), np.float32)
    array[4:16, 5:25] = 100.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 3.0))
    image.SetDirection((1.0, math.cos(math.radians(60.0)), 0.0, math.sin(math.radians(60.0))))
    stats = hemisphere_stats(image)
    assert stats.brain_size == pytest.approx(12 * 20 * 2.0 * 3.0 * math.sin(math.radians(60.0)))
