"""Declarative hyperparameters: constraints, type coercion, command-line parsing and error messages."""
from __future__ import annotations

import math

import pytest

from muaudit.errors import MuauditError, ParameterError
from muaudit.params import Choice, Interval, Param, ParamSet, parse_param_strings, validate_params

OWNER = "method 'demo'"
DECLARED = (
    Param("lr", float, 0.01, "learning rate", Interval(0, None, closed="neither")),
    Param("epochs", int, 5, "epochs", Interval(1, 100)),
    Param("mode", str, "fast", "mode", Choice(("fast", "slow"))),
    Param("verbose", bool, False, "chatty"),
    Param("gamma", float, None, "optional gamma", Interval(0, 1), nullable=True),
    Param("tag", str, "", "free text"),
)


# -------------------------------------------------------------------------------------------- Interval
@pytest.mark.parametrize(
    "closed, low_in, high_in",
    [("both", True, True), ("left", True, False), ("right", False, True), ("neither", False, False)],
)
def test_interval_bounds(closed, low_in, high_in):
    interval = Interval(0, 1, closed=closed)
    assert interval.contains(0) is low_in and interval.contains(0.0) is low_in
    assert interval.contains(1) is high_in
    assert interval.contains(0.5) and not interval.contains(-1e-12) and not interval.contains(1 + 1e-12)


def test_open_ended_intervals():
    assert Interval(0, None).contains(1e300) and not Interval(0, None).contains(math.inf)  # unbounded: finite
    assert Interval(0, math.inf).contains(math.inf)  # an explicit infinite bound admits infinity
    assert not Interval(0, None).contains(-1)
    assert not Interval(None, 0).contains(-math.inf) and Interval(-math.inf, 0).contains(-math.inf)
    assert not Interval(None, 0).contains(0.1)
    assert Interval().contains(123) and Interval().contains(-5)
    for interval in (Interval(), Interval(0, 1), Interval(None, 0)):
        assert not interval.contains(math.nan)


@pytest.mark.parametrize(
    "interval, text",
    [
        (Interval(0, 1), "in the range [0, 1]"),
        (Interval(0, 1, closed="left"), "in the range [0, 1)"),
        (Interval(0, 1, closed="right"), "in the range (0, 1]"),
        (Interval(0, None, closed="neither"), "in the range (0, inf)"),
        (Interval(0, None), "in the range [0, inf)"),
        (Interval(None, 2.5), "in the range (-inf, 2.5]"),
        (Interval(1e-4, 1e4), "in the range [0.0001, 10000]"),
    ],
)
def test_interval_text(interval, text):
    assert str(interval) == text


@pytest.mark.parametrize("kwargs", [{"closed": "open"}, {"closed": "both "}, {"low": 2, "high": 1},
                                    {"low": math.nan}, {"low": 0, "high": 0, "closed": "neither"}])
def test_invalid_intervals_are_refused_at_declaration(kwargs):
    with pytest.raises(ParameterError):
        Interval(**kwargs)


def test_degenerate_closed_interval_is_allowed():
    assert Interval(1, 1).contains(1) and not Interval(1, 1).contains(1.5)


# ---------------------------------------------------------------------------------------------- Choice
def test_choice():
    choice = Choice(("a", "b"))
    assert choice.contains("a") and not choice.contains("c") and not choice.contains("A")
    assert str(choice) == "one of 'a', 'b'"
    assert str(Choice((1, 2))) == "one of 1, 2"


# ------------------------------------------------------------------------------------------ Param.check
def test_check_accepts_and_coerces():
    lr = DECLARED[0]
    assert lr.check(OWNER, 0.5) == 0.5
    value = lr.check(OWNER, 2)  # an int where a float is declared is widened
    assert value == 2.0 and isinstance(value, float)
    assert DECLARED[1].check(OWNER, 100) == 100
    assert DECLARED[2].check(OWNER, "slow") == "slow"
    assert DECLARED[3].check(OWNER, True) is True
    assert DECLARED[4].check(OWNER, None) is None


