"""SpectGAN: a 3D Slicer scripted module that requests synthetic 123I-IMP brain perfusion SPECT slices from a spectgan
server, loads each registered over the reference volume with its hemisphere statistics, and exports them to PACS.

Thin by design: the work is ``spectgan.client`` (tested outside Slicer); this file only connects it to Slicer's
widgets and scene. Images travel as NIfTI files written by SimpleITK and read by ``slicer.util.loadVolume``, which
converts ITK's LPS to Slicer's RAS itself: nothing here flips an axis.
"""
import configparser
import importlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

REPOSITORY = Path(__file__).resolve().parents[3]  # plugin/slicer/SpectGAN/SpectGAN.py -> the spectgan checkout
EXPORT_PACKAGES = {"pydicom": "pydicom", "highdicom": "highdicom", "pynetdicom": "pynetdicom",
                   "dicomweb_client": "dicomweb-client"}  # import name -> distribution name (pinned in setup.cfg)
SERVER_URL_SETTING = "SpectGAN/serverUrl"
PACS_URL_SETTING = "SpectGAN/pacsUrl"
DEFAULT_SERVER_URL = "http://127.0.0.1:8000"
ALL = "all"


def spectganClient():
    """``spectgan.client``, from Slicer's Python or else from the checkout this module lives in."""
    try:
        return importlib.import_module("spectgan.client")
    except ImportError:
        if str(REPOSITORY) not in sys.path:
            sys.path.insert(0, str(REPOSITORY))
        return importlib.import_module("spectgan.client")


def pinnedRequirements(distributions):
    """``name==version`` of each distribution as setup.cfg pins it (the versions spectgan is tested with)."""
    config = configparser.ConfigParser()
    config.read(REPOSITORY / "setup.cfg")  # absent when the module was installed apart from the checkout
    requirements = config.get("options", "install_requires", fallback="")
    pins = {line.split("==")[0].strip().lower(): line.strip() for line in requirements.splitlines() if "==" in line}
    return [pins.get(name.lower(), name) for name in distributions]


