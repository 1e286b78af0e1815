"""123I-IMP brain perfusion phantom in MNI152 template space (LPS mm), with vascular-territory defects.

Early 123I-IMP uptake follows cerebral blood flow (CBF): grey matter about 4x white matter, cerebellum and deep grey
matter a little higher, healthy grey-matter CBF 42.5 +- 5.4 mL/100 g/min between subjects, a smooth regional
heterogeneity of a few percent, low extracerebral uptake. Vascular territories (ACA, MCA, PCA and the cerebellar
PICA) are drawn geometrically in template space (no territory atlas ships offline) with soft edges. A unilateral
defect reduces one hemisphere's territory by 15-50 %; bilateral defects reduce a territory on each side. A
supratentorial MCA lesion also lowers the contralateral cerebellum (crossed cerebellar diaschisis).
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from spectgan.conditions import Condition, Level, Pattern, Side, takes_side
from spectgan.geometry.template import mni_maps

GREY_MATTER_CBF = (42.5, 5.4)  # mL/100 g/min, mean and SD between healthy subjects
GREY_TO_WHITE = (4.0, 0.3)  # uptake ratio before blurring, mean and SD
CEREBELLUM_GAIN = 1.12  # cerebellar cortex relative to cerebral grey matter
DEEP_GREY_GAIN = 1.10  # striatum and thalamus relative to cortex
EXTRACEREBRAL_FRACTION = 0.04  # scalp uptake relative to grey-matter CBF
HETEROGENEITY_SD = 0.04  # smooth regional variation (fraction)
MU_SOFT_TISSUE_PER_CM = 0.14  # linear attenuation of the head at 159 keV
SEVERITY_RANGE = (0.15, 0.50)  # fractional CBF reduction in a defect's territory
DIASCHISIS_FRACTION = (0.2, 0.4)  # contralateral cerebellar reduction as a fraction of the lesion's severity
POSE_JITTER_DEG = 3.0
POSE_JITTER_MM = 3.0
SCALE_JITTER = 0.05
SCALP_MM = 12.0  # scalp and skull around the brain
TERRITORY_EDGE_MM = 5.0  # width of the soft territory borders

# Territories a unilateral defect can take at each level (those that the level's plane cuts).
TERRITORIES_AT_LEVEL: dict[Level, tuple[str, ...]] = {
    Level.CER: ("MCA", "PICA"),
    Level.BG: ("MCA", "ACA", "PCA"),
    Level.COR: ("MCA", "ACA"),
}


@dataclass(frozen=True)
class Defect:
    """A perfusion defect: a territory on one side, reduced by ``severity`` (fraction of CBF)."""

    territory: str
    side: Side
    severity: float


@dataclass(frozen=True)
class Subject:
    """One simulated patient: anatomy pose and scaling, perfusion levels, defects."""

    grey_cbf: float
    grey_to_white: float
    count_level: float  # relative dose x acquisition time, multiplies the expected counts
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    scale: tuple[float, float, float]
    heterogeneity_seed: int
    defects: tuple[Defect, ...] = field(default_factory=tuple)
    diaschisis: float = 0.0  # contralateral cerebellar reduction (fraction)

    @property
    def territory(self) -> str:
        return "+".join(sorted({defect.territory for defect in self.defects}))

    @property
    def severity(self) -> float | None:
        return max((defect.severity for defect in self.defects), default=None)

    def to_dict(self) -> dict:
        return asdict(self)


def random_subject(condition: Condition, rng: np.random.Generator) -> Subject:
    """Draw a patient for a condition: inter-subject variability plus the condition's defects."""
    defects: list[Defect] = []
    territories = TERRITORIES_AT_LEVEL[condition.level]
    if takes_side(condition.pattern):
        defects.append(Defect(str(rng.choice(territories)), condition.side, float(rng.uniform(*SEVERITY_RANGE))))
    elif condition.pattern is Pattern.BILATERAL:
        supratentorial = [t for t in territories if t != "PICA"]
        for side in Side:
            defects.append(Defect(str(rng.choice(supratentorial)), side, float(rng.uniform(*SEVERITY_RANGE))))
    diaschisis = 0.0
    if any(d.territory == "MCA" for d in defects) and takes_side(condition.pattern):
        diaschisis = float(rng.uniform(*DIASCHISIS_FRACTION) * defects[0].severity)
    return Subject(
        grey_cbf=float(max(rng.normal(*GREY_MATTER_CBF), 25.0)),
        grey_to_white=float(max(rng.normal(*GREY_TO_WHITE), 3.0)),
        count_level=float(rng.uniform(0.85, 1.15)),
        rotation_deg=tuple(float(v) for v in rng.uniform(-POSE_JITTER_DEG, POSE_JITTER_DEG, 3)),
        translation_mm=tuple(float(v) for v in rng.uniform(-POSE_JITTER_MM, POSE_JITTER_MM, 3)),
        scale=tuple(float(v) for v in rng.uniform(1 - SCALE_JITTER, 1 + SCALE_JITTER, 3)),
        heterogeneity_seed=int(rng.integers(2**31)),
        defects=tuple(defects),
        diaschisis=diaschisis,
    )


