"""Stand-in for the few ``vtk`` classes the SpectGAN module and the ``slicer`` stand-in use (VTK's Python wrapping
is not installed here). Behaviour follows VTK's: one global modification counter, 4 x 4 matrices that multiply
homogeneous points, named string arrays."""
from __future__ import annotations

import itertools

import numpy as np

_modification_times = itertools.count(1)  # VTK's global modified time: every Modified() takes the next value


class vtkObject:
    """MTime as VTK keeps it: a new, larger value at each ``Modified()``."""

    def __init__(self):
        self._mtime = next(_modification_times)

    def Modified(self) -> None:
        self._mtime = next(_modification_times)

    def GetMTime(self) -> int:
        return self._mtime


class vtkMatrix4x4(vtkObject):
    """A 4 x 4 matrix (identity when made), row-major elements, as ``vtk.vtkMatrix4x4``."""

    def __init__(self):
        super().__init__()
        self.array = np.eye(4)

    def GetElement(self, row: int, column: int) -> float:
        return float(self.array[row, column])

    def MultiplyPoint(self, point) -> tuple[float, float, float, float]:
        """The matrix times a homogeneous point (4 values)."""
        return tuple(float(value) for value in self.array @ np.asarray(point, dtype=float))


class vtkStringArray(vtkObject):
    """A named array of strings."""

    def __init__(self):
        super().__init__()
        self._name = None
        self._values: list[str] = []

    def SetName(self, name: str) -> None:
        self._name = name

    def GetName(self) -> str | None:
        return self._name

    def InsertNextValue(self, value: str) -> int:
        self._values.append(str(value))
        return len(self._values) - 1

    def SetValue(self, index: int, value: str) -> None:
        self._values[index] = str(value)

    def GetValue(self, index: int) -> str:
        return self._values[index]

    def GetNumberOfValues(self) -> int:
        return len(self._values)


class vtkImageData(vtkObject):
    """Voxels only: Slicer keeps a volume's geometry in its node, not in its vtkImageData (origin 0, spacing 1)."""

    def __init__(self, array: np.ndarray):
        super().__init__()
        self.array = array  # [k, j, i], as slicer.util.arrayFromVolume gives it

    def GetDimensions(self) -> tuple[int, int, int]:
        return tuple(int(size) for size in self.array.shape[::-1])
