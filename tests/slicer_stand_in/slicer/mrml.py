"""The MRML scene and the node classes the SpectGAN module touches, kept the way 3D Slicer keeps them.

A volume node holds what Slicer holds: voxels [k, j, i] and an IJK-to-RAS matrix. RAS is Slicer's world: +x toward
the patient's right, +y anterior, +z superior; ITK and DICOM files are LPS (+x toward the patient's left), so a file
read or written crosses ``RAS_FROM_LPS`` (``slicer.util.loadVolume`` / ``exportNode``). Nothing else converts.
"""
from __future__ import annotations

import itertools

import numpy as np

import vtk

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])  # its own inverse


class vtkMRMLNode(vtk.vtkObject):
    """Name, id (given by the scene), attributes, node references by role, batched modification."""

    def __init__(self):
        super().__init__()
        self._id = None
        self._name = ""
        self._scene = None
        self._attributes: dict[str, str] = {}
        self._references: dict[str, str] = {}
        self._singleton_tag = None

    def GetClassName(self) -> str:
        return type(self).__name__

    def GetID(self) -> str | None:
        return self._id

    def GetName(self) -> str:
        return self._name

    def SetName(self, name: str) -> None:
        self._name = name
        self.Modified()

    def GetScene(self):
        return self._scene

    def SetAttribute(self, name: str, value: str) -> None:
        self._attributes[name] = str(value)

    def SetSingletonTag(self, tag: str) -> None:
        self._singleton_tag = tag

    def GetSingletonTag(self) -> str | None:
        return self._singleton_tag

    def SetNodeReferenceID(self, role: str, node_id: str | None) -> None:
        if node_id:
            self._references[role] = node_id
        else:
            self._references.pop(role, None)
        self.Modified()

    def GetNodeReferenceID(self, role: str) -> str | None:
        return self._references.get(role)

    def GetNodeReference(self, role: str):
        """The referenced node, when it is in this node's scene (None otherwise, as in Slicer)."""
        node_id = self._references.get(role)
        return self._scene.GetNodeByID(node_id) if self._scene is not None and node_id else None

    def Reset(self) -> None:
        """Back to a new node's content, keeping id, name, scene and singleton tag (what a scene close does to the
        singletons it keeps)."""
        self._attributes, self._references = {}, {}
        self.Modified()

    def StartModify(self) -> int:
        return 0

    def EndModify(self, was_modifying: int) -> int:
        self.Modified()
        return was_modifying


class vtkMRMLScriptedModuleNode(vtkMRMLNode):
    """A module's parameter node: string parameters ('' when unset, as Slicer answers) and node references."""

    def __init__(self):
        super().__init__()
        self._parameters: dict[str, str] = {}

    def SetParameter(self, name: str, value: str) -> None:
        self._parameters[name] = str(value)
        self.Modified()

    def Reset(self) -> None:
        super().Reset()
        self._parameters = {}

    def GetParameter(self, name: str) -> str:
        return self._parameters.get(name, "")

    def GetParameterNames(self) -> list[str]:
        return list(self._parameters)


class vtkMRMLScalarVolumeNode(vtkMRMLNode):
    """A scalar volume: vtkImageData voxels [k, j, i] and the IJK-to-RAS matrix (spacing, origin, directions)."""

    def __init__(self):
        super().__init__()
        self._image_data = None
        self._ijk_to_ras = np.eye(4)

    def GetImageData(self):
        return self._image_data

    def SetAndObserveImageData(self, image_data) -> None:
        self._image_data = image_data
        self.Modified()

    def GetIJKToRASMatrix(self, matrix: vtk.vtkMatrix4x4) -> None:
        matrix.array = self._ijk_to_ras.copy()
        matrix.Modified()

    def SetIJKToRASMatrix(self, matrix: vtk.vtkMatrix4x4) -> None:
        self._ijk_to_ras = matrix.array.copy()
        self.Modified()

    def GetRASBounds(self, bounds: list) -> None:
        """(xmin, xmax, ymin, ymax, zmin, zmax) in RAS mm of the voxel box (voxel centres -0.5 ... size - 0.5)."""
        size = self._image_data.GetDimensions()
        corners = np.array(list(itertools.product(*[(-0.5, extent - 0.5) for extent in size])))
        ras = corners @ self._ijk_to_ras[:3, :3].T + self._ijk_to_ras[:3, 3]
        bounds[:] = [float(value) for axis in range(3) for value in (ras[:, axis].min(), ras[:, axis].max())]


