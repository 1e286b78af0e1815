"""Shared fixtures: real files on disk, made once per test session."""
import shutil
import socket
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config) -> None:
    """Hypothesis keeps its example database and caches in a temporary folder, not in the repository (set before
    the test modules are collected: collecting them already writes to it)."""
    from hypothesis.configuration import set_hypothesis_home_dir

    storage = tempfile.mkdtemp(prefix="spectgan-hypothesis-")
    set_hypothesis_home_dir(storage)
    config.add_cleanup(lambda: shutil.rmtree(storage, ignore_errors=True))


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> Path:
    """A simulated cohort at 64 x 64 with 0.1 x the paper's counts (train + test), through the real acquisition."""
    from spectgan.cohorts.simulated import build_cohort

    out = tmp_path_factory.mktemp("cohort") / "small"
    build_cohort(out, seed=7, matrix=64, scale=0.1, progress=False)
    return out


@pytest.fixture
def closed_port():
    """A port of 127.0.0.1 that refuses connections: bound by this test (so that no other process takes it) and
    never listening."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


SHIPPED_MODEL = "spect_fastgan_A"


@pytest.fixture(scope="session")
def shipped_server(tmp_path_factory):
    """A real ``monailabel start_server`` process with the shipped model A (``SHIPPED_MODEL``) over a copy of the
    sample studies, shared by the test modules that need the trained model behind the real server."""
    from spectgan.serving.settings import DEFAULT_MODELS_DIR, SAMPLE_STUDIES_DIR
    from spectgan.tools.server import ServerProcess

    studies = tmp_path_factory.mktemp("studies") / "studies"
    shutil.copytree(SAMPLE_STUDIES_DIR, studies)
    with ServerProcess(studies, DEFAULT_MODELS_DIR, tmp_path_factory.mktemp("server") / "server.log",
                       models=SHIPPED_MODEL) as server:
        yield server
