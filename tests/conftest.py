"""Shared fixtures: real files on disk, made once per test session."""
import socket
from pathlib import Path

import pytest


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
