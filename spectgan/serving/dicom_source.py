"""The DICOM identity of a reference study: what a result made from it (``base=reference``) references and, on
request, is filed with (``spectgan.results.SourceSeries``, ``SourcePatient``).

A reference reaches the server as a file: a PACS series fetched through the DICOMweb datastore and converted to
NIfTI (``monai_app/lib/datastore.py`` writes the series' identity beside it, ``<series UID>.dicom.json``), a DICOM
file (uploaded, or in a folder datastore: its own header) or a NIfTI (no DICOM identity). ``source_of`` finds it
for the file the server reads. The identity is read from the headers only (pydicom, no pixels).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pydicom
from pydicom.dataset import Dataset

from spectgan.files import NIFTI_SUFFIX, atomic_write_bytes
from spectgan.results import SourcePatient, SourceSeries

SIDECAR_SUFFIX = ".dicom.json"  # beside a converted series: <stem>.dicom.json
DICOM_SUFFIX = ".dcm"


@dataclass(frozen=True)
class DicomSource:
    """A reference study's DICOM identity: its series (UIDs, instances) and its patient and study."""

    series: SourceSeries
    patient: SourcePatient

    def to_dict(self) -> dict:
        return {"series": self.series.to_dict(), "patient": self.patient.to_dict()}

    @classmethod
    def from_dict(cls, values: dict) -> "DicomSource":
        return cls(SourceSeries.from_dict(values["series"]), SourcePatient.from_dict(values["patient"]))


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    return "" if value is None else str(value)


def dicom_source(datasets: Sequence[Dataset]) -> DicomSource:
    """The identity of one series from its instances' headers; ValueError when they are not one series of one
    study."""
    series = {(_text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID")) for ds in datasets}
    if len(series) != 1 or not all(next(iter(series))):
        raise ValueError(f"expected the instances of one series with its study and series UIDs, found {len(series)}"
                         " series")
    first = datasets[0]
    instances = tuple(sorted((_text(ds, "SOPClassUID"), _text(ds, "SOPInstanceUID")) for ds in datasets))
    patient = SourcePatient(
        **{name: _text(first, keyword) for name, keyword in (
            ("patient_id", "PatientID"), ("patient_name", "PatientName"), ("patient_birth_date", "PatientBirthDate"),
            ("patient_sex", "PatientSex"), ("study_id", "StudyID"), ("accession_number", "AccessionNumber"),
            ("study_date", "StudyDate"), ("study_time", "StudyTime"), ("study_description", "StudyDescription"))})
    return DicomSource(SourceSeries(*next(iter(series)), instances, _text(first, "FrameOfReferenceUID") or None),
                       patient)


def sidecar_path(image_path: str | Path) -> Path:
    """``<folder>/<stem>.dicom.json`` beside ``<folder>/<stem>.nii.gz``."""
    path = Path(image_path)
    stem = path.name[:-len(NIFTI_SUFFIX)] if path.name.endswith(NIFTI_SUFFIX) else path.stem
    return path.with_name(stem + SIDECAR_SUFFIX)


def write_sidecar(files: Sequence[str | Path], image_path: str | Path) -> Path:
    """Keep the identity of the series in ``files`` beside the NIfTI ``image_path`` it was converted to."""
    source = dicom_source([pydicom.dcmread(str(path), stop_before_pixels=True) for path in files])
    path = sidecar_path(image_path)
    atomic_write_bytes(path, json.dumps(source.to_dict(), sort_keys=True).encode())
    return path


def source_of(image_path: str | Path) -> DicomSource | None:
    """The DICOM identity of the reference the server reads from ``image_path``: a DICOM file's own header, or the
    sidecar beside a converted series; None for a reference without one (a NIfTI)."""
    path = Path(image_path)
    if path.name.lower().endswith(DICOM_SUFFIX) or (path.is_file() and _has_preamble(path)):
        return dicom_source([pydicom.dcmread(str(path), stop_before_pixels=True)])
    sidecar = sidecar_path(path)
    return DicomSource.from_dict(json.loads(sidecar.read_text())) if sidecar.is_file() else None


def _has_preamble(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(132)[128:132] == b"DICM"
