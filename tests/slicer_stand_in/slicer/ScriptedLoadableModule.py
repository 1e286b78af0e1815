"""The scripted module base classes, as far as a module's Logic and Test use them outside a GUI."""
from __future__ import annotations

import logging
import unittest

import slicer


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = type(self).__name__


class ScriptedLoadableModuleWidget:
    """No GUI in the stand-in: a Widget class can be defined, not set up."""


class ScriptedLoadableModuleLogic:
    """``getParameterNode``: the module's singleton vtkMRMLScriptedModuleNode in the scene, made on first use with
    ``setDefaultParameters``, as Slicer's base class does."""

    def __init__(self, parent=None):
        self.parent = parent
        self.moduleName = type(self).__name__[:-len("Logic")] if type(self).__name__.endswith("Logic") \
            else type(self).__name__

    def getParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is not None:
            return node
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        self.setDefaultParameters(node)
        return slicer.mrmlScene.AddNode(node)

    def setDefaultParameters(self, parameterNode) -> None:
        """Nothing by default; a module's Logic overrides it."""


class ScriptedLoadableModuleTest(unittest.TestCase):
    """A unittest.TestCase; ``delayDisplay`` logs its message (there is no window to show it in)."""

    def delayDisplay(self, message, msec=None) -> None:
        logging.info(message)
