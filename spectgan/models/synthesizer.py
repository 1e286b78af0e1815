"""The model contract: what serving, evaluation, the demo and ``synthesize`` know of a model, and the registry of
model families.

A *bundle* is a folder with ``configs/metadata.json`` (its ``family`` names the family that loads it; bundles made
before families existed are ``conditional_fastgan``). A *family* loads its bundles as ``Synthesizer`` objects and
trains new ones. Adding a model family (a diffusion model, say) is one new package under ``spectgan.models`` that
defines ``FAMILY`` (a ``SynthesizerFamily``) plus one line in ``FAMILIES`` (or, for a family that lives outside
spectgan, an entry ``name=module`` in $SPECTGAN_MODEL_FAMILIES, which the server and its workers read).

    synthesizer = load_synthesizer("models/spect_fastgan_A")
    counts = synthesizer.sample([Condition(Level.BG, Pattern.NORMAL)] * 4, seed=3, options={"psi": 0.8})  # [4, H, W]
"""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence

import numpy as np

from spectgan.conditions import Condition, ConditionAxes, Level, parse_number
from spectgan.errors import InvalidRequestError, SpectganError
from spectgan.lesions import DefectAxes

if TYPE_CHECKING:
    from spectgan.counterfactual.paired import Method

METADATA_FILE = "configs/metadata.json"
DEFAULT_FAMILY = "conditional_fastgan"  # bundles without a ``family`` entry in their metadata
# family name -> module that defines FAMILY (imported on first use: a family's stack loads only when needed)
FAMILIES: dict[str, str] = {
    "conditional_fastgan": "spectgan.models.fastgan.synthesizer",
}
FAMILIES_ENV = "SPECTGAN_MODEL_FAMILIES"  # more families: "name=module,name=module"


