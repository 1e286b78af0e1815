"""Pytest fixtures of a PACS-backed server: a real Orthanc holding the sample reference studies as NM DICOM, and the
real app (``monailabel start_server``) with that Orthanc as its datastore, started offline. Import them into a test
module (with ``tiny_models`` and ``toy_cohort``, which ``pacs_server`` uses)::

    from gan_toy_cohort import toy_cohort  # noqa: F401
    from pacs_server import pacs_server, pacs_studies  # noqa: F401
    from test_server import tiny_models  # noqa: F401
"""
from __future__ import annotations

import contextlib
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from spectgan.export.dicom import REFERENCE_FRAMES
from spectgan.export.orthanc import LocalOrthanc
from spectgan.tools.server import ServerProcess
from spectgan.tools.workstation import load_sample_studies, pacs_server_environment


@pytest.fixture(scope="module")
def pacs_studies(tmp_path_factory):
    """A real Orthanc (``LocalOrthanc``) holding every sample study twice, as NM series: one multi-frame instance
    and one single-frame instance per slice. ``orthanc``; ``series``: {study id: {"multi" | "single": series
    UID}}; ``environment``: the credentials ``spectgan.export.pacs`` reads."""
    with LocalOrthanc() as orthanc, pytest.MonkeyPatch.context() as patch:
        for name, value in orthanc.client_environment().items():
            patch.setenv(name, value)
        series = load_sample_studies(tmp_path_factory.mktemp("pacs_dicom"), orthanc.dicomweb_url,
                                     frames=REFERENCE_FRAMES)
        yield SimpleNamespace(orthanc=orthanc, series=series, environment=orthanc.client_environment())


@pytest.fixture(scope="module")
def offline_proxy():
    """``HTTP(S)_PROXY`` settings that make every request outside 127.0.0.1 fail: the proxy is a port of 127.0.0.1
    bound by this fixture and never listening. A server started with them cannot download anything."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{holder.getsockname()[1]}"
        yield {name: proxy for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")} | {
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


@contextlib.contextmanager
def pacs_backed_server(folder: Path, pacs: SimpleNamespace, proxy: dict[str, str], models_dir: Path,
                       **options) -> Iterator[ServerProcess]:
    """The real app with ``--studies <pacs's Orthanc>/dicom-web`` and the bundles of ``models_dir``, its outside
    network cut by ``proxy`` (``offline_proxy``); ``options`` are ServerProcess's (``models``, ``cohort_dir``).
    ``pacs`` is ``pacs_studies``; ``cache_dir`` holds the series the server fetched
    (``<cache_dir>/<hash of the URL>/<series UID>.nii.gz``); the log is ``<folder>/server.log``."""
    environment = {**pacs_server_environment(pacs.orthanc, folder / "cache"), **proxy, **pacs.environment}
    with ServerProcess(pacs.orthanc.dicomweb_url, models_dir, folder / "server.log", environment=environment,
                       **options) as server:
        server.pacs, server.cache_dir = pacs, folder / "cache"
        yield server


@pytest.fixture(scope="module")
def pacs_server(tmp_path_factory, pacs_studies, offline_proxy, tiny_models, toy_cohort):
    """``pacs_backed_server`` with the tiny bundles (``tiny_models``, ``toy_cohort``)."""
    folder = tmp_path_factory.mktemp("pacs_server")
    models = Path(shutil.copytree(tiny_models, folder / "models"))
    with pacs_backed_server(folder, pacs_studies, offline_proxy, models, cohort_dir=toy_cohort) as server:
        yield server
