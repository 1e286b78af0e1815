"""The 3D Slicer module (plugin/slicer/SpectGAN) outside Slicer: it byte-compiles, its widgets exist in its .ui, every
spectgan.client name it calls exists, and the client functions its Logic runs do what the module relies on."""
from __future__ import annotations

import ast
import py_compile
import sys
import types
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from orthanc_fixtures import orthanc, pacs_login  # noqa: F401 (fixtures)
from scripted_server import MODEL, ScriptedServer
from spectgan import client as spectgan_client
from spectgan.export.pacs import pending_count

MODULE_DIR = Path(__file__).resolve().parents[1] / "plugin" / "slicer" / "SpectGAN"
MODULE_FILE = MODULE_DIR / "SpectGAN.py"
SLICER_MODULES = ("qt", "vtk", "slicer", "slicer.ScriptedLoadableModule")


def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(), filename=str(MODULE_FILE))


def test_module_byte_compiles_and_has_the_scripted_module_classes(tmp_path):
    py_compile.compile(str(MODULE_FILE), cfile=str(tmp_path / "SpectGAN.pyc"), doraise=True)
    classes = {node.name: [base.id for base in node.bases] for node in module_tree().body
               if isinstance(node, ast.ClassDef)}
    assert classes == {"SpectGAN": ["ScriptedLoadableModule"], "SpectGANWidget": ["ScriptedLoadableModuleWidget"],
                       "SpectGANLogic": ["ScriptedLoadableModuleLogic"], "SpectGANTest": ["ScriptedLoadableModuleTest"]}
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


@pytest.fixture
def slicer_module(monkeypatch):
    """SpectGAN.py imported with empty stand-ins for Slicer's own modules (only its module-level helpers run)."""
    for name in SLICER_MODULES:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    base_classes = sys.modules["slicer.ScriptedLoadableModule"]
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest",
                 "ScriptedLoadableModuleWidget"):
        setattr(base_classes, name, type(name, (), {}))
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    monkeypatch.delitem(sys.modules, "SpectGAN", raising=False)
    import SpectGAN

    return SpectGAN


def test_export_dependencies_are_installed_at_the_versions_setup_cfg_pins(slicer_module):
    assert slicer_module.pinnedRequirements(list(slicer_module.EXPORT_PACKAGES.values())) == [
        "pydicom==2.4.4", "highdicom==0.22.0", "pynetdicom==2.1.1", "dicomweb-client==0.59.1"]
    assert slicer_module.spectganClient() is spectgan_client


def test_the_logic_flow_generate_table_export_and_resend(tmp_path, pacs_login, monkeypatch):
    """What SpectGANLogic.generate / fillTable / exportToPacs run, in the same order, against real servers."""
    seeds = spectgan_client.seeds_from_spinboxes(5, 2)
    assert seeds == [5, 6] and spectgan_client.seeds_from_spinboxes(-1, 3) == [None] * 3
    with pytest.raises(ValueError, match="count must be at least 1"):
        spectgan_client.seeds_from_spinboxes(0, 0)
    loaded = []
    with ScriptedServer(tmp_path) as server, spectgan_client.SpectGANClient(server.url, retries=0) as client:
        conditions = spectgan_client.expand_conditions(client.conditions(MODEL), "COR", "all", "all")
        job = spectgan_client.GenerationJob(client, "study", MODEL, conditions, seeds)
        results = job.run(tmp_path / "batch", on_result=lambda result: loaded.append(result.path))
    assert [path.name for path in loaded] == [f"{label}_seed{seed}.nii.gz" for label in
                                               ("COR-normal", "COR-unilateral-left", "COR-unilateral-right",
                                                "COR-bilateral") for seed in seeds]
    columns, rows = spectgan_client.stats_table(results)
    assert columns[:5] == ["file", "level", "pattern", "side", "seed"] and {"mc", "lr", "ai"} <= set(columns)
    assert rows[2][:5] == ["COR-unilateral-left_seed5.nii.gz", "COR", "unilateral", "left", "5"]

    monkeypatch.setenv("SPECTGAN_PACS_USERNAME", pacs_login.username)
    monkeypatch.setenv("SPECTGAN_PACS_PASSWORD", "wrong")
    folder = spectgan_client.write_dicom(results, tmp_path / "batch" / "dicom")
    with pytest.raises(spectgan_client.ClientError, match="already holds an export"):
        spectgan_client.write_dicom(results, folder)
    with pytest.raises(Exception, match="authentication failed"):
        spectgan_client.send_to_pacs(folder, pacs_login.dicomweb_url)
    monkeypatch.setenv("SPECTGAN_PACS_PASSWORD", pacs_login.password)
    assert spectgan_client.send_to_pacs(folder, pacs_login.dicomweb_url).sent == 3 * len(results)
    assert spectgan_client.send_to_pacs(folder, pacs_login.dicomweb_url).sent == 0
    assert pending_count(folder) == 0
