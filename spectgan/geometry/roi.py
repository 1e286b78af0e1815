"""Hemisphere ROI statistics of brain perfusion images in counts: the one implementation used by the server, the
client, the evaluation and the DICOM SR.

The brain is a count threshold relative to a robust maximum; the hemispheres are split by the midsagittal plane in
PHYSICAL space (ITK/DICOM LPS, the patient's left is +x), so the side is right for any direction matrix (flipped,
LPS or RAS-like, oblique). Voxel positions come from each image's origin, spacing and direction; nothing is flipped.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Mapping, NamedTuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from spectgan.errors import InvalidImageError

DEFAULT_THRESHOLD_FRACTION = 0.3  # brain = counts >= this fraction of the robust maximum
ROBUST_MAX_PERCENTILE = 99.5  # percentile of the voxels above the background floor taken as the robust maximum
# Voxels at or below this fraction of the maximum are background for the robust maximum: a reconstruction's
# numerical dust (1e-15 counts) and the zeros of the same study stored as 16-bit integers (DICOM) then give the same
# robust maximum. Above it, 16-bit storage moves a value by at most 7.6e-6 of the maximum.
BACKGROUND_FLOOR_FRACTION = 1e-3
ON_PLANE_TOLERANCE_MM = 1e-6  # voxel centres this close to the midline belong to neither hemisphere

SCALAR_PIXEL_TYPES = frozenset({
    sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32, sitk.sitkInt32,
    sitk.sitkUInt64, sitk.sitkInt64, sitk.sitkFloat32, sitk.sitkFloat64,
})


@dataclass(frozen=True)
class MidlinePlane:
    """The midsagittal plane in physical LPS mm; ``normal`` points toward the patient's LEFT (need not be unit).

    For 2D images only the first two components of ``point`` and ``normal`` are used.
    """

    point: tuple[float, float, float]
    normal: tuple[float, float, float]

    def __post_init__(self):
        for name in ("point", "normal"):
            try:
                values = tuple(float(value) for value in getattr(self, name))
            except (TypeError, ValueError):
                values = ()
            if len(values) != 3 or not all(math.isfinite(value) for value in values):
                raise ValueError(f"midline {name} must be three finite numbers (x, y, z in LPS mm), "
                                 f"got {getattr(self, name)!r}")
            object.__setattr__(self, name, values)
        if not any(self.normal):
            raise ValueError("midline normal must not be the zero vector")


# The template's midsagittal plane (x = 0 in LPS): the midline of canonical slices and of template-space images.
TEMPLATE_MIDLINE = MidlinePlane(point=(0.0, 0.0, 0.0), normal=(1.0, 0.0, 0.0))


REGIONS = ("brain", "left", "right")  # the ROIs a statistic describes (left and right: the patient's hemispheres)
SIZE_UNIT = "size"  # the unit of a size statistic: the stats' own ``size_unit`` (mm2 or mm3)
# Coded concepts (code value, coding scheme, meaning) of the statistics in the DICOM SR. LR and AI have no standard
# code: they live in spectgan's private coding scheme, which the SR declares.
PRIVATE_SCHEME = "99SPECTGAN"
NM_ACTIVITY = ("110821", "DCM", "Nuclear Medicine Tomographic Activity")
MEAN = ("373098007", "SCT", "Mean")


@dataclass(frozen=True)
class Statistic:
    """How one hemisphere statistic is shown and recorded, declared once beside its field of ``HemisphereStats``:
    the server's answer, the client's tables, the spectgan page's cards and table and the DICOM SR all follow these
    declarations, so a new statistic is a field, its declaration and its formula in ``hemisphere_stats``.

    ``unit``: ``counts``, ``ratio``, ``percent``, ``voxels`` or ``SIZE_UNIT``; ``digits``: decimals shown;
    ``region``: the ROI it describes (``REGIONS``); ``summary``: shown on the page's cards and table; ``code`` (and
    ``derivation``): its concept in the SR (value, scheme, meaning). The SR records the statistics with a code and
    the sizes (their concept, area or volume, follows the unit); the others it leaves out.
    """

    key: str
    label: str
    unit: str
    digits: int
    region: str
    summary: bool = False
    code: tuple[str, str, str] | None = None
    derivation: tuple[str, str, str] | None = None

    def to_dict(self) -> dict:
        """The declaration as JSON (what the spectgan page reads)."""
        return asdict(self)


FIELD_TYPES = {"float": float, "int": int, "str": str}  # HemisphereStats' field types, as annotated


def _declared(label: str, unit: str, digits: int, region: str, **more) -> dict:
    """Field metadata declaring a statistic of ``HemisphereStats`` (its key is the field's name)."""
    return {"statistic": (label, unit, digits, region, more)}


@dataclass(frozen=True)
class HemisphereStats:
    """Hemisphere ROI statistics of one image.

    Means are in counts; ``lr`` = left / right; ``ai`` = 100 (L - R) / ((L + R) / 2) in %; ``n_*`` are voxel
    counts; ``*_size`` are areas in mm^2 (2D and one-slice 3D images) or volumes in mm^3, as ``size_unit`` says;
    ``threshold`` is the count threshold that defined the brain. Each statistic's declaration (``Statistic``) is its
    field's metadata; ``STATISTICS`` lists them.
    """

    mc: float = field(metadata=_declared("MC", "counts", 1, "brain", summary=True, code=NM_ACTIVITY,
                                         derivation=MEAN))
    left: float = field(metadata=_declared("Left", "counts", 1, "left", summary=True, code=NM_ACTIVITY,
                                           derivation=MEAN))
    right: float = field(metadata=_declared("Right", "counts", 1, "right", summary=True, code=NM_ACTIVITY,
                                            derivation=MEAN))
    lr: float = field(metadata=_declared("LR", "ratio", 3, "brain", summary=True, code=(
        "LR", PRIVATE_SCHEME, "Left to right hemisphere mean count ratio")))
    ai: float = field(metadata=_declared("AI", "percent", 2, "brain", summary=True, code=(
        "AI", PRIVATE_SCHEME, "Hemisphere asymmetry index")))
    n_brain: int = field(metadata=_declared("brain voxels", "voxels", 0, "brain"))
    n_left: int = field(metadata=_declared("left voxels", "voxels", 0, "left"))
    n_right: int = field(metadata=_declared("right voxels", "voxels", 0, "right"))
    brain_size: float = field(metadata=_declared("brain size", SIZE_UNIT, 1, "brain"))
    left_size: float = field(metadata=_declared("left size", SIZE_UNIT, 1, "left"))
    right_size: float = field(metadata=_declared("right size", SIZE_UNIT, 1, "right"))
    size_unit: str
    threshold: float = field(metadata=_declared("threshold", "counts", 2, "brain"))

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (floats, ints, one string)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> "HemisphereStats":
        """The statistics from ``to_dict``'s form; ValueError naming what is missing or not a number."""
        if not isinstance(values, Mapping):
            raise ValueError(f"statistics must be an object, got {values!r}")
        missing = [item.name for item in fields(cls) if item.name not in values]
        if missing:
            raise ValueError(f"statistics lack {', '.join(missing)}")
        try:
            return cls(**{item.name: FIELD_TYPES[item.type](values[item.name]) for item in fields(cls)})
        except (TypeError, ValueError) as error:
            raise ValueError(f"statistics hold a value that is not a number: {error}") from None


STATISTICS: tuple[Statistic, ...] = tuple(
    Statistic(item.name, *item.metadata["statistic"][:4], **item.metadata["statistic"][4])
    for item in fields(HemisphereStats) if "statistic" in item.metadata)


class HemisphereMasks(NamedTuple):
    """The brain and its hemispheres as UInt8 masks (1 inside) on the measured image's grid: the regions behind its
    ``HemisphereStats``."""

    brain: sitk.Image
    left: sitk.Image
    right: sitk.Image


class _Split(NamedTuple):
    """Pixel values of one image in numpy order (z, y, x) or (y, x), its boolean brain and hemisphere masks (same
    shape) and the count threshold of the brain."""

    values: np.ndarray
    brain: np.ndarray
    left: np.ndarray
    right: np.ndarray
    threshold: float


def read_image(path: str | Path) -> sitk.Image:
    """Read an image file (NIfTI, NRRD, MetaImage, DICOM, ...) with its geometry; InvalidImageError names the file."""
    path = Path(path)
    if not path.exists():
        raise InvalidImageError(f"{path}: no such file")
    if not path.is_file():
        raise InvalidImageError(f"{path} is not a file; give one image file (NIfTI, NRRD, MetaImage, DICOM)")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1].split("ERROR:", 1)[-1].strip()
        raise InvalidImageError(f"cannot read {path} as an image ({reason}); expected a NIfTI, NRRD, MetaImage "
                                "or DICOM file") from error


