import pytest

from spectgan.conditions import (PAPER_COUNTS, Condition, Level, Pattern, Side, parse_condition, parse_levels,
                                 valid_conditions)


def test_paper_counts_match_the_abstract():
    normal = sum(PAPER_COUNTS[(level, Pattern.NORMAL)] for level in Level)
    unilateral = sum(PAPER_COUNTS[(level, Pattern.UNILATERAL)] for level in Level)
    bilateral = sum(PAPER_COUNTS[(level, Pattern.BILATERAL)] for level in Level)
    assert (normal, unilateral, bilateral) == (551, 291, 96)


def test_valid_conditions_exclude_bilateral_cerebellum():
    conditions = valid_conditions()
    assert Condition(Level.CER, Pattern.BILATERAL) not in conditions
    assert len(conditions) == 3 * 3 - 1 + 3  # unilateral counts twice (left, right)
    assert valid_conditions([Level.COR]) == [Condition(Level.COR, Pattern.NORMAL),
                                             Condition(Level.COR, Pattern.UNILATERAL, Side.LEFT),
                                             Condition(Level.COR, Pattern.UNILATERAL, Side.RIGHT),
                                             Condition(Level.COR, Pattern.BILATERAL)]


@pytest.mark.parametrize("args, message", [
    (("CER", "bilateral"), "allowed patterns at CER: normal, unilateral"),
    (("BG", "unilateral"), "allowed: left, right"),
    (("BG", "normal", "left"), "only allowed with the unilateral"),
    (("XX", "normal"), "allowed: CER, BG, COR"),
    (("BG", "stroke"), "allowed: normal, unilateral, bilateral"),
    (("BG", "unilateral", "up"), "allowed: left, right"),
])
def test_invalid_conditions_name_what_is_allowed(args, message):
    with pytest.raises(ValueError, match=message):
        parse_condition(*args)


def test_model_levels_restrict_conditions():
    with pytest.raises(ValueError, match="allowed levels: COR"):
        parse_condition("BG", "normal", levels=[Level.COR])
    assert parse_condition("cor", "Unilateral", "LEFT", levels=[Level.COR]).label == "COR-unilateral-left"


def test_parse_levels():
    assert parse_levels("COR,CER") == (Level.CER, Level.COR)
    assert parse_levels("all") == tuple(Level)
    with pytest.raises(ValueError):
        parse_levels("CER,XYZ")
