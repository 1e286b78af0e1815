"""DICOM encoding of a synthetic scan: NM + SEG + SR, geometry and values round trip, synthetic markers, dciodvfy."""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, replace

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from matplotlib.path import Path
from pydicom.sr.codedict import codes

from spectgan.export.dicom import (DEFECT_SEVERITY, DEFECT_TERRITORY, SYNTHETIC_DATA_TAG, DicomError, SyntheticRun,
                                   SyntheticStudy, counts_slope, encode_scan, reference_label,
                                   outline, quantize_counts, read_scan, real_world_counts,
                                   write_series)
from spectgan.conditions import Condition, Lesion, Side, parse_condition
from spectgan.counterfactual import METHODS
from spectgan.errors import InvalidImageError
from spectgan.geometry.roi import TEMPLATE_MIDLINE, HemisphereMasks, HemisphereStats
from spectgan.lesions import condition_from_dict
from spectgan.results import Derivation, GenerationResult, ModelVersion
from spectgan.simulation.protocol import protocol_for

# dciodvfy 2022-06 predates the Synthetic Data attribute (0008,001C) that every object must carry, so it reports
# that one standard attribute as unknown; every other error fails the test.
UNKNOWN_TO_VALIDATOR = "not a recognized standard attribute - (0x0008,0x001c)"
REFERENCE = "Doe_Jane-0123456789ab"  # a datastore id made from a file name, which may be a real name
CONDITION = parse_condition("BG", "unilateral", "left")
MODEL = ModelVersion("spect_fastgan_A", "1.0.0", "0123456789abcdef" * 4)
SEED = 42


@dataclass
class Scan:
    """A test scan: image in counts, brain and hemisphere masks split at x = 0 (LPS), its statistics, the condition
    and model it stands for."""

    image: sitk.Image
    brain: np.ndarray
    left: np.ndarray
    right: np.ndarray
    stats: HemisphereStats | None
    condition: Condition = CONDITION
    model: ModelVersion = MODEL

    def result(self, image: sitk.Image | None = None) -> GenerationResult:
        """The scan as a generation result (its masks and statistics as computed here, not by spectgan's ROI code)."""
        masks = HemisphereMasks(*(sitk.GetImageFromArray(mask[None].astype(np.uint8))
                                  for mask in (self.brain, self.left, self.right)))
        return GenerationResult(image=self.image if image is None else image, condition=self.condition, seed=SEED, model=self.model,
                                reference=REFERENCE, midline=TEMPLATE_MIDLINE, stats=self.stats,
                                masks=masks if self.stats is not None else None)


def make_oblique_scan(rng_seed: int = 0, direction: tuple | None = None) -> Scan:
    """A 48 x 64 one-slice oblique volume: an elliptic brain centred on the x = 0 plane, left 120 / right 90
    counts plus noise; masks and statistics computed in physical space."""
    image = sitk.Image(48, 64, 1, sitk.sitkFloat32)
    image.SetSpacing((3.5, 3.2, 4.0))
    image.SetDirection(direction or sitk.VersorTransform((0.3, 0.2, 1.0), 0.4).GetMatrix())
    centre_index = np.array([23.5, 31.5, 0.0])
    steps = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    image.SetOrigin(tuple(np.array([0.0, 18.0, 10.0]) - steps @ centre_index))
    rows, columns = np.mgrid[0:64, 0:48]
    x_mm = (np.asarray(image.GetOrigin()) + np.stack([columns, rows, 0 * rows], -1) @ steps.T)[..., 0]
    brain = ((columns - 23.5) / 20) ** 2 + ((rows - 31.5) / 28) ** 2 < 1
    left, right = brain & (x_mm > 0), brain & (x_mm < 0)
    noise = np.random.default_rng(rng_seed).normal(0.0, 3.0, brain.shape)
    counts = np.where(left, 120.0, 0.0) + np.where(right, 90.0, 0.0) + noise * brain
    image = _with_pixels(image, counts)
    mean_left, mean_right = counts[left].mean(), counts[right].mean()
    pixel_area = 3.5 * 3.2
    stats = HemisphereStats(
        mc=counts[brain].mean(), left=mean_left, right=mean_right, lr=mean_left / mean_right,
        ai=100 * (mean_left - mean_right) / ((mean_left + mean_right) / 2), n_brain=int(brain.sum()),
        n_left=int(left.sum()), n_right=int(right.sum()), brain_size=brain.sum() * pixel_area,
        left_size=left.sum() * pixel_area, right_size=right.sum() * pixel_area, size_unit="mm2", threshold=36.0)
    return Scan(image, brain, left, right, stats)


