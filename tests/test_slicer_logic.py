"""The 3D Slicer module's Logic end to end, over the ``slicer`` stand-in (tests/slicer_stand_in), against a real
``monailabel start_server`` process with the shipped model A and a real Orthanc: a volume loaded as Slicer loads it
(RAS) is uploaded, scans are generated over it, loaded, tabulated and exported; the side of a unilateral left scan is
checked in RAS, as Slicer holds it, and again after a round trip through the PACS. The module's own SpectGANTest
runs here too.

The stand-in itself is checked first: a file loaded and exported again keeps its LPS geometry and voxels, and a
loaded volume's IJK-to-RAS matrix puts each voxel at the LPS position with x and y negated.
"""
from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk

from orthanc_fixtures import orthanc, pacs_login  # noqa: F401 (fixtures)
from conftest import SHIPPED_MODEL
from slicer_fixtures import slicer_module  # noqa: F401 (a fixture)
from test_plugin import assert_same_image
from spectgan.client.http import RequestRejectedError
from spectgan.geometry.roi import MidlinePlane
from spectgan.serving.settings import DEFAULT_MODELS_DIR, SAMPLE_STUDIES_DIR

REFERENCE = "study_unilateral_right_ras"  # stored RAS-like (direction diag(-1, -1, 1)); its own defect is right
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])
STUDY_IDS = sorted(path.name[:-len(".nii.gz")] for path in SAMPLE_STUDIES_DIR.glob("*.nii.gz"))

pytestmark = pytest.mark.skipif(not (DEFAULT_MODELS_DIR / SHIPPED_MODEL).is_dir(),
                                reason="models/spect_fastgan_A has no trained weights yet (train it, then this runs)")


