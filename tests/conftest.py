"""Shared fixtures: real files on disk, made once per test session."""
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> Path:
    """A simulated cohort at 64 x 64 with 0.1 x the paper's counts (train + test), through the real acquisition."""
    from spectgan.cohorts.simulated import build_cohort

    out = tmp_path_factory.mktemp("cohort") / "small"
    build_cohort(out, seed=7, matrix=64, scale=0.1, progress=False)
    return out
