"""Counterfactual slices: the reference patient's own slice at a level, changed to another condition.

Two methods (``METHODS``, the infer param ``method`` with ``base=reference``): ``physics`` adds a defect to the
patient's slice (or removes one the request names) with the simulation's own territory model; ``learned`` inverts a
model with defect axes on the slice and applies the model's change of condition to it. ``paired`` measures such
slices against the truth of simulated subjects acquired with and without their defect. The service
(``base=reference``) and ``scripts/evaluate_counterfactual.py`` use them; ``docs/counterfactual.md`` compares them.
"""
from __future__ import annotations

from spectgan.conditions import Condition
from spectgan.errors import InvalidRequestError
from spectgan.lesions import DefectAxes

PHYSICS, LEARNED = "physics", "learned"
METHODS = (PHYSICS, LEARNED)
DEFAULT_METHOD = PHYSICS  # the better on the paired evaluation (docs/counterfactual.md)


def describe_axes(axes: DefectAxes) -> str:
    """``territories CER: MCA, PICA; ...; severities 0.15 to 0.5``: what a method can add or remove."""
    territories = "; ".join(f"{level}: {', '.join(names)}" for level, names in axes.territories.items())
    low, high = axes.severity_range
    return f"territories {territories}; severities {low:g} to {high:g}"


def check_lesions(condition: Condition, axes: DefectAxes, made_by: str) -> None:
    """InvalidRequestError unless every lesion of the condition names a territory the ``axes`` have at its level
    and a severity in their range (what can be added or removed ``made_by``: ``physics method``, ``learned method of
    spect_fastgan_A``); the message names what is allowed."""
    allowed = ", ".join(axes.territories.get(condition.level.value, ())) or "none"
    low, high = axes.severity_range
    if not condition.lesions or any(lesion.territory is None or lesion.severity is None
                                    for lesion in condition.lesions):
        raise InvalidRequestError(f"a defect made from the reference ({made_by}) needs its territory and "
                                  f"severity: at {condition.level.value} a territory among {allowed}, a severity "
                                  f"from {low:g} to {high:g} (fractional CBF reduction)")
    try:
        axes.check(condition)
    except ValueError as error:
        raise InvalidRequestError(f"{error} ({made_by})") from None
