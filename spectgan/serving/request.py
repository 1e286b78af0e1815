"""Requests to the server, validated once at its edge into typed objects that every later step takes as they are.

An infer request (MONAI Label's form field ``params``, a JSON object) becomes a ``GenerationRequest``: the model, a
``Condition`` valid for it (with the lesions a model with defect axes takes: ``territory`` and ``severity``, in the
forms of ``spectgan.lesions``), a seed (or None: drawn at generation and echoed back), the values of the model
family's own options (FastGAN: ``psi``), the output space and the base: ``model`` (the model makes a new brain) or
``reference`` (the reference patient's own slice changed to the condition, ``spectgan.counterfactual``: a defect of
the given side, territory and severity added, or with pattern ``normal`` the defect they name removed, by the
``method`` physics or learned) and, for a result made from the reference, where its DICOM export is filed
(``file_with``: ``synthetic`` or ``source``). A train request becomes a ``TrainRequest``. Errors are
``spectgan.errors`` domain errors whose message names what is allowed; ``monai_app`` maps them to HTTP.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from spectgan.conditions import (CONDITION_AXES, AxisKind, Condition, ConditionAxes, ConditionAxis, Lesion, Level,
                                 Pattern, Side, describe_allowed, describe_conditions, is_empty, parse_condition,
                                 parse_levels, parse_member)
from spectgan.counterfactual import DEFAULT_METHOD, LEARNED, METHODS, check_lesions as check_reference_lesions, \
    describe_axes
from spectgan.counterfactual.physics import PHYSICS_AXES
from spectgan.errors import InvalidRequestError, MalformedRequestError
from spectgan.geometry.registration import OUTPUT_SPACES
from spectgan.lesions import LESION_AXES, DefectAxes, parse_lesions, with_lesions
from spectgan.models.synthesizer import INIT_SERVED, INITS, Option, Synthesizer, check_lesions
from spectgan.serving.uploads import check_id

GENERATION_REQUEST = "spectgan_request"  # key of the checked GenerationRequest in MONAI Label's infer request dict
CONDITION_PARAMS = ("level", "pattern", "side")
BASE_INFER_PARAMS = (*CONDITION_PARAMS, "seed", "output_space", "base", "method", "file_with")  # plus family options
BASE_MODEL, BASE_REFERENCE = "model", "reference"  # what a generated slice is made of (param ``base``)
BASES = (BASE_MODEL, BASE_REFERENCE)
FILE_WITH_SYNTHETIC, FILE_WITH_SOURCE = "synthetic", "source"  # where a result's DICOM is filed (param ``file_with``)
FILE_WITH = (FILE_WITH_SYNTHETIC, FILE_WITH_SOURCE)
PER_SIDE_FORMS = ('a bilateral defect takes one value for both sides, a JSON object {"left": .., "right": ..} or '
                  "the text left=VALUE;right=VALUE (a side left out is drawn)")
TRAIN_PARAMS = ("iterations", "batch", "levels", "cohort", "init", "force")
MAX_SEED = 2 ** 63 - 1
DRAWN_SEEDS = 2 ** 31  # a seed drawn for a request that gave none is below this
MAX_TRAIN_ITERATIONS = 1_000_000
MAX_TRAIN_BATCH = 1024
NUMBER_TEXT_LIMIT = 40  # characters of a number sent as a string


@dataclass(frozen=True)
class GenerationRequest:
    """One validated infer request."""

    model: str
    condition: Condition
    seed: int | None  # None: drawn at generation (``resolved_seed``) and echoed back
    # every option of the model family (defaults filled) and the values of the axes it declares beyond the condition's
    options: Mapping[str, float | str] = field(default_factory=dict)
    output_space: str = OUTPUT_SPACES[0]
    base: str = BASE_MODEL
    removed: tuple[Lesion, ...] = ()  # base reference, pattern normal: the defect taken away from the patient's slice
    method: str = DEFAULT_METHOD  # base reference: the counterfactual method (``spectgan.counterfactual.METHODS``)
    file_with: str = FILE_WITH_SYNTHETIC  # base reference: ``source`` files the DICOM with the reference's study

    def resolved_seed(self) -> int:
        """The request's seed, or a fresh random one in [0, 2^31)."""
        return secrets.randbelow(DRAWN_SEEDS) if self.seed is None else self.seed