def _with_pixels(reference: sitk.Image, array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array[None].astype(np.float32))
    image.CopyInformation(reference)
    return image


def encode(scan: Scan, study: SyntheticStudy | None = None, **options) -> list[pydicom.Dataset]:
    return encode_scan(scan.result(), study or SyntheticStudy(REFERENCE), **options)


def assert_same_scan(image: sitk.Image, stats: dict, scan: Scan, slope: float) -> None:
    """Geometry and pixel positions as encoded, values within quantization, statistics exact."""
    assert image.GetSize() == scan.image.GetSize()
    np.testing.assert_allclose(image.GetOrigin(), scan.image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(image.GetSpacing(), scan.image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), scan.image.GetDirection(), atol=1e-6)
    difference = np.abs(sitk.GetArrayFromImage(image) - sitk.GetArrayFromImage(scan.image))
    assert difference.max() <= slope / 2 + 1e-5
    assert stats == {key: scan.stats.to_dict()[key] for key in stats}
    assert set(stats) == {"mc", "left", "right", "lr", "ai", "brain_size", "left_size", "right_size", "size_unit"}


def dciodvfy_findings(path) -> list[str]:
    """dciodvfy's Error and Warning lines for a file."""
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(("Error", "Warning"))]


def dciodvfy_errors(path) -> list[str]:
    return [line for line in dciodvfy_findings(path) if line.startswith("Error") and UNKNOWN_TO_VALIDATOR not in line]


def test_round_trip_keeps_oblique_geometry_values_and_stats(tmp_path):
    scan = make_oblique_scan()
    nm, seg, sr = encode(scan)
    assert [nm.Modality, seg.Modality, sr.Modality] == ["NM", "SEG", "SR"]
    write_series([nm, seg, sr], tmp_path)
    image, stats = read_scan(tmp_path)
    assert image.GetPixelID() == sitk.sitkFloat32
    assert_same_scan(image, stats, scan, counts_slope(nm))
    assert read_scan(sorted(tmp_path.glob("*.dcm")))[1] == stats


def test_left_handed_direction_keeps_every_pixel_position(tmp_path):
    flipped_rows = sitk.VersorTransform((0.3, 0.2, 1.0), 0.4).GetMatrix()
    direction = np.asarray(flipped_rows).reshape(3, 3) @ np.diag([1.0, -1.0, 1.0])
    scan = make_oblique_scan(direction=tuple(direction.ravel()))
    write_series(encode(scan), tmp_path)
    image, _ = read_scan(tmp_path)
    for index in [(0, 0, 0), (47, 0, 0), (0, 63, 0), (30, 20, 0)]:
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(index),
                                   scan.image.TransformIndexToPhysicalPoint(index), atol=1e-6)
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(scan.image), atol=1e-2)