class SpectGAN(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SpectGAN"
        self.parent.categories = ["Nuclear Medicine"]
        self.parent.dependencies = []
        self.parent.contributors = ["spectgan"]
        self.parent.helpText = (
            "Synthetic 123I-IMP brain perfusion SPECT slices (conditional FastGAN) from a spectgan MONAI Label "
            "server, placed on the level's plane over a reference volume, with hemisphere ROI statistics (MC, L, R, "
            "LR, AI). Every result is synthetic: research use only. See plugin/README.md.")
        self.parent.acknowledgementText = "Built on 3D Slicer's scripted module template and MONAI Label."


class SpectGANWidget(ScriptedLoadableModuleWidget):
    """Server, request and results panels; every action calls SpectGANLogic."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpectGAN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SpectGANLogic()
        self.sidedPatterns = set()  # patterns whose conditions name a side, from the model's conditions

        settings = qt.QSettings()
        self.ui.serverUrlEdit.text = settings.value(SERVER_URL_SETTING, DEFAULT_SERVER_URL)
        self.ui.pacsUrlEdit.text = settings.value(PACS_URL_SETTING, "")
        self.ui.connectButton.connect("clicked(bool)", self.onConnect)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.patternComboBox.connect("currentIndexChanged(int)", self.onPatternChanged)
        self.ui.generateButton.connect("clicked(bool)", self.onGenerate)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.layout.addStretch(1)

    def onConnect(self):
        with slicer.util.tryWithErrorDisplay("Cannot list the server's models.", waitCursor=True):
            models = self.logic.connect(self.ui.serverUrlEdit.text.strip(), self.ui.apiTokenEdit.text.strip() or None)
            qt.QSettings().setValue(SERVER_URL_SETTING, self.logic.client.url)
            self.ui.modelComboBox.clear()
            self.ui.modelComboBox.addItems(models)
            self.ui.statusLabel.text = f"{len(models)} model(s) at {self.logic.client.url}"

    def onModelChanged(self):
        model = self.ui.modelComboBox.currentText
        conditions = []
        with slicer.util.tryWithErrorDisplay(f"Cannot read the conditions of {model}.", waitCursor=True):
            conditions = self.logic.conditions(model) if model else []
        self._setItems(self.ui.levelComboBox, [ALL] + list(dict.fromkeys(c.level.value for c in conditions)))
        self._setItems(self.ui.patternComboBox, [ALL] + list(dict.fromkeys(c.pattern.value for c in conditions)))
        self._setItems(self.ui.sideComboBox, [ALL] + list(dict.fromkeys(c.side.value for c in conditions if c.side)))
        self.sidedPatterns = {c.pattern.value for c in conditions if c.side}  # the model's conditions say which
        self.ui.generateButton.enabled = bool(conditions)

    def onPatternChanged(self):
        pattern = self.ui.patternComboBox.currentText
        self.ui.sideComboBox.enabled = pattern == ALL or pattern in self.sidedPatterns

    def onGenerate(self):
        reference = self.ui.referenceSelector.currentNode()
        with slicer.util.tryWithErrorDisplay("Generation failed.", waitCursor=True):
            imageId = self.logic.referenceImageId(reference) if reference else self.ui.imageIdEdit.text.strip()
            if not imageId:
                raise ValueError("Select a reference volume, or type the id of a study in the server's datastore.")
            side = self.ui.sideComboBox.currentText if self.ui.sideComboBox.enabled else None
            nodes = self.logic.generate(imageId, self.ui.modelComboBox.currentText, self.ui.levelComboBox.currentText,
                                        self.ui.patternComboBox.currentText, side, self.ui.seedSpinBox.value,
                                        self.ui.countSpinBox.value)
            self.ui.statsTableView.setMRMLTableNode(self.logic.tableNode)
            self.logic.showOnReference(nodes[-1], reference)
            self.ui.statusLabel.text = f"{len(nodes)} synthetic scan(s) over {imageId}"
            self.ui.exportButton.enabled = True

    def onExport(self):
        pacsUrl = self.ui.pacsUrlEdit.text.strip()
        with slicer.util.tryWithErrorDisplay("Export to PACS failed.", waitCursor=True):
            if not self.logic.ensureExportDependencies():
                return
            summary = self.logic.exportToPacs(pacsUrl, self.ui.pacsUserEdit.text, self.ui.pacsPasswordEdit.text)
            qt.QSettings().setValue(PACS_URL_SETTING, pacsUrl)
            self.ui.statusLabel.text = str(summary)

    @staticmethod
    def _setItems(comboBox, items):
        comboBox.clear()
        comboBox.addItems(items)


class SpectGANLogic(ScriptedLoadableModuleLogic):
    """Server connection, uploads of reference volumes, generation into the scene, statistics table, PACS export.

    One batch (the scans of one Generate) is exported as one synthetic study; exporting it again only sends what
    the PACS has not confirmed.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.client = None
        self.results = []
        self.tableNode = None
        self.uploads = {}  # (node id, node and image modification times) -> datastore image id
        self.workFolder = Path(tempfile.mkdtemp(prefix="SpectGAN-", dir=slicer.app.temporaryPath))
        self.batchFolder = None
        self.dicomFolder = None

    def connect(self, url, token=None):
        """Connect to the server at ``url`` (``token``: its API token, default $SPECTGAN_API_TOKEN); the names of its
        models (those with a trained bundle)."""
        server = spectganClient().SpectGANClient(url, token=token)
        models = sorted(server.info().get("models") or {})
        if self.client:
            self.client.close()
        self.client = server
        return models

    def conditions(self, model):
        return self._connected().conditions(model)

    def referenceImageId(self, volumeNode):
        """Upload a volume of the scene to the server's datastore (once per version of it); its image id."""
        key = (volumeNode.GetID(), volumeNode.GetMTime(), volumeNode.GetImageData().GetMTime())
        if key not in self.uploads:
            path = self.workFolder / "reference.nii.gz"
            if not slicer.util.exportNode(volumeNode, str(path)):
                raise RuntimeError(f"Cannot write {volumeNode.GetName()} as NIfTI for the upload.")
            self.uploads[key] = self._connected().upload(path)
        return self.uploads[key]

    def generate(self, imageId, model, level, pattern, side, seed, count):
        """Every requested scan (``all`` expands per the model), each loaded as a scalar volume; the nodes."""
        client = spectganClient()
        conditions = client.expand_conditions(self.conditions(model), level, pattern, side)
        job = client.GenerationJob(self._connected(), imageId, model, conditions,
                                   client.seeds_from_spinboxes(seed, count))
        self.batchFolder = Path(tempfile.mkdtemp(prefix="batch-", dir=self.workFolder))
        self.dicomFolder = None
        nodes = []

        def load(result):
            nodes.append(slicer.util.loadVolume(str(result.path), {"name": result.name, "show": False}))
            slicer.app.processEvents()

        self.results = job.run(self.batchFolder, on_result=load)
        if self.tableNode is None or self.tableNode.GetScene() is None:  # none yet, or the scene was cleared
            self.tableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "SpectGAN statistics")
        self.fillTable(self.tableNode, self.results)
        return nodes

    @staticmethod
    def fillTable(tableNode, results):
        """One row per scan with the columns of ``stats.csv``."""
        columns, rows = spectganClient().stats_table(results)
        wasModifying = tableNode.StartModify()
        tableNode.RemoveAllColumns()
        for name in columns:
            tableNode.AddColumn(vtk.vtkStringArray()).SetName(name)
        for rowIndex, row in enumerate(rows):
            tableNode.AddEmptyRow()
            for columnIndex, text in enumerate(row):
                tableNode.SetCellText(rowIndex, columnIndex, text)
        tableNode.EndModify(wasModifying)

    @staticmethod
    def showOnReference(resultNode, referenceNode):
        """Show the scan over the reference and turn the red view onto the scan's (possibly oblique) plane."""
        slicer.util.setSliceViewerLayers(background=referenceNode or resultNode,
                                         foreground=resultNode if referenceNode else None, foregroundOpacity=0.6)
        sliceNode = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        sliceNode.RotateToVolumePlane(resultNode)
        bounds = [0.0] * 6
        resultNode.GetRASBounds(bounds)
        sliceNode.JumpSliceByCentering(*[(bounds[2 * axis] + bounds[2 * axis + 1]) / 2.0 for axis in range(3)])

    def ensureExportDependencies(self):
        """True when the DICOM packages are importable, offering to pip-install the pinned ones that are not."""
        missing = [distribution for module, distribution in EXPORT_PACKAGES.items()
                   if importlib.util.find_spec(module) is None]
        if not missing:
            return True
        requirements = pinnedRequirements(missing)
        if not slicer.util.confirmOkCancelDisplay(f"Export to PACS needs {', '.join(requirements)}. Install now?"):
            return False
        slicer.util.pip_install(" ".join(requirements))
        return True

    def exportToPacs(self, pacsUrl, username="", password=""):
        """Send the last batch to the PACS (``dicom://AET@host:port`` or ``http(s)://host/dicom-web``).

        Credentials, when given, are set for this Slicer session where ``spectgan.export.pacs`` reads them.
        """
        if not self.results:
            raise ValueError("Generate scans first: there is nothing to export.")
        if username or password:
            os.environ.update({"SPECTGAN_PACS_USERNAME": username, "SPECTGAN_PACS_PASSWORD": password})
        client = spectganClient()
        if self.dicomFolder is None:
            self.dicomFolder = client.write_dicom(self.results, self.batchFolder / client.DICOM_DIR)
        return client.send_to_pacs(self.dicomFolder, pacsUrl)

    def _connected(self):
        if self.client is None:
            raise RuntimeError("Connect to a spectgan server first.")
        return self.client


class SpectGANTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Developer mode > Reload and Test). With SPECTGAN_SERVER_URL set, also generates over a
    volume through that server."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_loaded_scan_keeps_its_geometry()
        self.setUp()
        self.test_statistics_table()
        if os.environ.get("SPECTGAN_SERVER_URL"):
            self.setUp()
            self.test_generate_over_a_volume()

    def _obliqueScan(self):
        """A one-slice oblique, left-handed volume in counts (left hemisphere brighter) and its statistics."""
        import numpy as np
        import SimpleITK as sitk

        client = spectganClient()
        from spectgan.geometry.roi import MidlinePlane, hemisphere_stats

        columns, rows = np.meshgrid(np.arange(40), np.arange(48))
        brain = ((columns - 19.5) / 16) ** 2 + ((rows - 23.5) / 20) ** 2 < 1
        # Columns run toward the patient's right (a left-handed direction), so the low columns are the left.
        image = sitk.GetImageFromArray((np.where(columns < 19.5, 120.0, 90.0) * brain)[None].astype(np.float32))
        rotation = np.asarray(sitk.VersorTransform((0.2, 0.1, 1.0), 0.3).GetMatrix()).reshape(3, 3)
        image.SetDirection(tuple((rotation @ np.diag([-1.0, 1.0, 1.0])).ravel()))
        image.SetSpacing((3.5, 3.0, 4.0))
        image.SetOrigin((40.0, -70.0, 12.0))
        midline = MidlinePlane(point=image.TransformContinuousIndexToPhysicalPoint((19.5, 23.5, 0.0)),
                               normal=tuple(rotation[:, 0]))
        metadata = {"condition": {"level": "BG", "pattern": "unilateral", "side": "left"}, "seed": 1,
                    "model": "test", "version": "0", "sha256": "0" * 64,
                    "midline": {"point": list(midline.point), "normal": list(midline.normal)}}
        return client.GenerationResult(image, hemisphere_stats(image, midline).to_dict(), metadata)

    def test_loaded_scan_keeps_its_geometry(self):
        """A result loaded into Slicer puts every voxel where ITK (LPS) says it is, in RAS: nothing flipped."""
        import numpy as np
        import SimpleITK as sitk

        result = self._obliqueScan()
        path = result.save(slicer.app.temporaryPath)
        node = slicer.util.loadVolume(str(path))
        ijkToRas = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(ijkToRas)
        for index in [(0, 0, 0), (39, 0, 0), (0, 47, 0), (25, 30, 0)]:
            lps = np.asarray(result.image.TransformIndexToPhysicalPoint(index))
            ras = np.asarray(ijkToRas.MultiplyPoint(list(index) + [1.0])[:3])
            self.assertTrue(np.allclose(ras, lps * [-1.0, -1.0, 1.0], atol=1e-3), f"voxel {index}: {ras} vs {lps}")
        self.assertTrue(np.allclose(slicer.util.arrayFromVolume(node)[0],
                                    sitk.GetArrayFromImage(result.image)[0]))
        self.delayDisplay("The scan keeps its geometry")

    def test_statistics_table(self):
        result = self._obliqueScan()
        table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode")
        SpectGANLogic.fillTable(table, [result])
        columns = [table.GetColumnName(index) for index in range(table.GetNumberOfColumns())]
        self.assertEqual(table.GetNumberOfRows(), 1)
        self.assertEqual(table.GetCellText(0, columns.index("side")), "left")
        self.assertGreater(float(table.GetCellText(0, columns.index("lr"))), 1.0)
        self.delayDisplay("Statistics table filled")

    def test_generate_over_a_volume(self):
        reference = slicer.util.loadVolume(str(REPOSITORY / "sample_data" / "studies" / "study_normal_flipped.nii.gz"))
        logic = SpectGANLogic()
        model = logic.connect(os.environ["SPECTGAN_SERVER_URL"])[0]
        condition = logic.conditions(model)[0]
        nodes = logic.generate(logic.referenceImageId(reference), model, condition.level.value,
                               condition.pattern.value, condition.side.value if condition.side else None, 0, 1)
        self.assertEqual(len(nodes), 1)
        self.assertEqual(logic.tableNode.GetNumberOfRows(), 1)
        self.delayDisplay("Generated over a volume")