def brain_mask(image: sitk.Image, threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION) -> sitk.Image:
    """UInt8 brain mask on the image's grid: counts >= fraction x robust maximum, holes filled, largest component."""
    mask, _ = _brain_mask_array(_validated_values(image), threshold_fraction)
    return _mask_image(mask, image)


def hemisphere_masks(image: sitk.Image, midline: MidlinePlane | None = None,
                     threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION) -> HemisphereMasks:
    """(brain, left, right) UInt8 masks on the image's grid, split by ``midline`` in physical space.

    Without a midline the plane goes through the brain mask's physical centroid with normal +x (patient's left).
    Voxel centres on the plane belong to neither hemisphere.
    """
    return _masks(image, _split(image, midline, threshold_fraction))


def hemisphere_stats(image: sitk.Image, midline: MidlinePlane | None = None,
                     threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION) -> HemisphereStats:
    """Mean counts of the brain and of each hemisphere, LR, AI and sizes of a 2D or 3D image in counts."""
    return _stats(image, _split(image, midline, threshold_fraction))


def measure_hemispheres(image: sitk.Image, midline: MidlinePlane | None = None,
                        threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION
                        ) -> tuple[HemisphereStats, HemisphereMasks]:
    """``hemisphere_stats`` and the masks they measured (``hemisphere_masks``), from one split of the image."""
    split = _split(image, midline, threshold_fraction)
    return _stats(image, split), _masks(image, split)


