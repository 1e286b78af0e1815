"""Territory and severity: the defect axes a model may declare beside level, pattern and side.

A request may name, per affected hemisphere, the vascular territory and the severity (fractional CBF reduction) of
its defect; whatever it leaves out is drawn from the training cohort's joint distribution for that level, pattern
and side (``LesionDistribution``), so that an unqualified request gives a slice like the cohort's.

How a request writes them (server params, CLI flags and manifest columns alike):

- unilateral: ``territory="MCA"``, ``severity=0.3`` (the defect's own side);
- bilateral: one value for both sides (``"MCA"``, ``0.3``), or one per side: a mapping ``{"left": "MCA",
  "right": "ACA"}`` or the text ``left=MCA;right=ACA`` (``,`` also separates); a side left out is drawn.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from spectgan.conditions import (AxisKind, Condition, ConditionAxis, Level, Lesion, Pattern, Side, is_empty,
                                 parse_condition, parse_member, parse_number, takes_side)

UNKNOWN = "unknown"  # a territory or severity a cohort does not record
LESION_AXES = ("territory", "severity")  # a lesion's axes: request params, CLI flags, manifest columns
DRAWN = "empty: drawn from the training cohort (with what else the request gives)"
TERRITORY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,15}$")
SEVERITY_DECIMALS = 4


def _per_side(value, axis: str) -> dict[Side, Any]:
    """A bilateral value -> {side: value}: one value for both sides, a mapping or ``left=X;right=Y`` per side."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, str) and "=" in value:
        items = []
        for part in re.split(r"[;,]", value):
            if part.strip():
                name, separator, text = part.partition("=")
                if not separator:
                    raise ValueError(f"{axis} {value!r}: write one value, or left=VALUE;right=VALUE")
                items.append((name, text))
    else:
        return {side: value for side in Side}
    per_side = {}
    for name, text in items:
        side = parse_member(Side, name, f"side in {axis}")
        if side in per_side:
            raise ValueError(f"{axis} names the {side.value} side twice")
        per_side[side] = text
    return per_side


def parse_territory(value, axis: str = "territory") -> str | None:
    """A territory name (letters, digits, ``_``; ``unknown`` or empty: None)."""
    if is_empty(value) or (isinstance(value, str) and value.strip().lower() == UNKNOWN):
        return None
    if not isinstance(value, str) or not TERRITORY_NAME.match(value.strip()):
        raise ValueError(f"{axis} must be a territory name such as MCA, got {value!r}")
    return value.strip().upper()


def parse_severity(value, axis: str = "severity") -> float | None:
    """A severity: a fraction in [0, 1) (a number or its text; ``unknown`` or empty: None)."""
    if is_empty(value) or (isinstance(value, str) and value.strip().lower() == UNKNOWN):
        return None
    parsed = parse_number(value)
    if parsed is None or not 0 <= parsed < 1:
        raise ValueError(f"{axis} must be a fraction of CBF in [0, 1) such as 0.3 (30 % reduction), got {value!r}")
    return round(parsed, SEVERITY_DECIMALS)


def parse_lesions(pattern: Pattern, side: Side | None, territory=None, severity=None) -> tuple[Lesion, ...]:
    """The lesions a request or manifest row gives for a pattern (see the module's docstring); ValueError naming the
    allowed forms otherwise. A normal pattern takes neither axis."""
    if pattern is Pattern.NORMAL:
        if not (is_empty(territory) and is_empty(severity)):
            raise ValueError("territory and severity describe a defect; a normal pattern takes neither (leave them "
                             "empty)")
        return ()
    if takes_side(pattern):
        for axis, value in (("territory", territory), ("severity", severity)):
            if isinstance(value, Mapping) or (isinstance(value, str) and "=" in value):
                raise ValueError(f"a {pattern.value} defect has one {axis} (its own side's); give one value")
        return (Lesion(side, parse_territory(territory), parse_severity(severity)),)
    territories, severities = _per_side(territory, "territory"), _per_side(severity, "severity")
    return tuple(Lesion(s, parse_territory(territories.get(s), f"territory ({s.value})"),
                        parse_severity(severities.get(s), f"severity ({s.value})")) for s in Side)