def subject_transform(subject: Subject) -> sitk.AffineTransform:
    """Maps a point of the subject's head (LPS mm, centred on the template origin) to the template."""
    rotation = sitk.Euler3DTransform((0.0, 0.0, 0.0), *np.deg2rad(subject.rotation_deg))
    matrix = np.asarray(rotation.GetMatrix()).reshape(3, 3) @ np.diag(subject.scale)
    return sitk.AffineTransform(tuple(matrix.ravel()), subject.translation_mm)


def _sigmoid(distance_mm: np.ndarray) -> np.ndarray:
    """Soft inside-indicator: 1 well inside (distance > 0), 0 well outside."""
    return 1.0 / (1.0 + np.exp(-distance_mm / (TERRITORY_EDGE_MM / 4.0)))


def _territory_weights(x: np.ndarray, y: np.ndarray, z: np.ndarray, side: Side) -> dict[str, np.ndarray]:
    """Soft territory maps (0..1) of one hemisphere at template points (LPS mm; left = +x, posterior = +y)."""
    lateral = x if side is Side.LEFT else -x  # > 0 in this hemisphere
    hemisphere = _sigmoid(lateral - 2.0)
    anterior = -y  # MNI y
    cerebellum = _sigmoid(-12.0 - z) * _sigmoid(-40.0 - anterior)
    cerebrum = 1.0 - cerebellum
    thalamus = _sigmoid(20.0 - np.abs(lateral - 11.0)) * _sigmoid(12.0 - np.abs(anterior + 18.0)) \
        * _sigmoid(10.0 - np.abs(z - 6.0))
    aca = _sigmoid(20.0 - lateral) * _sigmoid(anterior + 40.0 - 0.3 * np.maximum(z, 0.0)) * _sigmoid(z + 8.0)
    pca = np.maximum(_sigmoid(-58.0 - anterior) * _sigmoid(38.0 - z), thalamus)
    mca = np.clip(1.0 - aca - pca, 0.0, 1.0) * _sigmoid(lateral - 12.0)
    return {"ACA": aca * cerebrum * hemisphere, "PCA": pca * cerebrum * hemisphere,
            "MCA": mca * cerebrum * hemisphere, "PICA": cerebellum * hemisphere,
            "cerebellum": cerebellum * hemisphere}


def _reduction(defects: Sequence[Defect], diaschisis: float, weights: dict[Side, dict[str, np.ndarray]]
               ) -> np.ndarray:
    """Fractional CBF reduction (0..1) of the defects (the largest where territories overlap) and of the crossed
    cerebellar diaschisis of the first defect, from both hemispheres' territory maps (``_territory_weights``)."""
    reduction = np.zeros_like(weights[Side.LEFT]["cerebellum"])
    for defect in defects:
        reduction = np.maximum(reduction, defect.severity * weights[defect.side][defect.territory])
    if diaschisis > 0:
        lesion_side = defects[0].side
        contralateral = Side.RIGHT if lesion_side is Side.LEFT else Side.LEFT
        reduction = np.maximum(reduction, diaschisis * weights[contralateral]["cerebellum"])
    return reduction


def defect_reduction(defects: Sequence[Defect], diaschisis: float, points: np.ndarray) -> np.ndarray:
    """The fractional CBF reduction (0..1) that ``perfusion_phantom`` applies for these defects and this
    contralateral cerebellar diaschisis (a fraction), at template points ``points`` [3, ...] (LPS mm, as
    ``physical_points`` gives them); shaped like one coordinate of ``points``."""
    x, y, z = points
    return _reduction(defects, diaschisis, {side: _territory_weights(x, y, z, side) for side in Side})