def _masks(image: sitk.Image, split: "_Split") -> HemisphereMasks:
    return HemisphereMasks(*(_mask_image(mask, image) for mask in (split.brain, split.left, split.right)))


def _stats(image: sitk.Image, split: "_Split") -> HemisphereStats:
    """The statistics of one split of the image."""
    masks = (split.brain, split.left, split.right)
    mc, left, right = (float(split.values[mask].mean(dtype=np.float64)) for mask in masks)
    n_brain, n_left, n_right = (int(np.count_nonzero(mask)) for mask in masks)
    element_size, size_unit = _voxel_size(image)
    return HemisphereStats(
        mc=mc, left=left, right=right, lr=left / right, ai=100.0 * (left - right) / ((left + right) / 2.0),
        n_brain=n_brain, n_left=n_left, n_right=n_right, brain_size=n_brain * element_size,
        left_size=n_left * element_size, right_size=n_right * element_size, size_unit=size_unit,
        threshold=split.threshold)


def _validated_values(image) -> np.ndarray:
    """The pixel array (a read-only view, numpy order) of a finite scalar 2D/3D image; InvalidImageError otherwise."""
    if not isinstance(image, sitk.Image):
        raise InvalidImageError(f"expected a SimpleITK image, got {type(image).__name__}")
    dimension = image.GetDimension()
    if dimension not in (2, 3):
        raise InvalidImageError(f"expected a 2D or 3D image, got a {dimension}D image of size {image.GetSize()}")
    if sum(length > 1 for length in image.GetSize()) < 2:
        raise InvalidImageError(f"expected a 2D or 3D image, got a line of voxels (1D) of size {image.GetSize()}")
    if image.GetPixelID() not in SCALAR_PIXEL_TYPES:
        raise InvalidImageError(f"expected scalar counts (integer or float pixels), got pixel type "
                                f"'{image.GetPixelIDTypeAsString()}'")
    values = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise InvalidImageError(f"the image has {np.count_nonzero(~np.isfinite(values))} NaN or infinite voxels")
    return values


