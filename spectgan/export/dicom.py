"""DICOM encoding of synthetic scans: an NM image with full geometry, a hemisphere SEG and a TID 1500 SR.

One scan is three objects in three series of one study: the ``SyntheticStudy`` of its reference study and run
(``SyntheticRun``), shared by every scan a run makes over that reference, by any model, with one frame of
reference. The NM's Derivation Description names the model, the reference (by a digest of its id) and the run;
every Series Description the model.

- NM image (one-frame RECON TOMO multi-frame), its acquisition modules (123I-IMP, the photopeak window, the orbit,
  a parallel-hole collimator) stated from ``spectgan.simulation.protocol``. Its plane is the Detector Information
  Sequence's Image Position / Image Orientation (Patient), which is where SimpleITK (GDCM) reads an NM image's
  geometry, and the same values at top level, where viewers that treat a one-frame image as single-frame (OHIF)
  read it; the slice thickness is Spacing Between Slices. The one-slice image's normal is implicit in DICOM (row x
  column direction), so a left-handed direction matrix comes back with its third column negated: the same plane
  and the same pixel positions, nothing flipped in the plane.
- SEG with two binary segments on the slice grid: 1 = left hemisphere, 2 = right hemisphere (patient sides).
  highdicom 0.22 builds a SEG only from single-frame sources, so it is given a single-frame view of the NM (the
  plane at top level); the SEG references the NM instance.
- Comprehensive SR (TID 1500; its coordinates are 2D SCOORD on the NM frame, so not the 3D SR class, which
  OHIF 3.10 draws only from SCOORD3D): per hemisphere (mean counts and size) a TID 1411 group referencing its SEG
  segment and a TID 1410 group with its outline as a closed SCOORD polyline on the NM frame (what OHIF's SR
  handler draws); one TID 1410 group for the brain (MC, LR and AI) outlined on the NM frame. A hemisphere's two
  groups and its SEG segment share one tracking UID; the segments carry display colours. For a model with defect
  axes, both groups of a hemisphere with a defect also record the defect the scan was made with (the territory and
  severity the request gave or the model drew): its territory as a qualitative evaluation and its severity as a
  measurement (fractional CBF reduction), in spectgan's private coding scheme.

A reference study (a 3D volume, e.g. a sample study put into a PACS) is written by ``encode_reference`` as an NM
RECON TOMO series, one multi-frame instance or one instance per slice, with the same acquisition modules and count
scaling; ``read_nm_volume`` reads such a series (or another NM RECON TOMO series) back as counts with its geometry.

Quantization: counts are stored as 16-bit integers, counts = stored value x slope with slope = max |counts| / 65535
(unsigned; 32767 signed when a count is negative), so a read value differs from the original by at most half the
slope (7.6e-6 x the maximum). The slope travels in the Real World Value Mapping Sequence (0040,9096) in UCUM
``{propcounts}`` (proportional to counts, not calibrated), not in Rescale Slope / Intercept, which the NM IOD does
not define: NM software reads the stored values (proportional to counts) or maps them. The statistics travel in the
SR at full double precision.

A scan made from the reference patient's own slice (``base=reference``) names the reference series' instances in its
NM's Source Image Sequence when the reference came as DICOM (``GenerationResult.derivation.source``), and is filed
in the reference's own study, under its patient, only when its request asked so (``SourceStudy``,
``file_with=source``).

Every object says it is synthetic: Synthetic Data (0008,001C) YES, Content Qualification RESEARCH, "SYNTHETIC" in
Series Description; in a synthetic study also Patient Identity Removed YES and "SYNTHETIC" in Patient Name, and
every identifier is generated (derived from the reference's id and the run's, or random).
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Iterable, Sequence

import contourpy
import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, NuclearMedicineImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from spectgan import __version__
from spectgan.conditions import Lesion, Side
from spectgan.counterfactual import PHYSICS
from spectgan.errors import InvalidImageError, SpectganError
from spectgan.files import atomic_write_bytes
from spectgan.geometry.roi import PRIVATE_SCHEME, SIZE_UNIT, STATISTICS, HemisphereStats, Statistic
from spectgan.results import GenerationResult, SourcePatient, SourceSeries
from spectgan.simulation.protocol import (COLLIMATOR_TYPE, DEFAULT_MATRIX, ENERGY_WINDOW_FRACTION, PHOTOPEAK_KEV,
                                          RADIUS_OF_ROTATION_CM, ROTATION_DIRECTION, SCAN_ARC_DEG, START_ANGLE_DEG,
                                          Protocol, energy_window_kev, protocol_for)

# Synthetic Data (0008,001C) is newer than pydicom 2.4's dictionary (and dciodvfy 2022-06's): set by tag.
SYNTHETIC_DATA_TAG = 0x0008001C
MANUFACTURER = "spectgan"
SLICE_VECTOR_TAG = 0x00540080  # the NM Frame Increment Pointer of a RECON TOMO image
SIDES = ("left", "right")  # SEG segment numbers 1 and 2
REFERENCE_FRAMES = ("multi", "single")  # how encode_reference writes a volume: one instance or one per slice

# Coded concepts of the SR: each statistic's is declared with it (``spectgan.geometry.roi.STATISTICS``; mean counts
# are "NM Tomographic Activity" with derivation "Mean", TID 300; LR and AI have no standard code, so they live in
# spectgan's private coding scheme, declared in the SR), the sizes' follow their unit.
# The synthetic defect of a hemisphere (the condition the generator was given): its vascular territory (a code of
# the private scheme per territory name, e.g. MCA) and its severity, the fractional CBF reduction.
DEFECT_TERRITORY = Code("DEFTERRITORY", PRIVATE_SCHEME, "Vascular territory of the synthetic defect")
DEFECT_SEVERITY = Code("DEFSEVERITY", PRIVATE_SCHEME, "Fractional CBF reduction of the synthetic defect")
SIZE_CODES = {"mm2": codes.SCT.Area, "mm3": codes.SCT.Volume}
UNITS = {"counts": codes.UCUM.Counts, "ratio": codes.UCUM.Ratio, "percent": codes.UCUM.Percent,
         "mm2": Code("mm2", "UCUM", "mm2"), "mm3": Code("mm3", "UCUM", "mm3")}
LATERALITY = {"left": codes.SCT.Left, "right": codes.SCT.Right}
# CIELab display colours of the hemisphere segments: matplotlib's tab:orange (left) and tab:blue (right), the
# colours of the outlines in spectgan's overview pictures.
DISPLAY_LAB = {"left": (66.9, 43.4, 71.9), "right": (48.0, -3.2, -39.3)}
ANATOMICAL_STRUCTURE = Code("123037004", "SCT", "Anatomical Structure")

# Coded concepts of the NM image (NM Isotope, NM/PET Patient Orientation, Real World Value Mapping).
IODINE_123 = Code("21572004", "SCT", "^123^Iodine")
IOFETAMINE_I123 = Code("78481003", "SCT", "Iofetamine I^123^")
INTRAVENOUS = Code("47625008", "SCT", "Intravenous route")
RECUMBENT, SUPINE = Code("102538003", "SCT", "recumbent"), Code("40199007", "SCT", "supine")
HEAD_FIRST = Code("102540008", "SCT", "headfirst")
PROPORTIONAL_TO_COUNTS = Code("{propcounts}", "UCUM", "Proportional to counts")
# A scan made from the reference patient's own slice: its Source Image Sequence's purpose (CID 7202) and its
# Derivation Codes (CID 7203): the reference resampled onto the level's slice, its counts multiplied by the defect's
# factor (added) or divided by it (removed).
SOURCE_IMAGE_PURPOSE = codes.DCM.SourceImageForImageProcessingOperation
# How a counterfactual's pixels were made from the reference's (CID 7203): the physics method removes a defect by
# dividing by its factor; every other change multiplies the patient's counts (the learned method by the model's ratio).
DERIVATION_CODES = {"multiplied": (codes.DCM.SpatialResampling, codes.DCM.PixelByPixelMultiplication),
                    "divided": (codes.DCM.SpatialResampling, codes.DCM.PixelByPixelDivision)}


class DicomError(SpectganError):
    """DICOM objects that spectgan cannot write or read back (bad inputs, an incomplete or foreign series)."""


RUN_ID_FORM = "YYYYMMDDTHHMMSS-<hex>"  # the start of the run (local time), then random hex digits


def new_run_id() -> str:
    """A new run id: the time now and 6 random hex digits, e.g. ``20261129T210300-3fa2c1``."""
    return f"{datetime.now():%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def _digest(*parts: str) -> str:
    """SHA-256 hex digest of the parts (separated by NUL)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def reference_label(reference_id: str) -> str:
    """How DICOM names a reference study: ``ref-`` and 16 hex digits of the SHA-256 of its datastore id (an id may
    hold a file name, and a file name may hold a real name, so the id itself is never written)."""
    return "ref-" + _digest(reference_id)[:16]