@dataclass(frozen=True)
class TrainRequest:
    """One validated train request."""

    iterations: int
    batch_size: int
    levels: tuple[Level, ...]
    cohort: str | None = None  # the id of a cohort the server has (None: its default cohort)
    init: str = INIT_SERVED  # start from the served weights, or fresh ones (``INITS``)
    force: bool = False  # publish even if the quality gate fails (the bundle's changelog says so)


def parse_params_json(text: str | None) -> dict:
    """The ``params`` form field of a MONAI Label request -> dict; MalformedRequestError when it is not a JSON
    object."""
    if text is None or not text.strip():
        return {}
    try:
        params = json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedRequestError(f"params is not valid JSON ({error.msg} at line {error.lineno} column "
                                    f"{error.colno}); send a JSON object such as "
                                    '{"level": "BG", "pattern": "unilateral", "side": "left"}') from None
    except RecursionError:
        raise MalformedRequestError("params is nested too deeply; send a flat JSON object") from None
    if not isinstance(params, dict):
        raise MalformedRequestError(f"params must be a JSON object of named params, got a JSON "
                                    f"{type(params).__name__}")
    return params


def parse_integer(value, name: str, low: int, high: int, hint: str = "") -> int:
    """An integer param (a JSON integer or a string of digits) in [low, high]; InvalidRequestError otherwise."""
    parsed = None
    if isinstance(value, int) and not isinstance(value, bool):
        parsed = value
    elif isinstance(value, str) and value.strip().lstrip("+").isdecimal() and len(value.strip()) <= NUMBER_TEXT_LIMIT:
        parsed = int(value.strip())
    if parsed is None or not low <= parsed <= high:
        raise InvalidRequestError(f"{name} must be an integer in [{low}, {high}]{hint}, got {value!r}")
    return parsed


def parse_condition_params(params: Mapping[str, Any], synthesizer: Synthesizer) -> Condition:
    """``level``, ``pattern``, ``side`` and (a model with defect axes) ``territory`` and ``severity`` as a condition
    the model can make; InvalidRequestError naming the allowed values and the model's valid conditions otherwise."""
    levels, conditions = synthesizer.levels, synthesizer.conditions()
    valid = f"Valid conditions for {synthesizer.name}: {describe_conditions(conditions)}"
    for name, allowed in (("level", [level.value for level in levels]), ("pattern", [p.value for p in Pattern])):
        if is_empty(params.get(name)):
            raise InvalidRequestError(f"{name} is required; allowed: {', '.join(allowed)}. {valid}")
    side = params.get("side")
    try:
        condition = parse_condition(params["level"], params["pattern"], None if is_empty(side) else side,
                                    levels=levels, valid=conditions)
    except ValueError as error:
        raise InvalidRequestError(f"{error}. {valid}") from None
    try:
        condition = with_lesions(condition, params.get("territory"), params.get("severity"))
    except ValueError as error:
        raise InvalidRequestError(f"{error}. {describe_defect_axes(synthesizer)}; {PER_SIDE_FORMS}") from None
    check_lesions(synthesizer, condition)
    return condition


def describe_defect_axes(synthesizer: Synthesizer) -> str:
    """The territories (per level) and severities a model takes, for error messages."""
    axes = synthesizer.defect_axes()
    if axes is None:
        return f"Model {synthesizer.name} has no defect axes (territory, severity)"
    territories = "; ".join(f"{level}: {', '.join(names)}" for level, names in axes.territories.items())
    low, high = axes.severity_range
    return f"Model {synthesizer.name} takes territories {territories} and severities {low:g} to {high:g}"


def declared_axis_values(params: Mapping[str, Any], axes: ConditionAxes, condition: Condition) -> dict:
    """The values of the axes a model declares beyond level, pattern, side, territory and severity (checked against
    their declaration; those left empty and without a default are left out); InvalidRequestError naming what is
    allowed."""
    chosen: dict[str, Any] = {name: value for name, value in condition.to_dict().items() if name in CONDITION_AXES}
    values = {}
    for axis in axes.axes:
        if axis.name in CONDITION_AXES or axis.name in LESION_AXES:
            continue
        try:
            value = axis.check(params.get(axis.name), chosen)
        except ValueError as error:
            raise InvalidRequestError(str(error)) from None
        chosen[axis.name] = value
        if value is not None:
            values[axis.name] = value
    return values