def _brain_mask_array(values: np.ndarray, threshold_fraction: float) -> tuple[np.ndarray, float]:
    """Boolean brain mask (shape of ``values``) and the count threshold that made it."""
    if not 0.0 < threshold_fraction <= 1.0:
        raise ValueError(f"threshold fraction must be in (0, 1] (a fraction of the robust maximum), "
                         f"got {threshold_fraction}")
    peak = float(values.max(initial=0))
    if peak <= 0:
        raise InvalidImageError("the image has no positive counts: no brain to measure")
    foreground = values[values > BACKGROUND_FLOOR_FRACTION * peak]
    threshold = threshold_fraction * float(np.percentile(foreground, ROBUST_MAX_PERCENTILE))
    # Topology on the image's own dimension: a one-slice volume is filled as a 2D slice (every voxel of a
    # one-slice 3D volume touches its z border, so a 3D hole filling would fill nothing). Face connectivity.
    above = np.squeeze(values >= threshold)
    # ... and on the bounding box of the voxels above threshold, one background voxel wider on each side (where the
    # image has one): outside that box all is background connected to the border, so holes and components are
    # the same as on the whole grid, at the cost of the box (a slice placed in a volume fills a few planes of it).
    box = tuple(slice(max(int(indices.min()) - 1, 0), int(indices.max()) + 2) for indices in np.nonzero(above))
    components, _ = ndimage.label(ndimage.binary_fill_holes(above[box]))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0  # background
    brain = np.zeros(above.shape, dtype=bool)
    brain[box] = components == sizes.argmax()
    return brain.reshape(values.shape), threshold


def _split(image: sitk.Image, midline: MidlinePlane | None, threshold_fraction: float) -> _Split:
    """Brain mask and its split by the midline plane (default: through the brain centroid, normal +x)."""
    values = _validated_values(image)
    brain, threshold = _brain_mask_array(values, threshold_fraction)
    if midline is None:
        centroid = tuple(_physical_centroid(image, brain))
        midline = MidlinePlane(point=centroid + (0.0,) * (3 - len(centroid)), normal=(1.0, 0.0, 0.0))
    distance = _signed_distance_mm(image, midline)
    left = brain & (distance > ON_PLANE_TOLERANCE_MM)
    right = brain & (distance < -ON_PLANE_TOLERANCE_MM)
    for side, hemisphere, other in (("left", left, right), ("right", right, left)):
        if not hemisphere.any():
            raise InvalidImageError(
                f"the brain lies on only one side of the midline: the {side} hemisphere has no voxels "
                f"({np.count_nonzero(other)} on the other side); midline point {np.round(midline.point, 2).tolist()} "
                f"mm, normal {np.round(midline.normal, 3).tolist()} (LPS, toward the patient's left)")
    return _Split(values, brain, left, right, threshold)


def _index_to_physical(image: sitk.Image) -> np.ndarray:
    """(D, D) matrix direction @ diag(spacing): physical mm per unit step of each ITK index axis (columns)."""
    dimension = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dimension, dimension)
    return direction * np.asarray(image.GetSpacing(), dtype=np.float64)