def physical_points(grid: sitk.Image) -> np.ndarray:
    """LPS coordinates (mm) of every voxel of a grid, shape [3, z, y, x] like the grid's array."""
    size = grid.GetSize()
    index = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in size), indexing="ij"), axis=-1)
    direction = np.asarray(grid.GetDirection()).reshape(3, 3)
    points = index * np.asarray(grid.GetSpacing()) @ direction.T + np.asarray(grid.GetOrigin())
    return np.transpose(points, (3, 2, 1, 0))


def _smooth_field(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A smooth random field with mean 1 and SD HETEROGENEITY_SD, features of a few centimetres."""
    coarse = np.random.default_rng(seed).normal(0.0, 1.0, (4, 6, 6))
    zoom = [n / c for n, c in zip(shape, coarse.shape)]
    field_ = ndimage.zoom(coarse, zoom, order=3, mode="nearest")[tuple(slice(0, n) for n in shape)]
    return 1.0 + HETEROGENEITY_SD * (field_ - field_.mean()) / (field_.std() + 1e-9)


def transform_points(transform: sitk.Transform, points: np.ndarray) -> np.ndarray:
    """Apply a matrix-offset transform (affine, similarity, Euler) to points [3, ...] in mm, vectorised."""
    matrix = np.asarray(transform.GetMatrix()).reshape(3, 3)
    centre = np.asarray(transform.GetCenter())[:, None]
    flat = points.reshape(3, -1)
    moved = matrix @ (flat - centre) + centre + np.asarray(transform.GetTranslation())[:, None]
    return moved.reshape(points.shape)


def perfusion_phantom(subject: Subject, grid: sitk.Image, to_template: sitk.Transform | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Activity (CBF units, mL/100 g/min) and attenuation (1/cm) of a subject on a grid.

    ``grid`` is any 3D image whose voxels are points of the subject's head; ``to_template`` maps them to template
    points (default: the subject's own pose and scaling). Returns two float32 arrays shaped like
    ``sitk.GetArrayFromImage(grid)`` ([z, y, x]).
    """
    transform = to_template or subject_transform(subject)
    maps = dict(mni_maps(), head=head_mask())
    sampled = {name: sitk.GetArrayFromImage(sitk.Resample(maps[name], grid, transform, sitk.sitkLinear, 0.0,
                                                          sitk.sitkFloat32))
               for name in ("gm", "wm", "brain", "head")}
    x, y, z = transform_points(transform, physical_points(grid))

    grey, white = sampled["gm"], sampled["wm"]
    weights = {side: _territory_weights(x, y, z, side) for side in Side}
    cerebellum = weights[Side.LEFT]["cerebellum"] + weights[Side.RIGHT]["cerebellum"]
    deep_grey = _sigmoid(32.0 - np.abs(x)) * _sigmoid(28.0 - np.abs(y - 2.0)) * _sigmoid(14.0 - np.abs(z - 4.0))
    grey_gain = 1.0 + (CEREBELLUM_GAIN - 1.0) * cerebellum + (DEEP_GREY_GAIN - 1.0) * deep_grey
    activity = subject.grey_cbf * (grey * grey_gain + white / subject.grey_to_white)

    reduction = _reduction(subject.defects, subject.diaschisis, weights)
    activity *= (1.0 - reduction) * _smooth_field(activity.shape, subject.heterogeneity_seed)

    head = sampled["head"]
    activity += EXTRACEREBRAL_FRACTION * subject.grey_cbf * np.clip(head - sampled["brain"], 0.0, 1.0)
    mu = MU_SOFT_TISSUE_PER_CM * head
    return activity.astype(np.float32), mu.astype(np.float32)


@functools.lru_cache(maxsize=None)
def head_mask() -> sitk.Image:
    """The head in template space: the MNI152 brain mask grown by the scalp and skull (SCALP_MM), float 0/1."""
    brain = sitk.BinaryThreshold(mni_maps()["brain"], 0.5, 1e9, 1, 0)
    distance = sitk.SignedMaurerDistanceMap(brain, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    return sitk.Cast(distance < SCALP_MM, sitk.sitkFloat32)
