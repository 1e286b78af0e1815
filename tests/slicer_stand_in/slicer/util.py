"""``slicer.util`` functions the SpectGAN module and its Test call: volumes to and from files (SimpleITK, LPS on
disk, RAS in the scene), arrays of volumes, slice view layers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

import slicer
import vtk
from slicer.mrml import RAS_FROM_LPS

FILE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
KEEP_CURRENT = "keep-current"


def _node_name(path: Path) -> str:
    return next((path.name[:-len(suffix)] for suffix in FILE_SUFFIXES if path.name.endswith(suffix)), path.stem)


def loadVolume(filename, properties: dict | None = None):
    """Read an image file (LPS, as ITK reads it) into a new scalar volume node of the scene, in RAS: the node's
    IJK-to-RAS matrix is ``RAS_FROM_LPS`` times the file's index-to-LPS matrix; the voxels keep their file order.
    ``properties``: ``name`` (default: the file name without its suffix); others (``show``, ...) are accepted."""
    properties = properties or {}
    try:
        image = sitk.ReadImage(str(filename))
    except RuntimeError as error:
        raise RuntimeError(f"Failed to load node from file: {filename}") from error
    if image.GetDimension() == 2:  # Slicer loads a 2D image as a one-slice volume
        image = sitk.JoinSeries(image)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise RuntimeError(f"the slicer stand-in loads scalar volumes only: {filename}")
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    ijk_to_lps[:3, 3] = image.GetOrigin()
    ijk_to_ras = vtk.vtkMatrix4x4()
    ijk_to_ras.array[:3, :] = RAS_FROM_LPS @ ijk_to_lps[:3, :]
    node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScalarVolumeNode")
    node.SetName(properties.get("name") or _node_name(Path(filename)))
    node.SetIJKToRASMatrix(ijk_to_ras)
    node.SetAndObserveImageData(vtk.vtkImageData(sitk.GetArrayFromImage(image)))
    return slicer.mrmlScene.AddNode(node)


def exportNode(node, filename, properties: dict | None = None, world: bool = False) -> bool:
    """Write a volume node to an image file (the format from the suffix), converting its RAS geometry back to LPS
    as Slicer's ITK writer does; True when written. ``world`` (hardening transforms) is not supported: the stand-in
    has no transforms."""
    if world:
        raise NotImplementedError("the slicer stand-in has no transforms to harden")
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    ijk_to_lps = RAS_FROM_LPS @ ijk_to_ras.array[:3, :]
    spacing = np.linalg.norm(ijk_to_lps[:, :3], axis=0)
    image = sitk.GetImageFromArray(arrayFromVolume(node))
    image.SetSpacing(tuple(float(value) for value in spacing))
    image.SetDirection(tuple(float(value) for value in (ijk_to_lps[:, :3] / spacing).ravel()))
    image.SetOrigin(tuple(float(value) for value in ijk_to_lps[:, 3]))
    try:
        sitk.WriteImage(image, str(filename), str(filename).endswith(".gz"))
    except RuntimeError:
        return False
    return True


def arrayFromVolume(volumeNode) -> np.ndarray:
    """The node's voxels [k, j, i] (a view: changes show in the volume after ``arrayFromVolumeModified``)."""
    return volumeNode.GetImageData().array


def arrayFromVolumeModified(volumeNode) -> None:
    volumeNode.GetImageData().Modified()
    volumeNode.Modified()


def setSliceViewerLayers(background=KEEP_CURRENT, foreground=KEEP_CURRENT, label=KEEP_CURRENT,
                         foregroundOpacity=None, labelOpacity=None, fit=False, rotateToVolumePlane=False) -> None:
    """Set the volumes every slice view shows (a node, or None to clear a layer; the default keeps it)."""
    layout = slicer.app.layoutManager()
    for name in layout.sliceViewNames():
        composite = layout.sliceWidget(name).mrmlSliceCompositeNode()
        if background != KEEP_CURRENT:
            composite.backgroundVolumeID = background.GetID() if background else None
        if foreground != KEEP_CURRENT:
            composite.foregroundVolumeID = foreground.GetID() if foreground else None
        if foregroundOpacity is not None:
            composite.foregroundOpacity = float(foregroundOpacity)


class VTKObservationMixin:
    """Importable for a Widget's class statement; the stand-in sets up no Widget, so nothing is observed."""