def parse_generation_request(model: str, params: Mapping[str, Any], synthesizer: Synthesizer) -> GenerationRequest:
    """Validate an infer request's params against the model (``BASE_INFER_PARAMS``, its declared condition axes and
    its family's options; other keys are ignored: MONAI Label adds its own)."""
    if not isinstance(params, Mapping):
        raise MalformedRequestError(f"params must be a JSON object of named params, got {type(params).__name__}")
    base = _parse_choice(params.get("base"), "base", BASES, BASE_MODEL,
                         "model: a new brain made by the model; reference: the reference patient's own slice with the "
                         "condition's defect added, or with pattern normal the named defect removed")
    method = _parse_choice(params.get("method"), "method", METHODS, DEFAULT_METHOD,
                           "how a slice made from the reference is changed, with base reference: physics, the "
                           "simulation's territory model; learned, the model inverted on the patient's slice")
    removed: tuple[Lesion, ...] = ()
    if base == BASE_REFERENCE:
        condition, removed = parse_reference_condition(params, synthesizer, method)
    else:
        condition = parse_condition_params(params, synthesizer)
    seed = params.get("seed")
    seed = None if is_empty(seed) else parse_integer(seed, "seed", 0, MAX_SEED, " (or empty for a random seed)")
    options = {**{option.name: option.parse(params.get(option.name)) for option in synthesizer.options()},
               **declared_axis_values(params, synthesizer.condition_axes(), condition)}
    output_space = _parse_choice(params.get("output_space"), "output_space", OUTPUT_SPACES, OUTPUT_SPACES[0],
                                 "slice: the one-slice plane; reference: resampled onto the study's grid")
    return GenerationRequest(model, condition, seed, options, output_space, base, removed, method,
                             _parse_file_with(params.get("file_with"), base))


def _parse_choice(value, name: str, allowed: Sequence[str], default: str, meaning: str) -> str:
    """A param that takes one of ``allowed`` (empty: ``default``); InvalidRequestError naming them and ``meaning``."""
    if is_empty(value):
        return default
    if value not in allowed:
        raise InvalidRequestError(f"invalid {name} {value!r}; allowed: {', '.join(allowed)} ({meaning})")
    return value


def _parse_file_with(value, base: str) -> str:
    """``file_with`` (``FILE_WITH``; empty: synthetic); ``source`` only with base reference."""
    value = _parse_choice(value, "file_with", FILE_WITH, FILE_WITH_SYNTHETIC, FILE_WITH_HELP)
    if value == FILE_WITH_SOURCE and base != BASE_REFERENCE:
        raise InvalidRequestError("file_with source files a result with the reference's own study, so it needs base "
                                  "reference (a result made from the patient's own slice); a new brain made by the "
                                  "model is always filed under a synthetic patient: leave file_with empty or send "
                                  "synthetic")
    return value


FILE_WITH_HELP = ("synthetic: the DICOM export is filed under a synthetic patient and study; source: in the "
                  "reference's own DICOM study, under its patient, as a new series marked synthetic (base reference "
                  "with a DICOM reference only)")


def reference_axes(synthesizer: Synthesizer, method: str) -> tuple[DefectAxes, str]:
    """(the territories per level and severities ``method`` can add to or remove from the reference's slice, who
    makes it: ``physics method`` or ``learned method of <model>``). The learned method inverts the model: one without
    defect axes is an InvalidRequestError naming the method that works."""
    if method != LEARNED:
        return PHYSICS_AXES, f"{method} method"
    axes = synthesizer.defect_axes()
    if axes is None:
        raise InvalidRequestError(f"the {LEARNED} method needs a model with defect axes (territory, severity); "
                                  f"{synthesizer.name} has none: use method {DEFAULT_METHOD} or another model")
    return axes, f"{LEARNED} method of {synthesizer.name}"


