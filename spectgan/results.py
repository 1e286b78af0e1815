"""The result of one generation, as one type: the service builds it, serialises it (``to_json``) and the client reads
it back (``from_json``); the spectgan page, the ``generate`` command, the 3D Slicer module and the DICOM export all
read this type.

A result is the generated image (SimpleITK, float32 counts, in the reference study's LPS space: a one-slice volume
on the level's plane, or the reference's grid), the completed condition it was made of (with the territory and
severity a model with defect axes drew), the seed, the model (name, family, version, sha256 of the weights), the
registered midline and level plane, and the hemisphere statistics together with the masks they were measured on
(``spectgan.geometry.roi.measure_hemispheres``: measured once, by the service; a client that reads a result back
splits the image by the same midline once) and, for a result made from the reference patient's own slice
(``base=reference``), its ``Derivation``. Synthetic, always: its JSON says so.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import SimpleITK as sitk

from spectgan.conditions import Condition, Lesion, Side
from spectgan.errors import InvalidImageError
from spectgan.geometry.roi import HemisphereMasks, HemisphereStats, MidlinePlane, hemisphere_masks, \
    measure_hemispheres
from spectgan.lesions import condition_from_dict

REQUIRED_KEYS = ("condition", "seed", "model", "version", "sha256", "stats", "midline", "image")


@dataclass(frozen=True)
class ModelVersion:
    """The model that made a result: bundle name, version, sha256 of its weights and its family (e.g. fastgan)."""

    name: str
    version: str
    sha256: str
    family: str | None = None


@dataclass(frozen=True)
class RegistrationSummary:
    """How the reference study was registered to the template: ``correlation`` (template correlation), ``metric``
    (Mattes mutual information), ``template_to_study`` (the pose, ``spectgan.geometry.registration.pose_to_dict``),
    ``cached`` (the server had registered this study before)."""

    correlation: float
    metric: float
    template_to_study: Mapping[str, Any]
    cached: bool

    def to_dict(self) -> dict:
        return {"correlation": self.correlation, "metric": self.metric,
                "template_to_study": dict(self.template_to_study), "cached": self.cached}


@dataclass(frozen=True)
class LevelPlane:
    """The level's axial template plane in the reference study: a point (the canonical slice centre) and the unit
    normal toward superior, LPS mm."""

    point: tuple[float, float, float]
    normal_superior: tuple[float, float, float]


@dataclass(frozen=True)
class SourceSeries:
    """The DICOM identity of a reference study that came as DICOM (a PACS series, an uploaded DICOM file): its
    study, series and frame of reference UIDs and its instances as (SOP Class UID, SOP Instance UID) pairs. A result
    made from it names these in its Source Image Sequence; no patient identity here."""

    study_instance_uid: str
    series_instance_uid: str
    instances: tuple[tuple[str, str], ...]
    frame_of_reference_uid: str | None = None

    def to_dict(self) -> dict:
        return {"study_instance_uid": self.study_instance_uid, "series_instance_uid": self.series_instance_uid,
                "instances": [list(instance) for instance in self.instances],
                "frame_of_reference_uid": self.frame_of_reference_uid}

    @classmethod
    def from_dict(cls, values: Mapping) -> "SourceSeries":
        return cls(str(values["study_instance_uid"]), str(values["series_instance_uid"]),
                   tuple((str(sop_class), str(sop_instance)) for sop_class, sop_instance in values["instances"]),
                   values.get("frame_of_reference_uid"))


@dataclass(frozen=True)
class SourcePatient:
    """The patient and study of a DICOM reference study (DICOM keywords as names), which a result asked to be filed
    with the source (``file_with=source``) is filed under; a result carries it only then."""

    patient_id: str
    patient_name: str
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_id: str = ""
    accession_number: str = ""
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> "SourcePatient":
        return cls(**{name: str(values.get(name) or "") for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Derivation:
    """How a result was made from the reference patient's own slice at its level (``base=reference``) instead of
    by the model: the ``method`` (``spectgan.counterfactual``), the lesions it ``removed`` (pattern normal; the
    lesions it added are the result's condition's), the reference's DICOM identity (``source``; None for a
    reference without one, such as a NIfTI) and, when the request asked to file the result with the source study
    (``file_with=source``), that study's patient (``filed_with``; None: filed under a synthetic patient)."""

    method: str
    removed: tuple[Lesion, ...] = ()
    source: SourceSeries | None = None
    filed_with: SourcePatient | None = None

    def to_dict(self) -> dict:
        return {"base": "reference", "method": self.method,
                "removed": [{"side": lesion.side.value, "territory": lesion.territory, "severity": lesion.severity}
                            for lesion in self.removed],
                "source": self.source.to_dict() if self.source else None,
                "file_with": "source" if self.filed_with else "synthetic",
                **({"filed_with": self.filed_with.to_dict()} if self.filed_with else {})}

    @classmethod
    def from_dict(cls, values: Mapping) -> "Derivation":
        return cls(str(values["method"]), tuple(Lesion(Side(item["side"]), item["territory"], item["severity"])
                                                for item in values.get("removed") or ()),
                   SourceSeries.from_dict(values["source"]) if values.get("source") else None,
                   SourcePatient.from_dict(values["filed_with"]) if values.get("filed_with") else None)

    def describe(self, condition: Condition) -> str:
        """``the reference patient's own slice with a left MCA defect of 30 % added (physics method)``."""
        lesions = self.removed or condition.lesions
        defects = " and ".join(f"{lesion.side.value} {lesion.territory} {lesion.severity:.0%}" for lesion in lesions)
        change = "removed" if self.removed else "added"
        return f"the reference patient's own slice with the defect {defects} {change} ({self.method} method)"