@pytest.mark.parametrize(
    "index, value, message",
    [
        (0, 0.0, "The 'lr' parameter of method 'demo' must be a float in the range (0, inf). Got 0.0 instead."),
        (0, -1, "The 'lr' parameter of method 'demo' must be a float in the range (0, inf). Got -1.0 instead."),
        (0, "0.1", "The 'lr' parameter of method 'demo' must be a float. Got '0.1' instead."),
        (0, None, "The 'lr' parameter of method 'demo' must be a float. Got None instead."),
        (0, True, "The 'lr' parameter of method 'demo' must be a float. Got True instead."),
        (0, math.nan, "The 'lr' parameter of method 'demo' must be a float in the range (0, inf). Got nan instead."),
        (1, 0, "The 'epochs' parameter of method 'demo' must be an int in the range [1, 100]. Got 0 instead."),
        (1, 101, "The 'epochs' parameter of method 'demo' must be an int in the range [1, 100]. Got 101 instead."),
        (1, 2.0, "The 'epochs' parameter of method 'demo' must be an int. Got 2.0 instead."),
        (1, True, "The 'epochs' parameter of method 'demo' must be an int. Got True instead."),
        (2, "medium", "The 'mode' parameter of method 'demo' must be a str one of 'fast', 'slow'. "
                      "Got 'medium' instead."),
        (3, 1, "The 'verbose' parameter of method 'demo' must be a bool. Got 1 instead."),
        (3, "yes", "The 'verbose' parameter of method 'demo' must be a bool. Got 'yes' instead."),
        (4, 1.5, "The 'gamma' parameter of method 'demo' must be a float in the range [0, 1]. Got 1.5 instead."),
        (5, 3, "The 'tag' parameter of method 'demo' must be a str. Got 3 instead."),
    ],
)
def test_check_errors_are_clear(index, value, message):
    with pytest.raises(ParameterError) as info:
        DECLARED[index].check(OWNER, value)
    assert str(info.value) == message


def test_parameter_error_is_both_a_muaudit_error_and_a_value_error():
    with pytest.raises(ValueError):
        DECLARED[0].check(OWNER, -1.0)
    assert issubclass(ParameterError, MuauditError) and ParameterError.exit_code == 2


def test_unsupported_parameter_type_is_refused_at_declaration():
    with pytest.raises(ParameterError, match="list"):
        Param("layers", list, [], "layer names")


def test_describe():
    assert DECLARED[0].describe() == "lr: float in the range (0, inf) (default 0.01) - learning rate"
    assert DECLARED[3].describe() == "verbose: bool (default False) - chatty"
    assert DECLARED[2].describe() == "mode: str one of 'fast', 'slow' (default 'fast') - mode"