@dataclass
class SyntheticRun:
    """One run of generation (a demo, a session, or CLI calls given the same ``--run``): every scan it makes over
    one reference study, by any model, lands in that reference's ``SyntheticStudy``. The id starts with the run's
    start time, which is the studies' date and time."""

    run_id: str = field(default_factory=new_run_id)
    studies: dict[str, "SyntheticStudy"] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.started  # a clear error for a malformed id

    @property
    def started(self) -> datetime:
        try:
            stamp, suffix = self.run_id.split("-", 1)
            if not re.fullmatch(r"[0-9a-f]{1,32}", suffix):
                raise ValueError(suffix)
            return datetime.strptime(stamp, "%Y%m%dT%H%M%S")
        except ValueError:
            raise DicomError(f"run id {self.run_id!r} is not of the form {RUN_ID_FORM}, e.g. {new_run_id()}") \
                from None

    def study(self, reference_id: str) -> "SyntheticStudy":
        """The synthetic study of the scans this run makes over ``reference_id`` (the same object each time, so
        series numbers keep counting)."""
        return self.studies.setdefault(reference_id, SyntheticStudy(reference_id, self))

    def study_for(self, result: GenerationResult) -> "SyntheticStudy":
        """Where ``result`` is filed: the synthetic study of its reference, or, for a result made from the
        reference whose request asked to file it with the source (``Derivation.filed_with``), the reference's own
        DICOM study (``SourceStudy``)."""
        derivation = result.derivation
        if derivation is None or derivation.filed_with is None or derivation.source is None:
            return self.study(result.reference)
        key = f"source:{derivation.source.study_instance_uid}"  # ':' is in no datastore id
        return self.studies.setdefault(key, SourceStudy(result.reference, self,
                                                        derivation.filed_with.study_description,
                                                        source=derivation.source, patient=derivation.filed_with))


@dataclass
class SyntheticStudy:
    """One generated patient, study and frame of reference (the reference study's physical space) per reference
    study and run. Every id is derived from (reference id, run id) by SHA-256, so the scans of a run over one
    reference land together in the PACS whichever model made them and whichever process encoded them. Nothing
    here comes from a real patient, and the reference is named only by ``reference_label``."""

    reference_id: str
    run: SyntheticRun = field(default_factory=SyntheticRun)
    description: str = "SYNTHETIC 123I-IMP brain perfusion SPECT"
    series_count: int = 0
    identity_removed: ClassVar[bool] = True  # Patient Identity Removed: its patient is no one
    patient_birth_date: ClassVar[str] = ""
    patient_sex: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not str(self.reference_id).strip():
            raise DicomError("a synthetic study needs the id of its reference study (the datastore image id)")

    def _derived(self, kind: str) -> str:
        return _digest(kind, self.reference_id, self.run.run_id)

    def _derived_uid(self, kind: str) -> str:
        return generate_uid(entropy_srcs=[kind, self.reference_id, self.run.run_id])

    @property
    def patient_id(self) -> str:
        return "SYN" + self._derived("patient")[:10].upper()

    @property
    def patient_name(self) -> str:
        return f"SYNTHETIC^{self.patient_id}"

    @property
    def study_instance_uid(self) -> str:
        return self._derived_uid("study")

    @property
    def frame_of_reference_uid(self) -> str:
        return self._derived_uid("frame of reference")

    @property
    def study_id(self) -> str:
        return self._derived("study id")[:8].upper()

    @property
    def accession_number(self) -> str:
        return "SYN" + self._derived("accession")[:8].upper()

    @property
    def created(self) -> datetime:
        return self.run.started

    @property
    def study_date(self) -> str:
        return self.created.strftime("%Y%m%d")

    @property
    def study_time(self) -> str:
        return self.created.strftime("%H%M%S")

    def derivation(self, result: GenerationResult) -> str:
        """Derivation Description of a scan in this study: the model, the reference (by label) and the run; for a
        scan made from the reference patient's own slice (``result.derivation``) that slice, the defect added or
        removed and the method. Filed, like every scan, under this synthetic patient and study."""
        reference = reference_label(self.reference_id)
        if result.derivation is not None:
            source = "" if result.derivation.source else " (a NIfTI without DICOM identity: no Source Image Sequence)"
            return (f"SYNTHETIC: derived from reference study {reference}{source}: "
                    f"{result.derivation.describe(result.condition)}, on the grid of {result.model.name} (spectgan), "
                    f"in run {self.run.run_id}; {self.filed}")
        return (f"SYNTHETIC: generated by the GAN {result.model.name} (spectgan) and placed over reference study "
                f"{reference} in run {self.run.run_id}; no real patient")

    @property
    def filed(self) -> str:
        """Where a scan of this study is filed, for its Derivation Description."""
        return "filed under a synthetic patient, not the reference's"

    def next_series_number(self) -> int:
        self.series_count += 1
        return self.series_count


