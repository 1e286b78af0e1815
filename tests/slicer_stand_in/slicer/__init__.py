"""A stand-in for 3D Slicer's ``slicer`` Python module, for tests only (3D Slicer cannot be installed here).

It offers what the SpectGAN module's Logic and Test use, backed by real parts: ``util.loadVolume`` and
``util.exportNode`` read and write files with SimpleITK and convert LPS <-> RAS as Slicer does, ``mrmlScene`` holds
the nodes (``mrml``), ``app.temporaryPath`` is a real temporary folder. There is no GUI: the red slice view only
records what it was asked to show. Put ``tests/slicer_stand_in`` first on ``sys.path`` to import it (with its
``vtk`` and ``qt``).
"""
import tempfile

from slicer import mrml
from slicer.mrml import vtkMRMLScene


class SliceNode:
    """A slice view's orientation and centre, as the last calls set them (no rendering)."""

    def __init__(self):
        self.volumePlane = None  # the volume node whose plane the view was turned onto
        self.center = None  # RAS mm

    def RotateToVolumePlane(self, volumeNode) -> None:
        self.volumePlane = volumeNode

    def JumpSliceByCentering(self, r: float, a: float, s: float) -> None:
        self.center = (float(r), float(a), float(s))


class SliceCompositeNode:
    """Which volumes a slice view shows."""

    def __init__(self):
        self.backgroundVolumeID = None
        self.foregroundVolumeID = None
        self.foregroundOpacity = 0.0

    def GetBackgroundVolumeID(self):
        return self.backgroundVolumeID

    def GetForegroundVolumeID(self):
        return self.foregroundVolumeID

    def GetForegroundOpacity(self) -> float:
        return self.foregroundOpacity


class SliceWidget:
    def __init__(self):
        self._slice_node = SliceNode()
        self._composite_node = SliceCompositeNode()

    def mrmlSliceNode(self) -> SliceNode:
        return self._slice_node

    def mrmlSliceCompositeNode(self) -> SliceCompositeNode:
        return self._composite_node


class LayoutManager:
    VIEW_NAMES = ("Red", "Yellow", "Green")

    def __init__(self):
        self._widgets = {name: SliceWidget() for name in self.VIEW_NAMES}

    def sliceWidget(self, name: str) -> SliceWidget:
        return self._widgets[name]

    def sliceViewNames(self) -> tuple[str, ...]:
        return self.VIEW_NAMES


class Application:
    """``slicer.app``: a temporary folder (the system's; tests point it at their own), no event loop, a layout of
    three slice views."""

    def __init__(self):
        self.temporaryPath = tempfile.gettempdir()
        self._layout_manager = LayoutManager()

    def processEvents(self) -> None:
        """Nothing to process: the stand-in has no event loop."""

    def layoutManager(self) -> LayoutManager:
        return self._layout_manager


app = Application()
mrmlScene = vtkMRMLScene()

from slicer import util  # noqa: E402 (util uses app and mrmlScene)

__all__ = ["app", "mrml", "mrmlScene", "util"]
