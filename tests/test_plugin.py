"""The 3D Slicer module (plugin/slicer/SpectGAN) outside Slicer: it byte-compiles, its widgets exist in its .ui, every
spectgan.client name it calls exists, and its Logic runs over the ``slicer`` stand-in (tests/slicer_stand_in) against
a scripted server and a real Orthanc. tests/test_slicer_logic.py runs it against the real server."""
from __future__ import annotations

import ast
import json
import py_compile
import xml.etree.ElementTree as ElementTree
from types import SimpleNamespace
from urllib.parse import parse_qs

import numpy as np
import pytest
import SimpleITK as sitk

from orthanc_fixtures import orthanc, pacs_login  # noqa: F401 (fixtures)
from scripted_server import MODEL, ScriptedServer
from slicer_fixtures import MODULE_DIR, slicer_module  # noqa: F401 (a fixture)
from spectgan import client as spectgan_client
from spectgan.export.pacs import pending_count
from spectgan.serving.settings import SAMPLE_STUDIES_DIR

MODULE_FILE = MODULE_DIR / "SpectGAN.py"


def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(), filename=str(MODULE_FILE))


def test_module_byte_compiles_and_has_the_scripted_module_classes(tmp_path):
    py_compile.compile(str(MODULE_FILE), cfile=str(tmp_path / "SpectGAN.pyc"), doraise=True)
    classes = {node.name: [base.id for base in node.bases] for node in module_tree().body
               if isinstance(node, ast.ClassDef)}
    assert classes == {"SpectGAN": ["ScriptedLoadableModule"],
                       "SpectGANWidget": ["ScriptedLoadableModuleWidget", "VTKObservationMixin"],
                       "AxisControl": ["NamedTuple"], "SpectGANLogic": ["ScriptedLoadableModuleLogic"],
                       "SpectGANTest": ["ScriptedLoadableModuleTest"]}
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert "set(MODULE_NAME SpectGAN)" in cmake
    for resource in ("Resources/UI/${MODULE_NAME}.ui", "Resources/Icons/${MODULE_NAME}.png"):
        assert resource in cmake and (MODULE_DIR / resource.replace("${MODULE_NAME}", "SpectGAN")).is_file()


def test_every_widget_the_module_uses_is_in_the_ui_file():
    names = {element.get("name") for element in ElementTree.parse(MODULE_DIR / "Resources/UI/SpectGAN.ui").iter()
             if element.tag == "widget"}
    used = {node.attr for node in ast.walk(module_tree()) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"}
    assert used and used <= names, sorted(used - names)


def test_every_client_name_the_module_calls_exists():
    """Names taken from spectganClient() (``client.X``, ``spectganClient().X``) are spectgan.client attributes."""
    tree = module_tree()
    client_variables = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                        and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "spectganClient"
                        for target in node.targets if isinstance(target, ast.Name)}
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and (
        (isinstance(node.value, ast.Name) and node.value.id in client_variables)
        or (isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "spectganClient"))}
    assert {"SpectGANClient", "GenerationJob", "expand_conditions", "stats_table", "write_dicom",
            "send_to_pacs"} <= used
    assert all(hasattr(spectgan_client, name) for name in used), sorted(n for n in used if
                                                                        not hasattr(spectgan_client, n))


def test_export_dependencies_are_installed_at_the_versions_setup_cfg_pins(slicer_module):
    assert slicer_module.pinnedRequirements(list(slicer_module.EXPORT_PACKAGES.values())) == [
        "pydicom==2.4.4", "highdicom==0.22.0", "pynetdicom==2.1.1", "dicomweb-client==0.59.1"]
    assert slicer_module.spectganClient() is spectgan_client
    assert slicer_module.SpectGANLogic().ensureExportDependencies()  # all importable here: nothing to install


def test_the_module_class_names_itself_and_its_category(slicer_module):
    module = slicer_module.SpectGAN(SimpleNamespace())
    assert (module.parent.title, module.parent.categories) == ("SpectGAN", ["Nuclear Medicine"])
    assert "synthetic" in module.parent.helpText.lower()


def test_the_controls_come_from_the_models_declared_axes(slicer_module, tmp_path):
    """The Generate panel's controls, as the Logic specifies them for the Widget, from the scripted server's /info/
    axes: each offers what the model allows given the ones before it; the side applies to the sided patterns."""
    logic = slicer_module.SpectGANLogic()
    parameters = logic.getParameterNode()
    with ScriptedServer(tmp_path) as server:
        logic.connect(server.url)
        controls = logic.axisControls(MODEL, parameters)
        assert [(c.name, c.kind, c.items, c.enabled) for c in controls] == [
            ("level", "categorical", ["all", "CER", "BG", "COR"], True),
            ("pattern", "categorical", ["all", "normal", "unilateral", "bilateral"], True),
            ("side", "categorical", ["all", "left", "right"], True)]
        parameters.SetParameter("level", "CER")
        assert logic.axisControls(MODEL, parameters)[1].items == ["all", "normal", "unilateral"]  # none bilateral
        parameters.SetParameter("pattern", "normal")
        assert not logic.axisControls(MODEL, parameters)[2].enabled  # a normal slice has no side
        parameters.SetParameter("pattern", "unilateral")
        assert logic.axisControls(MODEL, parameters)[2].enabled
        parameters.SetParameter("level", "BG")
        parameters.SetParameter("pattern", "no-such-pattern")
        assert logic.axisControls(MODEL, parameters)[1].items[0] == parameters.GetParameter("pattern") == "all"