@dataclass
class SourceStudy(SyntheticStudy):
    """The reference's own DICOM study, for a result made from the reference patient's slice whose request asked to
    file it there (``file_with=source``): the reference's patient (ID, name, birth date, sex), study (UID, ID,
    accession number, date, time, description) and frame of reference (the result lies in the reference's space),
    a new series. The scans stay marked synthetic (Synthetic Data, Series Description, Image Comments, Derivation
    Description); only Patient Identity Removed is NO, for the identity is the patient's."""

    source: SourceSeries | None = None
    patient: SourcePatient | None = None
    identity_removed: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source is None or self.patient is None:
            raise DicomError("filing with the source study needs the reference's DICOM series and patient")

    patient_id = property(lambda self: self.patient.patient_id)
    patient_name = property(lambda self: self.patient.patient_name)
    patient_birth_date = property(lambda self: self.patient.patient_birth_date)
    patient_sex = property(lambda self: self.patient.patient_sex)
    study_instance_uid = property(lambda self: self.source.study_instance_uid)
    study_id = property(lambda self: self.patient.study_id)
    accession_number = property(lambda self: self.patient.accession_number)
    study_date = property(lambda self: self.patient.study_date)
    study_time = property(lambda self: self.patient.study_time)

    @property
    def frame_of_reference_uid(self) -> str:
        return self.source.frame_of_reference_uid or super().frame_of_reference_uid

    @property
    def filed(self) -> str:
        return "filed with the reference's own study, under its patient, at the user's request (file_with source)"


def _series_description(result: GenerationResult, content: str) -> str:
    """``SYNTHETIC <model> <content> <condition> seed <seed>`` (``from reference`` in place of the seed for a scan
    made from the reference patient's slice), cut to the 64 characters of a DICOM LO."""
    made = "from reference" if result.derivation else f"seed {result.seed}"
    return f"SYNTHETIC {result.model.name} {content} {result.condition.label} {made}"[:64]


def _comment(result: GenerationResult) -> str:
    """Human- and machine-readable provenance for Image Comments: condition, seed, model, version, sha256."""
    details = {"condition": result.condition.to_dict(), "seed": result.seed, "model": result.model.name,
               "version": result.model.version, "sha256": result.model.sha256,
               **({"derivation": result.derivation.to_dict()} if result.derivation else {})}
    return "SYNTHETIC image made by spectgan, no real patient: " + json.dumps(details, sort_keys=True)


def encode_scan(result: GenerationResult, study: SyntheticStudy,
                protocol: Protocol = protocol_for(DEFAULT_MATRIX)) -> list[Dataset]:
    """[NM, SEG, SR] of one generated slice, as the result holds it: its image (a one-slice volume or 2D image in
    counts, any direction), the hemisphere masks and statistics measured on it (``result.masks``, ``result.stats``;
    the SR records the statistics ``spectgan.geometry.roi.STATISTICS`` declares with a concept), the condition,
    seed and model it was made of. ``protocol``: the simulated acquisition of the model's training cohort, which the
    NM header states (views, orbit).
    """
    if result.stats is None or result.masks is None:
        raise DicomError(f"cannot encode {result.name} without hemisphere statistics: "
                         f"{result.stats_error or 'none were measured'}")
    missing = [name for name in ("name", "version", "sha256") if not getattr(result.model, name)]
    if missing:
        raise DicomError(f"the scan's model lacks its {', '.join(missing)}; the DICOM objects name the model's "
                         "name, version and sha256")
    image = _one_slice_image(result.image)
    masks = [_mask_array(mask, image, side) for side, mask in zip(SIDES, (result.masks.left, result.masks.right))]
    if np.any(masks[0] & masks[1]):
        raise DicomError(f"the left and right masks overlap in {np.count_nonzero(masks[0] & masks[1])} pixels")
    nm = _nm_image(image, result, study, protocol)
    tracking = {side: generate_uid() for side in SIDES}
    seg = _hemisphere_segmentation(nm, masks, tracking, result, study)
    sr = _measurement_report(nm, seg, masks, tracking, result, study)
    return [nm, seg, sr]


def write_series(datasets: Iterable[Dataset], folder: str | Path) -> list[Path]:
    """Write datasets as ``<Modality>_<SOPInstanceUID>.dcm`` files (atomically) into ``folder``; their paths."""
    folder = Path(folder)
    paths = []
    for dataset in datasets:
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, dataset, write_like_original=False)
        path = folder / f"{dataset.Modality}_{dataset.SOPInstanceUID}.dcm"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def encode_reference(volume: sitk.Image, study: SyntheticStudy, name: str, frames: str = "multi",
                     protocol: Protocol = protocol_for(DEFAULT_MATRIX)) -> list[Dataset]:
    """A synthetic reference study (a 3D volume of counts, any direction) as an NM RECON TOMO series of ``study``.

    ``frames``: ``multi`` writes one multi-frame instance, ``single`` one single-frame instance per slice; one
    count slope for the whole volume. ``name`` (e.g. the sample study's id) goes into the Series Description. The
    series and instance UIDs derive from the study, ``name`` and ``frames``, so writing the same study again makes
    the same instances (a PACS keeps one copy). DICOM's slice direction is row x column, so a left-handed direction
    (an x-flipped study) is written with its slices in reverse order: the same voxels at the same positions, with
    the third direction column negated. ``read_nm_volume`` reads the series back.
    """
    if frames not in REFERENCE_FRAMES:
        raise DicomError(f"frames {frames!r} is not one of {', '.join(REFERENCE_FRAMES)}")
    if not isinstance(volume, sitk.Image) or volume.GetDimension() != 3 or \
            volume.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidImageError("a reference study is one 3D SimpleITK volume of scalar counts")
    volume = right_handed(volume)
    stored, slope = quantize_counts(sitk.GetArrayViewFromImage(volume).astype(np.float64))
    series_uid = study._derived_uid(f"reference series {name} {frames}")
    series_number = study.next_series_number()
    slabs = [(volume, stored)] if frames == "multi" else \
        [(volume[:, :, index:index + 1], stored[index:index + 1]) for index in range(stored.shape[0])]
    datasets = []
    for number, (slab, values) in enumerate(slabs, start=1):
        ds = _nm_instance(slab, values, slope, study, protocol, series_uid, series_number, instance_number=number,
                          sop_instance_uid=generate_uid(entropy_srcs=[series_uid, str(number)]))
        ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
        ds.ManufacturerModelName, ds.SoftwareVersions = "spectgan simulator", __version__
        ds.ImageComments = "SYNTHETIC reference study simulated by spectgan, no real patient"
        _mark_synthetic(ds, f"SYNTHETIC reference {name}"[:64], study)
        datasets.append(ds)
    return datasets