def parse_reference_condition(params: Mapping[str, Any], synthesizer: Synthesizer, method: str = DEFAULT_METHOD
                              ) -> tuple[Condition, tuple[Lesion, ...]]:
    """``base=reference``: the condition to make from the patient's slice (a defect pattern: its side, territory
    and severity, all required) and, for pattern ``normal``, the lesions to remove (``side``: the defect's side, or
    empty for a defect on both sides; ``territory``, ``severity``: required), each within what ``method`` can add
    or remove (``reference_axes``). The level must be one of the model's (its grid makes the slice).
    InvalidRequestError naming what is allowed otherwise."""
    levels = synthesizer.levels
    axes, made_by = reference_axes(synthesizer, method)
    for name in ("level", "pattern"):
        if is_empty(params.get(name)):
            raise InvalidRequestError(f"{name} is required. Valid conditions for {synthesizer.name}: "
                                      f"{describe_allowed(levels)}")
    side = None if is_empty(params.get("side")) else params.get("side")
    territory, severity = params.get("territory"), params.get("severity")
    removing = str(params["pattern"]).strip().lower() == Pattern.NORMAL.value
    try:
        condition = parse_condition(params["level"], params["pattern"], None if removing else side, levels=levels)
        if not removing:
            condition = with_lesions(condition, territory, severity)
            check_reference_lesions(condition, axes, made_by)
            return condition, ()
        if is_empty(territory) or is_empty(severity):
            raise InvalidRequestError(
                "removing a defect from the reference (pattern normal with base reference) needs the defect the "
                f"study has: side (empty for both sides), territory and severity; {made_by}: {describe_axes(axes)}")
        side = None if side is None else parse_member(Side, side, "side")
        pattern = Pattern.UNILATERAL if side is not None else Pattern.BILATERAL
        lesions = parse_lesions(pattern, side, territory, severity)
        check_reference_lesions(Condition(condition.level, pattern, side, lesions), axes, made_by)
        return condition, lesions
    except ValueError as error:
        raise InvalidRequestError(f"{error} (base reference, {made_by}: {describe_axes(axes)}). Valid conditions for "
                                  f"{synthesizer.name}: {describe_allowed(levels)}") from None


# Keys that MONAI Label's own clients (its Python client, the Slicer and OHIF plugins) or its server add to an infer
# request's params: allowed, and ignored.
MONAI_LABEL_KEYS = frozenset({"client_id", "label_info", "result_extension", "result_dtype", "result_compress",
                              "restore_label_idx", "largest_cc", "device", "logging", "model", "image", "session",
                              "save_label", "description"})


def check_param_names(params: Mapping[str, Any], synthesizer: Synthesizer) -> None:
    """InvalidRequestError naming the allowed params when ``params`` has a key, with a value, that neither this model
    nor MONAI Label knows (a misspelt ``severty`` must not quietly give the default slice)."""
    allowed = list(infer_param_spec(synthesizer.condition_axes(), synthesizer.options()))
    known = {*allowed, *MONAI_LABEL_KEYS, *LESION_AXES}  # lesion axes: a model without them says so itself
    unknown = sorted(str(key) for key, value in params.items() if key not in known and not is_empty(value))
    if unknown:
        raise InvalidRequestError(f"unknown param(s) {', '.join(repr(key[:40]) for key in unknown[:5])} for "
                                  f"{synthesizer.name}; allowed: {', '.join(allowed)} (and MONAI Label's own: "
                                  f"{', '.join(sorted(MONAI_LABEL_KEYS))})")


def axis_param_spec(axis: ConditionAxis) -> dict:
    """A declared condition axis as ``/info/`` lists its param: the allowed values (all, and per the axis they depend
    on, e.g. ``per_level``) or the range, where it applies, whether it is always required, default and meaning."""
    if axis.kind is AxisKind.CONTINUOUS:
        spec = {"type": "number", "minimum": axis.minimum, "maximum": axis.maximum, "unit": axis.unit}
    else:
        spec = {"allowed": list(axis.allowed())}
        if axis.values_by:
            spec[f"per_{axis.values_by}"] = {key: list(values) for key, values in axis.values_per.items()}
    if axis.applies_when:
        spec["applies_when"] = {name: list(values) for name, values in axis.applies_when.items()}
    forms = f"; {PER_SIDE_FORMS}" if axis.per_side_when else ""
    return {**spec, "required": axis.required and not axis.applies_when, "default": axis.default,
            "description": axis.description + forms}


def infer_param_spec(axes: ConditionAxes, options: Sequence[Option]) -> dict:
    """What a client may send, per param: the model's declared condition axes (``axis_param_spec``), the seed, its
    family's options and the output space (for ``/info/``)."""
    return {
        **{axis.name: axis_param_spec(axis) for axis in axes.axes},
        "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED, "default": None,
                 "description": "random seed; empty for a random one (always echoed back)"},
        **{option.name: option.spec() for option in options},
        "output_space": {"allowed": list(OUTPUT_SPACES), "default": OUTPUT_SPACES[0],
                         "description": "slice: a one-slice (possibly oblique) volume on the level's plane; "
                                        "reference: resampled onto the reference study's grid"},
        "base": {"allowed": list(BASES), "default": BASE_MODEL,
                 "description": "model: a new brain made by the model; reference: the reference patient's own slice "
                                "with the requested defect added (side, territory, severity required), or with "
                                "pattern normal the named defect removed (see method)",
                 "removes": removal_spec()},
        "method": {"allowed": list(METHODS), "default": DEFAULT_METHOD,
                   "description": "base reference only: how the patient's slice is changed; physics: the "
                                  "simulation's territory model blurred with the system's resolution; learned: the "
                                  "model (one with defect axes covering the level and territory) inverted on the "
                                  "patient's slice, its ratio of the target to the source condition applied",
                   "applies_when": {"base": [BASE_REFERENCE]}},
        "file_with": {"allowed": list(FILE_WITH), "default": FILE_WITH_SYNTHETIC, "description": FILE_WITH_HELP,
                      "applies_when": {"base": [BASE_REFERENCE]}},
    }