def test_after_a_scene_close_the_logic_fills_its_defaults_again_and_makes_a_new_table(slicer_module):
    """Closing a scene keeps the module's parameter node, emptied (Slicer resets singletons)."""
    slicer, logic = slicer_module.slicer, slicer_module.SpectGANLogic()
    parameters = logic.getParameterNode()
    parameters.SetParameter("seed", "7")
    parameters.SetNodeReferenceID("statistics", slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode").GetID())
    assert logic.tableNode is not None
    slicer.mrmlScene.Clear(0)
    assert logic.tableNode is None and slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 0
    assert logic.getParameterNode() is parameters and parameters.GetParameter("seed") == "0"


def test_the_logic_against_a_scripted_server_upload_generate_table_export_and_resend(
        slicer_module, tmp_path, pacs_login, monkeypatch):
    """SpectGANLogic over the slicer stand-in, as the Widget drives it (the parameter node), against a scripted
    server and a real Orthanc: uploads once per version of a volume, the side only where the pattern takes one, the
    statistics table, a refused PACS login, the export and a resend that sends nothing."""
    slicer, logic = slicer_module.slicer, slicer_module.SpectGANLogic()
    parameters = logic.getParameterNode()
    assert {name: parameters.GetParameter(name) for name in ("level", "pattern", "side", "seed", "count")} == {
        "level": "all", "pattern": "all", "side": "all", "seed": "0", "count": "1"}
    with pytest.raises(RuntimeError, match="Connect to a spectgan server first"):
        logic.conditionAxes(MODEL)
    with ScriptedServer(tmp_path) as server:
        assert logic.connect(server.url) == [MODEL] and logic.datastoreImages() == ["study"]
        with pytest.raises(ValueError, match="choose a model first"):
            logic.generateFromParameters(parameters)
        parameters.SetParameter("model", MODEL)
        with pytest.raises(ValueError, match="Select a reference volume, or pick a study"):
            logic.generateFromParameters(parameters)

        volume = slicer.util.loadVolume(str(SAMPLE_STUDIES_DIR / "study_normal_flipped.nii.gz"))
        image_id = logic.referenceImageId(volume)
        assert logic.referenceImageId(volume) == image_id and len(server.uploads) == 1  # uploaded once
        uploaded = tmp_path / "uploaded.nii.gz"
        uploaded.write_bytes(server.uploads[image_id])
        assert_same_image(sitk.ReadImage(str(uploaded)),
                          sitk.ReadImage(str(SAMPLE_STUDIES_DIR / "study_normal_flipped.nii.gz")))
        slicer.util.arrayFromVolume(volume)[0, 0, 0] += 1.0
        slicer.util.arrayFromVolumeModified(volume)
        assert logic.referenceImageId(volume) != image_id and len(server.uploads) == 2  # a new version
        assert image_id in logic.datastoreImages()

        parameters.SetParameter("imageId", "study")
        for name, value in (("level", "COR"), ("pattern", "normal"), ("side", "left"), ("seed", "5")):
            parameters.SetParameter(name, value)
        assert logic.generateFromParameters(parameters)[0] == "study"  # the side is left out for normal
        assert json.loads(parse_qs(server.received[-1].body.decode())["params"][0])["side"] is None
        parameters.SetNodeReferenceID("reference", volume.GetID())
        for name, value in (("pattern", "all"), ("side", "all"), ("count", "2")):
            parameters.SetParameter(name, value)
        image_id, nodes = logic.generateFromParameters(parameters)
    assert image_id == server.received[-1].query["image"][0] != "study"  # the volume, not the typed id
    names = [f"{label}_seed{seed}" for label in ("COR-normal", "COR-unilateral-left", "COR-unilateral-right",
                                                 "COR-bilateral") for seed in (5, 6)]
    assert [node.GetName() for node in nodes] == names
    assert all(slicer.mrmlScene.GetNodeByID(node.GetID()) is node for node in nodes)
    table = logic.tableNode
    columns = [table.GetColumnName(index) for index in range(table.GetNumberOfColumns())]
    assert columns[:7] == ["file", "level", "pattern", "side", "territory", "severity", "seed"]
    assert {"mc", "lr", "ai"} <= set(columns)
    assert table.GetNumberOfRows() == len(names)  # the last batch only
    assert [table.GetCellText(2, index) for index in range(7)] == [  # a model without defect axes: no lesions
        "COR-unilateral-left_seed5.nii.gz", "COR", "unilateral", "left", "", "", "5"]
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1  # one table, refilled per batch

    with pytest.raises(ValueError, match="Generate scans first"):
        slicer_module.SpectGANLogic().exportToPacs(pacs_login.dicomweb_url)
    with pytest.raises(Exception, match="authentication failed"):
        logic.exportToPacs(pacs_login.dicomweb_url, pacs_login.username, "wrong")
    assert logic.exportToPacs(pacs_login.dicomweb_url, pacs_login.username, pacs_login.password).sent == \
        3 * len(names)
    assert logic.exportToPacs(pacs_login.dicomweb_url).sent == 0  # the PACS confirmed everything
    assert pending_count(logic.dicomFolder) == 0


def assert_same_image(image: sitk.Image, expected: sitk.Image) -> None:
    """Same grid (size, origin, spacing, direction, to float precision) and the same voxels."""
    assert image.GetSize() == expected.GetSize()
    for getter in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(image, getter)(), getattr(expected, getter)(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(expected))