def right_handed(volume: sitk.Image) -> sitk.Image:
    """``volume`` itself when its direction is right-handed; otherwise the same voxels at the same physical positions
    with the slice order reversed (origin at the last slice, third direction column negated)."""
    direction = np.asarray(volume.GetDirection(), dtype=np.float64).reshape(3, 3)
    if np.linalg.det(direction) > 0:
        return volume
    reversed_volume = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(volume)[::-1].copy())
    reversed_volume.SetSpacing(volume.GetSpacing())
    reversed_volume.SetOrigin(volume.TransformIndexToPhysicalPoint((0, 0, volume.GetSize()[2] - 1)))
    reversed_volume.SetDirection((direction * [1.0, 1.0, -1.0]).flatten().tolist())
    return reversed_volume


def read_nm_volume(source: str | Path | Sequence[str | Path]) -> sitk.Image:
    """The 3D volume (float32 counts) of one NM RECON TOMO series: one multi-frame instance, or single-frame
    instances ordered along the slice normal (row x column, so the direction is right-handed).

    ``source``: a folder of the series' .dcm files, or the files. Counts come from the ``{propcounts}`` Real World
    Value Mapping when there is one, else from Rescale Slope / Intercept, else the stored values. Geometry: the
    Detector Information Sequence's Image Position / Orientation (Patient) of the first slice, Pixel Spacing, and
    Spacing Between Slices (or, for single frames, the distance between their positions, which must be even).
    DicomError for anything else (other SOP classes, several series, uneven or tilted slice positions).
    """
    datasets = [pydicom.dcmread(path) for path in _scan_files(source)]
    if not datasets:
        raise DicomError(f"{source}: no DICOM files")
    foreign = sorted({str(ds.get("SOPClassUID", "none")) for ds in datasets} - {NuclearMedicineImageStorage})
    series = {ds.get("SeriesInstanceUID") for ds in datasets}
    if foreign or len(series) != 1:
        raise DicomError(f"{source}: expected the instances of one NM series, found SOP classes {foreign or 'NM'} "
                         f"in {len(series)} series")
    if len(datasets) > 1 and any(int(ds.get("NumberOfFrames", 1)) != 1 for ds in datasets):
        raise DicomError(f"{source}: expected one multi-frame NM instance or single-frame NM instances, found "
                         f"{len(datasets)} instances of which some have several frames")
    planes = [_detector_plane(ds) for ds in datasets]
    row, column = planes[0][1][:3], planes[0][1][3:]
    normal = np.cross(row, column)
    order = np.argsort([np.dot(position, normal) for position, _ in planes])
    datasets, positions = [datasets[index] for index in order], np.array([planes[index][0] for index in order])
    if any(not np.allclose(orientation, planes[0][1], atol=1e-4) for _, orientation in planes):
        raise DicomError(f"{source}: the slices of the series have different orientations")
    counts = np.concatenate([_instance_counts(ds) for ds in datasets]).astype(np.float32)
    if len(datasets) > 1:
        steps = np.diff(positions, axis=0)
        along = steps @ normal
        if np.any(along <= 0) or not np.allclose(steps, np.outer(along, normal), atol=1e-3) or \
                not np.allclose(along, along.mean(), rtol=1e-3, atol=1e-3):
            raise DicomError(f"{source}: the slices are not evenly spaced along their normal (steps {along} mm)")
        slice_spacing = float(along.mean())
    else:
        slice_spacing = float(datasets[0].get("SpacingBetweenSlices") or datasets[0].get("SliceThickness") or 1.0)
    image = sitk.GetImageFromArray(counts)
    row_spacing, column_spacing = (float(value) for value in datasets[0].PixelSpacing)
    image.SetSpacing((column_spacing, row_spacing, slice_spacing))
    image.SetOrigin(positions[0].tolist())
    image.SetDirection(np.column_stack([row, column, normal]).flatten().tolist())
    return image


