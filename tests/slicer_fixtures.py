"""The 3D Slicer module imported over the ``slicer`` stand-in (``tests/slicer_stand_in``); import the fixture into a
test module."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

STAND_IN_DIR = Path(__file__).resolve().parent / "slicer_stand_in"
MODULE_DIR = Path(__file__).resolve().parents[1] / "plugin" / "slicer" / "SpectGAN"
STAND_IN_PACKAGES = ("slicer", "vtk", "qt", "SpectGAN")  # top-level names the stand-in and the module take


def _taken_modules() -> dict:
    return {name: module for name, module in sys.modules.items() if name.split(".")[0] in STAND_IN_PACKAGES}


@pytest.fixture
def slicer_module(tmp_path, monkeypatch):
    """``SpectGAN`` (plugin/slicer/SpectGAN/SpectGAN.py) imported over the stand-in: a new empty scene, and
    ``slicer.app.temporaryPath`` in the test's folder. The module's ``slicer`` is ``SpectGAN.slicer``. Afterwards the
    stand-in's modules leave ``sys.modules`` (and whatever held those names before comes back)."""
    saved = _taken_modules()
    for name in saved:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    monkeypatch.syspath_prepend(str(STAND_IN_DIR))
    import slicer

    slicer.app.temporaryPath = str(tmp_path / "slicer-temporary")
    Path(slicer.app.temporaryPath).mkdir()
    import SpectGAN

    yield SpectGAN
    for name in _taken_modules():
        del sys.modules[name]
    sys.modules.update(saved)
