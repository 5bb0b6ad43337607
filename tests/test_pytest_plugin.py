"""The pytest plugin through pytester: fixtures, gates, approved baselines, options and caching."""
from __future__ import annotations

import json
import pytest

from muaudit.results import SCHEMA_VERSION


GATED = """
from muaudit.gates import check

def test_finetune_gates(muaudit_audit):
    card = muaudit_audit("finetune", task="digits", attacks="loss", epochs=1)
    check(card, {gates})
"""

BASELINED = """
def test_approved(muaudit_audit, muaudit_baseline):
    muaudit_baseline(muaudit_audit("finetune", task="digits", attacks="loss", epochs=1))
"""


def test_the_entry_point_is_declared():
    from pathlib import Path

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["pytest11"] == {"muaudit": "muaudit.pytest_plugin"}


def test_options_are_registered(pytester, cache_dir, muaudit_plugin_args):
    result = pytester.runpytest_inprocess(*muaudit_plugin_args, "--help")
    for option in ("--muaudit-cache-dir", "--muaudit-device", "--muaudit-regen", "--muaudit-fresh"):
        result.stdout.fnmatch_lines([f"*{option}*"])


def test_a_passing_gate(pytester, cache_dir, muaudit_plugin_args):
    pytester.makepyfile(GATED.format(gates='"forget_error <= 100", "test_error < 50"'))
    result = pytester.runpytest_inprocess(*muaudit_plugin_args)
    result.assert_outcomes(passed=1)


def test_a_failing_gate_shows_value_bound_interval_and_band(pytester, cache_dir, muaudit_plugin_args):
    pytester.makepyfile(GATED.format(gates='"forget_error <= 100", "mia_loss_auc.upper < 0.01"'))
    result = pytester.runpytest_inprocess(*muaudit_plugin_args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*GateFailure: 1 of 2 gate(s) failed:*",
        "*gate FAILED [[]finetune] (require) mia_loss_auc.upper < 0.01: mia_loss_auc.upper = * < 0.01; "
        "mia_loss_auc: unlearned * [[]95% interval *, *], gold *, gold spread *, gold band [[]*, *]"])


def test_an_unknown_readout_in_a_test_is_an_error_with_the_valid_names(pytester, muaudit_plugin_args):
    pytester.makepyfile(GATED.format(gates='"forget_eror < 10"'))
    result = pytester.runpytest_inprocess(*muaudit_plugin_args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*GateError: gate 'forget_eror < 10': 'forget_eror' is an unknown readout "
                                 "(did you mean 'forget_error'?)*valid readouts: test_error, forget_error*"])


def test_a_baseline_is_written_then_approved_then_guards(pytester, cache_dir, muaudit_plugin_args):
    pytester.makepyfile(test_model=BASELINED)
    baseline = pytester.path / "test_model" / "test_approved.json"
    first = pytester.runpytest_inprocess(*muaudit_plugin_args)
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines([f"*muaudit baseline written: {baseline}; review and commit it, then run again*"])
    stored = json.loads(baseline.read_text())
    assert stored["task"]["name"] == "digits" and stored["schema_version"] == SCHEMA_VERSION
    assert "mia_loss_auc" in stored["readouts"] and "arrays" not in stored
    pytester.runpytest_inprocess(*muaudit_plugin_args).assert_outcomes(passed=1)

    spread = stored["readouts"]["test_error"]["gold_spread"]
    stored["readouts"]["test_error"]["unlearned"] += 3 * spread  # beyond 2 x the gold spread
    baseline.write_text(json.dumps(stored))
    moved = pytester.runpytest_inprocess(*muaudit_plugin_args)
    moved.assert_outcomes(failed=1)
    moved.stdout.fnmatch_lines(["*scorecard of finetune differs from the approved baseline * beyond the noise floor:",
                                "*test_error: *, approved * (change *, beyond 2 x gold spread *)"])

    regen = pytester.runpytest_inprocess(*muaudit_plugin_args, "--muaudit-regen")
    regen.assert_outcomes(failed=1)
    regen.stdout.fnmatch_lines(["*muaudit baseline rewritten: *test_approved.json; review and commit it, then run "
                                "again without --muaudit-regen*"])
    pytester.runpytest_inprocess(*muaudit_plugin_args).assert_outcomes(passed=1)


@pytest.mark.parametrize("field, value, message", [
    ("task", {"name": "digits-class", "hash": "0" * 64}, "*BaselineError: *is a baseline of task digits-class*"),
    ("schema_version", "1.2", "*BaselineError: *approved for scorecard schema 1.2, this scorecard has schema*"),
])
def test_a_baseline_of_another_task_or_schema_is_an_error(pytester, muaudit_plugin_args, field, value, message):
    pytester.makepyfile(test_model=BASELINED)
    pytester.runpytest_inprocess(*muaudit_plugin_args)  # writes the baseline
    path = pytester.path / "test_model" / "test_approved.json"
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, field: value}))
    result = pytester.runpytest_inprocess(*muaudit_plugin_args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])
    result.stdout.no_fnmatch_line("*differs from the approved baseline*")


NO_AUDITS = """
import pytest
import muaudit.api

@pytest.fixture(autouse=True)
def no_audits(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("audited again")
    monkeypatch.setattr(muaudit.api, "audit", refuse)
"""


def test_scorecards_are_cached_across_sessions_and_fresh_audits_again(pytester, cache_dir, muaudit_plugin_args):
    pytester.makepyfile(GATED.format(gates='"test_error < 50"'))
    pytester.runpytest_inprocess(*muaudit_plugin_args).assert_outcomes(passed=1)
    assert list((cache_dir / "scorecards").glob("*.json"))
    pytester.makeconftest(NO_AUDITS)
    pytester.runpytest_inprocess(*muaudit_plugin_args).assert_outcomes(passed=1)  # from the scorecard cache
    fresh = pytester.runpytest_inprocess(*muaudit_plugin_args, "--muaudit-fresh")
    fresh.assert_outcomes(failed=1)
    fresh.stdout.fnmatch_lines(["*RuntimeError: audited again*"])


def test_other_method_parameters_are_not_served_from_the_cache(pytester, cache_dir, muaudit_plugin_args):
    pytester.makepyfile(GATED.format(gates='"test_error < 50"'))
    pytester.runpytest_inprocess(*muaudit_plugin_args).assert_outcomes(passed=1)
    pytester.makeconftest(NO_AUDITS)
    pytester.makepyfile(GATED.format(gates='"test_error < 50"').replace("epochs=1", "epochs=2"))
    result = pytester.runpytest_inprocess(*muaudit_plugin_args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*RuntimeError: audited again*"])


def test_collection_imports_no_torch(pytester, cache_dir, muaudit_plugin_args):
    pytester.makepyfile(GATED.format(gates='"test_error < 50"'))
    pytester.makeconftest("""
import sys

def pytest_collection_finish(session):
    print("TORCH LOADED AT COLLECTION:", "torch" in sys.modules)
""")
    result = pytester.runpytest_subprocess(*muaudit_plugin_args, "--collect-only", "-s")
    result.stdout.fnmatch_lines(["TORCH LOADED AT COLLECTION: False"])