def voxel_positions_ras(node) -> np.ndarray:
    """(3, k, j, i) RAS mm of every voxel of a volume node, from its IJK-to-RAS matrix."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    shape = node.GetImageData().array.shape
    k, j, i = np.indices(shape)
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    return (np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(3)]) @ ijk
            ).reshape((3, *shape))


def patient_sides_in_ras(node, midline: MidlinePlane) -> tuple[float, float]:
    """Mean counts of the brain (voxels at or above 30 % of the maximum) at RAS x below the midline's point (the
    patient's left, as Slicer shows it) and above it (the patient's right), read from the node alone."""
    values = node.GetImageData().array
    x_ras = voxel_positions_ras(node)[0]
    midline_x_ras = (RAS_FROM_LPS @ np.asarray(midline.point))[0]
    brain = values >= 0.3 * values.max()
    return float(values[brain & (x_ras < midline_x_ras)].mean()), float(values[brain & (x_ras > midline_x_ras)].mean())


def nm_series_as_slicer_loads_them(slicer, orthanc, folder: Path, skip: Collection[str] = ()) -> list:
    """Each single-instance NM series of ``orthanc`` (a LocalOrthanc) but those whose SeriesInstanceUID is in
    ``skip``, downloaded into ``folder`` and loaded as Slicer loads it: [(its MainDicomTags, its volume node)]."""
    loaded = []
    for series in orthanc.get("/series?expand"):
        tags = series["MainDicomTags"]
        if tags.get("Modality") != "NM" or tags["SeriesInstanceUID"] in skip:
            continue
        (instance,) = series["Instances"]
        path = folder / f"{instance}.dcm"
        path.write_bytes(requests.get(f"{orthanc.rest_url}/instances/{instance}/file",
                                      auth=(orthanc.username, orthanc.password), timeout=30).content)
        loaded.append((tags, slicer.util.loadVolume(str(path))))
    return loaded


@pytest.mark.parametrize("study", STUDY_IDS)
def test_the_stand_in_loads_lps_files_into_ras_and_exports_them_back(slicer_module, study, tmp_path):
    slicer = slicer_module.slicer
    path = SAMPLE_STUDIES_DIR / f"{study}.nii.gz"
    image = sitk.ReadImage(str(path))
    node = slicer.util.loadVolume(str(path))
    assert node.GetName() == study and slicer.mrmlScene.GetNodeByID(node.GetID()) is node
    ras = voxel_positions_ras(node)
    for index in [(0, 0, 0), (image.GetWidth() - 1, 3, 5), (7, image.GetHeight() - 1, image.GetDepth() - 1)]:
        lps = np.asarray(image.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(ras[:, index[2], index[1], index[0]], RAS_FROM_LPS @ lps, atol=1e-4)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), sitk.GetArrayFromImage(image))
    assert slicer.util.exportNode(node, str(tmp_path / "exported.nii.gz"))
    assert_same_image(sitk.ReadImage(str(tmp_path / "exported.nii.gz")), image)


def test_logic_end_to_end_upload_generate_table_export_and_the_side_in_ras(slicer_module, shipped_server,
                                                                          pacs_login, tmp_path):
    """What the Widget's buttons run, from the parameter node, against the real server and Orthanc."""
    slicer, logic = slicer_module.slicer, slicer_module.SpectGANLogic()
    reference = slicer.util.loadVolume(str(SAMPLE_STUDIES_DIR / f"{REFERENCE}.nii.gz"))
    parameters = logic.getParameterNode()
    assert logic.connect(shipped_server.url) == [SHIPPED_MODEL]
    assert set(STUDY_IDS) <= set(logic.datastoreImages())
    for name, value in (("model", SHIPPED_MODEL), ("level", "BG"), ("pattern", "unilateral"), ("side", "left"),
                        ("seed", "1"), ("count", "2")):
        parameters.SetParameter(name, value)
    parameters.SetNodeReferenceID("reference", reference.GetID())

    image_id, nodes = logic.generateFromParameters(parameters)
    assert image_id.startswith("reference-") and image_id in logic.datastoreImages()  # the upload, by content
    uploaded = shipped_server.studies / f"{image_id}.nii.gz"
    assert_same_image(sitk.ReadImage(str(uploaded)), sitk.ReadImage(str(SAMPLE_STUDIES_DIR / f"{REFERENCE}.nii.gz")))
    assert [node.GetName() for node in nodes] == ["BG-unilateral-left_seed1", "BG-unilateral-left_seed2"]
    assert [result.reference for result in logic.results] == [f"{image_id}.nii.gz"] * 2

    table = logic.tableNode
    columns = [table.GetColumnName(index) for index in range(table.GetNumberOfColumns())]
    assert table.GetNumberOfRows() == 2
    for row, result in enumerate(logic.results):
        assert table.GetCellText(row, columns.index("side")) == "left"
        assert table.GetCellText(row, columns.index("lr")) == f"{result.stats.lr:.6g}"
        assert result.stats.left < result.stats.right  # the server's statistics (LPS)

    for node, result in zip(nodes, logic.results):
        normal_ras = RAS_FROM_LPS @ np.asarray(result.midline.normal) / np.linalg.norm(result.midline.normal)
        assert normal_ras[0] < -0.9  # the patient's left is -x in Slicer's RAS for this near-axial reference
        left, right = patient_sides_in_ras(node, result.midline)
        assert left < right, (node.GetName(), left, right)  # the defect is at the patient's left, -x in RAS

    logic.showOnReference(nodes[-1], reference)
    red = slicer.app.layoutManager().sliceWidget("Red")
    assert red.mrmlSliceCompositeNode().GetBackgroundVolumeID() == reference.GetID()
    assert red.mrmlSliceCompositeNode().GetForegroundVolumeID() == nodes[-1].GetID()
    assert red.mrmlSliceNode().volumePlane is nodes[-1]
    bounds = [0.0] * 6
    nodes[-1].GetRASBounds(bounds)
    np.testing.assert_allclose(red.mrmlSliceNode().center, np.reshape(bounds, (3, 2)).mean(axis=1))

    assert logic.exportToPacs(pacs_login.dicomweb_url).sent == 6  # NM, SEG and SR per scan
    midline = logic.results[0].midline
    assert logic.results[1].midline == midline  # both lie on the BG plane of one registered reference
    loaded = nm_series_as_slicer_loads_them(slicer, pacs_login, tmp_path)
    assert len(loaded) == 2
    for tags, node in loaded:
        left, right = patient_sides_in_ras(node, midline)
        assert left < right, (tags, left, right)  # still at the patient's left from the PACS


