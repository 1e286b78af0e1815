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
from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Optional, Sequence


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


def parse_condition(level, pattern, side=None, levels: Sequence[Level] = ALL_LEVELS) -> Condition:
    """Validate a request; raises ValueError naming what is allowed.

    ``levels`` are the levels a model was trained on (model B: COR only).
    """
    level = parse_member(Level, level, "level")
    pattern = parse_member(Pattern, pattern, "pattern")
    if level not in levels:
        raise ValueError(f"level {level.value} is not available for this model; allowed levels: "
                         f"{', '.join(lv.value for lv in levels)}")
    if not is_trainable(level, pattern):
        allowed = [p.value for p in Pattern if is_trainable(level, p)]
        raise ValueError(f"pattern {pattern.value} does not exist at level {level.value} (no training cases); "
                         f"allowed patterns at {level.value}: {', '.join(allowed)}")
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
    """Human-readable list of the valid conditions, for error messages."""
    return "; ".join(condition.label for condition in valid_conditions(levels))
