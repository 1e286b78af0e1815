"""DICOM test data made from volumes whose geometry is known: an NM RECON TOMO multi-frame object and series of
single-frame slices (PT, CT), each with made-up identifying values in every identifying header field.

Geometry follows DICOM: Image Orientation (Patient) holds the row direction (the direction of increasing column
index, the image's x axis) and the column direction (its y axis); a volume's slices advance along row x column. A
volume stored with a left-handed direction matrix (an x flip) is therefore written with its slices in reverse
order; nothing is flipped in the plane, so the physical content is the same.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (CTImageStorage, ExplicitVRLittleEndian, NuclearMedicineImageStorage,
                         PositronEmissionTomographyImageStorage)
from pydicom.valuerep import DSfloat

UID_ROOT = "1.2.826.0.1.3680043.9.7281"  # made-up root of every UID below
SOP_CLASSES = {"NM": NuclearMedicineImageStorage, "PT": PositronEmissionTomographyImageStorage,
               "CT": CTImageStorage}
SLICE_VECTOR_TAG = 0x00540080


@dataclass(frozen=True)
class Identity:
    """Made-up identifying values of one source study (every field the import must keep out of a cohort)."""

    number: int

    @property
    def patient_name(self) -> str:
        return f"Quarzhuber^Ottilie{'ABCDEFGHIJKLMNOP'[self.number]}"

    @property
    def patient_id(self) -> str:
        return f"PID{7340021 + self.number}"

    @property
    def birth_date(self) -> str:
        return f"19{41 + self.number}0612"

    @property
    def study_uid(self) -> str:
        return f"{UID_ROOT}.1.{self.number + 101}"

    @property
    def series_uid(self) -> str:
        return f"{UID_ROOT}.2.{self.number + 101}"

    @property
    def frame_of_reference_uid(self) -> str:
        return f"{UID_ROOT}.4.{self.number + 101}"

    def sop_uid(self, index: int) -> str:
        return f"{UID_ROOT}.3.{self.number + 101}.{index + 1}"

    @property
    def accession_number(self) -> str:
        return f"ACC{58120 + self.number}"

    @property
    def date(self) -> str:
        return f"201903{10 + self.number}"

    @property
    def institution(self) -> str:
        return f"Klinikum Testhausen {self.number}"

    @property
    def device_serial(self) -> str:
        return f"SN{9931 + self.number}XQ"

    def searchable(self, sop_instances: int) -> list[str]:
        """Every value (and the parts a writer might split it into) that must not appear in a cohort."""
        family, given = self.patient_name.split("^")
        date_iso = f"{self.date[:4]}-{self.date[4:6]}-{self.date[6:]}"
        birth_iso = f"{self.birth_date[:4]}-{self.birth_date[4:6]}-{self.birth_date[6:]}"
        return [self.patient_name, family, given, self.patient_id, self.birth_date, birth_iso, self.study_uid,
                self.series_uid, self.frame_of_reference_uid, self.accession_number, self.date, date_iso,
                self.institution, self.device_serial] + [self.sop_uid(i) for i in range(sop_instances)]


def quantize(values: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative counts as uint16 and the Rescale Slope that restores them."""
    peak = float(np.max(values, initial=0.0))
    slope = float(DSfloat(peak / 65535.0, auto_format=True)) if peak > 0 else 1.0
    return np.clip(np.rint(values / slope), 0, 65535).astype(np.uint16), slope


def _ds(value: float) -> DSfloat:
    return DSfloat(float(value), auto_format=True)


def _identified(identity: Identity, modality: str, sop_index: int, series_uid: str | None = None) -> Dataset:
    """A dataset with the patient, study, series and equipment modules filled with the identity's values."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SOP_CLASSES[modality], identity.sop_uid(sop_index)
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (identity.patient_name, identity.patient_id,
                                                                        identity.birth_date, "F")
    ds.StudyInstanceUID, ds.StudyID, ds.AccessionNumber = identity.study_uid, "1", identity.accession_number
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = identity.date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101500"
    ds.ReferringPhysicianName = "Hippokrates^Doktor"
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = modality, series_uid or identity.series_uid, 1
    ds.InstitutionName, ds.InstitutionAddress = identity.institution, "Hauptstrasse 1, Testhausen"
    ds.Manufacturer, ds.StationName, ds.DeviceSerialNumber = "TestVendor", "NMSTATION", identity.device_serial
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = identity.frame_of_reference_uid, ""
    ds.InstanceNumber = sop_index + 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def _file_bytes(ds: Dataset) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.fix_meta_info()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, write_like_original=False)
    return buffer.getvalue()


def _stack_along_normal(volume: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The volume's [z, y, x] counts, origin and direction with slices ordered along row x column (DICOM's
    right-handed slice order): a left-handed volume is returned with its slices reversed."""
    values = sitk.GetArrayFromImage(volume).astype(np.float64)
    direction = np.asarray(volume.GetDirection()).reshape(3, 3)
    origin = np.asarray(volume.GetOrigin())
    if np.dot(np.cross(direction[:, 0], direction[:, 1]), direction[:, 2]) < 0:
        last = volume.GetSize()[2] - 1
        origin = origin + last * volume.GetSpacing()[2] * direction[:, 2]
        direction = direction.copy()
        direction[:, 2] *= -1
        values = values[::-1]
    return values, origin, direction


