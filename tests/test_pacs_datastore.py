"""The PACS as the app's datastore: the sample reference studies as NM series in a real Orthanc (one multi-frame
instance, and one instance per slice), the real app started on ``--studies <Orthanc>/dicom-web`` with its outside
network cut, listing the series as NM, fetching one through the datastore (cached) with its counts and full
geometry (identity, x-flipped, RAS-like and oblique directions), and generating on it as on the NIfTI study.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk
from gan_toy_cohort import toy_cohort  # noqa: F401 (a fixture)
from monailabel.utils.others.generic import md5_digest
from pacs_server import offline_proxy, pacs_server, pacs_studies  # noqa: F401 (fixtures)
from test_server import STUDY_IDS, _infer, tiny_models  # noqa: F401 (tiny_models: a fixture)

from spectgan.errors import InvalidImageError
from spectgan.export.dicom import (REFERENCE_FRAMES, DicomError, SyntheticRun, encode_reference, read_nm_volume,
                                   right_handed, write_series)
from spectgan.geometry.roi import MidlinePlane, hemisphere_stats
from spectgan.serving.service import GenerationService
from spectgan.serving.settings import SAMPLE_STUDIES_DIR

GEOMETRY_ATOL = 1e-4  # mm (origin, spacing) and direction cosines: what a DICOM decimal string keeps
STATS_RTOL = 1e-5  # 16-bit storage moves a count by at most 7.6e-6 of the study's maximum
GENERATED_STATS_RTOL = 1e-3  # a generated slice placed by a registration of the stored study (its counts quantized)


def _sample(name: str) -> sitk.Image:
    return sitk.ReadImage(str(SAMPLE_STUDIES_DIR / f"{name}.nii.gz"))


def _assert_same_voxels(actual: sitk.Image, expected: sitk.Image) -> None:
    """Same voxels at the same positions (``expected`` made right-handed first, as DICOM stores it) and the same
    counts up to the 16-bit step."""
    expected = right_handed(expected)
    assert actual.GetSize() == expected.GetSize()
    for name in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(actual, name)(), getattr(expected, name)(), atol=GEOMETRY_ATOL,
                                   err_msg=name)
    counts, original = sitk.GetArrayViewFromImage(actual), sitk.GetArrayViewFromImage(expected)
    np.testing.assert_allclose(counts, original, atol=float(original.max()) / 65535 / 2 * 1.01)


# ---------------------------------------------------------------------------------------------- NM series on disk

@pytest.mark.parametrize("frames", REFERENCE_FRAMES)
@pytest.mark.parametrize("name", STUDY_IDS)
def test_a_reference_study_written_as_nm_reads_back_with_its_geometry_and_counts(tmp_path, name, frames):
    volume = _sample(name)
    datasets = encode_reference(volume, SyntheticRun().study(name), name, frames)
    assert len(datasets) == (1 if frames == "multi" else volume.GetSize()[2])
    assert {str(ds.SeriesInstanceUID) for ds in datasets} == {str(datasets[0].SeriesInstanceUID)}
    assert all(ds.Modality == "NM" and ds[0x0008001C].value == "YES" and "SYNTHETIC" in ds.SeriesDescription
               and "SYNTHETIC" in str(ds.PatientName) for ds in datasets)
    write_series(datasets, tmp_path)
    back = read_nm_volume(tmp_path)
    _assert_same_voxels(back, volume)
    flipped = np.linalg.det(np.reshape(volume.GetDirection(), (3, 3))) < 0
    assert np.allclose(back.GetDirection(), volume.GetDirection()) != flipped  # stored the other way round


def test_the_same_study_written_twice_gives_the_same_instances():
    run_id = "20260101T000000-abc123"
    first, second = (encode_reference(_sample(STUDY_IDS[0]), SyntheticRun(run_id).study("s"), "s", "single")
                     for _ in range(2))
    assert [ds.SOPInstanceUID for ds in first] == [ds.SOPInstanceUID for ds in second]


def test_what_is_not_one_evenly_spaced_nm_series_is_refused(tmp_path):
    volume = _sample(STUDY_IDS[0])
    datasets = encode_reference(volume, SyntheticRun().study("s"), "s", "single")
    paths = write_series(datasets[:5] + datasets[6:], tmp_path / "gap")  # a slice missing
    with pytest.raises(DicomError, match="not evenly spaced"):
        read_nm_volume(paths)
    other = encode_reference(volume, SyntheticRun().study("t"), "t", "multi")
    with pytest.raises(DicomError, match="one NM series"):
        read_nm_volume(write_series(datasets[:2], tmp_path / "mixed") + write_series(other, tmp_path / "mixed"))
    with pytest.raises(DicomError, match="frames 'tiles'"):
        encode_reference(volume, SyntheticRun().study("s"), "s", "tiles")
    with pytest.raises(InvalidImageError, match="3D"):
        encode_reference(volume[:, :, 0], SyntheticRun().study("s"), "s")


# ------------------------------------------------------------------------------------------- the server over a PACS

def _listed(server) -> dict:
    response = requests.get(f"{server.url}/datastore/?output=all", timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["objects"]


def _cached_study(server, series_uid: str) -> sitk.Image:
    """The reference study as the server fetched and converted it (its DICOMweb cache)."""
    path = server.cache_dir / md5_digest(server.pacs.orthanc.dicomweb_url) / f"{series_uid}.nii.gz"
    assert path.is_file(), f"the server did not cache series {series_uid}"
    return sitk.ReadImage(str(path))


def test_the_server_starts_offline_and_lists_the_pacs_studies_as_nm(pacs_server):
    listed = _listed(pacs_server)
    expected = {uid: name for name, kinds in pacs_server.pacs.series.items() for uid in kinds.values()}
    assert set(listed) == set(expected)
    for uid, name in expected.items():
        info = listed[uid]["image"]["info"]
        assert info["Modality"] == "NM" and info["SeriesDescription"] == f"SYNTHETIC reference {name}"
        assert info["SeriesInstanceUID"] == uid and info["StudyInstanceUID"]
    info = requests.get(f"{pacs_server.url}/info/", timeout=60).json()
    assert info["datastore"]["total"] == len(expected)
    assert "dcmqi" not in pacs_server.log_tail(10 ** 7).lower()
    assert not (Path(__file__).resolve().parents[1] / "monai_app" / "bin" / "itkimage2segimage").exists()


@pytest.mark.parametrize("frames", REFERENCE_FRAMES)
def test_each_pacs_study_reaches_the_server_with_its_geometry_and_hemisphere_statistics(pacs_server, frames):
    """Every sample study through the datastore: the server's copy has the NIfTI study's voxels, positions and
    counts, and the same hemisphere statistics (split by the midline the server registered)."""
    for name in STUDY_IDS:
        series_uid = pacs_server.pacs.series[name][frames]
        response = _infer(pacs_server.url, "spect_fastgan_A", series_uid,
                          {"level": "BG", "pattern": "normal", "seed": 1}, output="json")
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["image"] == f"{series_uid}.nii.gz"
        fetched, original = _cached_study(pacs_server, series_uid), _sample(name)
        _assert_same_voxels(fetched, original)
        midline = MidlinePlane(**result["midline"])
        from_pacs, from_nifti = hemisphere_stats(fetched, midline), hemisphere_stats(original, midline)
        assert (from_pacs.n_brain, from_pacs.n_left, from_pacs.n_right) == \
            (from_nifti.n_brain, from_nifti.n_left, from_nifti.n_right), name
        for key in ("mc", "left", "right", "lr", "ai"):
            np.testing.assert_allclose(getattr(from_pacs, key), getattr(from_nifti, key), rtol=STATS_RTOL,
                                       atol=1e-4 if key == "ai" else 0, err_msg=f"{name} {key}")


def test_generating_on_a_pacs_study_gives_what_the_nifti_study_gives(pacs_server, tiny_models):  # noqa: F811
    """The series is fetched once (a second request uses the server's cached copy); the result (seed, condition,
    statistics, placed geometry) matches the same request on the sample NIfTI, generated in-process with the same
    bundle."""
    name = "study_unilateral_left_flipped"
    series_uid = pacs_server.pacs.series[name]["multi"]
    params = {"level": "COR", "pattern": "unilateral", "side": "left", "seed": 11}
    fetched_at = []
    for _ in range(2):
        response = _infer(pacs_server.url, "spect_fastgan_A", series_uid, params, output="json")
        assert response.status_code == 200, response.text
        fetched_at.append((pacs_server.cache_dir / md5_digest(pacs_server.pacs.orthanc.dicomweb_url) /
                           f"{series_uid}.nii.gz").stat().st_mtime_ns)
    assert fetched_at[0] == fetched_at[1]
    from_pacs = response.json()
    service = GenerationService(tiny_models, ["spect_fastgan_A"])
    from_nifti = service.generate(service.request("spect_fastgan_A", params),
                                  SAMPLE_STUDIES_DIR / f"{name}.nii.gz").to_json()
    assert (from_pacs["seed"], from_pacs["condition"]) == (from_nifti["seed"], from_nifti["condition"])
    for key in ("mc", "left", "right", "lr"):
        np.testing.assert_allclose(from_pacs["stats"][key], from_nifti["stats"][key], rtol=GENERATED_STATS_RTOL,
                                   err_msg=key)
    np.testing.assert_allclose(from_pacs["geometry"]["origin"], from_nifti["geometry"]["origin"], atol=0.5)
    np.testing.assert_allclose(from_pacs["geometry"]["direction"], from_nifti["geometry"]["direction"], atol=0.01)


def test_unknown_and_path_like_series_ids_are_404_naming_the_pacs_series(pacs_server):
    any_series = pacs_server.pacs.series[STUDY_IDS[0]]["multi"]
    for image in ("1.2.3.4", "../../etc/passwd", f"{any_series}/../x"):
        response = _infer(pacs_server.url, "spect_fastgan_A", image, {"level": "BG", "pattern": "normal"})
        assert response.status_code == 404, response.text
        detail = response.json()["detail"]
        assert "available: " in detail and any(uid in detail for kinds in pacs_server.pacs.series.values()
                                               for uid in kinds.values())


def test_a_final_label_is_refused_by_the_pacs_datastore(pacs_server):
    series_uid = pacs_server.pacs.series[STUDY_IDS[0]]["multi"]
    with tempfile.NamedTemporaryFile(suffix=".nii.gz") as label:
        sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkUInt8), label.name)
        with open(label.name, "rb") as handle:
            response = requests.put(f"{pacs_server.url}/datastore/label", params={"image": series_uid,
                                                                                   "tag": "final"},
                                    files={"label": ("label.nii.gz", handle)}, data={"params": json.dumps({})},
                                    timeout=60)
    assert response.status_code == 422, response.text
    assert "takes no final labels" in response.json()["detail"]
