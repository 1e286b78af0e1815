"""spectgan.geometry.registration on real images: studies made from the perfusion template in known poses, stored with
identity, flipped, RAS-like and oblique direction matrices, with a defect in the patient's LEFT hemisphere."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from spectgan.geometry import registration as geometry
from spectgan.conditions import LEVEL_Z_MM, Level
from spectgan.errors import InvalidImageError
from spectgan.geometry.template import SLAB_THICKNESS_MM, SLICE_CENTRE_MM, canonical_image

STUDIES_DIR = Path(__file__).resolve().parents[1] / "sample_data" / "studies"
DEFECT_CENTRE_MM = (45.0, 5.0, 20.0)  # template LPS: +x is the patient's left
DEFECT_RADIUS_MM = 25.0
DEFECT_REDUCTION = 0.5
STUDY_FIELD_OF_VIEW_MM = 256.0
STUDY_PEAK_COUNTS = 200.0
POINT_TOLERANCE_MM = 2.0
ANGLE_TOLERANCE_DEG = 2.0
SLICE_DISC_RADIUS_MM = 70.0  # test slices carry counts inside this template radius around the slice centre


def _axis_rotation(axis: int, degrees: float) -> np.ndarray:
    """(3, 3) rotation about x (0), y (1) or z (2)."""
    angles = [0.0, 0.0, 0.0]
    angles[axis] = math.radians(degrees)
    return np.asarray(sitk.Euler3DTransform((0.0, 0.0, 0.0), *angles).GetMatrix()).reshape(3, 3)


@dataclass(frozen=True)
class StudyCase:
    """A test study: how its voxels are stored (direction, spacing, pixel type) and its true pose."""

    direction: np.ndarray
    spacing_mm: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    scale: float
    pixel_type: int = sitk.sitkFloat32

    @property
    def pose(self) -> sitk.Similarity3DTransform:
        return geometry.similarity_pose(self.rotation_deg, self.translation_mm, self.scale)


CASES = {
    "identity": StudyCase(np.eye(3), (3.0, 3.0, 3.0), (12.0, 0.0, 0.0), (10.0, -5.0, 8.0), 1.03),
    "x_flipped": StudyCase(np.diag([-1.0, 1.0, 1.0]), (2.5, 2.5, 2.5), (0.0, -15.0, 0.0), (-20.0, 12.0, 5.0), 0.96),
    "ras_like_uint16": StudyCase(np.diag([-1.0, -1.0, 1.0]), (4.0, 4.0, 4.0), (0.0, 0.0, 20.0), (25.0, 15.0, -10.0),
                                 1.05, sitk.sitkUInt16),
    # oblique storage with a negative determinant (a y flip) and anisotropic voxels
    "oblique": StudyCase(_axis_rotation(0, 30.0) @ _axis_rotation(2, -25.0) @ np.diag([1.0, -1.0, 1.0]),
                         (3.0, 3.0, 4.0), (8.0, -10.0, 14.0), (-8.0, -30.0, 12.0), 0.95),
}


def _voxel_centres(image: sitk.Image) -> np.ndarray:
    """(N, 3) LPS mm of every voxel centre, in the order of ``sitk.GetArrayFromImage(image).ravel()``."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.GetSize()[::-1]], indexing="ij"), axis=-1)
    indices = grid.reshape(-1, 3)[:, ::-1].astype(float)  # (x, y, z) indices
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    return np.asarray(image.GetOrigin()) + indices @ matrix.T


def _map(transform: sitk.Transform, points: np.ndarray) -> np.ndarray:
    return np.asarray([transform.TransformPoint(tuple(float(v) for v in point)) for point in points])