def test_logic_offers_made_from_and_sends_base_reference(slicer_module, shipped_server):
    """The "Made from" control comes from the model's declared base param; with ``reference`` chosen, Generate
    sends it: the scan is the reference patient's own slice with the requested defect added, on its side."""
    slicer, logic = slicer_module.slicer, slicer_module.SpectGANLogic()
    parameters = logic.getParameterNode()
    logic.connect(shipped_server.url)
    (base,) = [control for control in logic.requestControls(SHIPPED_MODEL, parameters) if control.name == "base"]
    assert (base.name, base.label, base.kind, base.items) == ("base", "Made from", "categorical", ["model", "reference"])
    assert parameters.GetParameter("base") == "model" and "reference patient's own slice" in base.toolTip
    (filing,) = [control for control in logic.requestControls(SHIPPED_MODEL, parameters) if control.name == "file_with"]
    assert (filing.label, filing.items, filing.enabled) == ("File the export with", ["synthetic", "source"], False)
    assert parameters.GetParameter("file_with") == "synthetic"
    reference = slicer.util.loadVolume(str(SAMPLE_STUDIES_DIR / "study_normal_axial.nii.gz"))
    for name, value in (("model", SHIPPED_MODEL), ("level", "BG"), ("pattern", "unilateral"), ("side", "left"),
                        ("territory", "MCA"), ("severity", "0.3"), ("base", "reference"), ("seed", "0"),
                        ("count", "1")):
        parameters.SetParameter(name, value)
    parameters.SetNodeReferenceID("reference", reference.GetID())
    _, nodes = logic.generateFromParameters(parameters)
    (result,) = logic.results
    assert [node.GetName() for node in nodes] == ["BG-unilateral-left_reference"]
    assert result.derivation is not None and result.derivation.removed == ()
    assert "left MCA 30% added" in result.derivation.describe(result.condition)
    assert result.stats.left < result.stats.right  # the added defect is at the patient's left
    assert [control.enabled for control in logic.requestControls(SHIPPED_MODEL, parameters)
            if control.name == "file_with"] == [True]
    parameters.SetParameter("file_with", "source")  # the volume is uploaded as NIfTI: no DICOM study to file with
    with pytest.raises(RequestRejectedError, match="NIfTI without a DICOM study"):
        logic.generateFromParameters(parameters)


def test_logic_offers_the_removal_the_base_param_declares_and_takes_the_studys_defect_away(slicer_module,
                                                                                          shipped_server):
    """The defect to remove (remove_side, remove_territory, remove_severity) comes from what the model's base param
    declares under ``removes``, enabled only made from the reference with a normal pattern; Generate sends it: the
    study's own right MCA defect (25.6 %) is taken away, and its hemispheres come out near symmetric."""
    slicer, logic = slicer_module.slicer, slicer_module.SpectGANLogic()
    parameters = logic.getParameterNode()
    logic.connect(shipped_server.url)
    removes = requests.get(f"{shipped_server.url}/info/", timeout=30).json()["models"][SHIPPED_MODEL]["params"][
        "base"]["removes"]
    for name, value in (("model", SHIPPED_MODEL), ("level", "BG"), ("pattern", "normal"), ("base", "model")):
        parameters.SetParameter(name, value)

    def removal():
        return {control.name: control for control in logic.requestControls(SHIPPED_MODEL, parameters)
                if control.name.startswith("remove_")}

    controls = removal()
    assert list(controls) == ["remove_side", "remove_territory", "remove_severity"]
    assert not any(control.enabled for control in controls.values())  # made from the model: nothing to remove
    side, territory, severity = controls.values()
    assert (side.items, territory.items) == (["", "left", "right"], removes["params"]["territory"]["per_level"]["BG"])
    assert (severity.kind, severity.minimum, severity.maximum) == ("continuous", 0.15, 0.5)
    assert "empty: both sides" in side.toolTip
    parameters.SetParameter("base", "reference")
    assert all(control.enabled for control in removal().values())
    parameters.SetParameter("pattern", "unilateral")
    assert not any(control.enabled for control in removal().values())  # a defect is added, not removed

    reference = slicer.util.loadVolume(str(SAMPLE_STUDIES_DIR / f"{REFERENCE}.nii.gz"))
    for name, value in (("pattern", "normal"), ("remove_side", "right"), ("remove_territory", "MCA"),
                        ("remove_severity", "0.256"), ("seed", "0"), ("count", "1")):
        parameters.SetParameter(name, value)
    parameters.SetNodeReferenceID("reference", reference.GetID())
    _, nodes = logic.generateFromParameters(parameters)
    (result,) = logic.results
    assert [node.GetName() for node in nodes] == ["BG-normal_reference"]
    assert "right MCA 26% removed" in result.derivation.describe(result.condition)
    assert abs(result.stats.ai) < 5, result.stats.ai  # the study's right defect taken away


def test_the_modules_own_test_case_runs_over_the_stand_in(slicer_module, shipped_server, monkeypatch):
    """SpectGANTest (Developer mode > Reload and Test in Slicer), with SPECTGAN_SERVER_URL set."""
    monkeypatch.setenv("SPECTGAN_SERVER_URL", shipped_server.url)
    slicer_module.SpectGANTest().runTest()