@dataclass(frozen=True)
class Option:
    """A number a model family lets a request set (FastGAN: ``psi``, the truncation), with its range and default."""

    name: str
    minimum: float
    maximum: float
    default: float
    description: str

    def parse(self, value) -> float:
        """``value`` (a JSON number or a numeric string; None or blank: the default) within the range;
        InvalidRequestError naming the range otherwise."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return self.default
        parsed = parse_number(value)
        if parsed is None or not self.minimum <= parsed <= self.maximum:
            raise InvalidRequestError(f"{self.name} must be a number in [{self.minimum:g}, {self.maximum:g}] "
                                      f"({self.description}), got {value!r}")
        return parsed

    def spec(self) -> dict:
        """The option as ``/info/`` lists a param."""
        return {"type": "number", "minimum": self.minimum, "maximum": self.maximum, "default": self.default,
                "description": self.description}


class Synthesizer(Protocol):
    """A loaded model bundle that makes canonical slices (template geometry, counts) of conditions."""

    name: str  # the bundle's name (its folder name when served)
    levels: tuple[Level, ...]  # the levels it was trained on

    def conditions(self) -> list[Condition]:
        """Every condition it can make (its bundle's: its levels; no bilateral at CER)."""

    def condition_axes(self) -> ConditionAxes:
        """Its condition axes, one declaration (level, pattern, side from ``conditions``; its defect axes; any axis
        its family adds): what ``/info/`` lists and every front end builds its controls from."""

    def options(self) -> tuple[Option, ...]:
        """The numbers a request may set beside condition and seed."""

    def defect_axes(self) -> DefectAxes | None:
        """The territory and severity axes it takes (None: level, pattern and side only)."""

    def resolve(self, conditions: Sequence[Condition], seed: int) -> list[Condition]:
        """The conditions with the lesions ``sample`` will draw for what they leave out (the same seed: the same
        lesions); a model without defect axes returns them unchanged."""

    def describe(self) -> dict:
        """What ``/info/`` shows of the bundle: name, version, sha256, image size, pixel spacing, levels, ..."""

    def sample(self, conditions: Sequence[Condition], seed: int, options: Mapping[str, float]) -> np.ndarray:
        """Float32 counts [n, H, W] in the canonical orientation (column toward the patient's left, row toward
        posterior), one slice per condition; the same seed, conditions, options and weights give the same counts."""

    def learned_counterfactual(self, seed: int) -> Method:
        """A model with defect axes: the learned counterfactual method (``spectgan.counterfactual.learned``: the
        model inverted on a patient's canonical slice, its change of condition applied to it) for a seed."""


def check_lesions(synthesizer: Synthesizer, condition: Condition) -> None:
    """InvalidRequestError unless the condition's territories and severities are ones the model takes (its
    ``defect_axes``; a model without them takes none); the message names what is allowed."""
    axes = synthesizer.defect_axes()
    if axes is None:
        if any(lesion.territory is not None or lesion.severity is not None for lesion in condition.lesions):
            raise InvalidRequestError(f"model {synthesizer.name} has no defect axes: it takes level, pattern and "
                                      "side only; leave territory and severity out")
        return
    try:
        axes.check(condition)
    except ValueError as error:
        raise InvalidRequestError(f"{error} (model {synthesizer.name})") from None


INIT_SERVED, INIT_FRESH = "served", "fresh"  # where a retraining starts: the served bundle's weights, or random ones
INITS = (INIT_SERVED, INIT_FRESH)


@dataclass(frozen=True)
class TrainPlan:
    """A training run a family carries out and exports as a candidate bundle (``SynthesizerFamily.retrain``); the
    server publishes it or not (``spectgan.serving.service.retrain``)."""

    cohort_dir: Path
    run_dir: Path  # replaced by the run
    bundle_dir: Path  # the served bundle (if any): its recipe, and its weights with ``init`` served
    candidate_dir: Path  # where the finished run is exported
    name: str
    version: str
    levels: tuple[Level, ...]
    iterations: int
    batch_size: int
    command: str  # recorded in the bundle as how it was made
    init: str = INIT_SERVED  # one of INITS


class SynthesizerFamily(Protocol):
    """A model family: loads its bundles and trains new ones."""

    name: str
    default_iterations: int
    default_batch_size: int

    def load(self, bundle_dir: Path) -> Synthesizer:
        """The bundle as a Synthesizer (cached while its files are unchanged); SpectganError when it is not usable."""

    def retrain(self, plan: TrainPlan, progress: bool) -> None:
        """Train a run as ``plan`` says (with the recipe of ``plan.bundle_dir`` when there is one, from its weights
        with ``plan.init`` served) and export it to ``plan.candidate_dir``."""


def bundle_metadata(bundle_dir: Path) -> dict:
    """A bundle's metadata; SpectganError (naming the folder by its name only) when there is none."""
    try:
        return json.loads((Path(bundle_dir) / METADATA_FILE).read_text())
    except (OSError, ValueError) as error:
        raise SpectganError(f"{Path(bundle_dir).name} is not a model bundle: {METADATA_FILE} cannot be read "
                            f"({type(error).__name__})") from None


def registered_families() -> dict[str, str]:
    """Family name -> module: ``FAMILIES`` and those named in $SPECTGAN_MODEL_FAMILIES (``name=module,...``)."""
    extra = (entry.split("=", 1) for entry in os.environ.get(FAMILIES_ENV, "").split(",") if "=" in entry)
    return {**FAMILIES, **{name.strip(): module.strip() for name, module in extra}}


def family(name: str) -> SynthesizerFamily:
    """The registered family ``name``; SpectganError naming the registered ones otherwise."""
    families = registered_families()
    if name not in families:
        raise SpectganError(f"unknown model family {name!r}; this spectgan has: {', '.join(families)} (more with "
                            f"${FAMILIES_ENV}=name=module)")
    return importlib.import_module(families[name]).FAMILY


def family_of(bundle_dir: Path, default: str = DEFAULT_FAMILY) -> SynthesizerFamily:
    """The family that loads the bundle in ``bundle_dir`` (``default`` when there is no bundle yet)."""
    if not is_bundle(bundle_dir):
        return family(default)
    return family(bundle_metadata(bundle_dir).get("family", DEFAULT_FAMILY))


def load_synthesizer(bundle_dir: str | Path) -> Synthesizer:
    """Load a bundle with its family (``family_of``)."""
    return family_of(Path(bundle_dir)).load(Path(bundle_dir))


def is_bundle(folder: Path) -> bool:
    """True when ``folder`` holds a bundle's metadata (its family checks the rest on loading)."""
    return (Path(folder) / METADATA_FILE).is_file()


def find_bundles(models_dir: Path) -> tuple[str, ...]:
    """Names of the bundle folders in ``models_dir``, sorted (hidden folders, such as a bundle being replaced, and
    folders without metadata, such as ``runs``, are not bundles)."""
    if not Path(models_dir).is_dir():
        return ()
    return tuple(sorted(folder.name for folder in Path(models_dir).iterdir()
                        if folder.is_dir() and not folder.name.startswith(".") and is_bundle(folder)))
