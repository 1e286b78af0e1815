"""``spectgan import``: real brain perfusion SPECT (DICOM / NIfTI) plus a labels.csv -> a de-identified cohort in the
format of ``spectgan.cohorts.format``, ready for ``spectgan train``.

Steps: find the studies in SRC (single-frame DICOM slices grouped by SeriesInstanceUID, each multi-frame DICOM
object, each NIfTI volume), match them to labels.csv, split them by patient, then for each study: read the volume
with its full geometry, register it to the perfusion template (``spectgan.geometry.registration``), resample the CER, BG and COR
planes into canonical slabs (``spectgan.geometry.template``), measure them (``spectgan.geometry.roi``) and write the slices and a QC
picture. Last, the ONE count scale is computed on the train split and the manifest, the report and cohort.json are
written.

De-identification: everything written to the cohort and the console names a study by its generated id
(``imp0001``) and a labels.csv row by its line number. Patient names and ids, dates, UIDs, institutions, device serial
numbers and source paths never leave this module, except into the ``--key`` file, which must lie outside the
cohort. Messages of third-party readers may quote header values or paths, so they are replaced by our own reasons,
and reader warnings are silenced while sources are read.

Resuming: the plan (which study is which id, its label and split; nothing identifying) is ``import/plan.json``;
each processed study leaves ``import/<id>.json`` after its slices and QC picture are written. A rerun with the same
sources, labels and options skips every study that has its marker; anything else is refused.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixel_data_handlers.util import apply_modality_lut
from tqdm import tqdm

from spectgan import __version__
from spectgan.files import atomic_write_bytes, atomic_write_image
from spectgan.lesions import parse_lesions
from spectgan.cohorts.format import (SPLITS, CohortRecord, compute_count_scale, load_split, read_cohort_info,
                                     write_cohort_info, write_manifest)
from spectgan.conditions import Condition, Level, Pattern, Side, parse_condition, parse_levels
from spectgan.errors import InvalidImageError, SpectganError
from spectgan.figures import pyplot, save_figure
from spectgan.geometry.registration import (MIN_LEVEL_COVERAGE, SLAB_PLANES, Registration, extract_level, level_coverage,
                                            register_to_template, template_brain)
from spectgan.geometry.roi import TEMPLATE_MIDLINE, HemisphereStats, hemisphere_masks, hemisphere_stats
from spectgan.geometry.template import (MATRICES, SLAB_THICKNESS_MM, canonical_array, canonical_image,
                               canonical_origin, pixel_spacing)

FORMAT_VERSION = "1"
DEFAULT_TEST_FRACTION = 0.2
NUCLEAR_MEDICINE_MODALITIES = ("NM", "PT")
NM_VOLUME_TYPE = "RECON TOMO"  # NM Image Type value 3 of a reconstructed volume (others are projections, planar)
SLICE_VECTOR_TAG = 0x00540080  # the NM frame index of a reconstructed volume's slices
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
MIN_BRAIN_EXTENT_MM = 100.0  # a field of view narrower than this along any axis cannot hold a brain
HEAD_BODY_PARTS = ("BRAIN", "HEAD", "SKULL", "CEREB", "NEURO")  # words of a Body Part Examined at the head
ORIENTATION_TOLERANCE = 1e-3
SPACING_TOLERANCE = 0.01  # relative deviation of slice spacings still taken as even
LABEL_COLUMNS = ("study", "pattern", "side", "patient", "split", "levels")
REQUIRED_LABEL_COLUMNS = ("study", "pattern")
REPORT_COLUMNS = ("study", "status", "reason", "split", "pattern", "side", "levels", "registration_correlation",
                  "registration_metric") + tuple(f"{stat}_{level.value}" for level in Level for stat in ("MC", "LR"))
KEY_COLUMNS = ("study", "source_study_instance_uid", "source_series_instance_uid", "source_path")
IMPORTED, SKIPPED = "imported", "skipped"
STATE_DIR, QC_DIR, REPORT_NAME = "import", "qc", "import_report.csv"  # in the cohort folder

MULTIFRAME, SLICES, NIFTI, UNREADABLE = "dicom multi-frame", "dicom slices", "nifti", "unreadable"
HEADER_VALUE_ERRORS = (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError)

# reasons a study is skipped
INVALID_HEADER = "invalid values in the DICOM header (geometry, frame count or image type)"
NO_GEOMETRY = "no image geometry (Image Position / Orientation (Patient) and Pixel Spacing are needed)"
SINGLE_FRAME = "a single 2D frame, not a 3D volume"
UNREADABLE_DICOM = "unreadable DICOM file (damaged, cut short or not DICOM)"
UNREADABLE_PIXELS = "truncated or unreadable pixel data"


# ------------------------------------------------------------------------------------------------------- labels

@dataclass(frozen=True)
class LabelRow:
    """One labels.csv row. ``line`` is its line in the file (the header is line 1); ``problem`` says why the row
    cannot be used (None when it can)."""

    line: int
    study: str
    pattern: Pattern | None = None
    side: Side | None = None
    patient: str = ""
    split: str = ""
    levels: tuple[Level, ...] = ()
    problem: str | None = None

    @property
    def where(self) -> str:
        return f"labels.csv row {self.line}"


def _parse_label(line: int, values: dict[str, str]) -> LabelRow:
    study = values.get("study", "")
    if not study:
        return LabelRow(line, study, problem="the study column is empty")
    try:
        condition = parse_condition(Level.BG, values.get("pattern", ""), values.get("side") or None)
        levels = parse_levels([name for name in re.split(r"[\s,;|]+", values.get("levels", "")) if name] or None)
        split = values.get("split", "").lower()
        if split not in ("",) + SPLITS:
            raise ValueError(f"invalid split {values['split']!r}; allowed: {', '.join(SPLITS)} or empty")
    except ValueError as error:
        return LabelRow(line, study, problem=str(error))
    return LabelRow(line, study, condition.pattern, condition.side, values.get("patient", ""), split, levels)


def read_labels(path: str | Path) -> list[LabelRow]:
    """Parse labels.csv: ``study`` and ``pattern`` required; ``side`` (unilateral only), ``patient``, ``split``
    (train | test) and ``levels`` (e.g. ``BG,COR``; default all) optional. Rows with unusable values come back with
    their ``problem``; a file without the required columns is an error."""
    path = Path(path)
    if not path.is_file():
        raise SpectganError(f"labels file {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            table = list(csv.reader(stream))
    except UnicodeDecodeError:
        raise SpectganError(f"{path} is not UTF-8 text; save it as CSV (UTF-8)") from None
    header = [name.strip().lower() for name in (table[0] if table else [])]
    missing = [column for column in REQUIRED_LABEL_COLUMNS if column not in header]
    if missing:
        raise SpectganError(f"{path} lacks the column(s) {', '.join(missing)}; expected a header with "
                            f"{', '.join(LABEL_COLUMNS)} (study and pattern required)")
    rows = []
    for line, cells in enumerate(table[1:], start=2):
        values = {name: cell.strip() for name, cell in zip(header, cells) if name in LABEL_COLUMNS}
        if any(values.values()):
            rows.append(_parse_label(line, values))
    return rows


# ------------------------------------------------------------------------------------------------ source studies

@dataclass(frozen=True)
class VolumeGeometry:
    """Where a DICOM volume's voxels are (LPS mm): the first slice's top-left pixel centre, the row and column
    directions of Image Orientation (Patient), the step from one slice to the next, the in-plane pixel spacing
    (along rows, along columns) as (x, y), and the size (columns, rows, slices)."""

    origin: tuple[float, float, float]
    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    slice_step: tuple[float, float, float]
    pixel_spacing: tuple[float, float]
    size: tuple[int, int, int]

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        return (self.size[0] * self.pixel_spacing[0], self.size[1] * self.pixel_spacing[1],
                self.size[2] * float(np.linalg.norm(self.slice_step)))

    def image(self, values: np.ndarray) -> sitk.Image:
        """A float32 SimpleITK image of [slice, row, column] values with this geometry."""
        image = sitk.GetImageFromArray(np.asarray(values, dtype=np.float32))
        step = np.asarray(self.slice_step)
        spacing_z = float(np.linalg.norm(step))
        direction = np.column_stack([self.row_direction, self.column_direction, step / spacing_z])
        image.SetSpacing((*self.pixel_spacing, spacing_z))
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(float(v) for v in direction.ravel()))
        return image


@dataclass
class SourceStudy:
    """One importable unit of SRC: a series of single-frame DICOM slices, one multi-frame DICOM object, one NIfTI
    volume, or a file that could not be read. Its identifying values stay in memory (and in the --key file)."""

    kind: str
    files: list[Path]
    source_dir: Path
    modality: str = ""
    study_uid: str = ""
    series_uid: str = ""
    patient_id: str = ""
    problem: str | None = None  # why it cannot be used, known before its pixels are read
    geometry: VolumeGeometry | None = None

    def relative(self, path: Path) -> str:
        return path.relative_to(self.source_dir).as_posix()

    @property
    def source_path(self) -> str:
        """The file, or the folder of a slice series, relative to SRC (for the --key file)."""
        folders = {path.parent for path in self.files}
        if self.kind == SLICES and len(self.files) > 1 and len(folders) == 1:
            return self.relative(folders.pop())
        return self.relative(self.files[0])

    def names(self) -> set[str]:
        """Values a labels.csv ``study`` may name this unit by: StudyInstanceUID, SeriesInstanceUID, PatientID, a
        file's name (with or without its suffix) or relative path, or the relative path of its folder."""
        names = {self.study_uid, self.series_uid, self.patient_id}
        for path in self.files:
            names |= {path.name, _strip_suffix(path.name), self.relative(path)}
            if path.parent != self.source_dir:
                names.add(self.relative(path.parent))
        return names - {""}

    def sort_key(self) -> tuple[str, str, str]:
        return self.study_uid, self.series_uid, self.relative(self.files[0])

    def summary(self) -> dict:
        """A description with nothing identifying in it (for the plan)."""
        return {"kind": self.kind, "modality": self.modality, "files": len(self.files)}


def _strip_suffix(name: str) -> str:
    for suffix in NIFTI_SUFFIXES + DICOM_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


@contextlib.contextmanager
def quiet_readers() -> Iterator[None]:
    """Silence pydicom's and ITK's warnings while sources are read: they quote header values and file paths."""
    logger = logging.getLogger("pydicom")
    level, itk_warnings = logger.level, sitk.ProcessObject.GetGlobalWarningDisplay()
    logger.setLevel(logging.CRITICAL + 1)
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
        sitk.ProcessObject.SetGlobalWarningDisplay(itk_warnings)


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _may_be_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as stream:
            return stream.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _source_files(source_dir: Path, excluded: Sequence[Path]) -> Iterator[Path]:
    """Every file under SRC in a fixed order, hidden files and the excluded folders (the cohort) left out."""
    excluded = {path.resolve() for path in excluded}
    for folder, subfolders, files in os.walk(source_dir):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith(".")
                               and (Path(folder) / name).resolve() not in excluded)
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def _read_header(path: Path) -> Dataset | None:
    """The header of a DICOM image file; None when it is not one that pydicom can parse."""
    try:
        header = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
        header.SOPClassUID, header.Modality  # parse them now: a damaged file fails here
    except Exception:  # pydicom raises many types for damaged or foreign files; any of them means "unreadable"
        return None
    return header


def _frames(header: Dataset) -> int:
    """Number of Frames (1 when absent or malformed: the unit's checks then say what is wrong)."""
    try:
        return int(header.get("NumberOfFrames") or 1)
    except HEADER_VALUE_ERRORS:
        return 1


def _text(header: Dataset, keyword: str) -> str:
    return str(header.get(keyword, "") or "").strip()


def _plane(header: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(position, row direction, column direction) of a slice or of an NM object's first frame; None if absent."""
    sources = [header] + list(header.get("DetectorInformationSequence", []))[:1]
    for source in sources:
        position, orientation = source.get("ImagePositionPatient"), source.get("ImageOrientationPatient")
        if position is not None and orientation is not None and len(position) == 3 and len(orientation) == 6:
            row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
            row /= np.linalg.norm(row)
            column -= np.dot(column, row) * row
            return np.asarray(position, float), row, column / np.linalg.norm(column)
    return None


def _pixel_spacing(header: Dataset) -> tuple[float, float] | None:
    """(spacing along a row, spacing along a column) in mm, i.e. (x, y); None if absent."""
    spacing = header.get("PixelSpacing")
    if spacing is None or len(spacing) != 2 or min(float(v) for v in spacing) <= 0:
        return None
    return float(spacing[1]), float(spacing[0])


def _modality_problem(header: Dataset) -> str | None:
    modality = _text(header, "Modality") or "(none)"
    if modality not in NUCLEAR_MEDICINE_MODALITIES:
        return f"modality {modality} is not nuclear medicine ({' or '.join(NUCLEAR_MEDICINE_MODALITIES)})"
    image_type = list(header.get("ImageType", []))
    if modality == "NM" and len(image_type) > 2 and image_type[2] != NM_VOLUME_TYPE:
        return f"NM image type {image_type[2]} is not one reconstructed volume ({NM_VOLUME_TYPE})"
    return None


def _multiframe_geometry(header: Dataset) -> tuple[VolumeGeometry | None, str | None]:
    """Geometry of an NM (or classic) multi-frame volume: the first frame's plane from the Detector Information
    Sequence, slices advancing by Spacing Between Slices along row x column (a negative spacing: against it)."""
    if "PerFrameFunctionalGroupsSequence" in header:
        return None, "enhanced multi-frame objects are not supported; export the volume as NM or single-frame slices"
    pointers = header.get("FrameIncrementPointer", SLICE_VECTOR_TAG)
    pointers = set(pointers) if isinstance(pointers, MultiValue) else {pointers}
    others = [keyword_for_tag(tag) or str(tag) for tag in pointers if tag != SLICE_VECTOR_TAG]
    if others and _text(header, "Modality") == "NM":
        return None, f"frames are indexed by {', '.join(others)}: not one reconstructed volume"
    plane, spacing = _plane(header), _pixel_spacing(header)
    step = float(header.get("SpacingBetweenSlices") or header.get("SliceThickness") or 0.0)
    if plane is None or spacing is None or step == 0.0:
        return None, NO_GEOMETRY + " (and Spacing Between Slices)"
    position, row, column = plane
    size = (int(header.Columns), int(header.Rows), _frames(header))
    return VolumeGeometry(tuple(position), tuple(row), tuple(column), tuple(step * np.cross(row, column)),
                          spacing, size), None


def _stack_geometry(headers: list[Dataset]) -> tuple[list[int] | None, VolumeGeometry | None, str | None]:
    """Order (indices along the slice normal) and geometry of a series of single-frame slices, or why it is not one
    evenly spaced volume."""
    planes, spacings = [_plane(h) for h in headers], [_pixel_spacing(h) for h in headers]
    if any(plane is None for plane in planes) or any(spacing is None for spacing in spacings):
        return None, None, NO_GEOMETRY
    shapes = {(int(h.get("Rows", 0)), int(h.get("Columns", 0))) for h in headers}
    _, row, column = planes[0]
    if len(shapes) > 1 or len(set(spacings)) > 1 or any(
            not np.allclose(plane[1:], (row, column), atol=ORIENTATION_TOLERANCE) for plane in planes):
        return None, None, "the slices differ in size, pixel spacing or orientation: not one volume"
    normal = np.cross(row, column)
    positions = np.asarray([plane[0] for plane in planes])
    order = [int(i) for i in np.argsort(positions @ normal, kind="stable")]
    positions = positions[order]
    steps = np.diff(positions @ normal)
    if np.any(steps < 1e-3):
        return None, None, "several slices lie at the same position: not one volume"
    if np.ptp(steps) > SPACING_TOLERANCE * np.median(steps):
        return None, None, (f"the slices are unevenly spaced ({steps.min():.2f} to {steps.max():.2f} mm): "
                            "missing slices or several volumes in one series")
    offsets = positions - positions[0] - np.outer((positions - positions[0]) @ normal, normal)
    if np.abs(offsets).max() > 0.1 * np.median(steps):
        return None, None, "the slices are shifted in-plane (a tilted or sheared stack)"
    step = float(np.mean(steps)) * normal
    rows, columns = shapes.pop()
    return order, VolumeGeometry(tuple(positions[0]), tuple(row), tuple(column), tuple(step), spacings[0],
                                 (columns, rows, len(headers))), None


def _not_a_brain(extent_mm: Sequence[float], body_part: str = "") -> str | None:
    """Why a volume cannot be a brain study, from its header alone: another body part, or too small a field of
    view. None when it may be one (the registration's quality threshold decides)."""
    if body_part and not any(word in body_part.upper() for word in HEAD_BODY_PARTS):
        return f"not a brain: the body part examined is {body_part}"
    if min(extent_mm) < MIN_BRAIN_EXTENT_MM:
        return (f"not a brain: the field of view ({' x '.join(f'{e:.0f}' for e in extent_mm)} mm) is too small "
                "to hold one")
    return None


def _dicom_study(kind: str, files: list[Path], headers: list[Dataset], source_dir: Path) -> SourceStudy:
    """A DICOM unit with its identifying values, geometry and (if any) the reason it cannot be used."""
    first = headers[0]
    study = SourceStudy(kind, files, source_dir, modality=_text(first, "Modality"),
                        study_uid=_text(first, "StudyInstanceUID"), series_uid=_text(first, "SeriesInstanceUID"),
                        patient_id=_text(first, "PatientID"))
    try:
        study.problem = _modality_problem(first)
        if study.problem:
            return study
        if kind == MULTIFRAME:
            study.geometry, study.problem = _multiframe_geometry(first)
        elif len(files) == 1:
            study.problem = SINGLE_FRAME
        else:
            order, study.geometry, study.problem = _stack_geometry(headers)
            if order is not None:
                study.files = [files[i] for i in order]
        if study.geometry is not None:
            study.problem = _not_a_brain(study.geometry.extent_mm, _text(first, "BodyPartExamined"))
    except HEADER_VALUE_ERRORS:  # pydicom parses values lazily: a malformed one fails here
        study.problem = INVALID_HEADER
    return study


def _nifti_study(path: Path, source_dir: Path) -> SourceStudy:
    study = SourceStudy(NIFTI, [path], source_dir)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        study.problem = "unreadable NIfTI file"
        return study
    size = reader.GetSize()
    if reader.GetNumberOfComponents() != 1:
        study.problem = "the NIfTI image has several values per voxel (colour or vector), not counts"
    elif len(size) > 3 and any(n > 1 for n in size[3:]):
        study.problem = f"a {len(size)}D image (several volumes); give one 3D volume per file"
    elif len(size) < 3 or sum(n > 1 for n in size[:3]) < 3:
        study.problem = SINGLE_FRAME
    else:
        study.problem = _not_a_brain([n * s for n, s in zip(size, reader.GetSpacing())])
    return study


def find_studies(source_dir: str | Path, excluded: Sequence[Path] = ()) -> tuple[list[SourceStudy], int]:
    """The units of SRC in a fixed order, and how many files were neither DICOM nor NIfTI (ignored)."""
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise SpectganError(f"source {source_dir} is not a folder; give the folder that holds the DICOM and NIfTI "
                            "files (searched recursively)")
    studies, series, ignored = [], {}, 0
    with quiet_readers():
        for path in _source_files(source_dir, excluded):
            if _is_nifti(path):
                studies.append(_nifti_study(path, source_dir))
                continue
            if not _may_be_dicom(path):
                ignored += 1
                continue
            header = _read_header(path)
            if header is None:
                studies.append(SourceStudy(UNREADABLE, [path], source_dir, problem=UNREADABLE_DICOM))
            elif getattr(header, "file_meta", Dataset()).get("MediaStorageSOPClassUID") == DICOMDIR_SOP_CLASS:
                ignored += 1
            elif _frames(header) > 1:
                studies.append(_dicom_study(MULTIFRAME, [path], [header], source_dir))
            else:
                key = _text(header, "SeriesInstanceUID") or f"file:{path}"
                series.setdefault(key, []).append((path, header))
        for members in series.values():
            studies.append(_dicom_study(SLICES, [p for p, _ in members], [h for _, h in members], source_dir))
    return sorted(studies, key=SourceStudy.sort_key), ignored


def _dicom_values(path: Path, dataset: Dataset) -> np.ndarray:
    """Pixel values after the modality LUT (Rescale Slope / Intercept) as float [frames, rows, columns]. Compressed
    pixel data pydicom cannot decode here is decoded by GDCM (SimpleITK), which applies the same rescale."""
    try:
        stored = dataset.pixel_array
    except (NotImplementedError, RuntimeError):
        if not dataset.file_meta.TransferSyntaxUID.is_compressed:
            raise
        values = sitk.GetArrayFromImage(sitk.ReadImage(str(path), sitk.sitkFloat32))
    else:
        values = apply_modality_lut(stored, dataset).astype(np.float32)
    return values.reshape((-1,) + values.shape[-2:])


def read_volume(study: SourceStudy) -> sitk.Image:
    """The study's 3D volume in counts (float32) with its full geometry; InvalidImageError with a reason that
    quotes nothing from the source."""
    with quiet_readers():
        if study.kind == NIFTI:
            try:
                return sitk.Cast(sitk.ReadImage(str(study.files[0])), sitk.sitkFloat32)
            except RuntimeError:
                raise InvalidImageError("unreadable or truncated NIfTI file") from None
        try:
            values = np.concatenate([_dicom_values(path, pydicom.dcmread(str(path))) for path in study.files])
        except Exception:  # pydicom and GDCM raise many types for cut-short or damaged pixel data
            raise InvalidImageError(UNREADABLE_PIXELS) from None
    if values.shape[0] < 2:
        raise InvalidImageError(SINGLE_FRAME)
    return study.geometry.image(values)


# ----------------------------------------------------------------------------------------- labels, ids and splits

@dataclass
class PlannedStudy:
    """A unit with its generated id, its label, split and levels, or the reason it is skipped."""

    id: str
    source: SourceStudy
    label: LabelRow | None = None
    split: str = ""
    levels: tuple[Level, ...] = ()
    notes: list[str] = field(default_factory=list)
    problem: str | None = None

    def condition(self, level: Level) -> Condition:
        return parse_condition(level, self.label.pattern, self.label.side)

    def entry(self) -> dict:
        """The plan entry: nothing identifying, enough to recognise the same import when it is resumed."""
        label = self.label
        return {"id": self.id, **self.source.summary(), "label_row": label.line if label else None,
                "pattern": label.pattern.value if label and label.pattern else None,
                "side": label.side.value if label and label.side else None, "split": self.split,
                "levels": [level.value for level in self.levels], "notes": self.notes, "problem": self.problem}


def _match_labels(planned: list[PlannedStudy], labels: list[LabelRow]) -> list[dict]:
    """Attach each labels row to the study it names; set the problems of unlabelled, ambiguous or badly labelled
    studies. Returns the report entries of rows that name no study."""
    unmatched, claims, index = [], {}, {}
    for study in planned:
        for name in study.source.names():
            index.setdefault(name, []).append(study)
    for row in labels:
        matches = index.get(row.study, []) if row.study else []
        if not matches:
            reason = row.problem if not row.study else "no study in SRC matches its study value"
            unmatched.append({"study": "", "status": SKIPPED, "reason": f"{row.where}: {reason}"})
            continue
        usable = [study for study in matches if study.source.problem is None]
        for study in matches:
            claims.setdefault(study.id, []).append(row)
        if len(usable) > 1:
            for study in usable:
                study.problem = (f"{row.where} matches {len(usable)} volumes; name one by its SeriesInstanceUID or "
                                 "file name")
    for study in planned:
        rows = claims.get(study.id, [])
        study.label = rows[0] if len(rows) == 1 else None
        study.problem = study.source.problem or study.problem or _label_problem(rows)
    return unmatched


def _label_problem(rows: list[LabelRow]) -> str | None:
    """Why the labels.csv rows naming a study do not give it a label (None when they do)."""
    if not rows:
        return "no label: no labels.csv row names this study"
    if len(rows) > 1:
        return f"named by several labels.csv rows ({', '.join(str(row.line) for row in rows)}): one row per study"
    if rows[0].problem:
        return f"invalid label ({rows[0].where}): {rows[0].problem}"
    return None


def _choose_levels(study: PlannedStudy) -> None:
    """The labelled levels whose condition exists; a bilateral study loses CER (no such condition)."""
    levels = []
    for level in study.label.levels:
        try:
            study.condition(level)
            levels.append(level)
        except ValueError:
            study.notes.append(f"{study.label.pattern.value} at {level.value} is not a valid condition: "
                               f"{level.value} not imported")
    study.levels = tuple(levels)
    if not levels:
        study.problem = f"no valid condition at the labelled levels ({'; '.join(study.notes)})"


def _assign_splits(planned: list[PlannedStudy], seed: int, test_fraction: float) -> None:
    """Split by patient (labels ``patient``, else the DICOM PatientID, else the study alone): a seeded shuffle puts
    ``test_fraction`` of the patients in test; a ``split`` in labels.csv decides for its patient."""
    patients: dict[tuple[str, str], list[PlannedStudy]] = {}
    for study in planned:
        if study.problem is None:
            patient = study.label.patient or study.source.patient_id
            patients.setdefault(("patient", patient) if patient else ("study", study.id), []).append(study)
    forced = {}
    for key, studies in sorted(patients.items()):
        splits = {study.label.split for study in studies} - {""}
        if len(splits) > 1:
            for study in studies:
                study.problem = "its patient is labelled both train and test: a patient belongs to one split"
        elif splits:
            forced[key] = splits.pop()
    free = [key for key in sorted(patients) if key not in forced and all(s.problem is None for s in patients[key])]
    n_test = round(test_fraction * (len(free) + len(forced))) - sum(split == "test" for split in forced.values())
    n_test = max(0, min(n_test, len(free) - (0 if "train" in forced.values() else 1)))
    chosen = {free[i] for i in np.random.default_rng(seed).permutation(len(free))[:n_test]}
    for key, studies in patients.items():
        for study in studies:
            if study.problem is None:
                study.split = forced.get(key, "test" if key in chosen else "train")


def plan_import(studies: list[SourceStudy], labels: list[LabelRow], seed: int, test_fraction: float
                ) -> tuple[list[PlannedStudy], list[dict]]:
    """Generated ids (in the sorted order of the units), labels, levels and splits; and the unmatched label rows."""
    planned = [PlannedStudy(f"imp{number:04d}", study) for number, study in enumerate(studies, start=1)]
    unmatched = _match_labels(planned, labels)
    for study in planned:
        if study.problem is None:
            _choose_levels(study)
    _assign_splits(planned, seed, test_fraction)
    return planned, unmatched


# -------------------------------------------------------------------------------------------- slices and QC

def _level_stats(plane: np.ndarray, level: Level, matrix: int) -> HemisphereStats | None:
    """Hemisphere statistics of a canonical slice split at the template midline; None when it has no brain."""
    try:
        return hemisphere_stats(canonical_image(plane, level, matrix), TEMPLATE_MIDLINE)
    except InvalidImageError:
        return None


def draw_qc(png: Path, title: str, planes: dict[Level, np.ndarray], captions: dict[Level, str], matrix: int) -> None:
    """One study's QC picture: the three extracted planes (radiological display: the patient's right on the
    image's left, anterior at the top) with the template brain outline (cyan), the midline (dashed) and the
    hemisphere ROIs (green: left, orange: right), their MC and LR."""
    plt = pyplot()
    vmax = max(float(np.percentile(plane, 99.5)) for plane in planes.values()) or 1.0
    midline_column = (TEMPLATE_MIDLINE.point[0] - canonical_origin(Level.BG, matrix)[0]) / pixel_spacing(matrix)
    figure, axes = plt.subplots(1, len(planes), figsize=(3.1 * len(planes), 3.7), squeeze=False)
    for axis, (level, plane) in zip(axes[0], planes.items()):
        axis.imshow(plane, cmap="inferno", vmin=0.0, vmax=vmax)
        axis.contour(template_brain(level, matrix), levels=[0.5], colors="cyan", linewidths=0.9, linestyles="dotted")
        stats = _level_stats(plane, level, matrix)
        if stats is not None:
            _, left, right = (canonical_array(mask) for mask in
                              hemisphere_masks(canonical_image(plane, level, matrix), TEMPLATE_MIDLINE))
            axis.contour(left, levels=[0.5], colors="lime", linewidths=1.0)
            axis.contour(right, levels=[0.5], colors="orange", linewidths=1.0)
            axis.text(0.5, 0.02, f"MC {stats.mc:.4g}   LR {stats.lr:.3f}", color="white", ha="center",
                      transform=axis.transAxes, fontsize=7)
        axis.axvline(midline_column, color="white", linestyle="--", linewidth=0.7)
        axis.text(0.02, 0.93, "R", color="white", transform=axis.transAxes, fontsize=8)
        axis.text(0.94, 0.93, "L", color="white", transform=axis.transAxes, fontsize=8)
        axis.set_title(f"{level.value}: {captions[level]}", fontsize=7)
        axis.set_xticks([]), axis.set_yticks([])
    figure.suptitle(title, fontsize=8)
    figure.text(0.5, 0.01, "dotted cyan: template brain outline   dashed: template midline   green / orange: left / "
                "right hemisphere ROI", ha="center", fontsize=6)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    save_figure(figure, png, dpi=90, tight=False)


def _skipped(study: PlannedStudy, reason: str, registration: Registration | None = None, stats: dict | None = None
             ) -> dict:
    return _result(study, SKIPPED, reason, (), registration, stats or {}, [])


def _result(study: PlannedStudy, status: str, reason: str, levels: Sequence[Level],
            registration: Registration | None, stats: dict, slices: list[dict]) -> dict:
    """A study's outcome: its report row and the manifest rows of its slices (a marker's content)."""
    label = study.label
    row = {"study": study.id, "status": status, "reason": reason, "split": study.split if status == IMPORTED else "",
           "pattern": label.pattern.value if label and label.pattern else "",
           "side": label.side.value if label and label.side else "",
           "levels": ",".join(level.value for level in levels),
           "registration_correlation": f"{registration.correlation:.4f}" if registration else "",
           "registration_metric": f"{registration.metric:.4f}" if registration else ""}
    for level in Level:
        level_stats = stats.get(level.value)
        row[f"MC_{level.value}"] = f"{level_stats['mc']:.4f}" if level_stats else ""
        row[f"LR_{level.value}"] = f"{level_stats['lr']:.4f}" if level_stats else ""
    return {"report": row, "slices": slices}


def _registration_failure(registration: Registration) -> str:
    """Why a registration failed its quality threshold, in ``Registration.require_ok``'s words."""
    try:
        registration.require_ok()
    except InvalidImageError as error:
        return f"registration failed its quality threshold: {error}"
    return ""


def _write_slices(study: PlannedStudy, volume: sitk.Image, registration: Registration,
                  planes: dict[Level, np.ndarray], level_stats: dict[Level, HemisphereStats | None], out: Path,
                  matrix: int) -> tuple[list[dict], list[str], dict[Level, str]]:
    """Write the slices of the study's levels that are valid, in view and hold a brain. Returns their manifest
    rows, the study's notes (why a level is missing) and a QC caption per level."""
    slices, notes, captions = [], list(study.notes), {}
    for level in Level:
        if level not in study.levels:
            captions[level] = ("not imported (invalid condition)" if level in study.label.levels
                               else "not imported (not labelled)")
            continue
        coverage = level_coverage(volume, registration.transform, level, matrix)
        if coverage < MIN_LEVEL_COVERAGE:
            notes.append(f"{level.value} not imported: only {coverage:.0%} of its brain area is inside the field "
                         "of view")
            captions[level] = f"not imported ({coverage:.0%} in view)"
        elif level_stats[level] is None:
            notes.append(f"{level.value} not imported: no brain counts on both sides of the midline")
            captions[level] = "not imported (no brain)"
        else:
            condition = study.condition(level)
            record = CohortRecord(study.split, f"{study.id}_{level.value}", condition,
                                  parse_lesions(condition.pattern, condition.side),
                                  f"{study.split}/{study.id}_{level.value}.nii.gz")
            atomic_write_image(canonical_image(planes[level], level, matrix), out / record.file)
            slices.append(record.to_row())
            captions[level] = f"imported ({record.condition.label})"
    return slices, notes, captions


def import_study(study: PlannedStudy, out: Path, matrix: int) -> dict:
    """Read, register and slice one study; write its slices and QC picture. Returns its outcome."""
    try:
        volume = read_volume(study.source)
        registration = register_to_template(volume)
    except InvalidImageError as error:
        return _skipped(study, str(error))
    planes = {level: extract_level(volume, registration.transform, level, matrix) for level in Level}
    level_stats = {level: _level_stats(planes[level], level, matrix) for level in Level}
    stats = {level.value: {"mc": s.mc, "lr": s.lr} for level, s in level_stats.items() if s is not None}
    if not registration.ok:
        captions = {level: "registration failed" for level in Level}
        result = _skipped(study, _registration_failure(registration), registration, stats)
    else:
        slices, notes, captions = _write_slices(study, volume, registration, planes, level_stats, out, matrix)
        imported = [Level(row["level"]) for row in slices]
        result = (_result(study, IMPORTED, "; ".join(notes), imported, registration, stats, slices) if slices
                  else _skipped(study, "; ".join(notes) or "no level to import", registration, stats))
    condition = study.label.pattern.value + (f" {study.label.side.value}" if study.label.side else "")
    draw_qc(out / QC_DIR / f"{study.id}.png",
            f"{study.id}: {condition}, {study.split}; registration correlation {registration.correlation:.3f}"
            f" ({result['report']['status']})", planes, captions, matrix)
    return result


# --------------------------------------------------------------------------------------------- the whole import

def _csv_bytes(columns: Sequence[str], rows: Sequence[dict]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _check_key_location(key: Path | None, out: Path) -> None:
    """The key links generated ids to source studies: it must never be part of the cohort."""
    if key is None:
        return
    resolved_key, resolved_out = Path(key).expanduser().resolve(), Path(out).expanduser().resolve()
    if resolved_key == resolved_out or resolved_out in resolved_key.parents:
        raise SpectganError(f"--key {key} lies inside the cohort folder {out}; the key links the generated ids to "
                            "the source studies, so it must be kept outside the cohort: choose a path outside "
                            f"{out}")
    if resolved_key.is_dir():
        raise SpectganError(f"--key {key} is a folder; give a file name (a CSV is written there)")


def write_key(key: Path, planned: Sequence[PlannedStudy]) -> None:
    """The mapping generated id -> source StudyInstanceUID, SeriesInstanceUID and path (relative to SRC)."""
    rows = [{"study": study.id, "source_study_instance_uid": study.source.study_uid,
             "source_series_instance_uid": study.source.series_uid, "source_path": study.source.source_path}
            for study in planned]
    atomic_write_bytes(Path(key).expanduser(), _csv_bytes(KEY_COLUMNS, rows))


def _start_or_resume(out: Path, plan: dict) -> bool:
    """Start a new import in ``out`` or recognise the interrupted (or finished) one with the same plan; True when
    the import there is complete."""
    plan_file = out / STATE_DIR / "plan.json"
    if plan_file.is_file():
        if json.loads(plan_file.read_text()) != plan:
            raise SpectganError(f"{out} holds an import of other sources, labels or options; choose another --out "
                                "(or delete it to import again)")
        return read_cohort_info(out).get("state") == "complete"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SpectganError(f"{out} is not an empty folder and holds no import; choose a new or empty --out")
    write_cohort_info(out, {"format": "spectgan-cohort", "source": "imported", "state": "importing",
                            "key": plan["options"]})
    atomic_write_bytes(plan_file, (json.dumps(plan, indent=1) + "\n").encode())
    return False


def _marker(out: Path, study_id: str) -> Path:
    return out / STATE_DIR / f"{study_id}.json"


def _remove_partial_slices(out: Path, study_id: str) -> None:
    """Slices an interrupted run wrote for a study before its marker: the study is imported again."""
    for split in SPLITS:
        for path in (out / split).glob(f"{study_id}_*.nii.gz"):
            path.unlink()


def _finish(out: Path, planned: Sequence[PlannedStudy], unmatched: list[dict], plan: dict) -> dict:
    """Report, manifest, count scale and cohort.json from the studies' markers."""
    outcomes = {study.id: json.loads(_marker(out, study.id).read_text())
                for study in planned if study.problem is None}
    rows = [outcomes[study.id]["report"] if study.id in outcomes else _skipped(study, study.problem)["report"]
            for study in planned] + unmatched
    report = out / QC_DIR / REPORT_NAME
    atomic_write_bytes(report, _csv_bytes(REPORT_COLUMNS, rows))
    records = [CohortRecord.from_row(row) for outcome in outcomes.values() for row in outcome["slices"]]
    counts = {split: sum(record.split == split for record in records) for split in SPLITS}
    if not counts["train"]:
        raise SpectganError(f"no slice was imported into the train split, so there is no cohort; the reasons are in "
                            f"{report}")
    write_manifest(out, records)
    train, _ = load_split(out, "train")
    imported = sum(row["status"] == IMPORTED for row in rows)
    info = {"format": "spectgan-cohort", "source": "imported", "key": plan["options"], "state": "complete",
            "matrix": plan["options"]["matrix"], "pixel_spacing_mm": pixel_spacing(plan["options"]["matrix"]),
            "slab_thickness_mm": SLAB_THICKNESS_MM, "count_scale": compute_count_scale(train),
            "seed": plan["options"]["seed"], "test_fraction": plan["options"]["test_fraction"], "counts": counts,
            "studies": {"found": len(planned), "imported": imported, "skipped": len(planned) - imported,
                        "unmatched_labels": len(unmatched)},
            "importer": {"version": __version__, "format_version": FORMAT_VERSION, "slab_planes": SLAB_PLANES,
                         "registration": "spectgan.geometry.register_to_template",
                         "min_level_coverage": MIN_LEVEL_COVERAGE}}
    write_cohort_info(out, info)
    return info


def _import_pending(out: Path, usable: Sequence[PlannedStudy], matrix: int, progress: bool) -> None:
    """Import every usable study without a marker, with a progress bar; say why a study is skipped."""
    pending = [study for study in usable if not _marker(out, study.id).is_file()]
    if len(pending) < len(usable):
        print(f"continuing an interrupted import: {len(usable) - len(pending)} of {len(usable)} studies already done")
    with tqdm(total=len(usable), initial=len(usable) - len(pending), desc="import", unit="study",
              disable=not progress) as bar:
        for study in pending:
            bar.set_postfix_str(study.id)
            _remove_partial_slices(out, study.id)
            try:
                outcome = import_study(study, out, matrix)
            except Exception as error:  # one odd study must not stop the rest; its message may quote the source
                outcome = _skipped(study, f"could not be imported ({type(error).__name__} while reading or "
                                          "resampling it)")
            atomic_write_bytes(_marker(out, study.id), (json.dumps(outcome, indent=1) + "\n").encode())
            report = outcome["report"]
            if report["status"] == SKIPPED or report["reason"]:
                bar.write(f"{study.id}: {report['status']}: {report['reason']}")
            bar.update(1)


def import_cohort(source: str | Path, labels: str | Path, out: str | Path, matrix: int = 128, seed: int = 0,
                  test_fraction: float = DEFAULT_TEST_FRACTION, key: str | Path | None = None,
                  progress: bool = True) -> dict:
    """Import the studies of ``source`` labelled in ``labels`` into the cohort folder ``out`` (continuing an
    interrupted import there); returns its cohort.json. ``key``: where to write the id -> source mapping (outside
    ``out``)."""
    out = Path(out)
    pixel_spacing(matrix)  # a ValueError naming the allowed matrices
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    _check_key_location(key, out)
    label_rows = read_labels(labels)
    studies, ignored = find_studies(source, excluded=[out])
    if not studies:
        raise SpectganError(f"found no DICOM or NIfTI file in {source} ({ignored} other files)")
    planned, unmatched = plan_import(studies, label_rows, seed, test_fraction)
    plan = {"format_version": FORMAT_VERSION, "options": {"matrix": matrix, "seed": seed,
                                                          "test_fraction": test_fraction},
            "studies": [study.entry() for study in planned], "unmatched_labels": [row["reason"] for row in unmatched]}
    complete = _start_or_resume(out, plan)
    if key is not None:
        write_key(Path(key), planned)
    if complete:
        print(f"reusing the finished import in {out}")
        return read_cohort_info(out)
    print(f"found {len(planned)} studies ({ignored} other files ignored: neither DICOM nor NIfTI)")
    for study in planned:
        if study.problem:
            print(f"{study.id}: skipped: {study.problem}")
    for row in unmatched:
        print(row["reason"])
    _import_pending(out, [study for study in planned if study.problem is None], matrix, progress)
    info = _finish(out, planned, unmatched, plan)
    print(f"imported {info['studies']['imported']} of {len(planned)} studies ({info['counts']['train']} train + "
          f"{info['counts']['test']} test slices, count scale {info['count_scale']:.4g}); report: "
          f"{out / QC_DIR / REPORT_NAME}")
    return info


def add_import_command(subparsers) -> None:
    """``spectgan import SRC --labels labels.csv --out COHORT [--matrix] [--seed] [--test-fraction] [--key]``."""
    parser = subparsers.add_parser(
        "import", help="import your own SPECT studies (DICOM / NIfTI + labels.csv) as a de-identified cohort",
        description="Register each study to the perfusion template, resample its CER, BG and COR planes into "
                    "canonical slices, split by patient and write a cohort for `spectgan train`. The cohort holds "
                    "generated ids only; QC pictures and import_report.csv are in COHORT/qc.")
    parser.add_argument("source", metavar="SRC", type=Path,
                        help="folder searched recursively for DICOM files (NM multi-frame, single-frame NM/PT "
                             "slices) and NIfTI volumes")
    parser.add_argument("--labels", required=True, type=Path,
                        help="CSV with columns study (StudyInstanceUID, SeriesInstanceUID, PatientID or file name), "
                             "pattern, side (unilateral only) and optionally patient, split, levels")
    parser.add_argument("--out", required=True, type=Path, help="cohort folder (created; an interrupted import "
                                                                "there continues)")
    parser.add_argument("--matrix", type=int, choices=MATRICES, default=128, help="canonical matrix (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient split (default 0)")
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION, metavar="F",
                        help="fraction of patients in the test split (default %(default)s)")
    parser.add_argument("--key", type=Path, metavar="FILE",
                        help="write the generated id -> source StudyInstanceUID mapping here (outside the cohort)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_import)


def _run_import(args) -> int:
    import_cohort(args.source, args.labels, args.out, args.matrix, args.seed, args.test_fraction, args.key,
                  progress=not args.no_progress)
    return 0