def _detector_plane(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(Image Position (3,), Image Orientation (6,)) of an NM instance's first frame, from its Detector Information
    Sequence (where the NM IOD keeps them)."""
    detector = ds.get("DetectorInformationSequence", [Dataset()])[0]
    if "ImagePositionPatient" not in detector or "ImageOrientationPatient" not in detector:
        raise DicomError(f"NM {ds.get('SOPInstanceUID')} has no Image Position / Orientation (Patient) in its "
                         "Detector Information Sequence: not a reconstructed (RECON TOMO) volume")
    return (np.array([float(value) for value in detector.ImagePositionPatient]),
            np.array([float(value) for value in detector.ImageOrientationPatient]))


def _instance_counts(ds: Dataset) -> np.ndarray:
    """[frames, rows, columns] float64 counts of an NM instance: its {propcounts} mapping, else Rescale, else the
    stored values."""
    try:
        values = real_world_counts(ds)
    except DicomError:
        values = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1.0)) + \
            float(ds.get("RescaleIntercept", 0.0))
    return values.reshape(int(ds.get("NumberOfFrames", 1)), ds.Rows, ds.Columns)


def read_scan(source: str | Path | Sequence[str | Path]) -> tuple[sitk.Image, dict]:
    """The image (float32, read by SimpleITK) and statistics (from the SR) of one scan.

    ``source``: a folder holding one scan's files, or the files themselves.
    """
    paths = _scan_files(source)
    headers = {path: pydicom.dcmread(path, stop_before_pixels=True) for path in paths}
    images = [path for path, header in headers.items() if header.SOPClassUID == NuclearMedicineImageStorage]
    if len(images) != 1:
        raise DicomError(f"{source}: expected the files of one scan (one NM image), found {len(images)} NM images")
    nm_uid = headers[images[0]].SOPInstanceUID
    reports = [path for path, header in headers.items() if header.Modality == "SR" and nm_uid in _evidence(header)]
    if len(reports) != 1:
        raise DicomError(f"{source}: expected one SR with the statistics of NM {nm_uid}, found {len(reports)}")
    geometry = sitk.ReadImage(str(images[0]))  # SimpleITK reads the plane from the Detector Information Sequence
    image = sitk.GetImageFromArray(real_world_counts(pydicom.dcmread(images[0]))[None].astype(np.float32))
    image.CopyInformation(geometry)
    return image, _stats_from_report(headers[reports[0]])


def quantize_counts(values: np.ndarray) -> tuple[np.ndarray, float]:
    """16-bit integers and the Rescale Slope (exactly as a DICOM DS holds it) with values ~= stored x slope."""
    signed = bool(np.any(values < 0))
    limit = np.iinfo(np.int16 if signed else np.uint16).max
    peak = float(np.max(np.abs(values), initial=0.0))
    slope = float(DSfloat(peak / limit, auto_format=True)) if peak > 0 else 1.0
    stored = np.clip(np.rint(values / slope), -limit if signed else 0, limit)
    return stored.astype(np.int16 if signed else np.uint16), slope


def _scan_files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """The .dcm files of a folder, or the given files (which must exist)."""
    if isinstance(source, (str, Path)):
        source = Path(source)
        if source.is_dir():
            return sorted(source.glob("*.dcm"))
        source = [source]
    missing = [str(path) for path in source if not Path(path).is_file()]
    if missing:
        raise DicomError(f"no such DICOM file: {', '.join(missing)}")
    return [Path(path) for path in source]


def _one_slice_image(image: sitk.Image) -> sitk.Image:
    """A 2D image or one-slice 3D volume of finite scalar counts, as a one-slice volume."""
    if not isinstance(image, sitk.Image):
        raise InvalidImageError(f"expected a SimpleITK image, got {type(image).__name__}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidImageError(f"expected scalar counts, got pixel type '{image.GetPixelIDTypeAsString()}'")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3 or image.GetSize()[2] != 1:
        raise InvalidImageError(f"expected a one-slice image, got size {image.GetSize()}")
    if not np.isfinite(sitk.GetArrayViewFromImage(image)).all():
        raise InvalidImageError("the image has NaN or infinite counts")
    return image


def _mask_array(mask: np.ndarray | sitk.Image, image: sitk.Image, side: str) -> np.ndarray:
    """A binary mask on the image's grid as a boolean [rows, columns] array."""
    array = sitk.GetArrayFromImage(mask) if isinstance(mask, sitk.Image) else np.asarray(mask)
    rows, columns = image.GetSize()[1], image.GetSize()[0]
    if array.size != rows * columns or array.shape[-2:] != (rows, columns):
        raise DicomError(f"the {side} mask has shape {array.shape}; it must lie on the image grid "
                         f"({rows} rows x {columns} columns)")
    return array.reshape(rows, columns) != 0


def _ds(value: float) -> DSfloat:
    """A float as a DICOM decimal string of at most 16 characters."""
    return DSfloat(float(value), auto_format=True)


def _mark_synthetic(dataset: Dataset, series_description: str, study: SyntheticStudy) -> None:
    """The attributes that say an object is synthetic and (in a synthetic study) identifies no one; filed with a
    source study (``SourceStudy``), its identity is that patient's: Patient Identity Removed NO."""
    dataset.add_new(SYNTHETIC_DATA_TAG, "CS", "YES")
    dataset.ContentQualification = "RESEARCH"
    dataset.SeriesDescription = series_description
    if study.identity_removed:
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = "No real patient: synthetic data generated by spectgan"
    else:
        dataset.PatientIdentityRemoved = "NO"


def _with_file_meta(dataset: Dataset) -> Dataset:
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.is_little_endian, dataset.is_implicit_VR = True, False
    dataset.fix_meta_info()
    return dataset


def _nm_image(image: sitk.Image, result: GenerationResult, study: SyntheticStudy, protocol: Protocol) -> Dataset:
    """NM Image IOD of a generated slice: one-frame RECON TOMO (``_nm_instance``) that names its model."""
    stored, slope = quantize_counts(sitk.GetArrayViewFromImage(image).astype(np.float64))
    ds = _nm_instance(image, stored, slope, study, protocol, generate_uid(), study.next_series_number(),
                      instance_number=1, sop_instance_uid=generate_uid())
    ds.ImageType = ["DERIVED", "PRIMARY", "RECON TOMO", "EMISSION"]
    ds.ManufacturerModelName, ds.SoftwareVersions = result.model.name, [__version__, result.model.version]
    ds.ImageComments = _comment(result)
    ds.DerivationDescription = study.derivation(result)
    if result.derivation is not None and result.derivation.source is not None:
        divided = bool(result.derivation.removed) and result.derivation.method == PHYSICS
        _add_source_images(ds, result.derivation.source, "divided" if divided else "multiplied")
    _mark_synthetic(ds, _series_description(result, "SPECT"), study)
    return ds


def _add_source_images(ds: Dataset, source: SourceSeries, change: str) -> None:
    """Source Image Sequence (every instance of the reference series, each with the Purpose of Reference
    ``SOURCE_IMAGE_PURPOSE``, CID 7202) and Derivation Code Sequence (``DERIVATION_CODES`` of the ``change``,
    ``multiplied`` or ``divided``; CID 7203) of a scan made from the reference patient's own slice."""
    items = []
    for sop_class_uid, sop_instance_uid in source.instances:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class_uid, sop_instance_uid
        item.PurposeOfReferenceCodeSequence = [_code_item(SOURCE_IMAGE_PURPOSE)]
        items.append(item)
    ds.SourceImageSequence = DicomSequence(items)
    ds.DerivationCodeSequence = [_code_item(code) for code in DERIVATION_CODES[change]]


def _nm_instance(slab: sitk.Image, stored: np.ndarray, slope: float, study: SyntheticStudy, protocol: Protocol,
                 series_instance_uid: str, series_number: int, instance_number: int,
                 sop_instance_uid: str) -> Dataset:
    """One NM Image IOD instance of RECON TOMO frames: ``stored`` [frames, rows, columns] 16-bit values of the slices
    of ``slab`` (its origin is the first frame's Image Position, its direction's first two columns the Image
    Orientation, its z spacing Spacing Between Slices), counts = stored x ``slope`` in the Real World Value Mapping
    Sequence; the acquisition modules from ``protocol``. The caller adds Image Type, model, comments and the
    synthetic marking."""
    direction = np.asarray(slab.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing_x, spacing_y, thickness = slab.GetSpacing()
    frames = stored.shape[0]
    now = datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = NuclearMedicineImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    # Patient and study
    ds.PatientName, ds.PatientID = study.patient_name, study.patient_id
    ds.PatientBirthDate, ds.PatientSex = study.patient_birth_date, study.patient_sex
    ds.StudyInstanceUID, ds.StudyID, ds.AccessionNumber = study.study_instance_uid, study.study_id, \
        study.accession_number
    ds.StudyDate, ds.StudyTime = study.study_date, study.study_time
    ds.StudyDescription, ds.ReferringPhysicianName = study.description, ""
    # Series, equipment, frame of reference
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "NM", series_instance_uid, series_number
    ds.SeriesDate, ds.SeriesTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.BodyPartExamined = "BRAIN"
    ds.Manufacturer = MANUFACTURER
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = study.frame_of_reference_uid, ""
    _add_patient_orientation(ds)
    # Image
    ds.InstanceNumber = instance_number
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.BurnedInAnnotation = "NO"
    ds.AcquisitionContextSequence = DicomSequence()
    ds.CountsAccumulated = None
    # NM multi-frame: slices of a reconstructed volume, one energy window, one detector, one rotation
    ds.NumberOfFrames, ds.FrameIncrementPointer = frames, SLICE_VECTOR_TAG
    ds.SliceVector, ds.NumberOfSlices = list(range(1, frames + 1)), frames
    _add_isotope_and_acquisition(ds, protocol)
    detector = Dataset()
    detector.ImagePositionPatient = [_ds(value) for value in slab.GetOrigin()]
    detector.ImageOrientationPatient = [_ds(value) for value in (*direction[:, 0], *direction[:, 1])]
    detector.CollimatorType, detector.FocalDistance = COLLIMATOR_TYPE, None
    detector.RadialPosition = _ds(RADIUS_OF_ROTATION_CM * 10)
    ds.DetectorInformationSequence = DicomSequence([detector])
    ds.NumberOfDetectors = len(ds.DetectorInformationSequence)
    # The same plane at top level as well (Image Plane attributes beyond the NM IOD: a Standard Extended SOP
    # Class). Viewers take a one-frame NM for a single-frame image and look for its position there: without it,
    # OHIF 3.10 flags the series ("missing position information") and draws it with no orientation marks.
    ds.ImagePositionPatient, ds.ImageOrientationPatient = detector.ImagePositionPatient, \
        detector.ImageOrientationPatient
    ds.SliceThickness = ds.SpacingBetweenSlices = _ds(thickness)
    # Pixels: rows run along the image's y axis, columns along x; counts = stored x slope (RWVM, not Rescale)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape[1:]
    ds.PixelSpacing = [_ds(spacing_y), _ds(spacing_x)]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = int(stored.dtype == np.int16)
    ds.RealWorldValueMappingSequence = [_counts_mapping(stored.dtype, slope)]
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    return _with_file_meta(ds)


def _code_item(code: Code, **nested: Code) -> Dataset:
    """A code sequence item; ``nested`` adds one-item code sequences to it by keyword."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    for keyword, value in nested.items():
        setattr(item, keyword, [_code_item(value)])
    return item


def _add_patient_orientation(ds: Dataset) -> None:
    """NM/PET Patient Orientation: supine, head first, as a brain SPECT is acquired."""
    ds.PatientOrientationCodeSequence = [_code_item(RECUMBENT, PatientOrientationModifierCodeSequence=SUPINE)]
    ds.PatientGantryRelationshipCodeSequence = [_code_item(HEAD_FIRST)]


def _add_isotope_and_acquisition(ds: Dataset, protocol: Protocol) -> None:
    """NM Isotope (123I-IMP given intravenously, the 123I photopeak window) and NM TOMO Acquisition (the simulated
    orbit) modules, with their counts (Number of Energy Windows, Number of Rotations) matching the sequences."""
    lower, upper = energy_window_kev()
    window_range = Dataset()
    window_range.EnergyWindowLowerLimit, window_range.EnergyWindowUpperLimit = _ds(lower), _ds(upper)
    window = Dataset()
    window.EnergyWindowRangeSequence = [window_range]
    window.EnergyWindowName = f"123I {PHOTOPEAK_KEV:g} keV {ENERGY_WINDOW_FRACTION:.0%}"
    ds.EnergyWindowInformationSequence = [window]
    ds.NumberOfEnergyWindows = len(ds.EnergyWindowInformationSequence)
    pharmaceutical = Dataset()
    pharmaceutical.RadionuclideCodeSequence = [_code_item(IODINE_123)]
    pharmaceutical.Radiopharmaceutical = "123I-IMP (iofetamine I-123)"
    pharmaceutical.RadiopharmaceuticalCodeSequence = [_code_item(IOFETAMINE_I123)]
    pharmaceutical.RadiopharmaceuticalRoute = "Intravenous"
    pharmaceutical.AdministrationRouteCodeSequence = [_code_item(INTRAVENOUS)]
    ds.RadiopharmaceuticalInformationSequence = [pharmaceutical]
    rotation = Dataset()
    rotation.StartAngle, rotation.AngularStep = _ds(START_ANGLE_DEG), _ds(protocol.angular_step_deg)
    rotation.RotationDirection, rotation.ScanArc = ROTATION_DIRECTION, _ds(SCAN_ARC_DEG)
    rotation.NumberOfFramesInRotation = protocol.n_views
    rotation.ActualFrameDuration = protocol.view_duration_ms
    rotation.RadialPosition = _ds(RADIUS_OF_ROTATION_CM * 10)
    ds.RotationInformationSequence = [rotation]
    ds.NumberOfRotations = len(ds.RotationInformationSequence)


def _counts_mapping(dtype: np.dtype, slope: float) -> Dataset:
    """A Real World Value Mapping item: counts = stored value x ``slope`` over the whole stored range, in UCUM
    ``{propcounts}`` (proportional to counts: reconstructed counts per voxel, not calibrated activity)."""
    limits = np.iinfo(dtype)
    mapping = Dataset()
    mapping.RealWorldValueFirstValueMapped = -limits.max if limits.min < 0 else 0
    mapping.RealWorldValueLastValueMapped = limits.max
    mapping.RealWorldValueIntercept, mapping.RealWorldValueSlope = 0.0, float(slope)
    mapping.LUTExplanation = "Counts per voxel, proportional to counts, not calibrated"
    mapping.LUTLabel = "COUNTS"
    mapping.MeasurementUnitsCodeSequence = [_code_item(PROPORTIONAL_TO_COUNTS)]
    return mapping


def counts_slope(nm: Dataset) -> float:
    """Counts per stored pixel value of an NM ``encode_scan`` wrote (its Real World Value Mapping slope)."""
    return float(_counts_mapping_item(nm).RealWorldValueSlope)


def real_world_counts(nm: Dataset) -> np.ndarray:
    """The counts of an NM spectgan wrote, float64 in the shape of its pixel array ([rows, columns] for one frame,
    [frames, rows, columns] for more), from its stored values and Real World Value Mapping (``{propcounts}``)."""
    mapping = _counts_mapping_item(nm)
    return nm.pixel_array.astype(np.float64) * float(mapping.RealWorldValueSlope) + \
        float(mapping.RealWorldValueIntercept)


def _counts_mapping_item(nm: Dataset) -> Dataset:
    """The ``{propcounts}`` Real World Value Mapping item of an NM; DicomError when it has none."""
    for mapping in nm.get("RealWorldValueMappingSequence", []):
        units = mapping.get("MeasurementUnitsCodeSequence", [])
        if units and (units[0].CodeValue, units[0].CodingSchemeDesignator) == (
                PROPORTIONAL_TO_COUNTS.value, PROPORTIONAL_TO_COUNTS.scheme_designator):
            return mapping
    raise DicomError(f"NM {nm.SOPInstanceUID} has no Real World Value Mapping in UCUM "
                     f"{PROPORTIONAL_TO_COUNTS.value}; only spectgan's NM images can be read as counts")


def outline(mask: np.ndarray, start_toward: Sequence[float] = (0.0, -1.0)) -> np.ndarray:
    """The closed outline of a binary [rows, columns] mask's largest region, for an SR polyline.

    ``start_toward``: a (column, row) direction; the polyline starts (and ends) at its point farthest that way,
    which is where viewers such as OHIF put the ROI's label (the default: the top).

    Returns (n, 2) float (column, row) DICOM pixel coordinates (the centre of pixel [r, c] is (c + 0.5, r + 0.5)),
    first point == last. Traced by marching squares at 0.5 (contourpy, matplotlib's tracer) on the mask padded with
    zeros, so a region at the image's edge closes too; points inside straight runs are dropped. Holes and smaller
    regions are left out: the SEG holds the exact mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise DicomError("cannot outline an empty mask; a hemisphere ROI needs at least one pixel")
    lines = contourpy.contour_generator(z=np.pad(mask, 1).astype(np.float64), line_type="Separate").lines(0.5)
    largest = max(lines, key=lambda line: abs(_shoelace_area(line)))
    if not np.array_equal(largest[0], largest[-1]):
        largest = np.vstack([largest, largest[:1]])
    turns = np.cross(largest[1:-1] - largest[:-2], largest[2:] - largest[1:-1]) != 0
    ring = np.vstack([largest[:1], largest[1:-1][turns]])  # each point once
    start = int(np.argmax(ring @ np.asarray(start_toward, dtype=np.float64)))
    ring = np.roll(ring, -start, axis=0)
    return np.vstack([ring, ring[:1]]) - 0.5  # padded index (x = column + 1, y = row + 1) -> DICOM pixel coordinates


def _shoelace_area(points: np.ndarray) -> float:
    """Signed area of a polygon given as (n, 2) points."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _single_frame_view(nm: Dataset) -> Dataset:
    """The NM as the single-frame image highdicom 0.22 can segment: no NumberOfFrames (the plane is at top level
    too)."""
    view = copy.deepcopy(nm)
    del view.NumberOfFrames
    return view


def _hemisphere_segmentation(nm: Dataset, masks: list[np.ndarray], tracking: dict[str, str],
                             result: GenerationResult, study: SyntheticStudy) -> Dataset:
    """SEG of the hemisphere masks (segment 1 left, 2 right) with the SR's tracking UIDs and display colours."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name="spectgan hemisphere split", family=codes.DCM.HistogramAnalysis, version=__version__)
    descriptions = []
    for number, side in enumerate(SIDES, start=1):
        description = hd.seg.SegmentDescription(
            segment_number=number, segment_label=f"{side} hemisphere",
            segmented_property_category=ANATOMICAL_STRUCTURE,
            segmented_property_type=codes.SCT.CerebralHemisphere,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            tracking_uid=tracking[side], tracking_id=f"{side} hemisphere")
        description.RecommendedDisplayCIELabValue = list(hd.color.CIELabColor(*DISPLAY_LAB[side]).value)
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept.from_code(LATERALITY[side])]
        descriptions.append(description)
    seg = hd.seg.Segmentation(
        source_images=[_single_frame_view(nm)], pixel_array=np.stack(masks, axis=-1)[None],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=generate_uid(), series_number=study.next_series_number(),
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=result.model.name, software_versions=[__version__, result.model.version],
        device_serial_number=result.model.sha256[:64], content_label="HEMISPHERES",
        content_description="Left and right hemisphere ROIs split at the midsagittal plane",
        omit_empty_frames=False)
    _mark_synthetic(seg, _series_description(result, "ROIs"), study)
    return _with_file_meta(seg)


def _measurement(name: Code, value: float, unit: str, derivation: Code | None = None) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=value, unit=UNITS[unit], derivation=derivation)


def _defect_items(lesion: Lesion | None) -> tuple[list[hd.sr.QualitativeEvaluation], list[hd.sr.Measurement]]:
    """What a hemisphere's groups record of its synthetic defect: the territory as a qualitative evaluation (a code
    of the private scheme named after it, e.g. MCA), the severity as a measurement; those the lesion names, none
    without a lesion."""
    if lesion is None:
        return [], []
    evaluations = [] if lesion.territory is None else [hd.sr.QualitativeEvaluation(
        DEFECT_TERRITORY, Code(lesion.territory, PRIVATE_SCHEME, f"{lesion.territory} territory"))]
    measurements = [] if lesion.severity is None else [_measurement(DEFECT_SEVERITY, lesion.severity, "ratio")]
    return evaluations, measurements


def _concept(statistic: Statistic, size_unit: str) -> Code | None:
    """A statistic's concept in the SR (a size's: area or volume, by the unit); None: not recorded there."""
    if statistic.unit == SIZE_UNIT:
        return SIZE_CODES[size_unit]
    return Code(*statistic.code) if statistic.code else None


def _recorded(region: str, size_unit: str) -> list[tuple[Statistic, Code]]:
    """The statistics of a region (``brain``, ``left``, ``right``) that the SR records, with their concepts."""
    return [(statistic, concept) for statistic in STATISTICS
            if statistic.region == region and (concept := _concept(statistic, size_unit)) is not None]


def _measurements(stats: HemisphereStats, region: str) -> list[hd.sr.Measurement]:
    """The SR measurements of a region: its recorded statistics, in their declared order; DicomError for a value
    that is not a finite number."""
    if stats.size_unit not in SIZE_CODES:
        raise DicomError(f"sizes need size_unit {' or '.join(SIZE_CODES)}, got {stats.size_unit!r}")
    measurements = []
    for statistic, concept in _recorded(region, stats.size_unit):
        value = float(getattr(stats, statistic.key))
        if not np.isfinite(value):
            raise DicomError(f"statistic {statistic.key} is not a finite number ({value})")
        unit = stats.size_unit if statistic.unit == SIZE_UNIT else statistic.unit
        measurements.append(_measurement(concept, value, unit,
                                         Code(*statistic.derivation) if statistic.derivation else None))
    return measurements


def _measurement_report(nm: Dataset, seg: Dataset, masks: list[np.ndarray], tracking: dict[str, str],
                        result: GenerationResult, study: SyntheticStudy) -> Dataset:
    """TID 1500 SR: per hemisphere a TID 1411 group (its SEG segment) and a TID 1410 group (its outline on the NM
    frame, which viewers such as OHIF draw), both with the hemisphere's tracking UID, its statistics and the
    territory and severity of its synthetic defect (``_defect_items``); a TID 1410 group for the brain (MC, LR, AI,
    size) with the outline of both hemispheres. (A group without coordinates, such as a TID 1501 image group, stops
    OHIF 3.10 from loading the SR at all: it expects every NUM there to hold coordinates.)"""
    algorithm = hd.sr.AlgorithmIdentification(name="spectgan hemisphere statistics", version=__version__)
    nm_frame = dict(referenced_sop_class_uid=nm.SOPClassUID, referenced_sop_instance_uid=nm.SOPInstanceUID,
                    referenced_frame_numbers=[1])
    groups: list = []
    centroids = [np.argwhere(mask).mean(axis=0)[::-1] for mask in masks]  # (column, row) of each hemisphere
    for number, (side, mask) in enumerate(zip(SIDES, masks), start=1):
        evaluations, defect = _defect_items(result.condition.lesion(Side(side)))
        hemisphere = dict(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking[side], identifier=f"{side} hemisphere"),
            finding_type=codes.SCT.CerebralHemisphere,
            finding_sites=[hd.sr.FindingSite(codes.SCT.CerebralHemisphere, laterality=LATERALITY[side])],
            algorithm_id=algorithm, qualitative_evaluations=evaluations,
            measurements=_measurements(result.stats, side) + defect)
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
                source_images=[hd.sr.SourceImageForSegmentation(**nm_frame)]), **hemisphere))
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,  # starting on its outer side (label apart)
                graphic_data=outline(mask, start_toward=centroids[number - 1] - centroids[2 - number]),
                source_image=hd.sr.SourceImageForRegion(**nm_frame)), **hemisphere))
    groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="brain"),
        referenced_region=hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=outline(masks[0] | masks[1], (0.0, 1.0)),
            source_image=hd.sr.SourceImageForRegion(**nm_frame)),
        finding_type=codes.SCT.Brain, finding_sites=[hd.sr.FindingSite(codes.SCT.Brain)], algorithm_id=algorithm,
        measurements=_measurements(result.stats, "brain")))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=MANUFACTURER, model_name=result.model.name))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.SPECTBrain, imaging_measurements=groups)
    sr = hd.sr.ComprehensiveSR(
        evidence=[nm, seg], content=report, series_instance_uid=generate_uid(),
        series_number=study.next_series_number(), sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True)
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = "spectgan hemisphere statistics and synthetic defects"
    scheme.CodingSchemeResponsibleOrganization = "spectgan"
    sr.CodingSchemeIdentificationSequence = [scheme]
    _mark_synthetic(sr, _series_description(result, "stats"), study)
    return _with_file_meta(sr)


