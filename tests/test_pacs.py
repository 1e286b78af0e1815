"""Export to a real Orthanc by C-STORE and STOW-RS through the outbox; query back (C-FIND, QIDO-RS), retrieve
(WADO-RS) and read the same scan; outages, retries, credentials and AE titles."""
from __future__ import annotations

import socket

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from orthanc_fixtures import orthanc, pacs_login  # noqa: F401 (fixtures)
from spectgan.cli import main
from spectgan.export.dicom import SyntheticStudy, counts_slope, encode_scan, read_scan, write_series
from spectgan.export.orthanc import LocalOrthanc
from spectgan.export.pacs import (CONFIRMED, PENDING, PacsAuthenticationError, PacsError, PacsTarget,
                           PacsUnavailableError, export_folder, pending_count, read_outbox, retry_pending)
from test_dicom import REFERENCE, Scan, assert_same_scan, make_oblique_scan


def write_scans(folder, count: int = 1) -> tuple[list[Scan], list[Dataset]]:
    """``count`` scans of one new study, written to ``folder``; the scans and their datasets."""
    study = SyntheticStudy(REFERENCE)
    scans = [make_oblique_scan(index) for index in range(count)]
    datasets = []
    for index, scan in enumerate(scans):
        encoded = encode_scan(scan.result(), study)
        write_series(encoded, folder / f"scan{index}")
        datasets += encoded
    return scans, datasets


def dicomweb_client(server: LocalOrthanc) -> DICOMwebClient:
    session = requests.Session()
    session.auth = (server.username, server.password)
    return DICOMwebClient(url=server.dicomweb_url, session=session)


def cfind_series(server: LocalOrthanc, study_uid: str) -> dict[str, str]:
    """Series Instance UID -> Modality of a study, by C-FIND."""
    ae = AE(ae_title="SPECTGAN_TEST")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    association = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert association.is_established
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "SERIES", study_uid
    query.SeriesInstanceUID, query.Modality = "", ""
    try:
        return {identifier.SeriesInstanceUID: identifier.Modality
                for status, identifier in association.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
                if status.Status in (0xFF00, 0xFF01)}
    finally:
        association.release()


def orthanc_instance_uids(server: LocalOrthanc) -> list[str]:
    """SOP Instance UIDs of every instance Orthanc holds (one entry per stored instance)."""
    return [server.get(f"/instances/{identifier}")["MainDicomTags"]["SOPInstanceUID"]
            for identifier in server.get("/instances")]


@pytest.mark.parametrize("protocol", ["dicom", "dicomweb"])
def test_export_query_and_retrieve_the_same_scan(protocol, pacs_login, tmp_path):
    server = pacs_login
    (scan,), datasets = write_scans(tmp_path / "export")
    nm, seg, sr = datasets
    url = server.dicom_url if protocol == "dicom" else server.dicomweb_url
    result = export_folder(tmp_path / "export", url)
    assert (result.sent, result.already_confirmed) == (3, 0)
    assert export_folder(tmp_path / "export", url).sent == 0
    assert pending_count(tmp_path / "export") == 0

    expected_series = {nm.SeriesInstanceUID: "NM", seg.SeriesInstanceUID: "SEG", sr.SeriesInstanceUID: "SR"}
    assert cfind_series(server, nm.StudyInstanceUID) == expected_series
    client = dicomweb_client(server)
    found = client.search_for_instances(study_instance_uid=nm.StudyInstanceUID)
    assert {item["00080018"]["Value"][0] for item in found} == {nm.SOPInstanceUID, seg.SOPInstanceUID,
                                                              sr.SOPInstanceUID}
    retrieved = [client.retrieve_instance(dataset.StudyInstanceUID, dataset.SeriesInstanceUID,
                                          dataset.SOPInstanceUID) for dataset in datasets]
    write_series(retrieved, tmp_path / "retrieved")
    image, stats = read_scan(tmp_path / "retrieved")
    assert_same_scan(image, stats, scan, counts_slope(nm))


def test_orthanc_names_synthetic_data(pacs_login, tmp_path):
    _, datasets = write_scans(tmp_path)
    export_folder(tmp_path, pacs_login.dicomweb_url)
    exported = {dataset.SOPInstanceUID for dataset in datasets}
    identifiers = [instance["ID"] for instance in pacs_login.get("/instances?expand")
                   if instance["MainDicomTags"]["SOPInstanceUID"] in exported]
    assert len(identifiers) == 3
    for identifier in identifiers:
        tags = pacs_login.get(f"/instances/{identifier}/simplified-tags")
        assert tags["SyntheticData"] == "YES", tags["Modality"]


