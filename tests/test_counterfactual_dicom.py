"""The DICOM of a result made from the reference patient's own slice (``base=reference``): its Source Image Sequence
names the reference series' instances, its Derivation Description says what was done, and it is filed under a
synthetic patient unless the request asked for the source study (``file_with=source``). The reference is a real NM
series written by ``encode_reference`` and read back from its files; dciodvfy checks every object."""
from __future__ import annotations

from dataclasses import replace

import pydicom
import pytest
import SimpleITK as sitk
from test_dicom import REFERENCE, dciodvfy_errors, make_oblique_scan

from spectgan.conditions import Lesion, Side, parse_condition
from spectgan.counterfactual import physics
from spectgan.export.dicom import (SYNTHETIC_DATA_TAG, DicomError, SourceStudy, SyntheticRun, encode_reference,
                                   encode_scan, reference_label, write_series)
from spectgan.export.scans import write_dicom
from spectgan.results import Derivation
from spectgan.serving.dicom_source import DicomSource, dicom_source, sidecar_path, source_of, write_sidecar
from spectgan.serving.settings import SAMPLE_STUDIES_DIR

ADDED = parse_condition("BG", "unilateral", "left")
PATIENT_KEYS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
                "AccessionNumber", "StudyDate", "StudyTime")


@pytest.fixture(scope="module")
def reference_series(tmp_path_factory):
    """A sample study as an NM series of single-frame instances on disk (the PACS's copy), and its DICOM source read
    from those files."""
    folder = tmp_path_factory.mktemp("reference")
    volume = sitk.ReadImage(str(SAMPLE_STUDIES_DIR / "study_normal_axial.nii.gz"))[:, :, 30:34]
    run = SyntheticRun()
    datasets = encode_reference(volume, run.study("study_normal"), "study_normal", "single")
    for dataset in datasets:  # a patient and study the result may be filed with
        dataset.PatientBirthDate, dataset.PatientSex = "19500101", "F"
        dataset.StudyDate, dataset.StudyTime = "19991231", "101010"
    datasets = [pydicom.dcmread(path) for path in write_series(datasets, folder)]
    return datasets, dicom_source(datasets)


def _result(derivation: Derivation):
    scan = make_oblique_scan()
    return replace(scan.result(), condition=ADDED, derivation=derivation)


def test_the_nm_names_every_reference_instance_as_its_source(reference_series, tmp_path):
    datasets, source = reference_series
    derivation = Derivation(physics.METHOD, source=source.series)
    nm, seg, sr = encode_scan(_result(derivation), SyntheticRun().study_for(_result(derivation)))
    referenced = [(item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID) for item in nm.SourceImageSequence]
    assert sorted(referenced) == sorted((ds.SOPClassUID, ds.SOPInstanceUID) for ds in datasets)
    assert len(referenced) == 4
    for item in nm.SourceImageSequence:
        purpose = item.PurposeOfReferenceCodeSequence[0]
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("121322", "DCM")
    assert [code.CodeValue for code in nm.DerivationCodeSequence] == ["113085", "113053"]  # resampled, multiplied
    assert "derived from reference study" in nm.DerivationDescription and "physics method" in \
        nm.DerivationDescription and "filed under a synthetic patient" in nm.DerivationDescription
    for path in write_series([nm, seg, sr], tmp_path):
        assert dciodvfy_errors(path) == [], path.name
    removed = Derivation(physics.METHOD, (Lesion(Side.LEFT, "MCA", 0.3),), source.series)
    nm = encode_scan(_result(removed), SyntheticRun().study(REFERENCE))[0]
    assert [code.CodeValue for code in nm.DerivationCodeSequence] == ["113085", "113046"]  # resampled, divided
    learned = Derivation("learned", removed.removed, source.series)  # multiplies the counts by the model's ratio
    nm = encode_scan(_result(learned), SyntheticRun().study(REFERENCE))[0]
    assert [code.CodeValue for code in nm.DerivationCodeSequence] == ["113085", "113053"]


def test_by_default_the_result_carries_none_of_the_references_identifiers(reference_series):
    datasets, source = reference_series
    result = _result(Derivation(physics.METHOD, source=source.series))
    for dataset in encode_scan(result, SyntheticRun().study_for(result)):
        for key in PATIENT_KEYS:
            assert dataset.get(key) != datasets[0].get(key), (dataset.Modality, key)
        assert dataset.PatientIdentityRemoved == "YES" and "SYNTHETIC" in str(dataset.PatientName)
        assert dataset.get("FrameOfReferenceUID") != datasets[0].FrameOfReferenceUID