def _physical_centroid(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """Physical position (LPS mm, length D) of the centroid of a non-empty numpy-order mask."""
    mean_index = np.array([indices.mean() for indices in np.nonzero(mask)])[::-1]  # ITK order (x, y, z)
    return np.asarray(image.GetOrigin()) + _index_to_physical(image) @ mean_index


def _signed_distance_mm(image: sitk.Image, plane: MidlinePlane) -> np.ndarray:
    """Signed distance (mm) of every voxel centre to the plane, numpy-order array; > 0 on the normal's side.

    Distance is linear in the index, so it is a broadcast sum of one ramp per axis (no coordinate grids).
    """
    dimension = image.GetDimension()
    normal = np.asarray(plane.normal[:dimension])
    if not normal.any():
        raise ValueError(f"midline normal {plane.normal} has no component in the plane of this 2D image")
    normal = normal / np.linalg.norm(normal)
    step_mm = _index_to_physical(image).T @ normal  # distance change per index step, ITK axis order
    distance = np.asarray(np.dot(np.asarray(image.GetOrigin()) - plane.point[:dimension], normal))
    for axis, (length, step) in enumerate(zip(image.GetSize(), step_mm)):
        shape = [1] * dimension
        shape[dimension - 1 - axis] = length
        distance = distance + (step * np.arange(length)).reshape(shape)
    return distance


def _voxel_size(image: sitk.Image) -> tuple[float, str]:
    """Area (mm2) of a pixel of a 2D or one-slice image, else volume (mm3) of a voxel, and its unit.

    The measure spans the axes longer than one voxel: the product of their step lengths times sqrt(det(U^T U)) of
    their unit step vectors U (exactly 1 for orthogonal grids), right for oblique and non-orthogonal grids alike.
    """
    extended_axes = [axis for axis, length in enumerate(image.GetSize()) if length > 1]
    steps = _index_to_physical(image)[:, extended_axes]
    lengths = np.linalg.norm(steps, axis=0)
    units = steps / lengths
    size = float(np.prod(lengths) * np.sqrt(np.linalg.det(units.T @ units)))
    return size, ("mm2" if len(extended_axes) == 2 else "mm3")


def _mask_image(mask: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A numpy-order boolean mask as a UInt8 image with the reference's origin, spacing and direction."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(reference)
    return image


def format_stats_table(stats: HemisphereStats) -> str:
    """A small text table of the statistics (means in counts, sizes in the stats' unit)."""
    rows = [("brain (MC)", stats.mc, stats.n_brain, stats.brain_size),
            ("left", stats.left, stats.n_left, stats.left_size),
            ("right", stats.right, stats.n_right, stats.right_size)]
    lines = [f"{'':<11}{'mean counts':>13}{'voxels':>10}{'size (' + stats.size_unit + ')':>14}"]
    lines += [f"{name:<11}{mean:>13.2f}{count:>10d}{size:>14.1f}" for name, mean, count, size in rows]
    lines.append(f"LR {stats.lr:.4f}   AI {stats.ai:+.2f} %   threshold {stats.threshold:.2f} counts")
    return "\n".join(lines)


def add_stats_command(subparsers) -> None:
    """``spectgan stats IMAGE [--json] [--threshold F]``: hemisphere statistics of an image file."""
    parser = subparsers.add_parser("stats", help="hemisphere ROI statistics of an image in counts",
                                   description="Brain and hemisphere mean counts, LR, AI and sizes, split by the "
                                               "midsagittal plane in physical (LPS) space.")
    parser.add_argument("image", metavar="IMAGE", help="2D or 3D image file in counts (NIfTI, NRRD, MHA, DICOM)")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_FRACTION, metavar="F",
                        help="brain threshold as a fraction of the robust maximum (default %(default)s)")
    parser.set_defaults(func=_run_stats)


def _run_stats(args: argparse.Namespace) -> int:
    stats = hemisphere_stats(read_image(args.image), threshold_fraction=args.threshold)
    print(json.dumps(stats.to_dict(), indent=2) if args.json else format_stats_table(stats))
    return 0
