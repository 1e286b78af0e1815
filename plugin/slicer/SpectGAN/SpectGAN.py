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
from typing import List, NamedTuple, Optional

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

REPOSITORY = Path(__file__).resolve().parents[3]  # plugin/slicer/SpectGAN/SpectGAN.py -> the spectgan checkout
EXPORT_PACKAGES = {"pydicom": "pydicom", "highdicom": "highdicom", "pynetdicom": "pynetdicom",
                   "dicomweb_client": "dicomweb-client"}  # import name -> distribution name (pinned in setup.cfg)
SERVER_URL_SETTING = "SpectGAN/serverUrl"
PACS_URL_SETTING = "SpectGAN/pacsUrl"
DEFAULT_SERVER_URL = "http://127.0.0.1:8000"
ALL = "all"
# The parameter node: the request as strings (each condition axis the model declares under its own name), the
# reference volume and the statistics table as node references.
SERVER_URL, PACS_URL, IMAGE_ID, MODEL = "serverUrl", "pacsUrl", "imageId", "model"
SEED, COUNT, BASE = "seed", "count", "base"  # base: what a scan is made from (the model's ``base`` param)
FILE_WITH = "file_with"  # where the DICOM export files a scan made from the reference (the model's param)
REMOVE = "remove_"  # remove_side, remove_territory, ...: the defect to remove (what the base param ``removes``)
REFERENCE_ROLE, TABLE_ROLE = "reference", "statistics"
DEFAULT_PARAMETERS = {SEED: "0", COUNT: "1"}  # seed -1: the server draws; the axes a Generate expands over: all


def spectganClient():
    """``spectgan.client``, from Slicer's Python or else from the checkout this module lives in."""
    try:
        return importlib.import_module("spectgan.client")
    except ImportError:
        if str(REPOSITORY) not in sys.path:
            sys.path.insert(0, str(REPOSITORY))
        return importlib.import_module("spectgan.client")


def expandedAxes():
    """The condition axes a Generate may expand over (``all``): level, pattern, side (``spectgan.conditions``)."""
    spectganClient()  # spectgan importable
    return importlib.import_module("spectgan.conditions").CONDITION_AXES


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


class SpectGANWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: keeps the GUI and the module's parameter node in step and calls SpectGANLogic for every action
    (Slicer's scripted module template)."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._updatingGUIFromParameterNode = False
        self.axisWidgets = {}  # axis name -> its combo box or line edit (built per model from its declared axes)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpectGAN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SpectGANLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        for edit in (self.ui.serverUrlEdit, self.ui.pacsUrlEdit):
            edit.connect("textChanged(QString)", self.updateParameterNodeFromGUI)
        self.ui.imageIdComboBox.connect("currentTextChanged(QString)", self.updateParameterNodeFromGUI)
        for spinBox in (self.ui.seedSpinBox, self.ui.countSpinBox):
            spinBox.connect("valueChanged(int)", self.updateParameterNodeFromGUI)
        self.ui.referenceSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.connectButton.connect("clicked(bool)", self.onConnect)
        self.ui.generateButton.connect("clicked(bool)", self.onGenerate)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.layout.addStretch(1)
        self.initializeParameterNode()

    def cleanup(self):
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        parameterNode = self.logic.getParameterNode()
        if not parameterNode.GetParameter(SERVER_URL):  # a new scene: the URLs last used on this computer
            parameterNode.SetParameter(SERVER_URL, qt.QSettings().value(SERVER_URL_SETTING, DEFAULT_SERVER_URL))
            parameterNode.SetParameter(PACS_URL, qt.QSettings().value(PACS_URL_SETTING, ""))
        self.setParameterNode(parameterNode)

    def setParameterNode(self, parameterNode):
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = parameterNode
        if self._parameterNode is not None:
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        if self._parameterNode is None or self._updatingGUIFromParameterNode:
            return
        self._updatingGUIFromParameterNode = True
        parameters = self._parameterNode
        self.ui.serverUrlEdit.text = parameters.GetParameter(SERVER_URL)
        self.ui.pacsUrlEdit.text = parameters.GetParameter(PACS_URL)
        self.ui.referenceSelector.setCurrentNode(parameters.GetNodeReference(REFERENCE_ROLE))
        self.ui.imageIdComboBox.setCurrentText(parameters.GetParameter(IMAGE_ID))
        self.ui.modelComboBox.setCurrentText(parameters.GetParameter(MODEL))
        for name, widget in self.axisWidgets.items():
            if isinstance(widget, qt.QComboBox):
                widget.setCurrentText(parameters.GetParameter(name))
            else:
                widget.text = parameters.GetParameter(name)
        self.ui.seedSpinBox.value = int(parameters.GetParameter(SEED))
        self.ui.countSpinBox.value = int(parameters.GetParameter(COUNT))
        self.ui.generateButton.enabled = bool(self.axisWidgets)
        self.ui.statsTableView.setMRMLTableNode(parameters.GetNodeReference(TABLE_ROLE))
        self.ui.exportButton.enabled = bool(self.logic.results)
        self._updatingGUIFromParameterNode = False

    def updateParameterNodeFromGUI(self, caller=None, event=None):
        if self._parameterNode is None or self._updatingGUIFromParameterNode:
            return
        wasModified = self._parameterNode.StartModify()
        axes = ((name, widget.currentText if isinstance(widget, qt.QComboBox) else widget.text)
                for name, widget in self.axisWidgets.items())
        for name, text in ((SERVER_URL, self.ui.serverUrlEdit.text), (PACS_URL, self.ui.pacsUrlEdit.text),
                           (IMAGE_ID, self.ui.imageIdComboBox.currentText),
                           (MODEL, self.ui.modelComboBox.currentText), *axes):
            self._parameterNode.SetParameter(name, text.strip())
        self._parameterNode.SetParameter(SEED, str(self.ui.seedSpinBox.value))
        self._parameterNode.SetParameter(COUNT, str(self.ui.countSpinBox.value))
        self._parameterNode.SetNodeReferenceID(REFERENCE_ROLE, self.ui.referenceSelector.currentNodeID)
        self._parameterNode.EndModify(wasModified)

    def onConnect(self):
        with slicer.util.tryWithErrorDisplay("Cannot list the server's models.", waitCursor=True):
            models = self.logic.connect(self._parameterNode.GetParameter(SERVER_URL),
                                        self.ui.apiTokenEdit.text.strip() or None)
            qt.QSettings().setValue(SERVER_URL_SETTING, self.logic.client.url)
            self._setItems(self.ui.imageIdComboBox, self.logic.datastoreImages(), IMAGE_ID)
            self._setItems(self.ui.modelComboBox, models, MODEL)
            self.ui.statusLabel.text = f"{len(models)} model(s) at {self.logic.client.url}"
            self.onModelChanged()  # _setItems blocked the box's signals: read the chosen model's conditions

    def onModelChanged(self):
        """Build one control per condition axis the chosen model declares and its "Made from" choice
        (SpectGANLogic.requestControls)."""
        self._parameterNode.SetParameter(MODEL, self.ui.modelComboBox.currentText)
        layout = self.ui.conditionAxesWidget.layout()
        while layout.rowCount():
            layout.removeRow(0)
        self.axisWidgets = {}
        model = self.ui.modelComboBox.currentText
        with slicer.util.tryWithErrorDisplay(f"Cannot read the condition axes of {model}.", waitCursor=True):
            for control in self.logic.requestControls(model, self._parameterNode) if model else []:
                categorical = control.kind == "categorical"
                widget = qt.QComboBox() if categorical else qt.QLineEdit()
                widget.toolTip = control.toolTip
                if categorical:
                    widget.connect("currentIndexChanged(int)", self.onAxisChanged)
                else:
                    widget.placeholderText = control.placeholder
                    widget.connect("textChanged(QString)", self.updateParameterNodeFromGUI)
                layout.addRow(f"{control.label}:", widget)
                self.axisWidgets[control.name] = widget
            self.onAxisChanged()

    def onAxisChanged(self):
        """A condition axis changed: the axes after it offer what the model allows with it (and apply or not)."""
        self.updateParameterNodeFromGUI()
        for control in self.logic.requestControls(self._parameterNode.GetParameter(MODEL), self._parameterNode):
            widget = self.axisWidgets[control.name]
            if control.kind == "categorical":
                self._setItems(widget, control.items, control.name)
            widget.enabled = control.enabled
        self.updateParameterNodeFromGUI()
        self.updateGUIFromParameterNode()

    def onGenerate(self):
        with slicer.util.tryWithErrorDisplay("Generation failed.", waitCursor=True):
            imageId, nodes = self.logic.generateFromParameters(self._parameterNode)
            self.logic.showOnReference(nodes[-1], self._parameterNode.GetNodeReference(REFERENCE_ROLE))
            self.ui.statusLabel.text = f"{len(nodes)} synthetic scan(s) over {imageId}"
        self.updateGUIFromParameterNode()

    def onExport(self):
        with slicer.util.tryWithErrorDisplay("Export to PACS failed.", waitCursor=True):
            if not self.logic.ensureExportDependencies():
                return
            pacsUrl = self._parameterNode.GetParameter(PACS_URL)
            summary = self.logic.exportToPacs(pacsUrl, self.ui.pacsUserEdit.text, self.ui.pacsPasswordEdit.text)
            qt.QSettings().setValue(PACS_URL_SETTING, pacsUrl)
            self.ui.statusLabel.text = str(summary)

    def _setItems(self, comboBox, items, parameter):
        """Replace a combo box's items, keeping the parameter's value selected when it is still offered."""
        wanted = self._parameterNode.GetParameter(parameter)
        wasBlocked = comboBox.blockSignals(True)
        comboBox.clear()
        comboBox.addItems(items)
        comboBox.setCurrentText(wanted if wanted in items or comboBox.editable else (items[0] if items else ""))
        comboBox.blockSignals(wasBlocked)


class AxisControl(NamedTuple):
    """The control of one condition axis a model declares (its ``/info/`` ``axes``), as the Widget builds it: a combo
    box of ``items`` for a categorical axis (``all`` first on the axes a Generate expands over, the empty item first
    on an optional one: the model draws it), a line edit for a number otherwise (``placeholder`` names its range);
    ``enabled``: whether the axis applies to the values chosen before it."""

    name: str
    label: str
    kind: str  # categorical or continuous
    items: List[str]
    minimum: Optional[float]
    maximum: Optional[float]
    placeholder: str
    toolTip: str
    enabled: bool


class SpectGANLogic(ScriptedLoadableModuleLogic):
    """Server connection, uploads of reference volumes, generation into the scene, statistics table, PACS export.

    The request lives in the module's parameter node (``DEFAULT_PARAMETERS``, the reference volume and the
    statistics table as node references); secrets (the API token, the PACS password) never go there, because a
    parameter node is saved with the scene. One batch (the scans of one Generate) is exported as one synthetic
    study; exporting it again only sends what the PACS has not confirmed.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.client = None
        self.results = []
        self.uploads = {}  # (node id, node and image modification times) -> datastore image id
        self.workFolder = Path(tempfile.mkdtemp(prefix="SpectGAN-", dir=slicer.app.temporaryPath))
        self.batchFolder = None
        self.dicomFolder = None

    def getParameterNode(self):
        """The module's parameter node with every default filled in (closing a scene empties it)."""
        parameterNode = ScriptedLoadableModuleLogic.getParameterNode(self)
        self.setDefaultParameters(parameterNode)
        return parameterNode

    def setDefaultParameters(self, parameterNode):
        """Set the parameters that are not set (DEFAULT_PARAMETERS; ``all`` for the axes a Generate expands over)."""
        for name, value in {**DEFAULT_PARAMETERS, **{axis: ALL for axis in expandedAxes()}}.items():
            if not parameterNode.GetParameter(name):
                parameterNode.SetParameter(name, value)

    def connect(self, url, token=None):
        """Connect to the server at ``url`` (``token``: its API token, default $SPECTGAN_API_TOKEN); the names of its
        models (those with a trained bundle)."""
        server = spectganClient().SpectGANClient(url, token=token)
        models = sorted(server.info().get("models") or {})
        if self.client:
            self.client.close()
        self.client = server
        return models

    def datastoreImages(self):
        """The ids of the studies in the server's datastore, whatever it is (a folder, or a PACS: series UIDs)."""
        return self._connected().images()

    def conditionAxes(self, model):
        """The condition axes ``model`` declares (``spectgan.conditions.ConditionAxes``, from its ``/info/`` entry)."""
        return spectganClient().model_axes(self._connected().model_info(model))

    def axisControls(self, model, parameterNode):
        """One AxisControl per condition axis of ``model``, in its order, given the values the parameter node holds
        for the axes before it (``all`` or empty: any value); a categorical axis whose value in the node is not
        among its items is set to its default, else to the first item."""
        expanded, known, controls = expandedAxes(), {}, []
        for axis in self.conditionAxes(model).axes:
            enabled = all(known[name] in values for name, values in axis.applies_when.items() if name in known)
            if axis.kind.value == "continuous":
                items, placeholder = [], f"{'' if axis.required else 'drawn: '}{axis.minimum:g} to {axis.maximum:g}"
            else:
                first = [ALL] if axis.name in expanded else [] if axis.required else [""]
                items, placeholder = first + list(axis.allowed(known)), ""
            value = parameterNode.GetParameter(axis.name)
            if items and value not in items:
                value = axis.default if axis.default in items else items[0]
                parameterNode.SetParameter(axis.name, value)
            if enabled and value not in ("", ALL):
                known[axis.name] = value
            label = axis.name.replace("_", " ").capitalize()
            controls.append(AxisControl(axis.name, label, axis.kind.value, items, axis.minimum, axis.maximum,
                                        placeholder, " ".join(filter(None, (axis.description, axis.unit))), enabled))
        return controls

    def choiceControl(self, model, parameterNode, name, label):
        """The control (an AxisControl named ``name``) of a choice param ``model`` declares in ``/info/`` (its allowed
        values, default, description and where it applies), or None for a model without it; a value in the node
        that it does not allow is set to its default. ``base``: "Made from" a new brain from the model or the
        reference patient's own slice; ``file_with``: where the export of a scan made from the reference is filed."""
        spec = (self._connected().model_info(model).get("params") or {}).get(name)
        if not spec:
            return None
        items = list(spec["allowed"])
        if parameterNode.GetParameter(name) not in items:
            parameterNode.SetParameter(name, spec["default"])
        enabled = all(parameterNode.GetParameter(other) in values
                      for other, values in (spec.get("applies_when") or {}).items())
        return AxisControl(name, label, "categorical", items, None, None, "", spec.get("description", ""), enabled)

    def removalControls(self, model, parameterNode):
        """The controls of the defect to remove from the reference patient's slice (AxisControls named
        ``remove_<param>``), from what the ``base`` param of ``model`` declares under ``removes``: when it applies
        (made from the reference, pattern normal: enabled while the parameter node holds those values, or ``all``
        for an axis a Generate expands over) and each param naming the study's defect (side: the empty item for both
        sides; territory: the level's, every level's for ``all``; severity: its range). None for a model without it;
        a categorical value in the node that is not among the items is set to the first item."""
        spec = ((self._connected().model_info(model).get("params") or {}).get(BASE) or {}).get("removes")
        if not spec:
            return []
        enabled = all(parameterNode.GetParameter(name) in [*values, ALL] for name, values in
                      spec["applies_when"].items())
        level = parameterNode.GetParameter("level")
        controls = []
        for name, param in spec["params"].items():
            nodeName, kind = REMOVE + name, "continuous" if param.get("type") == "number" else "categorical"
            if kind == "continuous":
                items, placeholder = [], f"{param['minimum']:g} to {param['maximum']:g}"
            else:
                perLevel = param.get("per_level")
                allowed = param["allowed"] if perLevel is None else perLevel.get(level) or list(
                    dict.fromkeys(value for values in perLevel.values() for value in values))
                items, placeholder = ([] if param.get("required") else [""]) + list(allowed), ""
                if parameterNode.GetParameter(nodeName) not in items:
                    parameterNode.SetParameter(nodeName, items[0])
            toolTip = " ".join(filter(None, (spec["description"], param.get("empty") and
                                             f"(empty: {param['empty']})", param.get("unit"))))
            controls.append(AxisControl(nodeName, f"Remove {name}", kind, items, param.get("minimum"),
                                        param.get("maximum"), placeholder, toolTip, enabled))
        return controls

    def requestControls(self, model, parameterNode):
        """The Generate panel's controls: one per condition axis (axisControls), then the "Made from" and "File the
        export with" choices (choiceControl) and the defect to remove (removalControls) when the model declares
        them."""
        choices = [self.choiceControl(model, parameterNode, BASE, "Made from"),
                   self.choiceControl(model, parameterNode, FILE_WITH, "File the export with")]
        return self.axisControls(model, parameterNode) + [choice for choice in choices if choice] + \
            self.removalControls(model, parameterNode)

    def referenceImageId(self, volumeNode):
        """Upload a volume of the scene to the server's datastore (once per version of it); its image id."""
        key = (volumeNode.GetID(), volumeNode.GetMTime(), volumeNode.GetImageData().GetMTime())
        if key not in self.uploads:
            path = self.workFolder / "reference.nii.gz"
            if not slicer.util.exportNode(volumeNode, str(path)):
                raise RuntimeError(f"Cannot write {volumeNode.GetName()} as NIfTI for the upload.")
            self.uploads[key] = self._connected().upload(path)
        return self.uploads[key]

    def requestedImageId(self, parameterNode):
        """The reference of the request: the selected volume (uploaded), else the typed or picked datastore id."""
        reference = parameterNode.GetNodeReference(REFERENCE_ROLE)
        imageId = self.referenceImageId(reference) if reference else parameterNode.GetParameter(IMAGE_ID).strip()
        if not imageId:
            raise ValueError("Select a reference volume, or pick a study of the server's datastore.")
        return imageId

    def generateFromParameters(self, parameterNode):
        """What Generate does: the request of the parameter node (each axis's value where it applies, what the scans
        are made from); the reference's image id and the loaded nodes."""
        model = parameterNode.GetParameter(MODEL)
        if not model:
            raise ValueError("Connect to a server and choose a model first.")
        values = {control.name: parameterNode.GetParameter(control.name) if control.enabled else None
                  for control in self.axisControls(model, parameterNode)}
        removal = {control.name[len(REMOVE):]: parameterNode.GetParameter(control.name)
                   for control in self.removalControls(model, parameterNode) if control.enabled}
        removed = spectganClient().removal_lesions(**removal) if removal else ()
        filing = self.choiceControl(model, parameterNode, FILE_WITH, "")
        fileWith = parameterNode.GetParameter(FILE_WITH) if filing and filing.enabled else "synthetic"
        imageId = self.requestedImageId(parameterNode)
        nodes = self.generate(imageId, model, values, int(parameterNode.GetParameter(SEED)),
                              int(parameterNode.GetParameter(COUNT)), parameterNode.GetParameter(BASE) or "model",
                              removed, fileWith)
        return imageId, nodes

    def generate(self, imageId, model, values, seed, count, base="model", removed=(), fileWith="synthetic"):
        """Every requested scan, each loaded as a scalar volume, and their statistics in the table; the nodes.

        ``values``: by axis name; the axes a Generate expands over take ``all`` (every value the model offers), the
        others one value (empty: drawn), sent with each condition it applies to. ``base``: ``model`` (new brains) or
        ``reference`` (the reference patient's own slice with each condition's defect added: territory and severity
        required; from a normal condition, the ``removed`` lesions taken away: ``spectgan.client.removal_lesions``).
        ``fileWith``: ``source`` files the export of scans made from a DICOM reference with its own study.
        """
        client, axes, expanded = spectganClient(), self.conditionAxes(model), expandedAxes()
        conditions = client.expand_conditions(axes.conditions(), *(values.get(name) for name in expanded))
        further = {name: value for name, value in values.items() if name not in expanded and value}
        batches = {}  # the further values that apply -> the conditions they apply to
        for condition in conditions:
            chosen = condition.to_dict()
            applying = tuple((name, value) for name, value in further.items() if axes[name].applies(chosen))
            batches.setdefault(applying, []).append(condition)
        self.batchFolder = Path(tempfile.mkdtemp(prefix="batch-", dir=self.workFolder))
        self.dicomFolder = None
        nodes = []

        def load(result):
            path = self.batchFolder / client.result_file(result)
            nodes.append(slicer.util.loadVolume(str(path), {"name": result.name, "show": False}))
            slicer.app.processEvents()

        self.results = []
        for applying, batch in batches.items():
            job = client.GenerationJob(self._connected(), imageId, model, batch,
                                       client.seeds_from_spinboxes(seed, count), axis_values=dict(applying),
                                       base=base, removed=removed, file_with=fileWith)
            self.results += job.run(self.batchFolder, on_result=load)
        parameterNode = self.getParameterNode()
        tableNode = parameterNode.GetNodeReference(TABLE_ROLE)  # None before the first batch or after a new scene
        if tableNode is None:
            tableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "SpectGAN statistics")
            parameterNode.SetNodeReferenceID(TABLE_ROLE, tableNode.GetID())
        self.fillTable(tableNode, self.results)
        return nodes

    @property
    def tableNode(self):
        """The statistics table of the last batch (a node reference of the parameter node), or None."""
        return self.getParameterNode().GetNodeReference(TABLE_ROLE)

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
        from spectgan.conditions import parse_condition
        from spectgan.geometry.roi import MidlinePlane
        from spectgan.results import ModelVersion

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
        return client.GenerationResult.measured(image, midline, condition=parse_condition("BG", "unilateral", "left"),
                                                seed=1, model=ModelVersion("test", "0", "0" * 64), reference="test")

    def test_loaded_scan_keeps_its_geometry(self):
        """A result loaded into Slicer puts every voxel where ITK (LPS) says it is, in RAS: nothing flipped."""
        import numpy as np
        import SimpleITK as sitk

        result = self._obliqueScan()
        path = spectganClient().save_result(result, slicer.app.temporaryPath)
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
        """What Generate does, from the parameter node: upload the volume, generate, load, fill the table."""
        reference = slicer.util.loadVolume(str(REPOSITORY / "sample_data" / "studies" / "study_normal_flipped.nii.gz"))
        logic = SpectGANLogic()
        parameters = logic.getParameterNode()
        parameters.SetParameter(MODEL, logic.connect(os.environ["SPECTGAN_SERVER_URL"])[0])
        condition = logic.conditionAxes(parameters.GetParameter(MODEL)).conditions()[0]
        for name, value in (*condition.to_dict().items(), (SEED, "0"), (COUNT, "1")):
            parameters.SetParameter(name, value or "")
        parameters.SetNodeReferenceID(REFERENCE_ROLE, reference.GetID())
        imageId, nodes = logic.generateFromParameters(parameters)
        self.assertEqual([node.GetName() for node in nodes], [f"{condition.label}_seed0"])
        self.assertEqual(logic.tableNode.GetNumberOfRows(), 1)
        self.delayDisplay("Generated over a volume")
