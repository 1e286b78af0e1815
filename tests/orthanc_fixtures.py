"""Pytest fixtures for a real local Orthanc (``spectgan.export.orthanc``); import them into a test module."""
from __future__ import annotations

import pytest

from spectgan.export.orthanc import LocalOrthanc


@pytest.fixture(scope="module")
def orthanc():
    """One Orthanc for a test module (free ports, authentication on, DICOMweb)."""
    with LocalOrthanc() as server:
        yield server


@pytest.fixture
def pacs_login(orthanc, monkeypatch):
    """The module's Orthanc with its credentials in the environment, where spectgan.export.pacs reads them."""
    for name, value in orthanc.client_environment().items():
        monkeypatch.setenv(name, value)
    return orthanc