def _evidence(sr: Dataset) -> set[str]:
    """SOP Instance UIDs an SR names as its evidence."""
    return {instance.ReferencedSOPInstanceUID
            for study in sr.get("CurrentRequestedProcedureEvidenceSequence", [])
            for series in study.ReferencedSeriesSequence for instance in series.ReferencedSOPSequence}


def _is(concept, code: Code) -> bool:
    return concept is not None and (concept.value, concept.scheme_designator) == (code.value, code.scheme_designator)


def _stats_from_report(sr: Dataset) -> dict:
    """The statistics ``encode_scan`` put into a TID 1500 SR (those ``STATISTICS`` declares with a concept, and the
    size unit), by their keys."""
    report = hd.sr.MeasurementReport.from_sequence([sr])
    stats: dict = {}

    def collect(measurements, region: str) -> None:
        for measurement in measurements:
            for size_unit in SIZE_CODES:
                for statistic, concept in _recorded(region, size_unit):
                    if _is(measurement.name, concept) and (statistic.derivation is None or _is(
                            measurement.derivation, Code(*statistic.derivation))):
                        stats[statistic.key] = measurement.value
                        if statistic.unit == SIZE_UNIT:
                            stats["size_unit"] = size_unit

    for group in report.get_volumetric_roi_measurement_groups():
        laterality = group.finding_sites[0].laterality if group.finding_sites else None
        for side in SIDES:
            if _is(laterality, LATERALITY[side]):
                collect(group.get_measurements(), side)
    for group in report.get_planar_roi_measurement_groups(finding_type=codes.SCT.Brain):
        collect(group.get_measurements(), "brain")
    missing = [statistic.key for statistic in STATISTICS if statistic.code and statistic.key not in stats]
    if missing:
        raise DicomError(f"SR {sr.SOPInstanceUID} lacks the statistics {', '.join(missing)}")
    return stats
