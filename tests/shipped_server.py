"""A pytest fixture of the real app serving the shipped model A (models/spect_fastgan_A); import it into a test
module::

    from shipped_server import SHIPPED_MODEL, shipped_server  # noqa: F401 (a fixture)
"""
from __future__ import annotations

import shutil

import pytest

from spectgan.serving.settings import DEFAULT_MODELS_DIR, SAMPLE_STUDIES_DIR
from spectgan.tools.server import ServerProcess

SHIPPED_MODEL = "spect_fastgan_A"


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory):
    """A real ``monailabel start_server`` process with the shipped model A over a copy of the sample studies."""
    studies = tmp_path_factory.mktemp("studies") / "studies"
    shutil.copytree(SAMPLE_STUDIES_DIR, studies)
    with ServerProcess(studies, DEFAULT_MODELS_DIR, tmp_path_factory.mktemp("server") / "server.log",
                       models=SHIPPED_MODEL) as server:
        yield server