def lesion_text(condition: Condition, axis: str) -> str:
    """A condition's territory or severity as one manifest cell: the value, ``left=X;right=Y`` for a bilateral
    defect whose sides differ, empty where unknown."""
    def cell(value) -> str:
        if value is None:
            return ""
        return f"{value:.{SEVERITY_DECIMALS}f}" if isinstance(value, float) else str(value)

    values = [getattr(lesion, axis) for lesion in condition.lesions]
    if not values or all(value is None for value in values):
        return ""
    if len(set(values)) == 1:
        return cell(values[0])
    return ";".join(f"{lesion.side.value}={cell(getattr(lesion, axis))}" for lesion in condition.lesions)


@dataclass(frozen=True)
class DefectAxes:
    """The territory and severity axes a model declares: the territories it knows at each level and the severity
    range it was trained on."""

    territories: Mapping[str, tuple[str, ...]]  # level -> territories a defect there may take
    severity_range: tuple[float, float]

    def to_dict(self) -> dict:
        return {"territory": {"kind": "categorical", "per_level": {level: list(names) for level, names
                                                                   in self.territories.items()},
                              "per_side": "bilateral"},
                "severity": {"kind": "continuous", "minimum": self.severity_range[0],
                             "maximum": self.severity_range[1], "unit": "fractional CBF reduction",
                             "per_side": "bilateral"}}

    def condition_axes(self) -> tuple[ConditionAxis, ConditionAxis]:
        """Territory and severity as declared condition axes: offered for the defect patterns, per hemisphere for
        the bilateral one (one value stands for both sides), optional (empty: drawn)."""
        defects = {"pattern": tuple(p.value for p in Pattern if p is not Pattern.NORMAL)}
        per_side = {"pattern": tuple(p.value for p in Pattern if p is not Pattern.NORMAL and not takes_side(p))}
        return (ConditionAxis("territory", AxisKind.CATEGORICAL, values_by="level",
                              values_per={level: tuple(names) for level, names in self.territories.items()},
                              applies_when=defects, per_side_when=per_side, required=False,
                              description=f"vascular territory of the defect (allowed per level); {DRAWN}"),
                ConditionAxis("severity", AxisKind.CONTINUOUS, minimum=self.severity_range[0],
                              maximum=self.severity_range[1], unit="fractional CBF reduction",
                              applies_when=defects, per_side_when=per_side, required=False,
                              description=f"fractional CBF reduction of the defect (0.3: 30 % less); {DRAWN}"))

    @classmethod
    def from_dict(cls, values: Mapping) -> "DefectAxes":
        severity = values["severity"]
        return cls({level: tuple(names) for level, names in values["territory"]["per_level"].items()},
                   (float(severity["minimum"]), float(severity["maximum"])))

    def check(self, condition: Condition) -> None:
        """ValueError unless each given territory exists at the condition's level and each severity lies in the
        trained range; the message names what is allowed."""
        allowed = self.territories.get(condition.level.value, ())
        low, high = self.severity_range
        for lesion in condition.lesions:
            if lesion.territory is not None and lesion.territory not in allowed:
                raise ValueError(f"territory {lesion.territory} is not available at {condition.level.value}; "
                                 f"allowed: {', '.join(allowed) or 'none'}")
            if lesion.severity is not None and not low <= lesion.severity <= high:
                raise ValueError(f"severity {lesion.severity:g} is outside the trained range; allowed: "
                                 f"{low:g} to {high:g} (fractional CBF reduction)")


