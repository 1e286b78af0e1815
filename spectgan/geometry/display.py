"""How a one-slice image is shown: radiologically (the patient's right on the screen's left, anterior up), as a
display choice only; the data are never changed. The overview pictures of the client and the spectgan page both
draw with these functions.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from spectgan.geometry.roi import MidlinePlane

# The patient direction an LPS axis points to, for orientation marks: (negative, positive) per axis x, y, z.
AXIS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))


def display_orientation(image: sitk.Image) -> tuple[bool, bool, bool]:
    """(transpose, flip rows, flip columns) that show a one-slice image radiologically: the patient's left to the
    right of the screen, anterior up."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    column_axis, row_axis = direction[:, 0], direction[:, 1]
    transpose = abs(row_axis[0]) > abs(column_axis[0])
    if transpose:
        column_axis, row_axis = row_axis, column_axis
    return transpose, row_axis[1] < 0, column_axis[0] < 0


def oriented(array: np.ndarray, orientation: tuple[bool, bool, bool]) -> np.ndarray:
    """A [rows, columns] array of the image as ``display_orientation`` shows it."""
    transpose, flip_rows, flip_columns = orientation
    array = array.T if transpose else array
    return array[::-1 if flip_rows else 1, ::-1 if flip_columns else 1]


def displayed_axes(image: sitk.Image, orientation: tuple[bool, bool, bool]) -> tuple[np.ndarray, np.ndarray]:
    """(screen right, screen down): the LPS unit vectors along which the shown columns and rows advance."""
    transpose, flip_rows, flip_columns = orientation
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    column_axis, row_axis = (direction[:, 1], direction[:, 0]) if transpose else (direction[:, 0], direction[:, 1])
    return -column_axis if flip_columns else column_axis, -row_axis if flip_rows else row_axis


def direction_letter(vector: np.ndarray) -> str:
    """The patient direction (R, L, A, P, I, S) a vector in LPS mostly points to."""
    axis = int(np.argmax(np.abs(vector)))
    return AXIS_LETTERS[axis][int(vector[axis] > 0)]


def midline_distance(image: sitk.Image, midline: MidlinePlane) -> np.ndarray:
    """Signed distance (mm) of each pixel centre of a one-slice image to the midline, [rows, columns]."""
    columns, rows = np.meshgrid(np.arange(image.GetSize()[0]), np.arange(image.GetSize()[1]))
    steps = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    points = np.asarray(image.GetOrigin()) + np.stack([columns, rows, np.zeros_like(rows)], -1) @ steps.T
    normal = np.asarray(midline.normal) / np.linalg.norm(midline.normal)
    return (points - np.asarray(midline.point)) @ normal