@pytest.mark.parametrize("protocol", ["dicom", "dicomweb"])
def test_outage_mid_export_keeps_the_rest_pending_and_retry_adds_no_duplicate(protocol, tmp_path, monkeypatch):
    _, datasets = write_scans(tmp_path, count=2)
    with LocalOrthanc() as server:
        for name, value in server.client_environment().items():
            monkeypatch.setenv(name, value)
        url = server.dicom_url if protocol == "dicom" else server.dicomweb_url
        confirmed = []

        def crash_after_two(entry):
            confirmed.append(entry.sop_instance_uid)
            if len(confirmed) == 2:
                server.kill()

        with pytest.raises(PacsUnavailableError, match="2 of 6 instances confirmed.*4 stay pending"):
            export_folder(tmp_path, url, on_confirmed=crash_after_two)
        states = {entry.sop_instance_uid: entry.status(url) for entry in read_outbox(tmp_path)}
        assert sorted(states.values()) == [CONFIRMED] * 2 + [PENDING] * 4
        assert pending_count(tmp_path, url) == 4

        server.start()
        (result,) = retry_pending(tmp_path)
        assert (result.sent, result.already_confirmed) == (4, 2)
        assert sorted(orthanc_instance_uids(server)) == sorted(dataset.SOPInstanceUID for dataset in datasets)
        assert retry_pending(tmp_path) == []


def test_wrong_password_is_an_authentication_error_and_keeps_the_series(pacs_login, tmp_path, monkeypatch):
    write_scans(tmp_path)
    monkeypatch.setenv("SPECTGAN_PACS_PASSWORD", "not-the-password")
    with pytest.raises(PacsAuthenticationError, match="authentication failed.*HTTP 401"):
        export_folder(tmp_path, pacs_login.dicomweb_url)
    assert pending_count(tmp_path) == 3
    monkeypatch.delenv("SPECTGAN_PACS_USERNAME")
    with pytest.raises(PacsAuthenticationError, match="set both"):
        export_folder(tmp_path, pacs_login.dicomweb_url)


def test_unreachable_pacs_and_wrong_ae_title_are_named(pacs_login, tmp_path, closed_port):
    write_scans(tmp_path)
    with pytest.raises(PacsUnavailableError, match="cannot reach the PACS"):
        export_folder(tmp_path, f"dicom://ANY@127.0.0.1:{closed_port}")
    with pytest.raises(PacsUnavailableError, match="cannot reach the PACS"):
        export_folder(tmp_path, f"http://127.0.0.1:{closed_port}/dicom-web")
    with pytest.raises(PacsError, match=r"rejected the association \(Called AE title not recognised\): check the "
                                        r"called AE title 'WRONG'"):
        export_folder(tmp_path, f"dicom://WRONG@127.0.0.1:{pacs_login.dicom_port}")
    with pytest.raises(PacsError, match="no STOW-RS endpoint"):
        export_folder(tmp_path, f"{pacs_login.rest_url}/not-dicomweb")
    assert pending_count(tmp_path) == 12


@pytest.mark.parametrize("url, message", [
    ("dicom://user:secret@host:104", "must not hold credentials"),
    ("http://user@host/dicom-web", "must not hold credentials"),
    ("dicom://host:104", "needs the called AE title"),
    ("ftp://host/dicom-web", "unsupported PACS URL"),
    ("dicom://AE@host:port", "invalid port"),
])
def test_bad_pacs_urls_are_named(url, message):
    with pytest.raises(PacsError, match=message):
        PacsTarget.parse(url)


def test_pacs_urls_are_normalised():
    assert PacsTarget.parse("dicom://PACS@example.org").url == "dicom://PACS@example.org:104"
    assert PacsTarget.parse("https://example.org:8443/dicom-web/").url == "https://example.org:8443/dicom-web"


def test_export_command_reports_the_failure_and_retries(pacs_login, tmp_path, capsys, monkeypatch):
    write_scans(tmp_path)
    monkeypatch.setenv("SPECTGAN_PACS_PASSWORD", "not-the-password")
    assert main(["export", str(tmp_path), "--pacs", pacs_login.dicomweb_url]) == 2
    assert "spectgan export: error: authentication failed" in capsys.readouterr().err
    monkeypatch.setenv("SPECTGAN_PACS_PASSWORD", pacs_login.password)
    assert main(["export", str(tmp_path), "--retry"]) == 0
    assert main(["export", str(tmp_path), "--retry"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{pacs_login.dicomweb_url}: 3 instances confirmed now, 0 confirmed before; nothing pending",
        f"nothing pending in {tmp_path / 'outbox'}"]


def test_orthanc_starts_on_other_ports_when_its_port_was_taken_first():
    """Orthanc binds its ports itself: a port found free can be taken before it starts; it then moves on."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    orthanc = LocalOrthanc()
    orthanc.http_port = holder.getsockname()[1]  # taken, as by another process between finding and binding
    try:
        with orthanc:
            assert orthanc.http_port != holder.getsockname()[1]
            assert orthanc.get("/system")["Name"] == "spectgan-orthanc"
    finally:
        holder.close()