def test_objects_say_synthetic_and_share_one_generated_study():
    study = SyntheticStudy(REFERENCE)
    first, second = encode(make_oblique_scan(0), study), encode(make_oblique_scan(1), study)
    for dataset in first + second:
        assert dataset[SYNTHETIC_DATA_TAG].value == "YES"
        assert dataset.ContentQualification == "RESEARCH"
        assert dataset.PatientIdentityRemoved == "YES"
        assert "SYNTHETIC" in str(dataset.PatientName) and "SYNTHETIC" in dataset.SeriesDescription
        assert "spect_fastgan_A" in dataset.SeriesDescription
        assert "BG-unilateral-left seed 42" in dataset.SeriesDescription
        assert (dataset.StudyInstanceUID, dataset.PatientID) == (study.study_instance_uid, study.patient_id)
    assert len({dataset.SeriesInstanceUID for dataset in first + second}) == 6
    assert [dataset.SeriesNumber for dataset in first + second] == [1, 2, 3, 4, 5, 6]
    assert first[0].FrameOfReferenceUID == second[1].FrameOfReferenceUID == study.frame_of_reference_uid
    assert '"sha256": "0123456789abcdef' in first[0].ImageComments and '"seed": 42' in first[0].ImageComments
    assert SyntheticStudy(REFERENCE).patient_id != study.patient_id  # another run


def test_one_run_over_one_reference_is_one_patient_study_and_frame_of_reference_for_every_model():
    run = SyntheticRun()
    scan = make_oblique_scan()
    model_a = encode(scan, run.study(REFERENCE))
    scan.model = replace(MODEL, name="spect_fastgan_B")
    model_b = encode(scan, SyntheticStudy(REFERENCE, SyntheticRun(run.run_id)))  # the same run in another process
    keys = ("PatientID", "PatientName", "StudyInstanceUID", "StudyID", "AccessionNumber", "StudyDate", "StudyTime")
    first = model_a[0]
    for dataset in model_a + model_b:
        assert [dataset.get(key) for key in keys] == [first.get(key) for key in keys], dataset.Modality
    assert {dataset.FrameOfReferenceUID for dataset in model_a + model_b if dataset.Modality != "SR"} == \
        {first.FrameOfReferenceUID}
    assert model_a[0].StudyDate + "T" + model_a[0].StudyTime == run.run_id.split("-")[0]
    assert "spect_fastgan_B" in model_b[0].SeriesDescription and "spect_fastgan_A" in model_a[0].SeriesDescription
    for nm, model in ((model_a[0], "spect_fastgan_A"), (model_b[0], "spect_fastgan_B")):
        assert model in nm.DerivationDescription and run.run_id in nm.DerivationDescription
        assert reference_label(REFERENCE) in nm.DerivationDescription
    for dataset in model_a + model_b:  # the reference's id (a file name here) is nowhere
        assert "Doe" not in str(dataset) and REFERENCE not in str(dataset)
    other_reference, other_run = SyntheticStudy("another-study", run), SyntheticStudy(REFERENCE)
    study = run.study(REFERENCE)
    for other in (other_reference, other_run):
        assert (other.patient_id, other.study_instance_uid, other.frame_of_reference_uid) != \
            (study.patient_id, study.study_instance_uid, study.frame_of_reference_uid)
    assert run.study(REFERENCE) is study and study.series_count == 3


@pytest.mark.parametrize("run_id", ["", "20261129-abc", "20261129T210300", "20261129T210300-xyz", "today-12"])
def test_malformed_run_ids_are_named(run_id):
    with pytest.raises(DicomError, match="is not of the form YYYYMMDDTHHMMSS-<hex>"):
        SyntheticRun(run_id)


def test_a_study_needs_a_reference():
    with pytest.raises(DicomError, match="needs the id of its reference study"):
        SyntheticStudy(" ")


def test_seg_holds_the_hemisphere_masks_of_the_nm_image(tmp_path):
    scan = make_oblique_scan()
    nm, seg, _ = encode(scan)
    seg_path = write_series([seg], tmp_path)[0]
    segmentation = hd.seg.segread(seg_path)
    labels = {item.SegmentNumber: (item.SegmentLabel,
                                   item.SegmentedPropertyTypeCodeSequence[0]
                                   .SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning)
              for item in segmentation.SegmentSequence}
    assert labels == {1: ("left hemisphere", "Left"), 2: ("right hemisphere", "Right")}
    masks = segmentation.get_pixels_by_source_instance([nm.SOPInstanceUID], combine_segments=False)
    np.testing.assert_array_equal(masks[0, ..., 0], scan.left)
    np.testing.assert_array_equal(masks[0, ..., 1], scan.right)
    assert segmentation.FrameOfReferenceUID == nm.FrameOfReferenceUID


