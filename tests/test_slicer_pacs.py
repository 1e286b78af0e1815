"""The 3D Slicer module's Logic, over the ``slicer`` stand-in, against a server whose datastore is a PACS: a real
Orthanc holding the sample studies as NM series (``pacs_studies``: one multi-frame and one single-frame series each)
and the real app on it, offline, with the shipped model A (a trained model, so that the side of a unilateral scan
shows; the tiny bundles of ``pacs_server`` make no defect).

The module's study box lists the PACS series; one study is used three ways (its multi-frame series and its
single-frame series picked from the box, and the same study loaded into the scene and uploaded), each giving the
same statistics and a unilateral-left scan darker at the patient's left (-x in RAS); the last scan goes to the PACS
and is darker at the left when read back from it.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import SHIPPED_MODEL as MODEL
from pacs_server import offline_proxy, pacs_backed_server, pacs_studies  # noqa: F401 (fixtures)
from slicer_fixtures import slicer_module  # noqa: F401 (a fixture)
from test_pacs_datastore import GENERATED_STATS_RTOL
from test_slicer_logic import REFERENCE, nm_series_as_slicer_loads_them, patient_sides_in_ras
from test_slicer_logic import pytestmark  # noqa: F401 (skipped where model A has no trained weights)
from spectgan.serving.settings import DEFAULT_MODELS_DIR, SAMPLE_STUDIES_DIR

REQUEST = {"model": MODEL, "level": "BG", "pattern": "unilateral", "side": "left", "seed": "1", "count": "1"}


@pytest.fixture(scope="module")
def shipped_pacs_server(tmp_path_factory, pacs_studies, offline_proxy):  # noqa: F811
    """``pacs_backed_server`` with the shipped model A."""
    with pacs_backed_server(tmp_path_factory.mktemp("pacs_server"), pacs_studies, offline_proxy,
                            DEFAULT_MODELS_DIR, models=MODEL) as server:
        yield server


def _generate_one(logic, parameters) -> tuple[str, object, object]:
    """Generate from the parameter node (one scan); the reference's image id, the loaded node and its result."""
    image_id, nodes = logic.generateFromParameters(parameters)
    assert len(nodes) == len(logic.results) == 1
    return image_id, nodes[0], logic.results[0]


def test_logic_picks_pacs_studies_and_an_upload_generates_alike_and_exports_to_the_pacs(
        slicer_module, shipped_pacs_server, monkeypatch, tmp_path):  # noqa: F811
    slicer, logic = slicer_module.slicer, slicer_module.SpectGANLogic()
    pacs = shipped_pacs_server.pacs
    for name, value in pacs.environment.items():  # where spectgan.export.pacs reads the PACS login
        monkeypatch.setenv(name, value)
    assert logic.connect(shipped_pacs_server.url) == [MODEL]
    reference_series = {uid for kinds in pacs.series.values() for uid in kinds.values()}
    assert set(logic.datastoreImages()) == reference_series  # the study box: every NM series of the PACS

    parameters = logic.getParameterNode()
    for name, value in REQUEST.items():
        parameters.SetParameter(name, value)
    results = {}
    for frames in ("multi", "single"):
        series_uid = pacs.series[REFERENCE][frames]
        parameters.SetParameter("imageId", series_uid)  # picked in the study box
        image_id, node, result = _generate_one(logic, parameters)
        assert image_id == series_uid and result.reference == f"{series_uid}.nii.gz"
        results[frames] = (node, result)

    reference = slicer.util.loadVolume(str(SAMPLE_STUDIES_DIR / f"{REFERENCE}.nii.gz"))
    parameters.SetNodeReferenceID("reference", reference.GetID())  # a volume of the scene wins over the box
    image_id, node, result = _generate_one(logic, parameters)
    assert image_id.startswith("reference-") and result.reference == f"{image_id}.nii.gz"
    results["upload"] = (node, result)

    for how, (node, result) in results.items():
        assert (result.seed, result.condition) == (results["upload"][1].seed, results["upload"][1].condition), how
        for key in ("mc", "left", "right", "lr"):
            np.testing.assert_allclose(getattr(result.stats, key), getattr(results["upload"][1].stats, key),
                                       rtol=GENERATED_STATS_RTOL, err_msg=f"{how} {key}")
        assert result.stats.left < result.stats.right, how  # the server's statistics (LPS)
        left, right = patient_sides_in_ras(node, result.midline)
        assert left < right, (how, left, right)  # the defect is at the patient's left, -x in RAS

    assert logic.exportToPacs(pacs.orthanc.dicomweb_url).sent == 3  # NM, SEG and SR of the upload's scan
    (exported,) = nm_series_as_slicer_loads_them(slicer, pacs.orthanc, tmp_path, skip=reference_series)
    left, right = patient_sides_in_ras(exported[1], logic.results[0].midline)
    assert left < right, (exported[0], left, right)  # still at the patient's left from the PACS