@dataclass(frozen=True)
class LesionDistribution:
    """The training cohort's lesions per condition (label -> one list of lesions per train slice): what a request
    that leaves territory or severity out is drawn from."""

    rows: Mapping[str, tuple[tuple[Lesion, ...], ...]] = field(default_factory=dict)

    @classmethod
    def from_conditions(cls, conditions: Sequence[Condition]) -> "LesionDistribution":
        rows: dict[str, list] = {}
        for condition in conditions:
            if condition.pattern is not Pattern.NORMAL:
                rows.setdefault(condition.label, []).append(condition.lesions)
        return cls({label: tuple(items) for label, items in sorted(rows.items())})

    def axes(self) -> DefectAxes:
        """The axes this distribution spans: the territories seen at each level, the severities' range (rounded
        outward to 0.01)."""
        territories: dict[str, set] = {}
        severities = []
        for label, items in self.rows.items():
            names = territories.setdefault(label.split("-")[0], set())
            for lesions in items:
                names.update(lesion.territory for lesion in lesions if lesion.territory is not None)
                severities += [lesion.severity for lesion in lesions if lesion.severity is not None]
        low, high = (math.floor(min(severities) * 100) / 100, math.ceil(max(severities) * 100) / 100) \
            if severities else (0.0, 0.0)
        return DefectAxes({level.value: tuple(sorted(territories[level.value])) for level in Level
                           if level.value in territories}, (low, high))

    def to_dict(self) -> dict:
        return {label: [[[lesion.side.value, lesion.territory, lesion.severity] for lesion in lesions]
                        for lesions in items] for label, items in self.rows.items()}

    @classmethod
    def from_dict(cls, values: Mapping) -> "LesionDistribution":
        return cls({label: tuple(tuple(Lesion(Side(side), territory, severity) for side, territory, severity in row)
                                 for row in items) for label, items in values.items()})

    def resolve(self, condition: Condition, rng: np.random.Generator) -> Condition:
        """The condition with every lesion complete: what the request gave, the rest from one train slice of its
        label that matches what was given (territory first), drawn with ``rng``. A condition whose label has no
        rows (or a normal one) is returned with the lesions it has."""
        if condition.pattern is Pattern.NORMAL:
            return condition
        sides = condition.affected_sides
        given = {side: condition.lesion(side) or Lesion(side) for side in sides}
        if all(lesion.territory is not None and lesion.severity is not None for lesion in given.values()):
            return Condition(condition.level, condition.pattern, condition.side, tuple(given.values()))
        rows = self.rows.get(condition.label, ())
        matching = [row for row in rows if all(
            given[lesion.side].territory in (None, lesion.territory) for lesion in row if lesion.side in given)]
        pool = matching or rows
        if not pool:
            return Condition(condition.level, condition.pattern, condition.side, tuple(given.values()))
        drawn = {lesion.side: lesion for lesion in pool[int(rng.integers(len(pool)))]}
        lesions = tuple(Lesion(side, given[side].territory if given[side].territory is not None
                               else drawn.get(side, Lesion(side)).territory,
                               given[side].severity if given[side].severity is not None
                               else drawn.get(side, Lesion(side)).severity) for side in sides)
        return Condition(condition.level, condition.pattern, condition.side, lesions)


def resolve_conditions(conditions: Sequence[Condition], distribution: LesionDistribution, seed: int
                       ) -> list[Condition]:
    """Every condition with complete lesions (``LesionDistribution.resolve``); condition i draws from its own
    stream of ``seed`` and i, so the same request always gets the same lesions."""
    return [distribution.resolve(condition, np.random.default_rng([seed, index, 0x1E5]))
            for index, condition in enumerate(conditions)]


def with_lesions(condition: Condition, territory=None, severity=None) -> Condition:
    """The condition (level, pattern, side) with the lesions that ``territory`` and ``severity`` give in any request
    form (``parse_lesions``; ValueError naming the allowed forms); when they name nothing, the condition without
    lesions (``Condition.base``: a request or result of a model without defect axes)."""
    lesions = parse_lesions(condition.pattern, condition.side, territory, severity)
    if all(lesion.territory is None and lesion.severity is None for lesion in lesions):
        return condition.base
    return Condition(condition.level, condition.pattern, condition.side, lesions)


def apply_lesions(conditions: Sequence[Condition], territory=None, severity=None) -> list[Condition]:
    """The defect conditions with the lesions ``territory`` and ``severity`` give (``with_lesions``), normal ones as
    they are: how one territory / severity applies to a batch of conditions. ValueError when either is given and no
    condition has a defect."""
    if is_empty(territory) and is_empty(severity):
        return list(conditions)
    if all(condition.pattern is Pattern.NORMAL for condition in conditions):
        raise ValueError("territory and severity describe a defect; ask for a unilateral or bilateral pattern")
    return [condition if condition.pattern is Pattern.NORMAL else with_lesions(condition, territory, severity)
            for condition in conditions]


def condition_from_dict(values: Mapping) -> Condition:
    """A condition from ``Condition.to_dict``'s form (level, pattern, side and, for a defect, territory and
    severity); ValueError naming what is allowed."""
    condition = parse_condition(values["level"], values["pattern"], values.get("side"))
    return with_lesions(condition, values.get("territory"), values.get("severity"))