def nm_multiframe(volume: sitk.Image, identity: Identity, negative_spacing: bool = False,
                  body_part: str = "BRAIN") -> bytes:
    """An NM Image (RECON TOMO multi-frame) file of a volume: the plane in the Detector Information Sequence, the
    slice step in Spacing Between Slices. ``negative_spacing`` writes the slices from the other end with a negative
    Spacing Between Slices (slices advancing against row x column), as some SPECT systems do. ``body_part``: Body
    Part Examined."""
    values, origin, direction = _stack_along_normal(volume)
    spacing_x, spacing_y, spacing_z = volume.GetSpacing()
    if negative_spacing:
        origin = origin + (len(values) - 1) * spacing_z * direction[:, 2]
        values, spacing_z = values[::-1], -spacing_z
    stored, slope = quantize(values)
    ds = _identified(identity, "NM", 0)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    ds.BodyPartExamined = body_part
    ds.Laterality, ds.CountsAccumulated = None, None
    ds.PatientOrientationCodeSequence, ds.PatientGantryRelationshipCodeSequence = DicomSequence(), DicomSequence()
    ds.EnergyWindowInformationSequence, ds.RadiopharmaceuticalInformationSequence = DicomSequence(), DicomSequence()
    ds.RotationInformationSequence = DicomSequence()
    ds.NumberOfEnergyWindows, ds.NumberOfDetectors, ds.NumberOfRotations = 1, 1, 1
    ds.NumberOfFrames, ds.FrameIncrementPointer = len(values), SLICE_VECTOR_TAG
    ds.SliceVector, ds.NumberOfSlices = list(range(1, len(values) + 1)), len(values)
    detector = Dataset()
    detector.ImagePositionPatient = [_ds(v) for v in origin]
    detector.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    detector.CollimatorType, detector.FocalDistance = "PARA", None
    ds.DetectorInformationSequence = DicomSequence([detector])
    ds.SpacingBetweenSlices, ds.SliceThickness = _ds(spacing_z), _ds(abs(spacing_z))
    ds.Rows, ds.Columns = stored.shape[1:]
    ds.PixelSpacing = [_ds(spacing_y), _ds(spacing_x)]
    ds.RescaleIntercept, ds.RescaleSlope = 0, _ds(slope)
    ds.PixelData = stored.tobytes()
    return _file_bytes(ds)


def single_frame_series(volume: sitk.Image, identity: Identity, modality: str = "PT") -> list[bytes]:
    """One single-frame file per slice (top-level plane; each slice with its own Rescale Slope), in shuffled
    order so that a reader must sort them by position."""
    values, origin, direction = _stack_along_normal(volume)
    spacing_x, spacing_y, spacing_z = volume.GetSpacing()
    files = []
    for index in np.random.default_rng(identity.number).permutation(len(values)):
        stored, slope = quantize(values[index])
        ds = _identified(identity, modality, int(index))
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.ImagePositionPatient = [_ds(v) for v in origin + index * spacing_z * direction[:, 2]]
        ds.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.SliceThickness = _ds(spacing_z)
        ds.Rows, ds.Columns = stored.shape
        ds.PixelSpacing = [_ds(spacing_y), _ds(spacing_x)]
        ds.RescaleIntercept, ds.RescaleSlope = 0, _ds(slope)
        ds.PixelData = stored.tobytes()
        files.append(_file_bytes(ds))
    return files


def write_files(folder: Path, files: list[bytes], prefix: str = "IM") -> list[Path]:
    """Write file contents as ``<prefix>_<n>.dcm`` in ``folder``; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, data in enumerate(files):
        path = folder / f"{prefix}_{number:03d}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths
