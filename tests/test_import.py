"""spectgan import on DICOM and NIfTI made from the reference studies (their true pose and labels are known), with
made-up identifying values in every header, next to every kind of bad input, in one import that is interrupted and
then resumed."""
from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import io
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from spectgan import cli
from spectgan.cohorts import importer
from spectgan.models.fastgan import train as fastgan_train
from spectgan.cohorts.format import compute_count_scale, load_split, read_cohort_info, read_manifest
from spectgan.conditions import Level
from spectgan.geometry.registration import pose_from_dict
from spectgan.geometry.roi import TEMPLATE_MIDLINE, hemisphere_stats
from spectgan.geometry.template import SLAB_THICKNESS_MM, canonical_grid, canonical_image

from dicom_builders import Identity, nm_multiframe, quantize, single_frame_series, write_files
from kill_part_way import kill_when

STUDIES_DIR = Path(__file__).resolve().parents[1] / "sample_data" / "studies"
MATRIX = 64
SEED = 3
TEST_FRACTION = 0.34
REGISTRATIONS_BEFORE_INTERRUPT = 3
MIN_CORRELATION = 0.95
LR_TOLERANCE = 0.02


@dataclass(frozen=True)
class GoodCase:
    """A reference study written into SRC: how it is encoded and how labels.csv names it."""

    study: str
    encoding: str  # nm (multi-frame), pt (single-frame slices) or nifti
    number: int  # its made-up identity
    named_by: str  # study_uid, patient_id or file
    patient: str = ""
    split: str = ""
    levels: str = ""

    @property
    def identity(self) -> Identity:
        return Identity(self.number)

    @property
    def sidecar(self) -> dict:
        return _sidecar(self.study)

    @property
    def nifti_name(self) -> str:
        return f"{self.identity.patient_name.replace('^', '_')}_{self.identity.patient_id}.nii.gz"


GOOD = (
    GoodCase("study_normal_axial", "nm", 0, "study_uid", patient="patient-A"),
    GoodCase("study_unilateral_left_flipped", "nm", 1, "patient_id"),
    GoodCase("study_bilateral_oblique", "nm", 2, "study_uid"),
    GoodCase("study_unilateral_left_oblique", "pt", 3, "study_uid"),
    GoodCase("study_normal_flipped", "pt", 4, "patient_id", levels="CER,BG"),
    GoodCase("study_unilateral_right_ras", "pt", 5, "study_uid", split="test"),
    GoodCase("study_normal_axial", "nifti", 6, "file", patient="patient-A"),
)
# bad input -> (identity number, the reason the report must give)
BAD = {
    "ct": (8, "modality CT is not nuclear medicine"),
    "single_frame": (9, "a single 2D frame"),
    "not_a_brain": (15, "not a brain: the body part examined is HEART"),
    "failed_registration": (10, "registration failed its quality threshold"),
    "truncated": (11, "truncated or unreadable pixel data"),
    "unreadable": (None, "unreadable DICOM file"),
    "no_label": (12, "no label"),
    "invalid_pattern": (13, "invalid pattern 'stroke'"),
    "missing_side": (14, "a unilateral pattern needs side"),
}
UNMATCHED_STUDY = "1.2.3.4.5.6.7.8.9.10"


@functools.lru_cache(maxsize=None)
def _reference_file(name: str) -> bytes:
    """A reference study's NIfTI bytes, read once: the truth stays the same for the whole module."""
    return (STUDIES_DIR / f"{name}.nii.gz").read_bytes()


@functools.lru_cache(maxsize=None)
def _sidecar(name: str) -> dict:
    return json.loads((STUDIES_DIR / f"{name}.json").read_text())


def _reference(name: str) -> sitk.Image:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.nii.gz"
        path.write_bytes(_reference_file(name))
        return sitk.ReadImage(str(path), sitk.sitkFloat32)


def _small_volume(size: tuple[int, int, int] = (32, 32, 32)) -> sitk.Image:
    volume = sitk.GetImageFromArray(np.random.default_rng(0).uniform(10, 100, size[::-1]).astype(np.float32))
    volume.SetSpacing((3.5, 3.5, 3.5))
    return volume


def _cylinder() -> sitk.Image:
    """A uniform cylinder phantom in counts with noise: nuclear medicine, but not a brain."""
    z, y, x = np.mgrid[0:48, 0:64, 0:64]
    inside = ((x - 31.5) ** 2 + (y - 31.5) ** 2 < 26 ** 2) & (z > 4) & (z < 43)
    counts = np.random.default_rng(1).poisson(np.where(inside, 80.0, 2.0)).astype(np.float32)
    volume = sitk.GetImageFromArray(counts)
    volume.SetSpacing((3.5, 3.5, 3.5))
    volume.SetOrigin((-110.0, -92.0, -70.0))
    return volume


def _write_good(case: GoodCase, source: Path) -> None:
    volume = _reference(case.study)
    if case.encoding == "nm":
        write_files(source / f"nm_{case.number}", [nm_multiframe(volume, case.identity)])
    elif case.encoding == "pt":
        write_files(source / f"pt_{case.number}", single_frame_series(volume, case.identity))
    else:  # NIfTI named after the patient, with identifying header text that must not be carried over
        nifti = nib.Nifti1Image.from_bytes(gzip.decompress(_reference_file(case.study)))
        nifti.header["descrip"] = case.identity.patient_name.encode()
        nifti.header["aux_file"] = case.identity.patient_id.encode()
        (source / "nifti").mkdir(parents=True, exist_ok=True)
        nib.save(nifti, str(source / "nifti" / case.nifti_name))