def test_sr_references_the_seg_segments_and_the_nm_image(tmp_path):
    nm, seg, sr = encode(make_oblique_scan())
    sr = pydicom.dcmread(write_series([sr], tmp_path)[0])
    report = hd.sr.MeasurementReport.from_sequence([sr])
    hemispheres = report.get_volumetric_roi_measurement_groups()
    assert [group.referenced_segment[0].ReferencedSOPSequence[0].ReferencedSegmentNumber
            for group in hemispheres] == [1, 2]
    assert {group.referenced_segment[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            for group in hemispheres} == {seg.SOPInstanceUID}
    assert [group.finding_sites[0].laterality.meaning for group in hemispheres] == ["Left", "Right"]
    evidence = {item.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert evidence == {nm.SOPInstanceUID, seg.SOPInstanceUID}


def test_sr_outlines_each_hemisphere_on_the_nm_frame_with_the_segments_tracking_uids(tmp_path):
    scan = make_oblique_scan()
    nm, seg, sr = encode(scan)
    paths = write_series([seg, sr], tmp_path)
    report = hd.sr.MeasurementReport.from_sequence([pydicom.dcmread(paths[1])])
    outlines = report.get_planar_roi_measurement_groups(finding_type=codes.SCT.CerebralHemisphere)
    volumes = report.get_volumetric_roi_measurement_groups()
    segments = hd.seg.segread(paths[0]).SegmentSequence
    assert [group.finding_sites[0].laterality.meaning for group in outlines] == ["Left", "Right"]
    assert [group.tracking_uid for group in outlines] == [group.tracking_uid for group in volumes] == \
        [segment.TrackingUID for segment in segments]
    assert [segment.TrackingID for segment in segments] == ["left hemisphere", "right hemisphere"]
    assert len({tuple(segment.RecommendedDisplayCIELabValue) for segment in segments}) == 2
    for group, volume, mask in zip(outlines, volumes, (scan.left, scan.right)):
        region = group.roi
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        points = region.value
        np.testing.assert_array_equal(points[0], points[-1])
        source = region.ContentSequence[0].ReferencedSOPSequence[0]
        assert (source.ReferencedSOPInstanceUID, source.ReferencedFrameNumber) == (nm.SOPInstanceUID, 1)
        rows, columns = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
        centres = np.stack([columns.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
        inside = Path(points).contains_points(centres).reshape(mask.shape)
        np.testing.assert_array_equal(inside, mask)
        assert [item.value for item in group.get_measurements()] == [item.value for item in volume.get_measurements()]


def _hemisphere_defects(sr: pydicom.Dataset, folder) -> list[list[tuple[list[str], list[float]]]]:
    """Per kind of hemisphere group (SEG-based, outline), per hemisphere (left, right): the territories and
    severities the SR records of its synthetic defect (read back from its file in ``folder``)."""
    report = hd.sr.MeasurementReport.from_sequence([pydicom.dcmread(write_series([sr], folder)[0])])
    return [[([evaluation.value.value for evaluation in group.get_qualitative_evaluations(name=DEFECT_TERRITORY)],
              [measurement.value for measurement in group.get_measurements(name=DEFECT_SEVERITY)])
             for group in groups]
            for groups in (report.get_volumetric_roi_measurement_groups(),
                           report.get_planar_roi_measurement_groups(finding_type=codes.SCT.CerebralHemisphere))]


def test_sr_records_the_territory_and_severity_of_each_hemispheres_synthetic_defect(tmp_path):
    scan = make_oblique_scan()
    condition = {"level": "COR", "pattern": "bilateral", "side": None, "territory": {"left": "MCA", "right": "ACA"},
                 "severity": {"left": 0.2, "right": 0.3512}}
    nm, _, sr = encode(replace(scan, condition=condition_from_dict(condition)))
    assert _hemisphere_defects(sr, tmp_path / "bilateral") == [[(["MCA"], [0.2]), (["ACA"], [0.3512])]] * 2
    assert dciodvfy_errors(next((tmp_path / "bilateral").iterdir())) == []
    assert json.loads(nm.ImageComments.split(": ", 1)[1])["condition"] == condition
    unilateral = {**CONDITION.to_dict(), "territory": "PCA", "severity": 0.25}  # BG unilateral left
    sr = encode(replace(scan, condition=condition_from_dict(unilateral)))[2]
    assert _hemisphere_defects(sr, tmp_path / "unilateral") == [[(["PCA"], [0.25]), ([], [])]] * 2
    assert _hemisphere_defects(encode(scan)[2], tmp_path / "plain") == [[([], []), ([], [])]] * 2  # no axes: none


def test_outline_traces_the_largest_region_closed_at_the_image_edge():
    mask = np.zeros((6, 8), dtype=bool)
    mask[0:4, 0:3] = True  # at the corner: the outline must close
    mask[5, 6] = True  # a smaller region: left out
    points = outline(mask)
    np.testing.assert_array_equal(points[0], points[-1])
    assert {tuple(point) for point in points} == {(0.5, 0.0), (2.5, 0.0), (3.0, 0.5), (3.0, 3.5), (2.5, 4.0),
                                                  (0.5, 4.0), (0.0, 3.5), (0.0, 0.5)}
    with pytest.raises(DicomError, match="empty mask"):
        outline(np.zeros((3, 3), dtype=bool))


def test_dciodvfy_finds_no_errors_in_nm_seg_and_sr(tmp_path):
    paths = write_series(encode(make_oblique_scan()), tmp_path)
    assert {path.name.split("_")[0] for path in paths} == {"NM", "SEG", "SR"}
    for path in paths:
        assert dciodvfy_errors(path) == [], path.name


def test_nm_counts_travel_in_the_real_world_value_mapping_not_rescale(tmp_path):
    scan = make_oblique_scan()
    nm = pydicom.dcmread(write_series(encode(scan)[:1], tmp_path)[0])
    assert "RescaleSlope" not in nm and "RescaleIntercept" not in nm
    (mapping,) = nm.RealWorldValueMappingSequence
    unit = mapping.MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("{propcounts}", "UCUM")
    assert (mapping.RealWorldValueFirstValueMapped, mapping.RealWorldValueLastValueMapped) == (0, 65535)
    counts = sitk.GetArrayFromImage(scan.image)[0]
    np.testing.assert_allclose(real_world_counts(nm), counts, atol=counts_slope(nm) / 2 + 1e-9)
    assert abs(nm.pixel_array.max() * counts_slope(nm) - counts.max()) < 1e-9 * counts.max()
    findings = dciodvfy_findings(tmp_path / f"NM_{nm.SOPInstanceUID}.dcm")
    assert not [line for line in findings if "Rescale" in line], findings


def test_nm_with_negative_counts_maps_the_signed_range(tmp_path):
    scan = make_oblique_scan()
    counts = sitk.GetArrayFromImage(scan.image)[0] - 20.0
    scan.image = _with_pixels(scan.image, counts)
    nm = pydicom.dcmread(write_series(encode(scan)[:1], tmp_path)[0])
    mapping = nm.RealWorldValueMappingSequence[0]
    assert nm.PixelRepresentation == 1
    assert (mapping.RealWorldValueFirstValueMapped, mapping.RealWorldValueLastValueMapped) == (-32767, 32767)
    np.testing.assert_allclose(real_world_counts(nm), counts, atol=counts_slope(nm) / 2 + 1e-9)


def test_foreign_nm_without_a_counts_mapping_is_named():
    nm = encode(make_oblique_scan())[0]
    del nm.RealWorldValueMappingSequence
    with pytest.raises(DicomError, match=r"no Real World Value Mapping in UCUM \{propcounts\}"):
        real_world_counts(nm)


@pytest.mark.parametrize("matrix, views", [(128, 96), (64, 60)])
def test_nm_modules_state_the_simulated_acquisition(matrix, views):
    scan = make_oblique_scan()
    nm = encode(scan, protocol=protocol_for(matrix))[0]
    (window,) = nm.EnergyWindowInformationSequence
    assert nm.NumberOfEnergyWindows == 1
    window_range = window.EnergyWindowRangeSequence[0]
    assert (window_range.EnergyWindowLowerLimit, window_range.EnergyWindowUpperLimit) == (143.1, 174.9)
    (rotation,) = nm.RotationInformationSequence
    assert nm.NumberOfRotations == 1 and nm.NumberOfDetectors == len(nm.DetectorInformationSequence) == 1
    assert (rotation.NumberOfFramesInRotation, rotation.ScanArc, rotation.StartAngle) == (views, 360, 0)
    assert rotation.AngularStep * views == rotation.ScanArc
    assert rotation.RadialPosition == nm.DetectorInformationSequence[0].RadialPosition == 140
    assert rotation.ActualFrameDuration > 0
    assert nm.DetectorInformationSequence[0].CollimatorType == "PARA"
    (pharmaceutical,) = nm.RadiopharmaceuticalInformationSequence
    codes_of = lambda sequence: [(item.CodeValue, item.CodingSchemeDesignator) for item in sequence]
    assert codes_of(pharmaceutical.RadionuclideCodeSequence) == [("21572004", "SCT")]
    assert codes_of(pharmaceutical.RadiopharmaceuticalCodeSequence) == [("78481003", "SCT")]
    assert codes_of(pharmaceutical.AdministrationRouteCodeSequence) == [("47625008", "SCT")]
    orientation = nm.PatientOrientationCodeSequence[0]
    assert codes_of([orientation]) == [("102538003", "SCT")]
    assert codes_of(orientation.PatientOrientationModifierCodeSequence) == [("40199007", "SCT")]
    assert codes_of(nm.PatientGantryRelationshipCodeSequence) == [("102540008", "SCT")]
    assert nm.BurnedInAnnotation == "NO"


def test_negative_counts_are_stored_signed():
    values = np.array([[-5.0, 0.0], [2.5, 10.0]])
    stored, slope = quantize_counts(values)
    assert stored.dtype == np.int16 and stored.max() == 32767
    np.testing.assert_allclose(stored * slope, values, atol=slope / 2)
    assert quantize_counts(np.zeros((2, 2)))[1] == 1.0


def test_roi_masks_and_stats_go_straight_in(tmp_path):
    result = GenerationResult.measured(make_oblique_scan().image, TEMPLATE_MIDLINE, condition=CONDITION, seed=SEED,
                                       model=MODEL, reference=REFERENCE)
    write_series(encode_scan(result, SyntheticStudy(REFERENCE)), tmp_path)
    _, read_stats = read_scan(tmp_path)
    assert read_stats == {key: result.stats.to_dict()[key] for key in read_stats}
    assert read_stats["size_unit"] == "mm2" and read_stats["left"] > read_stats["right"]


def test_2d_images_are_accepted():
    scan = make_oblique_scan()
    nm, seg, _ = encode_scan(scan.result(image=scan.image[:, :, 0]), SyntheticStudy(REFERENCE))
    assert nm.Rows == 64 and seg.NumberOfFrames == 2


@pytest.mark.parametrize("change, message", [
    (lambda scan: setattr(scan, "left", scan.left[:10]), "left mask has shape"),
    (lambda scan: setattr(scan, "right", scan.right | scan.left), "overlap"),
    (lambda scan: setattr(scan, "stats", None), "without hemisphere statistics"),
    (lambda scan: setattr(scan, "stats", replace(scan.stats, lr=float("nan"))), "lr is not a finite number"),
    (lambda scan: setattr(scan, "stats", replace(scan.stats, size_unit="cm")), "size_unit"),
    (lambda scan: setattr(scan, "model", replace(MODEL, sha256="")), "model lacks its sha256"),
])
def test_bad_inputs_are_named(change, message):
    scan = make_oblique_scan()
    change(scan)
    with pytest.raises((DicomError, ValueError), match=message):
        encode(scan)


def test_bad_images_are_named():
    scan = make_oblique_scan()
    volume = sitk.Image(48, 64, 2, sitk.sitkFloat32)
    with pytest.raises(InvalidImageError, match="one-slice"):
        encode_scan(scan.result(image=volume), SyntheticStudy(REFERENCE))
    infinite = _with_pixels(scan.image, np.full((64, 48), np.inf))
    with pytest.raises(InvalidImageError, match="infinite"):
        encode_scan(scan.result(image=infinite), SyntheticStudy(REFERENCE))


def test_read_scan_names_a_folder_without_one_scan(tmp_path):
    write_series(encode(make_oblique_scan(0)) + encode(make_oblique_scan(1)), tmp_path)
    with pytest.raises(DicomError, match="found 2 NM images"):
        read_scan(tmp_path)
    with pytest.raises(DicomError, match="no such DICOM file"):
        read_scan([tmp_path / "missing.dcm"])


def test_nm_states_its_plane_at_top_level_too_so_that_viewers_place_a_one_frame_image(tmp_path):
    """OHIF takes a one-frame NM for a single-frame image and reads its position at top level only; the top-level
    plane equals the Detector Information Sequence's, and dciodvfy calls it a Standard Extended SOP Class."""
    scan = make_oblique_scan()
    path = write_series(encode(scan)[:1], tmp_path)[0]
    nm = pydicom.dcmread(path)
    detector = nm.DetectorInformationSequence[0]
    assert nm.ImagePositionPatient == detector.ImagePositionPatient
    assert nm.ImageOrientationPatient == detector.ImageOrientationPatient
    np.testing.assert_allclose([float(value) for value in nm.ImagePositionPatient], scan.image.GetOrigin(), atol=1e-4)
    extended = [line for line in dciodvfy_findings(path) if "Image Position" in line or "Image Orientation" in line]
    assert len(extended) == 2 and all(line.startswith("Warning - Attribute is not present in standard")
                                      for line in extended), extended


def test_every_sr_measurement_group_carries_coordinates_as_ohif_needs(tmp_path):
    """OHIF 3.10 stops loading an SR at a measurement group without coordinates: the brain's MC, LR and AI come in a
    planar ROI group outlined around both hemispheres, and read back as they were written."""
    scan = make_oblique_scan()
    sr = pydicom.dcmread(write_series(encode(scan)[2:], tmp_path)[0])
    report = hd.sr.MeasurementReport.from_sequence([sr])
    assert report.get_image_measurement_groups() == []
    (brain,) = report.get_planar_roi_measurement_groups(finding_type=codes.SCT.Brain)
    rows, columns = np.mgrid[0:scan.left.shape[0], 0:scan.left.shape[1]]
    centres = np.stack([columns.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    inside = Path(brain.roi.value).contains_points(centres).reshape(scan.left.shape)
    np.testing.assert_array_equal(inside, scan.left | scan.right)
    values = {item.name.meaning: item.value for item in brain.get_measurements()}
    assert values["Hemisphere asymmetry index"] == pytest.approx(scan.stats.ai)
    assert values["Left to right hemisphere mean count ratio"] == pytest.approx(scan.stats.lr)


@pytest.mark.parametrize("method", METHODS)
def test_a_scan_made_from_the_reference_names_the_method_in_its_derivation_description(method):
    removed = (Lesion(Side.LEFT, "MCA", 0.3),)
    result = replace(make_oblique_scan().result(), condition=parse_condition("BG", "normal"),
                     derivation=Derivation(method, removed))
    text = SyntheticStudy(REFERENCE).derivation(result)
    assert f"left MCA 30% removed ({method} method)" in text and reference_label(REFERENCE) in text
    assert text.startswith("SYNTHETIC") and "not the reference's" in text