# ------------------------------------------------------------------------------------------ Param.parse
@pytest.mark.parametrize(
    "index, text, value",
    [
        (0, "0.1", 0.1), (0, " 1e-3 ", 1e-3), (0, "3", 3.0),
        (1, "7", 7), (1, " 42 ", 42),
        (2, "slow", "slow"),
        (4, "none", None), (4, "None", None), (4, "NULL", None), (4, "0.25", 0.25),
        (5, "  spaced  ", "spaced"), (5, "none", "none"),
    ],
)
def test_parse(index, text, value):
    parsed = DECLARED[index].parse(OWNER, text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("text, value", [("1", True), ("true", True), ("True", True), ("yes", True), ("ON", True),
                                         ("0", False), ("false", False), ("No", False), ("off", False)])
def test_parse_bool(text, value):
    assert DECLARED[3].parse(OWNER, text) is value


@pytest.mark.parametrize(
    "index, text, fragment",
    [
        (3, "maybe", "The 'verbose' parameter of method 'demo' must be a bool. Got 'maybe' instead."),
        (3, "2", "must be a bool"),
        (1, "2.5", "The 'epochs' parameter of method 'demo' must be an int. Got '2.5' instead."),
        (1, "ten", "must be an int"),
        (1, "none", "must be an int"),
        (1, "0", "in the range [1, 100]"),
        (0, "fast", "must be a float"),
        (0, "-0.1", "in the range (0, inf)"),
        (0, "nan", "Got nan instead"),
        (0, "inf", "The 'lr' parameter of method 'demo' must be a float in the range (0, inf). Got inf instead."),
        (0, "1e400", "Got inf instead"),
        (0, "", "must be a float"),
        (2, "Fast", "one of 'fast', 'slow'"),
    ],
)
def test_parse_errors(index, text, fragment):
    with pytest.raises(ParameterError) as info:
        DECLARED[index].parse(OWNER, text)
    assert fragment in str(info.value)


# ------------------------------------------------------------------------------------- validate_params
def test_validate_params_fills_defaults():
    params = validate_params(OWNER, DECLARED, {"lr": 1, "mode": "slow"})
    assert isinstance(params, ParamSet)
    assert params.as_dict() == {"lr": 1.0, "epochs": 5, "mode": "slow", "verbose": False, "gamma": None, "tag": ""}
    assert params["lr"] == 1.0 and isinstance(params["lr"], float)
    params.as_dict()["lr"] = 9  # a copy
    assert params["lr"] == 1.0


def test_validate_params_rejects_unknown_names():
    with pytest.raises(ParameterError) as info:
        validate_params(OWNER, DECLARED, {"lr": 0.1, "learning_rate": 0.1})
    assert str(info.value) == ("method 'demo' has no parameter 'learning_rate' "
                               "(known parameters: epochs, gamma, lr, mode, tag, verbose).")
    with pytest.raises(ParameterError, match=r"known parameters: none"):
        validate_params(OWNER, (), {"x": 1})


def test_validate_params_checks_values_and_defaults():
    with pytest.raises(ParameterError, match="'epochs'.*Got 0"):
        validate_params(OWNER, DECLARED, {"epochs": 0})
    bad_default = (Param("k", int, 0, "k", Interval(1, None)),)
    with pytest.raises(ParameterError, match="'k'.*Got 0"):
        validate_params(OWNER, bad_default, {})
    assert validate_params(OWNER, bad_default, {"k": 3})["k"] == 3
    assert validate_params(OWNER, (), {}).as_dict() == {}


# --------------------------------------------------------------------------------- parse_param_strings
def test_parse_param_strings():
    parsed = parse_param_strings(OWNER, DECLARED, ["lr=0.5", " epochs = 3", "verbose=yes", "gamma=none",
                                                   "tag=a=b"])
    assert parsed == {"lr": 0.5, "epochs": 3, "verbose": True, "gamma": None, "tag": "a=b"}
    assert parse_param_strings(OWNER, DECLARED, []) == {}
    assert parse_param_strings(OWNER, DECLARED, ["lr=0.1", "lr=0.2"]) == {"lr": 0.2}  # the last one wins


@pytest.mark.parametrize(
    "pair, message",
    [
        ("lr", "Expected key=value for a parameter of method 'demo', got 'lr'."),
        ("=0.1", "Expected key=value for a parameter of method 'demo', got '=0.1'."),
        ("rate=0.1", "method 'demo' has no parameter 'rate' (known parameters: epochs, gamma, lr, mode, tag, "
                     "verbose)."),
        ("epochs=1.5", "The 'epochs' parameter of method 'demo' must be an int. Got '1.5' instead."),
    ],
)
def test_parse_param_strings_errors(pair, message):
    with pytest.raises(ParameterError) as info:
        parse_param_strings(OWNER, DECLARED, [pair])
    assert str(info.value) == message


def test_parsed_strings_validate_like_keywords():
    parsed = parse_param_strings(OWNER, DECLARED, ["lr=2", "epochs=9"])
    assert validate_params(OWNER, DECLARED, parsed).as_dict()["lr"] == 2.0
