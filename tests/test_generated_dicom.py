"""DICOM made by the real pipeline: `spectgan generate --pacs` against the real server with the shipped model A and a
real Orthanc (every condition the model offers, one seed). dciodvfy checks every NM, SEG and SR object as written and
as the PACS stored it; an export of the same files to a second Orthanc is killed with SIGKILL part way and run again:
nothing lost, nothing doubled."""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
import requests

from conftest import SHIPPED_MODEL
from kill_part_way import kill_when
from orthanc_fixtures import orthanc  # noqa: F401 (a fixture)
from spectgan.cli import main as cli_main
from spectgan.export.orthanc import LocalOrthanc
from spectgan.export.pacs import CONFIRMED, OUTBOX, PENDING, read_outbox
from test_dicom import dciodvfy_findings, dciodvfy_errors
from test_pacs import orthanc_instance_uids

REFERENCE = "study_unilateral_left_oblique"
MODALITIES = {"NM", "SEG", "SR"}


@pytest.fixture(scope="module")
def generated(shipped_server, orthanc, tmp_path_factory):  # noqa: F811
    """``spectgan generate --pacs`` over every condition of model A (seed 0), exported by STOW-RS to the module's
    Orthanc: ``files`` (the DICOM files written, outbox excluded), ``folder`` (their folder) and ``orthanc``."""
    out = tmp_path_factory.mktemp("generated") / "out"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in orthanc.client_environment().items():
            patch.setenv(name, value)
        code = cli_main(["generate", "--server", shipped_server.url, "--image", REFERENCE, "--model", SHIPPED_MODEL,
                         "--seeds", "0", "--out", str(out), "--pacs", orthanc.dicomweb_url, "--no-progress"])
    assert code == 0
    folder = out / "dicom"
    files = sorted(path for path in folder.rglob("*.dcm") if OUTBOX not in path.relative_to(folder).parts)
    return SimpleNamespace(files=files, folder=folder, orthanc=orthanc)


def _modality(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).Modality)


def _assert_valid(paths: list[Path]) -> None:
    """No dciodvfy error in any file (the one attribute dciodvfy predates aside: see test_dicom); its warnings are
    listed in the message of a failure."""
    errors = {path.name: dciodvfy_errors(path) for path in paths}
    warnings = {path.name: [line for line in dciodvfy_findings(path) if line.startswith("Warning")] for path in paths}
    assert not any(errors.values()), {"errors": errors, "warnings": warnings}


def test_generated_and_stored_nm_seg_and_sr_pass_dciodvfy(generated, tmp_path):
    assert {_modality(path) for path in generated.files} == MODALITIES
    _assert_valid(generated.files)
    stored = []
    for identifier in generated.orthanc.get("/instances"):
        path = tmp_path / f"{identifier}.dcm"
        response = requests.get(f"{generated.orthanc.rest_url}/instances/{identifier}/file",
                                auth=(generated.orthanc.username, generated.orthanc.password), timeout=30)
        response.raise_for_status()
        path.write_bytes(response.content)
        stored.append(path)
    assert len(stored) == len(generated.files)
    assert {_modality(path) for path in stored} == MODALITIES
    _assert_valid(stored)


def _confirmed_any(folder: Path) -> bool:
    """Whether the outbox of ``folder`` records any instance as confirmed (files are replaced atomically)."""
    return any(f'"{CONFIRMED}"' in path.read_text() for path in (folder / OUTBOX).glob("*.json"))


def test_an_export_killed_part_way_resumes_without_loss_or_duplicate(generated, tmp_path, monkeypatch):
    folder = tmp_path / "export"
    shutil.copytree(generated.folder, folder, ignore=shutil.ignore_patterns(OUTBOX))
    expected = sorted(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
                      for path in folder.rglob("*.dcm"))
    with LocalOrthanc() as second:
        for name, value in second.client_environment().items():
            monkeypatch.setenv(name, value)
        kill_when(["export", str(folder), "--pacs", second.dicom_url], lambda: _confirmed_any(folder))
        states = [entry.status(second.dicom_url) for entry in read_outbox(folder)]
        assert CONFIRMED in states and PENDING in states, states  # killed part way
        assert cli_main(["export", str(folder), "--pacs", second.dicom_url]) == 0
        assert sorted(orthanc_instance_uids(second)) == expected  # each instance once, none missing
        entries = read_outbox(folder)
        assert sorted(entry.sop_instance_uid for entry in entries) == expected
        assert all(entry.status(second.dicom_url) == CONFIRMED for entry in entries)
        assert sorted(entry.file for entry in entries) == sorted(
            path.relative_to(folder).as_posix() for path in folder.rglob("*.dcm"))