def _with_array(array: np.ndarray, geometry_source: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(geometry_source)
    return image


def _rotation_error_deg(estimated: np.ndarray, true: np.ndarray) -> float:
    return math.degrees(math.acos(np.clip((np.trace(estimated @ true.T) - 1.0) / 2.0, -1.0, 1.0)))


@pytest.fixture(scope="module")
def brain_points() -> np.ndarray:
    """(N, 3) template points of the brain (template above a quarter of its maximum), every 5th voxel (10 mm)."""
    template = geometry.perfusion_template()
    values = sitk.GetArrayFromImage(template)
    points = _voxel_centres(template).reshape(values.shape + (3,))[::5, ::5, ::5]
    return points[values[::5, ::5, ::5] > 0.25 * values.max()]


@pytest.fixture(scope="module")
def left_defect_content() -> sitk.Image:
    """The perfusion template with a soft-edged spherical defect in the patient's left hemisphere."""
    template = geometry.perfusion_template()
    distance = np.linalg.norm(_voxel_centres(template) - np.asarray(DEFECT_CENTRE_MM), axis=1)
    kept = 1.0 - DEFECT_REDUCTION / (1.0 + np.exp((distance - DEFECT_RADIUS_MM) / 3.0))
    values = sitk.GetArrayFromImage(template) * kept.reshape(sitk.GetArrayViewFromImage(template).shape)
    return _with_array(values.astype(np.float32), template)


def _study_grid(case: StudyCase) -> sitk.Image:
    """A field-of-view cube stored as the case says, centred on the posed brain."""
    spacing = np.asarray(case.spacing_mm)
    size = np.ceil(STUDY_FIELD_OF_VIEW_MM / spacing).astype(int)
    centre = np.asarray(case.pose.TransformPoint(geometry.BRAIN_CENTRE_MM))
    grid = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    grid.SetSpacing(tuple(spacing))
    grid.SetDirection(tuple(case.direction.ravel()))
    grid.SetOrigin(tuple(centre - case.direction @ ((size - 1) / 2.0 * spacing)))
    return grid


def _make_study(content: sitk.Image, case: StudyCase, seed: int) -> sitk.Image:
    """Posed content, a little extra blur (2 mm sigma), Poisson counts (peak about ``STUDY_PEAK_COUNTS``)."""
    posed = sitk.SmoothingRecursiveGaussian(geometry.apply_pose(content, case.pose, _study_grid(case)), 2.0)
    expected = np.clip(sitk.GetArrayFromImage(posed), 0.0, None)
    counts = np.random.default_rng(seed).poisson(expected / expected.max() * STUDY_PEAK_COUNTS)
    return sitk.Cast(_with_array(counts.astype(np.float32), posed), case.pixel_type)


@pytest.fixture(scope="module")
def registered(left_defect_content) -> dict[str, tuple[sitk.Image, geometry.Registration]]:
    """Each case's study and its registration (made once for the module); prints seconds per registration."""
    results = {}
    for seed, (name, case) in enumerate(CASES.items()):
        study = _make_study(left_defect_content, case, seed)
        start = time.perf_counter()
        results[name] = (study, geometry.register_to_template(study))
        print(f"registration {name}: {time.perf_counter() - start:.1f} s")
    return results


# ------------------------------------------------------------------------------------------------------ template

def test_perfusion_template_is_a_blurred_lps_uptake_map():
    template = geometry.perfusion_template()
    assert template.GetPixelID() == sitk.sitkFloat32
    assert template.GetSpacing() == (2.0, 2.0, 2.0)
    assert template.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    lows = np.asarray(template.GetOrigin())
    highs = np.asarray(template.TransformIndexToPhysicalPoint([n - 1 for n in template.GetSize()]))
    assert np.all(lows <= (-70.0, -70.0, -70.0)) and np.all(highs >= (70.0, 105.0, 80.0)), "brain cut off"
    assert np.all(highs - lows < 220.0), "grid not cropped to the head"

    def value(point):
        return template.EvaluateAtPhysicalPoint(point, sitk.sitkLinear)
    cortex, white_matter, outside = value((0.0, 60.0, 30.0)), value((25.0, 0.0, 25.0)), value((70.0, -80.0, 90.0))
    assert cortex > 1.5 * white_matter > 1.5 * outside
    assert value((40.0, 18.0, 10.0)) == pytest.approx(value((-40.0, 18.0, 10.0)), rel=0.2)  # both hemispheres
    template.SetOrigin((0.0, 0.0, 0.0))
    assert geometry.perfusion_template().GetOrigin() != (0.0, 0.0, 0.0), "the cached template was changed"


def test_apply_pose_puts_template_points_where_the_pose_maps_them():
    template = geometry.perfusion_template()
    case = CASES["oblique"]
    study = geometry.apply_pose(template, case.pose, _study_grid(case))
    assert (study.GetSize(), study.GetDirection()) == (_study_grid(case).GetSize(), _study_grid(case).GetDirection())
    for point in [(30.0, 40.0, 20.0), (-50.0, 0.0, 0.0), (0.0, 60.0, 50.0)]:
        expected = template.EvaluateAtPhysicalPoint(point, sitk.sitkLinear)
        found = study.EvaluateAtPhysicalPoint(case.pose.TransformPoint(point), sitk.sitkLinear)
        assert found == pytest.approx(expected, rel=0.05)


# -------------------------------------------------------------------------------------------------- registration

@pytest.mark.parametrize("name", CASES)
def test_registration_recovers_the_true_pose(registered, brain_points, name):
    case = CASES[name]
    study, registration = registered[name]
    errors = np.linalg.norm(_map(registration.transform, brain_points) - _map(case.pose, brain_points), axis=1)
    print(f"{name}: max error {errors.max():.2f} mm over {len(brain_points)} brain points, "
          f"correlation {registration.correlation:.3f}, metric {registration.metric:.3f}")
    assert errors.max() < POINT_TOLERANCE_MM
    true_rotation = geometry.similarity_pose(case.rotation_deg).GetMatrix()
    assert _rotation_error_deg(registration.rotation_matrix(),
                               np.asarray(true_rotation).reshape(3, 3)) < ANGLE_TOLERANCE_DEG
    assert registration.scale() == pytest.approx(case.scale, abs=0.02)
    true_shift = np.asarray(case.pose.TransformPoint(geometry.BRAIN_CENTRE_MM)) - geometry.BRAIN_CENTRE_MM
    assert np.linalg.norm(registration.translation_mm() - true_shift) < POINT_TOLERANCE_MM
    assert registration.ok
    assert registration.require_ok() is registration


@pytest.mark.parametrize("name", CASES)
def test_midline_normal_points_to_the_patients_left(registered, name):
    case = CASES[name]
    study, registration = registered[name]
    midline = registration.midline()
    true_normal = np.asarray(case.pose.TransformVector((1.0, 0.0, 0.0), (0.0, 0.0, 0.0)))
    assert np.linalg.norm(midline.normal) == pytest.approx(1.0)
    assert math.degrees(math.acos(np.dot(midline.normal, true_normal) / np.linalg.norm(true_normal))) \
        < ANGLE_TOLERANCE_DEG

    def voxel(template_point):
        index = study.TransformPhysicalPointToIndex(case.pose.TransformPoint(template_point))
        return np.asarray(study.TransformIndexToPhysicalPoint(index)), study[index]
    defect_point, defect_counts = voxel(DEFECT_CENTRE_MM)
    mirror_point, mirror_counts = voxel((-DEFECT_CENTRE_MM[0],) + DEFECT_CENTRE_MM[1:])
    assert defect_counts < mirror_counts, "the test study lost its left-hemisphere defect"
    assert np.dot(defect_point - midline.point, midline.normal) > 0.0
    assert np.dot(mirror_point - midline.point, midline.normal) < 0.0


def test_level_plane_is_the_template_level_in_the_study(registered):
    case = CASES["oblique"]
    _, registration = registered["oblique"]
    for level in Level:
        point, normal = geometry.level_plane(registration, level)
        true_point = case.pose.TransformPoint((SLICE_CENTRE_MM[0], SLICE_CENTRE_MM[1], LEVEL_Z_MM[level]))
        assert np.linalg.norm(point - true_point) < POINT_TOLERANCE_MM
        true_normal = np.asarray(case.pose.TransformVector((0.0, 0.0, 1.0), (0.0, 0.0, 0.0)))
        assert np.dot(normal, true_normal / np.linalg.norm(true_normal)) > math.cos(math.radians(ANGLE_TOLERANCE_DEG))


def test_a_misregistration_fails_the_quality_threshold(registered):
    case = CASES["identity"]
    study, registration = registered["identity"]
    assert geometry.template_correlation(study, case.pose) >= geometry.MIN_TEMPLATE_CORRELATION
    for error in [geometry.similarity_pose((25.0, 0.0, 0.0)), geometry.similarity_pose(translation_mm=(15, 0, 0))]:
        misregistered = sitk.CompositeTransform([case.pose, error])
        wrong = geometry.Registration(misregistered, registration.metric,
                                      geometry.template_correlation(study, misregistered))
        assert not wrong.ok
        with pytest.raises(InvalidImageError, match="correlation"):
            wrong.require_ok()


def test_a_study_that_is_not_a_brain_fails_the_quality_threshold():
    grid = sitk.Image(48, 48, 40, sitk.sitkFloat32)
    grid.SetSpacing((4.0, 4.0, 4.0))
    grid.SetOrigin((-94.0, -76.0, -70.0))
    z, y, x = np.mgrid[:40, :48, :48]
    ellipsoid = 100.0 * ((((x - 24) / 18) ** 2 + ((y - 24) / 22) ** 2 + ((z - 20) / 16) ** 2) < 1)
    counts = np.random.default_rng(0).poisson(ellipsoid).astype(np.float32)
    registration = geometry.register_to_template(sitk.SmoothingRecursiveGaussian(_with_array(counts, grid), 5.0))
    assert not registration.ok


def test_registration_round_trips_through_json(registered, brain_points):
    _, registration = registered["oblique"]
    restored = geometry.Registration.from_dict(json.loads(json.dumps(registration.to_dict())))
    assert np.allclose(_map(restored.transform, brain_points), _map(registration.transform, brain_points),
                       atol=1e-9)
    assert (restored.metric, restored.correlation, restored.ok) == \
        (registration.metric, registration.correlation, registration.ok)


def test_pose_dict_describes_the_pose_and_reads_back_from_a_sidecar(tmp_path, brain_points):
    case = CASES["oblique"]
    entry = geometry.pose_to_dict(case.pose)
    assert np.allclose(entry["rotation_deg"], case.rotation_deg)
    assert np.allclose(entry["translation_mm"], case.translation_mm)
    assert entry["scale"] == pytest.approx(case.scale)
    sidecar = tmp_path / "study.json"
    sidecar.write_text(json.dumps({"id": "study", "pattern": "unilateral", "side": "left",
                                   "template_to_study": entry}))
    assert np.allclose(_map(geometry.pose_from_sidecar(sidecar), brain_points), _map(case.pose, brain_points))
    with pytest.raises(ValueError, match="Similarity3DTransform"):
        geometry.pose_from_dict(dict(entry, type="AffineTransform"))


@pytest.mark.parametrize("bad, problem", [
    (sitk.Image(32, 32, sitk.sitkFloat32) + 1.0, "3D"),
    (sitk.Image(32, 32, 1, sitk.sitkFloat32) + 1.0, "3D"),
    (sitk.Image(32, 32, 32, sitk.sitkFloat32), "empty"),
    (sitk.Image([32, 32, 32], sitk.sitkVectorFloat32, 3), "one real number"),
    (sitk.Image(32, 32, 32, sitk.sitkFloat32) / 0.0, "finite"),
    (np.ones((32, 32, 32), np.float32), "SimpleITK image"),
], ids=["2d", "one_slice", "empty", "vector", "nan", "numpy"])
def test_unusable_studies_are_refused_with_a_reason(bad, problem):
    with pytest.raises(InvalidImageError, match=problem):
        geometry.register_to_template(bad)


# ---------------------------------------------------------------------------------------------------- placement

def _canonical_ramp(level: Level = Level.BG) -> sitk.Image:
    """A 64 x 64 canonical slice whose counts are 100 + template x (mm) inside ``SLICE_DISC_RADIUS_MM``, else 0."""
    empty = canonical_image(np.zeros((64, 64), np.float32), level)
    centres = _voxel_centres(empty)
    in_disc = np.linalg.norm(centres[:, :2] - SLICE_CENTRE_MM, axis=1) < SLICE_DISC_RADIUS_MM
    return canonical_image(np.where(in_disc, 100.0 + centres[:, 0], 0.0).reshape(64, 64), level)


@pytest.mark.parametrize("name", CASES)
def test_slice_output_keeps_pixels_and_puts_them_on_the_true_points(registered, name):
    case = CASES[name]
    _, registration = registered[name]
    canonical = canonical_image(np.random.default_rng(3).gamma(2.0, 50.0, (64, 64)), Level.CER)
    placed = geometry.place_slice(canonical, registration, "slice")
    assert np.array_equal(sitk.GetArrayViewFromImage(placed), sitk.GetArrayViewFromImage(canonical))
    assert placed.GetPixelID() == canonical.GetPixelID() and placed.GetSize() == (64, 64, 1)
    errors = np.linalg.norm(_voxel_centres(placed) - _map(case.pose, _voxel_centres(canonical)), axis=1)
    assert errors.max() < POINT_TOLERANCE_MM, f"pixel centres off by up to {errors.max():.2f} mm"
    assert canonical.GetOrigin()[2] == LEVEL_Z_MM[Level.CER], "the canonical slice was changed"


@pytest.mark.parametrize("name", CASES)
def test_reference_output_is_a_slab_on_the_true_plane(registered, name):
    case = CASES[name]
    study, registration = registered[name]
    resampled = geometry.place_slice(_canonical_ramp(), registration, "reference", reference=study)
    assert resampled.GetPixelID() == sitk.sitkFloat32
    assert (resampled.GetSize(), resampled.GetOrigin(), resampled.GetSpacing(), resampled.GetDirection()) == \
        (study.GetSize(), study.GetOrigin(), study.GetSpacing(), study.GetDirection())

    values = sitk.GetArrayFromImage(resampled).ravel()
    nonzero = values != 0.0
    in_template = _map(case.pose.GetInverse(), _voxel_centres(study)[nonzero])
    depth = np.abs(in_template[:, 2] - LEVEL_Z_MM[Level.BG]) * case.scale  # mm from the true plane, in the study
    assert depth.max() <= case.scale * SLAB_THICKNESS_MM / 2.0 + max(case.spacing_mm)

    inside = np.linalg.norm(in_template[:, :2] - SLICE_CENTRE_MM, axis=1) < SLICE_DISC_RADIUS_MM - 10.0
    assert inside.sum() > 100, "the slice's disc is not where the true pose puts it"
    value_errors = np.abs(values[nonzero][inside] - (100.0 + in_template[inside, 0]))  # 1 count = 1 mm along x
    assert value_errors.max() < POINT_TOLERANCE_MM, "slice content misplaced (or mirrored) in the reference"

    normal = np.asarray(case.pose.TransformVector((0.0, 0.0, 1.0), (0.0, 0.0, 0.0))) / case.scale
    voxel_edges = case.direction * np.asarray(case.spacing_mm)
    slab_mm = max(case.scale * SLAB_THICKNESS_MM, float(np.abs(normal @ voxel_edges).sum()))
    expected_voxels = math.pi * (case.scale * SLICE_DISC_RADIUS_MM) ** 2 * slab_mm / np.prod(case.spacing_mm)
    assert nonzero.sum() == pytest.approx(expected_voxels, rel=0.15), "slab has holes or is too thick"


def test_place_slice_refuses_bad_requests(registered):
    _, registration = registered["identity"]
    canonical = _canonical_ramp()
    with pytest.raises(ValueError, match="slice, reference"):
        geometry.place_slice(canonical, registration, "template")
    with pytest.raises(ValueError, match="reference"):
        geometry.place_slice(canonical, registration, "reference")
    with pytest.raises(InvalidImageError, match="one-slice"):
        geometry.place_slice(geometry.perfusion_template(), registration)


# ------------------------------------------------------------------------------------------------ sample studies

SIDECARS = sorted(STUDIES_DIR.glob("*.json"))


@pytest.mark.parametrize("sidecar", SIDECARS or [pytest.param(None, marks=pytest.mark.skip(
    reason=f"no sample studies in {STUDIES_DIR} yet (written by `spectgan studies`)"))],
    ids=[path.stem for path in SIDECARS] or ["none"])
def test_sample_studies_register_to_their_recorded_pose(sidecar, brain_points):
    study = sitk.ReadImage(str(sidecar.parent / f"{json.loads(sidecar.read_text())['id']}.nii.gz"))
    true_pose = geometry.pose_from_sidecar(sidecar)
    registration = geometry.register_to_template(study)
    errors = np.linalg.norm(_map(registration.transform, brain_points) - _map(true_pose, brain_points), axis=1)
    print(f"{sidecar.stem}: max error {errors.max():.2f} mm, correlation {registration.correlation:.3f}")
    assert registration.ok
    assert errors.max() < POINT_TOLERANCE_MM