def test_file_with_source_files_into_the_references_study_under_its_patient_still_synthetic(reference_series,
                                                                                           tmp_path):
    datasets, source = reference_series
    result = _result(Derivation(physics.METHOD, source=source.series, filed_with=source.patient))
    run = SyntheticRun()
    study = run.study_for(result)
    assert isinstance(study, SourceStudy) and run.study_for(result) is study
    objects = encode_scan(result, study)
    for dataset in objects:
        assert [dataset.get(key) for key in PATIENT_KEYS] == [datasets[0].get(key) for key in PATIENT_KEYS], \
            dataset.Modality
        assert dataset.SeriesInstanceUID != datasets[0].SeriesInstanceUID
        assert dataset[SYNTHETIC_DATA_TAG].value == "YES" and dataset.ContentQualification == "RESEARCH"
        assert dataset.SeriesDescription.startswith("SYNTHETIC ") and dataset.PatientIdentityRemoved == "NO"
        assert "DeidentificationMethod" not in dataset
    nm = objects[0]
    assert nm.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID  # the result lies in the reference's space
    assert nm.ImageComments.startswith("SYNTHETIC") and "file_with source" in nm.DerivationDescription
    for path in write_series(objects, tmp_path):
        assert dciodvfy_errors(path) == [], path.name
    with pytest.raises(DicomError, match="needs the reference's DICOM series and patient"):
        SourceStudy(REFERENCE, run, source=source.series)


def test_a_nifti_reference_is_stated_and_gets_no_source_image_sequence(tmp_path):
    result = _result(Derivation(physics.METHOD))
    folder = write_dicom([result], tmp_path / "dicom")
    nm = pydicom.dcmread(next(folder.rglob("NM_*.dcm")))
    assert "SourceImageSequence" not in nm and "DerivationCodeSequence" not in nm
    assert "a NIfTI without DICOM identity" in nm.DerivationDescription
    assert reference_label(REFERENCE) in nm.DerivationDescription and REFERENCE not in str(nm)


def test_the_identity_travels_beside_a_converted_series_and_in_a_dicom_files_header(reference_series, tmp_path):
    datasets, source = reference_series
    paths = write_series(datasets, tmp_path / "series")
    nifti = tmp_path / f"{datasets[0].SeriesInstanceUID}.nii.gz"
    assert source_of(nifti) is None  # a NIfTI without a sidecar
    assert write_sidecar(paths, nifti) == sidecar_path(nifti) == \
        tmp_path / f"{datasets[0].SeriesInstanceUID}.dicom.json"
    assert source_of(nifti) == source
    one = source_of(paths[0])  # a DICOM file: its own header
    assert isinstance(one, DicomSource) and one.patient == source.patient
    assert len(one.series.instances) == 1 and one.series.instances[0] in source.series.instances
    assert Derivation.from_dict(Derivation(physics.METHOD, (), source.series, source.patient).to_dict()) == \
        Derivation(physics.METHOD, (), source.series, source.patient)


def test_filing_with_the_source_needs_a_result_from_a_dicom_reference():
    from spectgan.errors import InvalidRequestError
    from spectgan.serving.service import GenerationService
    from spectgan.serving.settings import DEFAULT_MODELS_DIR

    service = GenerationService(DEFAULT_MODELS_DIR, ["spect_fastgan_A"])
    added = {"level": "BG", "pattern": "unilateral", "side": "left", "territory": "MCA", "severity": 0.3,
             "base": "reference", "file_with": "source"}
    with pytest.raises(InvalidRequestError, match="a NIfTI without a DICOM study"):
        service.generate(service.request("spect_fastgan_A", added), SAMPLE_STUDIES_DIR / "study_normal_axial.nii.gz")
    with pytest.raises(InvalidRequestError, match="needs base reference"):
        service.request("spect_fastgan_A", {"level": "BG", "pattern": "normal", "file_with": "source"})
    with pytest.raises(InvalidRequestError, match="allowed: synthetic, source"):
        service.request("spect_fastgan_A", {**added, "file_with": "pacs"})
    result = service.generate(service.request("spect_fastgan_A", {**added, "file_with": ""}),
                              SAMPLE_STUDIES_DIR / "study_normal_axial.nii.gz")
    assert result.derivation == Derivation(physics.METHOD)  # a NIfTI: no source, filed under a synthetic patient