def removal_spec() -> dict:
    """How a client asks for a defect to be removed (``parse_reference_condition``), for front ends to build their
    controls from: when it applies (base reference, pattern normal) and the params naming the defect the study has,
    sent under these names: ``side`` (empty: a defect on both sides), ``territory`` (per level) and ``severity``."""
    low, high = PHYSICS_AXES.severity_range
    return {"applies_when": {"base": [BASE_REFERENCE], "pattern": [Pattern.NORMAL.value]},
            "description": "the defect the study has, to remove: its side (empty: both sides), territory and "
                           "severity",
            "params": {"side": {"allowed": [side.value for side in Side], "required": False, "empty": "both sides"},
                       "territory": {"per_level": {level: list(names)
                                                   for level, names in PHYSICS_AXES.territories.items()},
                                     "required": True},
                       "severity": {"type": "number", "minimum": low, "maximum": high, "required": True,
                                    "unit": "fractional CBF reduction"}}}


def infer_client_config(spec: Mapping[str, dict]) -> dict:
    """Defaults in MONAI Label's config convention (a list offers choices, its first item is the default; an
    optional choice such as ``side`` starts with the empty one; an empty number means none)."""
    config = {}
    for name, entry in spec.items():
        if "allowed" in entry:
            config[name] = ([""] if not entry.get("required") and entry.get("default") is None else []) + \
                entry["allowed"]
        else:
            config[name] = "" if entry["default"] is None else entry["default"]
    return config


def parse_train_request(name: str, params: Mapping[str, Any], levels: Sequence[Level], default_iterations: int,
                        default_batch_size: int) -> TrainRequest:
    """Validate ``TRAIN_PARAMS`` for a model whose bundle covers ``levels``; InvalidRequestError names what is
    allowed."""
    if not isinstance(params, Mapping):
        raise MalformedRequestError(f"train params must be a JSON object, got {type(params).__name__}")
    iterations = params.get("iterations")
    iterations = default_iterations if is_empty(iterations) else parse_integer(
        iterations, "iterations", 1, MAX_TRAIN_ITERATIONS)
    batch = params.get("batch")
    batch = default_batch_size if is_empty(batch) else parse_integer(batch, "batch", 2, MAX_TRAIN_BATCH)
    return TrainRequest(iterations, batch, _train_levels(name, params.get("levels"), levels),
                        _train_cohort(params.get("cohort")), _train_init(params.get("init")),
                        _train_force(params.get("force")))


def _train_levels(name: str, wanted, levels: Sequence[Level]) -> tuple[Level, ...]:
    allowed = ", ".join(level.value for level in levels)
    if is_empty(wanted):
        return tuple(levels)
    try:
        parsed = parse_levels(wanted) if isinstance(wanted, (str, list, tuple)) else None
    except ValueError as error:
        raise InvalidRequestError(f"{error} (levels of {name}: {allowed})") from None
    if parsed is None or not set(parsed) <= set(levels):
        raise InvalidRequestError(f"levels for {name} must be among {allowed} (comma-separated), got {wanted!r}")
    return parsed


def _train_cohort(value) -> str | None:
    """A cohort id: a plain id (``check_id``; never a path) or None for the server's default cohort."""
    if is_empty(value):
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"cohort must be the id of a cohort of the server, got {value!r}")
    return check_id(value.strip(), "cohort")


def _train_init(value) -> str:
    if is_empty(value):
        return INIT_SERVED
    if value not in INITS:
        raise InvalidRequestError(f"init must be one of {', '.join(INITS)} (start from the served weights or from "
                                  f"fresh ones), got {value!r}")
    return value


def _train_force(value) -> bool:
    if is_empty(value) or value in (False, "false", "False", "0", 0):
        return False
    if value in (True, "true", "True", "1", 1):
        return True
    raise InvalidRequestError(f"force must be true or false (publish even if the quality gate fails), got {value!r}")