def _write_bad(source: Path) -> None:
    write_files(source / "ct", single_frame_series(_small_volume(), Identity(BAD["ct"][0]), "CT"))
    write_files(source / "single", [nm_multiframe(_small_volume((16, 16, 1)), Identity(BAD["single_frame"][0]))])
    write_files(source / "phantom", [nm_multiframe(_cylinder(), Identity(BAD["failed_registration"][0]))])
    heart = nm_multiframe(_small_volume(), Identity(BAD["not_a_brain"][0]), body_part="HEART")
    write_files(source / "heart", [heart])
    complete = nm_multiframe(_reference("study_normal_axial"), Identity(BAD["truncated"][0]))
    write_files(source / "cut", [complete[: int(len(complete) * 0.6)]])
    (source / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xffnot really")
    for name in ("no_label", "invalid_pattern", "missing_side"):
        write_files(source / name, [nm_multiframe(_small_volume(), Identity(BAD[name][0]))])
    (source / "README.txt").write_text("notes that are neither DICOM nor NIfTI\n")


def _labels(path: Path) -> None:
    rows = [("study", "pattern", "side", "patient", "split", "levels")]
    for case in GOOD:
        study = {"study_uid": case.identity.study_uid, "patient_id": case.identity.patient_id,
                 "file": case.nifti_name}[case.named_by]
        rows.append((study, case.sidecar["pattern"], case.sidecar["side"] or "", case.patient, case.split,
                     case.levels))
    for name in ("ct", "single_frame", "not_a_brain", "failed_registration", "truncated"):
        rows.append((Identity(BAD[name][0]).study_uid, "normal", "", "", "", ""))
    rows += [("broken.dcm", "normal", "", "", "", ""),
             (Identity(BAD["invalid_pattern"][0]).study_uid, "stroke", "", "", "", ""),
             (Identity(BAD["missing_side"][0]).study_uid, "unilateral", "", "", "", ""),
             (UNMATCHED_STUDY, "normal", "", "", "", "")]
    with open(path, "w", newline="") as stream:
        csv.writer(stream).writerows(rows)


def run_cli(*args) -> tuple[int, str]:
    """``spectgan ARGS`` in this process; its exit code and everything it printed."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = cli.main([str(arg) for arg in args])
    return code, output.getvalue()


@dataclass
class Imported:
    """The module's import: where it is, its key, what it printed and how many registrations the resumed run
    needed."""

    source: Path
    labels: Path
    out: Path
    key: dict[str, dict]  # generated id -> key row
    console: str  # both runs
    first_code: int
    resumed_registrations: int
    planned_registrations: int

    def id_of(self, study_uid: str = "", path: str = "") -> str:
        matches = [i for i, row in self.key.items()
                   if (study_uid and row["source_study_instance_uid"] == study_uid)
                   or (path and row["source_path"].startswith(path))]
        assert len(matches) == 1, (study_uid, path, matches)
        return matches[0]

    def good_id(self, case: GoodCase) -> str:
        return self.id_of(path=f"nifti/{case.nifti_name}") if case.encoding == "nifti" \
            else self.id_of(study_uid=case.identity.study_uid)

    def report(self) -> dict[str, dict]:
        with open(self.out / "qc" / "import_report.csv", newline="") as stream:
            return {row["study"] or row["reason"]: row for row in csv.DictReader(stream)}


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Imported:
    """The import, interrupted after a few registrations (Ctrl-C), then run again to the end."""
    root = tmp_path_factory.mktemp("import")
    source, labels, out, key = root / "source", root / "labels.csv", root / "cohort", root / "private" / "key.csv"
    for case in GOOD:
        _write_good(case, source)
    _write_bad(source)
    _labels(labels)
    arguments = ("import", source, "--labels", labels, "--out", out, "--matrix", MATRIX, "--seed", SEED,
                 "--test-fraction", TEST_FRACTION, "--key", key)
    register = importer.register_to_template
    calls = []

    def interrupted_register(volume):
        if len(calls) == REGISTRATIONS_BEFORE_INTERRUPT:
            raise KeyboardInterrupt
        calls.append(volume)
        return register(volume)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(importer, "register_to_template", interrupted_register)
        first_code, first_console = run_cli(*arguments)
        calls.clear()
        patch.setattr(importer, "register_to_template", lambda volume: calls.append(volume) or register(volume))
        code, console = run_cli(*arguments)
    assert code == 0, console
    with open(key, newline="") as stream:
        key_rows = {row["study"]: row for row in csv.DictReader(stream)}
    registered = len(GOOD) + 1  # the good studies and the phantom (the others fail before registration)
    return Imported(source, labels, out, key_rows, first_console + console, first_code, len(calls), registered)


def _true_slice(case: GoodCase, level: Level) -> np.ndarray:
    """The reference study resampled onto the level's canonical slab with its TRUE pose, averaged across it."""
    step = SLAB_THICKNESS_MM / 5
    grid = canonical_grid(level, MATRIX, depth_mm=2 * step, step_mm=step)
    pose = pose_from_dict(case.sidecar["template_to_study"])
    return sitk.GetArrayFromImage(sitk.Resample(_reference(case.study), grid, pose, sitk.sitkLinear, 0.0,
                                                sitk.sitkFloat32)).mean(axis=0)


def _lr(array: np.ndarray, level: Level) -> float:
    return hemisphere_stats(canonical_image(array, level, MATRIX), TEMPLATE_MIDLINE).lr


# ------------------------------------------------------------------------------------------------ the good studies

def test_slices_match_the_study_resampled_with_its_true_pose(imported):
    records = {record.id: record for record in read_manifest(imported.out)}
    compared = 0
    for case in GOOD:
        study_id = imported.good_id(case)
        for level in Level:
            record = records.get(f"{study_id}_{level.value}")
            if record is None:
                continue
            extracted = sitk.GetArrayFromImage(sitk.ReadImage(str(imported.out / record.file)))[0]
            expected = _true_slice(case, level)
            correlation = np.corrcoef(extracted.ravel(), expected.ravel())[0, 1]
            assert correlation >= MIN_CORRELATION, (case.study, case.encoding, level, correlation)
            assert abs(_lr(extracted, level) - _lr(expected, level)) <= LR_TOLERANCE, (case.study, level)
            compared += 1
    assert compared == 3 * len(GOOD) - 2  # bilateral: no CER; study_normal_flipped: labelled CER and BG only


def test_labels_and_levels_are_carried(imported):
    records = read_manifest(imported.out)
    report = imported.report()
    for case in GOOD:
        study_id = imported.good_id(case)
        mine = {record.condition.level: record.condition for record in records if record.id.startswith(study_id)}
        expected_levels = {"bilateral": {Level.BG, Level.COR}}.get(case.sidecar["pattern"], set(Level))
        if case.levels:
            expected_levels = {Level(level) for level in case.levels.split(",")}
        assert set(mine) == expected_levels, case
        for condition in mine.values():
            assert condition.pattern.value == case.sidecar["pattern"]
            assert (condition.side.value if condition.side else None) == case.sidecar["side"]
        assert report[study_id]["status"] == "imported"
        assert report[study_id]["levels"] == ",".join(level.value for level in Level if level in expected_levels)
    bilateral = imported.good_id(GOOD[2])
    assert "bilateral at CER is not a valid condition" in report[bilateral]["reason"]
    assert report[bilateral]["MC_BG"] and report[bilateral]["LR_COR"]


def test_split_is_by_patient_and_labels_override_it(imported):
    records = read_manifest(imported.out)
    split_of = {}
    for record in records:
        split_of.setdefault(record.id.split("_")[0], set()).add(record.split)
    assert all(len(splits) == 1 for splits in split_of.values())
    same_patient = {imported.good_id(case) for case in GOOD if case.patient == "patient-A"}
    assert len({split_of[study_id].pop() for study_id in same_patient}) == 1
    assert split_of[imported.good_id(GOOD[5])] == {"test"}
    assert {record.split for record in records} == {"train", "test"}


def test_cohort_files_and_one_count_scale_from_the_train_split(imported):
    info = read_cohort_info(imported.out)
    assert info["source"] == "imported" and info["state"] == "complete"
    assert info["matrix"] == MATRIX and info["slab_thickness_mm"] == SLAB_THICKNESS_MM
    train, _ = load_split(imported.out, "train")
    assert info["count_scale"] == pytest.approx(compute_count_scale(train))
    records = read_manifest(imported.out)
    assert all((imported.out / record.file).is_file() for record in records)
    slice_files = {path.relative_to(imported.out).as_posix() for path in imported.out.glob("t*/*")}
    assert slice_files == {record.file for record in records}  # no slice without its row, no half-written file
    registered = [row["study"] for row in imported.report().values() if row["registration_correlation"]]
    assert sorted(path.stem for path in (imported.out / "qc").glob("*.png")) == sorted(registered)


def test_interrupted_import_continues_where_it_stopped(imported):
    assert imported.first_code == 130
    assert "continuing an interrupted import: 3 of" in imported.console
    assert imported.resumed_registrations == imported.planned_registrations - REGISTRATIONS_BEFORE_INTERRUPT
    code, console = run_cli("import", imported.source, "--labels", imported.labels, "--out", imported.out,
                            "--matrix", MATRIX, "--seed", SEED, "--test-fraction", TEST_FRACTION)
    assert code == 0 and "reusing the finished import" in console
    code, console = run_cli("import", imported.source, "--labels", imported.labels, "--out", imported.out,
                            "--matrix", 128)
    assert code == 2 and "holds an import of other sources, labels or options" in console


def _comparable_report(cohort: Path) -> list[dict]:
    """import_report.csv's rows, without the measures of studies skipped after registration: the registration of
    a phantom that is no brain does not converge, and its last digits differ from run to run."""
    with open(cohort / "qc" / "import_report.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    measures = [column for column in importer.REPORT_COLUMNS if column.startswith(("registration_", "MC_", "LR_"))]
    return [{key: value for key, value in row.items() if row["status"] == importer.IMPORTED or key not in measures}
            for row in rows]


def test_an_import_killed_part_way_resumes_to_the_same_cohort(imported, tmp_path):
    """The module's import again into a new folder, killed with SIGKILL as soon as its first study is done (its
    marker written, the next study under way), then run again: the same manifest, report, slices and QC pictures as
    the module's import, no row or file twice, none lost."""
    out = tmp_path / "killed"
    arguments = ["import", imported.source, "--labels", imported.labels, "--out", out, "--matrix", MATRIX, "--seed",
                 SEED, "--test-fraction", TEST_FRACTION, "--no-progress"]
    kill_when([str(argument) for argument in arguments], lambda: any((out / "import").glob("imp*.json")))
    assert read_cohort_info(out)["state"] == "importing" and not (out / "manifest.csv").exists()
    code, console = run_cli(*arguments)
    assert code == 0 and "continuing an interrupted import:" in console, console
    assert (out / "manifest.csv").read_text() == (imported.out / "manifest.csv").read_text()
    assert _comparable_report(out) == _comparable_report(imported.out)
    rows = [record.id for record in read_manifest(out)]
    assert len(rows) == len(set(rows))
    files = sorted(path.relative_to(out).as_posix() for path in out.glob("t*/*"))
    assert files == sorted(path.relative_to(imported.out).as_posix() for path in imported.out.glob("t*/*"))
    assert files == sorted(record.file for record in read_manifest(out))
    for file in files:  # the same up to float rounding in the registration's threads
        killed, whole = (sitk.GetArrayFromImage(sitk.ReadImage(str(folder / file))) for folder in (out, imported.out))
        np.testing.assert_allclose(killed, whole, rtol=1e-5, atol=1e-3, err_msg=file)
    assert sorted(path.name for path in (out / "qc").glob("*.png")) == \
        sorted(path.name for path in (imported.out / "qc").glob("*.png"))


# -------------------------------------------------------------------------------------------- de-identification

def _identifying_values() -> list[str]:
    numbers = [case.number for case in GOOD] + [number for number, _ in BAD.values() if number is not None]
    values = [value for number in numbers for value in Identity(number).searchable(48)]
    return values + [GOOD[-1].nifti_name, "Hauptstrasse", "Hippokrates", "Testhausen"]


def test_nothing_identifying_leaves_the_source(imported):
    values = [value.encode() for value in _identifying_values()]
    files = [path for path in imported.out.rglob("*") if path.is_file()]
    assert len(files) > 20
    for path in files:
        contents = [path.read_bytes()]
        if path.name.endswith(".gz"):
            contents.append(gzip.decompress(contents[0]))
        for content in contents:
            found = [value for value in values if value in content]
            assert not found, (path.relative_to(imported.out), found)
    found = [value for value in _identifying_values() if value in imported.console]
    assert not found, found
    assert {row["source_study_instance_uid"] for row in imported.key.values()} >= {c.identity.study_uid for c in GOOD
                                                                                  if c.encoding != "nifti"}


def test_key_inside_the_cohort_is_refused(imported, tmp_path):
    out = tmp_path / "cohort"
    code, console = run_cli("import", imported.source, "--labels", imported.labels, "--out", out,
                            "--key", out / "sub" / "key.csv")
    assert code == 2 and "must be kept outside the cohort" in console
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ bad input

def test_every_bad_input_is_skipped_with_its_reason(imported):
    report = imported.report()
    ids = {name: imported.id_of(study_uid=Identity(number).study_uid) for name, (number, _) in BAD.items()
           if number is not None}
    ids["unreadable"] = imported.id_of(path="broken.dcm")
    for name, (_, reason) in BAD.items():
        row = report[ids[name]]
        assert row["status"] == "skipped" and reason in row["reason"], (name, row)
        assert f"{ids[name]}: skipped: " in imported.console
    unmatched = [row for row in report.values() if not row["study"]]
    assert len(unmatched) == 1 and "no study in SRC matches" in unmatched[0]["reason"]
    assert "labels.csv row" in unmatched[0]["reason"]
    assert all(report[imported.good_id(case)]["status"] == "imported" for case in GOOD)


def test_labels_without_required_columns_is_a_clear_error(imported, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,diagnosis\nx.nii.gz,normal\n")
    code, console = run_cli("import", imported.source, "--labels", labels, "--out", tmp_path / "cohort")
    assert code == 2 and "lacks the column(s) study, pattern" in console


# ----------------------------------------------------------------------------------- reading DICOM geometry

def _assert_same_volume(read: sitk.Image, truth: sitk.Image, tolerance: float) -> None:
    """Same physical content: every voxel centre of ``truth`` holds the same value in ``read``."""
    on_truth_grid = sitk.Resample(read, truth, sitk.Transform(), sitk.sitkNearestNeighbor, -1.0, sitk.sitkFloat32)
    difference = np.abs(sitk.GetArrayFromImage(on_truth_grid) - sitk.GetArrayFromImage(truth))
    assert difference.max() <= tolerance, difference.max()
    assert np.allclose(sorted(read.GetSpacing()), sorted(truth.GetSpacing()), atol=1e-4)


@pytest.mark.parametrize("name", ["study_normal_axial", "study_unilateral_left_flipped", "study_bilateral_oblique",
                                  "study_unilateral_right_ras"])
def test_nm_multiframe_and_pt_slices_are_read_with_their_geometry(name, tmp_path):
    truth = _reference(name)
    tolerance = 0.51 * quantize(sitk.GetArrayFromImage(truth))[1] + 1e-4
    write_files(tmp_path / "nm", [nm_multiframe(truth, Identity(0))])
    write_files(tmp_path / "nm_negative", [nm_multiframe(truth, Identity(1), negative_spacing=True)])
    write_files(tmp_path / "pt", single_frame_series(truth, Identity(2)))
    studies, ignored = importer.find_studies(tmp_path)
    assert ignored == 0 and [study.problem for study in studies] == [None] * 3
    for study in studies:
        _assert_same_volume(importer.read_volume(study), truth, tolerance)
    multiframe = tmp_path / "nm" / "IM_000.dcm"
    _assert_same_volume(sitk.ReadImage(str(multiframe), sitk.sitkFloat32), truth, tolerance)  # GDCM agrees


@pytest.mark.skipif(shutil.which("dcmcjpeg") is None, reason="dcmtk's dcmcjpeg is not installed")
def test_compressed_slices_are_decoded(tmp_path):
    truth = _reference("study_unilateral_left_oblique")
    for path in write_files(tmp_path / "pt", single_frame_series(truth, Identity(3))):
        subprocess.run(["dcmcjpeg", str(path), str(path)], check=True)
    (study,), _ = importer.find_studies(tmp_path)
    _assert_same_volume(importer.read_volume(study), truth, 0.51 * quantize(sitk.GetArrayFromImage(truth))[1] + 1e-4)


def test_gaps_in_a_slice_series_are_reported(tmp_path):
    for path in write_files(tmp_path / "pt", single_frame_series(_reference("study_normal_axial"), Identity(4))):
        if pydicom.dcmread(str(path), stop_before_pixels=True).InstanceNumber == 20:
            path.unlink()
    (study,), _ = importer.find_studies(tmp_path)
    assert "unevenly spaced" in study.problem


def test_a_field_of_view_too_small_for_a_brain_is_reported(tmp_path):
    write_files(tmp_path / "nm", [nm_multiframe(_small_volume((32, 32, 12)), Identity(6))])
    (study,), _ = importer.find_studies(tmp_path)
    assert study.problem == "not a brain: the field of view (112 x 112 x 42 mm) is too small to hold one"


def test_a_cohort_inside_the_source_folder_is_not_imported_again(tmp_path):
    write_files(tmp_path / "pt", single_frame_series(_reference("study_normal_axial"), Identity(5)))
    (tmp_path / "cohort" / "train").mkdir(parents=True)
    sitk.WriteImage(_small_volume(), str(tmp_path / "cohort" / "train" / "imp0001_BG.nii.gz"))
    studies, _ = importer.find_studies(tmp_path, excluded=[tmp_path / "cohort"])
    assert [study.kind for study in studies] == [importer.SLICES]


# ------------------------------------------------------------------------------------------------- training

def test_a_short_training_run_works_on_the_imported_cohort(imported, tmp_path):
    checkpoint = fastgan_train.train(tmp_path / "run", cohort=str(imported.out), iterations=2, batch_size=4,
                             generator_width=4, discriminator_width=4, checkpoint_every=2, sample_every=2,
                             log_every=1, progress=False)
    assert Path(checkpoint).is_file()
    assert (tmp_path / "run" / "samples" / "step_000002.png").is_file()