class vtkMRMLTableNode(vtkMRMLNode):
    """A table of string columns (vtkStringArray), as the statistics table uses it."""

    def __init__(self):
        super().__init__()
        self._columns: list[vtk.vtkStringArray] = []

    def AddColumn(self, column: vtk.vtkStringArray | None = None) -> vtk.vtkStringArray:
        """Append a column, padded with empty cells to the table's rows; the column."""
        column = column if column is not None else vtk.vtkStringArray()
        while column.GetNumberOfValues() < self.GetNumberOfRows():
            column.InsertNextValue("")
        self._columns.append(column)
        self.Modified()
        return column

    def RemoveAllColumns(self) -> None:
        self._columns = []
        self.Modified()

    def AddEmptyRow(self) -> int:
        """Append a row of empty cells (a first column when there is none, as Slicer does); its index."""
        if not self._columns:
            self.AddColumn()
        for column in self._columns:
            column.InsertNextValue("")
        self.Modified()
        return self.GetNumberOfRows() - 1

    def GetNumberOfRows(self) -> int:
        return self._columns[0].GetNumberOfValues() if self._columns else 0

    def GetNumberOfColumns(self) -> int:
        return len(self._columns)

    def GetColumnName(self, index: int) -> str:
        return self._columns[index].GetName() or ""

    def SetCellText(self, row: int, column: int, text: str) -> bool:
        if not (0 <= row < self.GetNumberOfRows() and 0 <= column < self.GetNumberOfColumns()):
            return False
        self._columns[column].SetValue(row, text)
        self.Modified()
        return True

    def GetCellText(self, row: int, column: int) -> str:
        return self._columns[column].GetValue(row)


NODE_CLASSES = {cls.__name__: cls for cls in (vtkMRMLScriptedModuleNode, vtkMRMLScalarVolumeNode, vtkMRMLTableNode)}


class vtkMRMLScene(vtk.vtkObject):
    """Nodes by id (``<class name><n>``, as Slicer numbers them), singletons by tag and class."""

    def __init__(self):
        super().__init__()
        self._nodes: dict[str, vtkMRMLNode] = {}
        self._next_number: dict[str, itertools.count] = {}

    def CreateNodeByClass(self, class_name: str) -> vtkMRMLNode:
        if class_name not in NODE_CLASSES:
            raise ValueError(f"the slicer stand-in has no node class {class_name}; it has {sorted(NODE_CLASSES)}")
        return NODE_CLASSES[class_name]()

    def AddNode(self, node: vtkMRMLNode) -> vtkMRMLNode:
        """Add ``node`` (a singleton replaces nothing here: the existing one is returned instead, as Slicer does)."""
        tag = node.GetSingletonTag()
        existing = self.GetSingletonNode(tag, node.GetClassName()) if tag else None
        if existing is not None:
            return existing
        counter = self._next_number.setdefault(node.GetClassName(), itertools.count(1))
        node._id = f"{node.GetClassName()}{next(counter)}"
        node._scene = self
        self._nodes[node._id] = node
        self.Modified()
        return node

    def AddNewNodeByClass(self, class_name: str, name: str = "") -> vtkMRMLNode:
        node = self.CreateNodeByClass(class_name)
        node.SetName(name or self.GenerateUniqueName(class_name.replace("vtkMRML", "").replace("Node", "")))
        return self.AddNode(node)

    def GetNodeByID(self, node_id: str):
        return self._nodes.get(node_id)

    def GetSingletonNode(self, tag: str, class_name: str):
        return next((node for node in self._nodes.values() if node.GetSingletonTag() == tag
                     and node.GetClassName() == class_name), None)

    def GetNumberOfNodesByClass(self, class_name: str) -> int:
        return sum(node.GetClassName() == class_name for node in self._nodes.values())

    def GenerateUniqueName(self, base: str) -> str:
        names = {node.GetName() for node in self._nodes.values()}
        return base if base not in names else next(f"{base}_{n}" for n in itertools.count(1)
                                                  if f"{base}_{n}" not in names)

    def RemoveNode(self, node: vtkMRMLNode) -> None:
        if self._nodes.pop(node.GetID(), None) is not None:
            node._scene = None
            self.Modified()

    def Clear(self, remove_singletons: int = 0) -> None:
        """Remove every node but the singletons (those too when ``remove_singletons``), and reset the singletons
        kept, as Slicer does (a module's parameter node stays, emptied)."""
        for node in list(self._nodes.values()):
            if remove_singletons or not node.GetSingletonTag():
                self.RemoveNode(node)
            else:
                node.Reset()