@dataclass(frozen=True)
class GenerationResult:
    """One generated scan (see the module's docstring).

    ``stats`` and ``masks`` are None when the image holds no brain to measure (an untrained model makes such
    images); ``stats_error`` then says why. ``reference``: the reference study as the server names it (the page: its
    image id). ``result_id``: the id under which the spectgan page keeps the result for export (never a path).
    ``timings_s``: seconds per step of the generation on the server.
    """

    image: sitk.Image = field(compare=False)  # SimpleITK's == compares pixels into an image, not into a bool
    condition: Condition
    seed: int
    model: ModelVersion
    reference: str
    midline: MidlinePlane
    stats: HemisphereStats | None
    masks: HemisphereMasks | None = field(default=None, repr=False, compare=False)
    stats_error: str | None = None
    output_space: str = "slice"
    options: Mapping[str, float | str] = field(default_factory=dict)  # the family's, and further declared axes'
    level_plane: LevelPlane | None = None
    registration: RegistrationSummary | None = None
    timings_s: Mapping[str, Any] = field(default_factory=dict)
    result_id: str | None = None
    derivation: Derivation | None = None  # made from the reference patient's own slice (base=reference)

    @classmethod
    def measured(cls, image: sitk.Image, midline: MidlinePlane, **values) -> "GenerationResult":
        """A result whose hemisphere statistics and masks are measured here, split by ``midline``; an image without
        a measurable brain gets ``stats_error`` instead. ``values``: the other fields."""
        try:
            stats, masks = measure_hemispheres(image, midline)
        except InvalidImageError as error:
            return cls(image=image, midline=midline, stats=None, masks=None, stats_error=str(error), **values)
        return cls(image=image, midline=midline, stats=stats, masks=masks, **values)

    @property
    def name(self) -> str:
        """``<condition>_seed<seed>``, e.g. ``BG-unilateral-left_seed3`` (``_reference`` in place of the seed for a
        result made from the reference patient's slice): the result's file and series names."""
        return f"{self.condition.label}_{'reference' if self.derivation else f'seed{self.seed}'}"

    def to_json(self) -> dict:
        """The JSON the server answers (MONAI Label's ``params`` part): condition (with its label), seed, model,
        family, version, sha256, the options at top level and under ``options``, output space, reference
        (``image``), statistics (or ``stats_error``), midline, the image's geometry with the level plane,
        registration, timings, ``synthetic: true``, ``base`` (model or reference) with the ``derivation`` of a result
        made from the reference (its ``description`` in words, as the DICOM export's Derivation Description) and, on the page, ``result_id``."""
        image = self.image
        geometry = {"size": list(image.GetSize()), "origin": list(image.GetOrigin()),
                    "spacing": list(image.GetSpacing()), "direction": list(image.GetDirection()),
                    "pixel_type": image.GetPixelIDTypeAsString()}
        if self.level_plane is not None:
            geometry["level_plane"] = {"point": list(self.level_plane.point),
                                       "normal_superior": list(self.level_plane.normal_superior)}
        values = {
            "model": self.model.name, "family": self.model.family, "version": self.model.version,
            "sha256": self.model.sha256, "condition": {**self.condition.to_dict(), "label": self.condition.label},
            "seed": self.seed, **self.options, "options": dict(self.options), "output_space": self.output_space,
            "image": self.reference, "stats": self.stats.to_dict() if self.stats is not None else None,
            **({"stats_error": self.stats_error} if self.stats_error else {}),
            "midline": {"point": list(self.midline.point), "normal": list(self.midline.normal)},
            "geometry": geometry,
            "registration": self.registration.to_dict() if self.registration is not None else None,
            "timings_s": dict(self.timings_s), "synthetic": True,
            "base": "reference" if self.derivation else "model",
            "derivation": {**self.derivation.to_dict(), "description": self.derivation.describe(self.condition)}
            if self.derivation else None,
        }
        if self.result_id is not None:
            values["result_id"] = self.result_id
        return values

    @classmethod
    def from_json(cls, values: Mapping, image: sitk.Image) -> "GenerationResult":
        """The result from ``to_json``'s form and its image; the masks are measured again on the image, split by
        the result's midline. ValueError names what is missing or invalid."""
        if not isinstance(values, Mapping):
            raise ValueError(f"a result is a JSON object, got {str(values)[:100]!r}")
        missing = [key for key in REQUIRED_KEYS if key not in values]
        if missing:
            raise ValueError(f"the result lacks {', '.join(missing)}")
        try:
            midline = MidlinePlane(point=values["midline"]["point"], normal=values["midline"]["normal"])
            condition = condition_from_dict(values["condition"])
            seed = int(values["seed"])
            plane = (values.get("geometry") or {}).get("level_plane")
            level_plane = LevelPlane(tuple(plane["point"]), tuple(plane["normal_superior"])) if plane else None
            registration = RegistrationSummary(**values["registration"]) if values.get("registration") else None
            derivation = Derivation.from_dict(values["derivation"]) if values.get("derivation") else None
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"the result has an invalid condition, seed, midline, level plane, registration or "
                             f"derivation: "
                             f"{error}") from None
        stats = HemisphereStats.from_dict(values["stats"]) if values["stats"] is not None else None
        if stats is not None and not all(math.isfinite(value) for value in stats.to_dict().values()
                                         if isinstance(value, float)):
            raise ValueError("the result's statistics are not finite numbers")
        try:
            masks = hemisphere_masks(image, midline) if stats is not None else None
        except InvalidImageError as error:
            raise ValueError(f"the result's image cannot be split at its midline: {error}") from None
        return cls(
            image=image, condition=condition, seed=seed,
            model=ModelVersion(str(values["model"]), str(values["version"]), str(values["sha256"]),
                               values.get("family")),
            reference=str(values["image"]), midline=midline, stats=stats, masks=masks,
            stats_error=values.get("stats_error"), output_space=values.get("output_space") or "slice",
            options=dict(values.get("options") or {}),
            level_plane=level_plane, registration=registration,
            timings_s=dict(values.get("timings_s") or {}), result_id=values.get("result_id"), derivation=derivation)
