"""Levels, defect patterns, sides and lesions: the one place where conditions, their template planes and the paper's
case counts are defined.

A condition names a level, a pattern and (unilateral only) a side; a model with defect axes also takes its lesions:
per affected hemisphere a vascular territory and a severity (fractional CBF reduction), either of which may be left
out for the model to draw from its training cohort (``spectgan.lesions``).

Levels are axial planes of the MNI152 template. Template coordinates here are LPS millimetres (ITK/DICOM):
+x is the patient's left, +y posterior, +z superior; MNI (RAS) z equals LPS z.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Mapping, Optional, Sequence


class Level(str, Enum):
    """Anatomical level of an axial slice."""

    CER = "CER"  # cerebellar hemispheres
    BG = "BG"  # basal ganglia: striatum and thalamus
    COR = "COR"  # high-convexity cortex


class Pattern(str, Enum):
    """Perfusion defect pattern."""

    NORMAL = "normal"
    UNILATERAL = "unilateral"
    BILATERAL = "bilateral"


class Side(str, Enum):
    """Hemisphere of a unilateral defect (the patient's side)."""

    LEFT = "left"
    RIGHT = "right"


# Template z-plane of each level in mm (MNI152 2009c; LPS z = MNI z). Chosen from the atlas: at z = -30 the
# cerebellar hemispheres are at their widest, z = +4 cuts the putamen, caudate head and thalamus, z = +52 is
# high-convexity cortex above the lateral ventricles.
LEVEL_Z_MM: dict[Level, float] = {Level.CER: -30.0, Level.BG: 4.0, Level.COR: 52.0}

# Slices per level x pattern in the paper (Werner et al. 2022): the training cohort has exactly these, the
# held-out test cohort the same again from other seeds.
PAPER_COUNTS: dict[tuple[Level, Pattern], int] = {
    (Level.CER, Pattern.NORMAL): 248,
    (Level.BG, Pattern.NORMAL): 174,
    (Level.COR, Pattern.NORMAL): 129,
    (Level.CER, Pattern.UNILATERAL): 66,
    (Level.BG, Pattern.UNILATERAL): 116,
    (Level.COR, Pattern.UNILATERAL): 109,
    (Level.CER, Pattern.BILATERAL): 0,
    (Level.BG, Pattern.BILATERAL): 44,
    (Level.COR, Pattern.BILATERAL): 52,
}

ALL_LEVELS: tuple[Level, ...] = tuple(Level)

# Patterns whose defect lies in one hemisphere, so that a condition names its side (the only place this rule lives).
SIDED_PATTERNS: frozenset[Pattern] = frozenset({Pattern.UNILATERAL})


@dataclass(frozen=True)
class Lesion:
    """The defect in one hemisphere: its vascular territory (e.g. ``MCA``) and its severity, the fractional CBF
    reduction in that territory (0.3 = 30 % less). None where not given: a model draws it from its training cohort,
    and a cohort without labels records it so."""

    side: Side
    territory: Optional[str] = None
    severity: Optional[float] = None


@dataclass(frozen=True)
class Condition:
    """One generation request: level, pattern and, for unilateral defects only, the side; ``lesions`` (one per
    affected hemisphere, left before right) when the request or the cohort says more of the defect."""

    level: Level
    pattern: Pattern
    side: Optional[Side] = None
    lesions: tuple[Lesion, ...] = ()

    @property
    def label(self) -> str:
        """Short name such as ``BG-unilateral-left`` (lesions are not part of it)."""
        parts = [self.level.value, self.pattern.value] + ([self.side.value] if self.side else [])
        return "-".join(parts)

    @property
    def base(self) -> "Condition":
        """The condition without its lesions (level, pattern, side)."""
        return Condition(self.level, self.pattern, self.side)

    @property
    def affected_sides(self) -> tuple[Side, ...]:
        """The hemispheres a defect of this condition lies in: none (normal), its side (unilateral) or both."""
        if self.pattern is Pattern.NORMAL:
            return ()
        return (self.side,) if takes_side(self.pattern) else tuple(Side)

    def lesion(self, side: Side) -> Optional[Lesion]:
        """The lesion of one hemisphere, if the condition names it."""
        return next((lesion for lesion in self.lesions if lesion.side is side), None)

    def to_dict(self) -> dict:
        """Level, pattern, side and, for a defect, ``territory`` and ``severity``: one value for a unilateral
        defect, ``{"left": .., "right": ..}`` for a bilateral one (None where unknown)."""
        values = {"level": self.level.value, "pattern": self.pattern.value,
                  "side": self.side.value if self.side else None}
        if self.pattern is Pattern.NORMAL:
            return values
        for axis in ("territory", "severity"):
            per_side = {lesion.side.value: getattr(lesion, axis) for lesion in self.lesions}
            values[axis] = (per_side.get(self.side.value) if takes_side(self.pattern)
                            else {side.value: per_side.get(side.value) for side in Side})
        return values


def parse_member(enum_type, value, what: str):
    """``value`` (any case) as a member of ``enum_type``; ValueError naming the allowed values otherwise."""
    if isinstance(value, enum_type):
        return value
    allowed = [member.value for member in enum_type]
    for member in enum_type:
        if isinstance(value, str) and value.strip().lower() == member.value.lower():
            return member
    raise ValueError(f"invalid {what} {value!r}; allowed: {', '.join(allowed)}")


NUMBER_TEXT_LIMIT = 40  # characters of a number sent as text


def is_empty(value) -> bool:
    """A request value that says nothing: None or blank text."""
    return value is None or (isinstance(value, str) and not value.strip())


def parse_number(value) -> float | None:
    """A finite number from a JSON number or its text (at most ``NUMBER_TEXT_LIMIT`` characters); None when
    ``value`` is neither (callers name what they allow)."""
    parsed = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        parsed = float(value)
    elif isinstance(value, str) and len(value) <= NUMBER_TEXT_LIMIT:
        try:
            parsed = float(value)
        except ValueError:
            pass
    return parsed if parsed is not None and math.isfinite(parsed) else None


def parse_levels(levels: str | Iterable[str | Level] | None) -> tuple[Level, ...]:
    """``"CER,BG"`` or a list -> a tuple of levels in canonical order; None or ``"all"`` -> every level."""
    if levels is None or (isinstance(levels, str) and levels.strip().lower() == "all"):
        return ALL_LEVELS
    items = levels.split(",") if isinstance(levels, str) else list(levels)
    parsed = {parse_member(Level, item, "level") for item in items if str(item).strip()}
    if not parsed:
        raise ValueError(f"no level given; allowed: {', '.join(level.value for level in Level)}")
    return tuple(level for level in Level if level in parsed)


def is_trainable(level: Level, pattern: Pattern) -> bool:
    """A level x pattern cell exists when the paper has cases for it (bilateral at CER has none)."""
    return PAPER_COUNTS[(level, pattern)] > 0


def valid_conditions(levels: Sequence[Level] = ALL_LEVELS) -> list[Condition]:
    """Every valid condition at the given levels, unilateral expanded to left and right."""
    conditions = []
    for level in levels:
        for pattern in Pattern:
            if not is_trainable(level, pattern):
                continue
            sides = list(Side) if takes_side(pattern) else [None]
            conditions.extend(Condition(level, pattern, side) for side in sides)
    return conditions


def parse_condition(level, pattern, side=None, levels: Sequence[Level] = ALL_LEVELS,
                    valid: Sequence[Condition] | None = None) -> Condition:
    """Validate a request; raises ValueError naming what is allowed.

    ``levels`` are the levels a model was trained on (model B: COR only); ``valid``: the model's valid conditions
    (its bundle's), by default ``valid_conditions(levels)``.
    """
    level = parse_member(Level, level, "level")
    pattern = parse_member(Pattern, pattern, "pattern")
    if level not in levels:
        raise ValueError(f"level {level.value} is not available for this model; allowed levels: "
                         f"{', '.join(lv.value for lv in levels)}")
    at_level = list(dict.fromkeys(c.pattern for c in (valid_conditions(levels) if valid is None else valid)
                                  if c.level is level))
    if pattern not in at_level:
        raise ValueError(f"pattern {pattern.value} does not exist at level {level.value} (no training cases); "
                         f"allowed patterns at {level.value}: {', '.join(p.value for p in at_level)}")
    if side in ("", None):
        side = None
    sided = ", ".join(p.value for p in Pattern if takes_side(p))
    if takes_side(pattern):
        if side is None:
            raise ValueError(f"a {pattern.value} pattern needs side; allowed: {', '.join(s.value for s in Side)}")
        side = parse_member(Side, side, "side")
    elif side is not None:
        raise ValueError(f"side is only allowed with the {sided} pattern, not with {pattern.value}; "
                         "leave side empty")
    return Condition(level, pattern, side)


def takes_side(pattern: Pattern) -> bool:
    """True when a condition of this pattern names a side (``SIDED_PATTERNS``)."""
    return pattern in SIDED_PATTERNS


def vocabulary() -> dict[str, list[str]]:
    """The condition vocabulary a model is trained with, in index order: levels, patterns, sides and the patterns
    that take a side. Bundles record it; loading one compares it with ``check_vocabulary``."""
    return {"levels": [level.value for level in Level], "patterns": [pattern.value for pattern in Pattern],
            "sides": [side.value for side in Side],
            "sided_patterns": [pattern.value for pattern in Pattern if takes_side(pattern)]}


def check_vocabulary(recorded: dict | None, what: str) -> None:
    """ValueError unless ``recorded`` (a bundle's ``vocabulary()`` at training time) is this version's vocabulary; the
    message names both. None (a bundle made before bundles recorded it) counts as this version's vocabulary."""
    current = vocabulary()
    if recorded is None or recorded == current:
        return
    differences = "; ".join(f"{key}: trained with {', '.join(recorded.get(key) or ['none'])}, this spectgan has "
                            f"{', '.join(values) or 'none'}" for key, values in current.items()
                            if recorded.get(key) != values)
    raise ValueError(f"{what} was trained with another condition vocabulary than spectgan.conditions defines "
                     f"({differences}); its condition embeddings cannot be used with it: retrain the model or use "
                     "the spectgan version it was made with")


def describe_allowed(levels: Sequence[Level] = ALL_LEVELS) -> str:
    """Human-readable list of the valid conditions at ``levels``, for error messages."""
    return describe_conditions(valid_conditions(levels))


def describe_conditions(conditions: Sequence[Condition]) -> str:
    """Human-readable list of conditions (a model's valid ones), for error messages."""
    return "; ".join(condition.label for condition in conditions)


# ------------------------------------------------------------------------------------------- declared axes

class AxisKind(str, Enum):
    """How a condition axis takes its value: one of named values, or a number in a range."""

    CATEGORICAL = "categorical"
    CONTINUOUS = "continuous"


# The axes every model has, in this order: the ones a batch may expand over ("all") and that name a condition.
CONDITION_AXES = ("level", "pattern", "side")


@dataclass(frozen=True)
class ConditionAxis:
    """One axis of a model's conditions, as its bundle declares it and ``/info/`` lists it (``to_dict``): every front
    end builds one control per axis from this, and the server checks a value against it (``check``).

    - ``values``: the allowed values of a categorical axis; or, with ``values_by``, ``values_per``: the allowed values
      for each value of an earlier axis (a territory per level, a pattern per level).
    - ``minimum``, ``maximum`` (and ``unit``): the range of a continuous axis.
    - ``applies_when``: {earlier axis: values}: the axis is offered only when each of them has one of those values
      (a side for the sided patterns, a territory for the defect patterns); always when empty.
    - ``per_side_when``: {earlier axis: values}: where the value may be given per hemisphere (a bilateral defect);
      one value then stands for both sides.
    - ``required``: a request must give it where it applies, unless there is a ``default``; an optional axis left
      empty takes its ``default`` (None: the model draws it, e.g. from its training cohort).
    """

    name: str
    kind: AxisKind
    values: tuple[str, ...] = ()
    values_by: Optional[str] = None
    values_per: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    unit: str = ""
    applies_when: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    per_side_when: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    required: bool = True
    default: Any = None
    description: str = ""

    def applies(self, chosen: Mapping[str, Any]) -> bool:
        """Whether the axis is offered, given the values ``chosen`` for the earlier axes (by name)."""
        return all(chosen.get(axis) in values for axis, values in self.applies_when.items())

    def allowed(self, chosen: Mapping[str, Any] | None = None) -> tuple[str, ...]:
        """A categorical axis's values given the earlier axes' (all of them when the deciding one is not chosen)."""
        if self.values_by is None:
            return self.values
        per = self.values_per.get((chosen or {}).get(self.values_by))
        return tuple(per) if per is not None else tuple(dict.fromkeys(v for vs in self.values_per.values() for v in vs))

    def check(self, value, chosen: Mapping[str, Any]):
        """``value`` for this axis given the earlier ``chosen`` values: the value (a number for a continuous axis) or
        None where it is left empty or does not apply; ValueError naming what is allowed otherwise."""
        if not self.applies(chosen):
            if not is_empty(value):
                raise ValueError(f"{self.name} does not apply here ({self.describe_applies()}); leave it empty")
            return None
        if is_empty(value):
            if self.required and self.default is None:
                raise ValueError(f"{self.name} is required; allowed: {self.describe_allowed(chosen)}")
            return self.default
        if self.kind is AxisKind.CONTINUOUS:
            number = parse_number(value)
            if number is None or not self.minimum <= number <= self.maximum:
                raise ValueError(f"{self.name} must be a number in [{self.minimum:g}, {self.maximum:g}]"
                                 f"{f' ({self.unit})' if self.unit else ''}, got {value!r}")
            return number
        allowed = self.allowed(chosen)
        if str(value) not in allowed:
            raise ValueError(f"invalid {self.name} {value!r}; allowed: {self.describe_allowed(chosen)}")
        return str(value)

    def describe_allowed(self, chosen: Mapping[str, Any]) -> str:
        if self.kind is AxisKind.CONTINUOUS:
            return f"{self.minimum:g} to {self.maximum:g}"
        return ", ".join(self.allowed(chosen))

    def describe_applies(self) -> str:
        return "; ".join(f"only with {axis} {', '.join(values)}" for axis, values in self.applies_when.items())

    def to_dict(self) -> dict:
        """The declaration as ``/info/`` lists it (JSON): only the keys that say something."""
        values = {"name": self.name, "kind": self.kind.value, "required": self.required, "default": self.default,
                  "description": self.description}
        if self.kind is AxisKind.CONTINUOUS:
            values.update(minimum=self.minimum, maximum=self.maximum, unit=self.unit)
        elif self.values_by is not None:
            values.update(values_by=self.values_by, values_per={key: list(v) for key, v in self.values_per.items()})
        else:
            values["values"] = list(self.values)
        for key in ("applies_when", "per_side_when"):
            if getattr(self, key):
                values[key] = {axis: list(v) for axis, v in getattr(self, key).items()}
        return values

    @classmethod
    def from_dict(cls, values: Mapping) -> "ConditionAxis":
        """A declaration from ``to_dict``'s form (a bundle's metadata, an ``/info/`` answer)."""
        tuples = lambda mapping: {key: tuple(v) for key, v in (mapping or {}).items()}  # noqa: E731
        return cls(values["name"], AxisKind(values["kind"]), tuple(values.get("values", ())), values.get("values_by"),
                   tuples(values.get("values_per")), values.get("minimum"), values.get("maximum"),
                   values.get("unit", ""), tuples(values.get("applies_when")), tuples(values.get("per_side_when")),
                   bool(values.get("required", True)), values.get("default"), values.get("description", ""))


@dataclass(frozen=True)
class ConditionAxes:
    """A model's condition axes, in the order a front end offers them (each may depend on the ones before)."""

    axes: tuple[ConditionAxis, ...]

    @classmethod
    def declare(cls, conditions: Sequence[Condition], more: Sequence[ConditionAxis] = ()) -> "ConditionAxes":
        """The axes of a model whose valid conditions (from its bundle) are ``conditions``: level, the patterns at
        each level, the side for the sided patterns; then ``more`` (a model's defect axes, any axis its family
        declares)."""
        levels = tuple(dict.fromkeys(c.level.value for c in conditions))
        sided = tuple(dict.fromkeys(c.pattern.value for c in conditions if c.side is not None))
        patterns = {level: tuple(dict.fromkeys(c.pattern.value for c in conditions if c.level.value == level))
                    for level in levels}
        sides = tuple(dict.fromkeys(c.side.value for c in conditions if c.side is not None))
        return cls((
            ConditionAxis("level", AxisKind.CATEGORICAL, levels,
                          description="anatomical level: an axial plane of the template"),
            ConditionAxis("pattern", AxisKind.CATEGORICAL, values_by="level", values_per=patterns,
                          description="perfusion defect pattern"),
            ConditionAxis("side", AxisKind.CATEGORICAL, sides, applies_when={"pattern": sided},
                          description="hemisphere of a one-sided defect (the patient's side)"),
            *more))

    def __getitem__(self, name: str) -> ConditionAxis:
        for axis in self.axes:
            if axis.name == name:
                return axis
        raise KeyError(name)

    def names(self) -> tuple[str, ...]:
        return tuple(axis.name for axis in self.axes)

    def conditions(self) -> list[Condition]:
        """Every valid (level, pattern, side) the axes allow, in their order."""
        level_axis, pattern_axis, side_axis = (self[name] for name in CONDITION_AXES)
        found = []
        for level in level_axis.allowed():
            for pattern in pattern_axis.allowed({"level": level}):
                chosen = {"level": level, "pattern": pattern}
                sides = side_axis.allowed(chosen) if side_axis.applies(chosen) else (None,)
                found += [Condition(Level(level), Pattern(pattern), Side(side) if side else None) for side in sides]
        return found

    def to_list(self) -> list[dict]:
        return [axis.to_dict() for axis in self.axes]

    @classmethod
    def from_list(cls, values: Sequence[Mapping]) -> "ConditionAxes":
        return cls(tuple(ConditionAxis.from_dict(item) for item in values))
