"""Regression gates: the grammar, names, evaluation, check() messages, baselines, and the CLI's --fail-on."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from muaudit import gates as G
from muaudit.cli import main
from muaudit.verdicts import SPREAD_FACTOR

ISSUE_EXAMPLES = ["forget_error.gap > 2*gold_spread", "verdict != aligned", "mia_entropy-lr_auc.upper > 0.55",
                  "speedup_vs_gold < 5", "forget_error within gold band", "forget_error within 3*gold_spread",
                  "not (verdict.forget_accuracy == under-forgetting or verdict.attack_auc:loss == 'mixed')",
                  "abs(forget_error - test_error) / 2 <= 10 and -mia_loss_auc.lower < 0"]


@pytest.fixture(scope="module")
def card(audited_once):
    """finetune (one epoch) on digits with the loss attack and two gold models."""
    return audited_once


def _with_readout(card, name, **changes):
    """The scorecard with readout ``name`` changed (verdict and attack gold values left as they are)."""
    readouts = tuple(replace(r, **changes) if r.name == name else r for r in card.readouts)
    return replace(card, readouts=readouts)


# ----------------------------------------------------------------------------------------- grammar
@pytest.mark.parametrize("text", ISSUE_EXAMPLES)
def test_the_issue_examples_parse(text):
    gate = G.parse(text)
    assert gate.text == text and gate.mode == G.FAIL_ON


def test_hyphens_belong_to_names_and_colons_to_checks():
    refs = G.parse("mia_entropy-lr_auc.upper > 0.55 and verdict.attack_auc:entropy-lr != aligned").refs()
    assert [(r.kind, r.name, r.attr) for r in refs] == [("readout", "mia_entropy-lr_auc", "upper"),
                                                        ("verdict", "attack_auc:entropy-lr", "verdict")]


def test_a_bare_gold_spread_is_bound_to_its_comparisons_readout():
    refs = G.parse("forget_error.gap > 2*gold_spread or test_error > gold_spread").refs()
    assert [(r.name, r.attr) for r in refs] == [("forget_error", "gap"), ("forget_error", "gold_spread"),
                                                ("test_error", "unlearned"), ("test_error", "gold_spread")]


@pytest.mark.parametrize("text, fragment", [
    ("forget_error >", "expected a number or a name at position 15"),
    ("forget_error > 1 1", "unexpected '1'"),
    ("forget_error", "not a condition"),
    ("forget_error # 2", "unexpected character '#'"),
    ("(forget_error > 1", "expected ')'"),
    ("verdict > aligned", "compared with == or !="),
    ("verdict == aligne", "did you mean 'aligned'"),
    ("verdict == 'great'", "is not a verdict"),
    ("forget_error.gapp > 1", "did you mean 'gap'"),
    ("gold_spread > 1", "needs exactly one readout"),
    ("forget_error - test_error > gold_spread", "names forget_error, test_error"),
    ("forget_error.gap within gold band", "follow a readout name"),
    ("forget_error > 1 and 2", "'and' needs a condition"),
    ("", "an empty gate"),
])
def test_malformed_gates_are_errors(text, fragment):
    with pytest.raises(G.GateError, match=None) as info:
        G.parse(text)
    assert fragment in str(info.value)
    assert info.value.exit_code == 2


def test_no_eval_the_grammar_rejects_python():
    for text in ("__import__('os').system('true') == 0", "forget_error.__class__ > 1", "[1][0] > 0"):
        with pytest.raises(G.GateError):
            G.parse(text)


# ------------------------------------------------------------------------------------------- names
def test_the_vocabulary_known_before_training_is_the_scorecards(card):
    before = G.audit_vocabulary(["loss"], gold_models=2)
    after = G.card_vocabulary(card)
    assert before.readouts == after.readouts and before.checks == after.checks
    assert after.gold_models == 2


def test_an_unknown_readout_suggests_and_lists_the_valid_names():
    with pytest.raises(G.GateError) as info:
        G.audit_vocabulary(["loss"], 2).check([G.parse("forget_eror > 1")])
    message = str(info.value)
    assert "'forget_eror' is an unknown readout (did you mean 'forget_error'?)" in message
    assert "valid readouts: test_error, forget_error" in message and "mia_loss_auc" in message


def test_a_readout_of_an_attack_not_run_is_absent_not_unknown():
    with pytest.raises(G.GateError) as info:
        G.audit_vocabulary(["loss"], 2).check([G.parse("mia_entropy-lr_auc.upper > 0.55")])
    assert "'mia_entropy-lr_auc' is not in this audit" in str(info.value)
    assert "attack 'entropy-lr' was not run" in str(info.value)
    G.audit_vocabulary(["loss", "entropy-lr"], 2).check([G.parse("mia_entropy-lr_auc.upper > 0.55")])


def test_a_subtraction_without_spaces_is_explained():
    with pytest.raises(G.GateError, match="write a subtraction with spaces"):
        G.audit_vocabulary(["loss"], 2).check([G.parse("forget_error-test_error > 1")])


def test_challenge_and_poisoning_readouts_exist_only_where_the_audit_makes_them():
    gate = [G.parse("challenge_score < 0.5 or forget_clean_error > 1")]
    with pytest.raises(G.GateError, match="'challenge_score' is not in this audit"):
        G.audit_vocabulary(["loss"], 2).check(gate)
    G.audit_vocabulary(["loss"], 2, challenge=True, poisoning=True).check(gate)


def test_spreads_and_bands_need_two_gold_models():
    with pytest.raises(G.GateError, match="at least 2 gold models"):
        G.audit_vocabulary(["loss"], 1).check([G.parse("forget_error within gold band")])
    with pytest.raises(G.GateError, match="at least 2 gold models"):
        G.audit_vocabulary(["loss"], 1).check([G.parse("forget_error.gap > 2*gold_spread")])
    G.audit_vocabulary(["loss"], 1).check([G.parse("forget_error < 50 and forget_error within 5")])


def test_an_unknown_verdict_check_suggests():
    with pytest.raises(G.GateError, match="did you mean 'forget_accuracy'"):
        G.audit_vocabulary(["loss"], 2).check([G.parse("verdict.forget_acc == aligned")])


# -------------------------------------------------------------------------------------- evaluation
def test_values_come_from_the_scorecard(card):
    forget = card.readout("forget_error")
    auc_interval = card.interval("mia_loss_auc")
    [gap, upper, verdict] = G.evaluate(card, [G.parse(f"forget_error.gap == {forget.gap!r}"),
                                              G.parse(f"mia_loss_auc.upper == {auc_interval[1]!r}"),
                                              G.parse(f"verdict == {card.verdict_summary}")])
    assert gap.violated and upper.violated and verdict.violated  # fail_on: true means violated


def test_require_fails_when_false_and_fail_on_when_true(card):
    value = card.readout("test_error").unlearned
    [req_true, req_false] = G.evaluate(card, [G.parse(f"test_error <= {value}", G.REQUIRE),
                                              G.parse(f"test_error > {value}", G.REQUIRE)])
    [fail_true, fail_false] = G.evaluate(card, [G.parse(f"test_error <= {value}"), G.parse(f"test_error > {value}")])
    assert (req_true.violated, req_false.violated, fail_true.violated, fail_false.violated) == (
        False, True, True, False)


def test_the_forget_error_band_is_the_verdicts_band(card):
    verdict = next(v for v in card.verdicts if v.check == "forget_accuracy")
    low, high = G.gold_band(card, "forget_error")
    assert low == pytest.approx(100 * (1 - verdict.band[1])) and high == pytest.approx(100 * (1 - verdict.band[0]))


def test_an_attack_metric_band_uses_every_gold_models_value(card):
    golds = [g["auc"] for g in next(a for a in card.attacks if a.name == "loss").golds]
    reach = SPREAD_FACTOR * (max(golds) - min(golds))
    assert G.gold_band(card, "mia_loss_auc") == pytest.approx((min(golds) - reach, max(golds) + reach))


def test_within_gold_band_uses_the_interval(card):
    # test_error has no interval: its point value is compared with gold +- 3 x spread (two gold models)
    gold = 10.0
    at = _with_readout(card, "test_error", gold=gold, gold_spread=(1.0,))
    assert G.gold_band(at, "test_error") == (gold - (1 + SPREAD_FACTOR), gold + (1 + SPREAD_FACTOR))
    inside = _with_readout(at, "test_error", unlearned=12.9)
    outside = _with_readout(at, "test_error", unlearned=13.1)
    gate = G.parse("test_error within gold band", G.REQUIRE)
    assert not G.evaluate(inside, [gate])[0].violated
    assert G.evaluate(outside, [gate])[0].violated
    # an interval that reaches into the band keeps the readout within it, as in the verdicts
    reaching = _with_readout(at, "test_error", unlearned=14.0, interval=(12.5, 15.0))
    assert not G.evaluate(reaching, [gate])[0].violated
    assert G.evaluate(reaching, [G.parse("test_error outside gold band")])[0].violated is False


def test_within_a_multiple_of_the_spread(card):
    at = _with_readout(card, "test_error", unlearned=11.9, gold=10.0, gold_spread=(1.0,))
    assert not G.evaluate(at, [G.parse("test_error within 2*gold_spread", G.REQUIRE)])[0].violated
    assert G.evaluate(at, [G.parse("test_error within 1.5*gold_spread", G.REQUIRE)])[0].violated
    distance = card.readout("activation_distance")
    bound = distance.unlearned / distance.spread_max
    assert not G.evaluate(card, [G.parse(f"activation_distance within {bound * 1.01}*gold_spread",
                                         G.REQUIRE)])[0].violated
    assert G.evaluate(card, [G.parse(f"activation_distance within {bound * 0.99}*gold_spread",
                                     G.REQUIRE)])[0].violated


def test_a_missing_value_is_an_error_not_a_pass(card):
    missing = _with_readout(card, "mia_loss_tpr_at_01pct_fpr", unlearned=None)
    with pytest.raises(G.GateError, match="no value in this audit"):
        G.evaluate(missing, [G.parse("mia_loss_tpr_at_01pct_fpr > 0.1")])
    with pytest.raises(G.GateError, match="has no gap"):
        G.evaluate(card, [G.parse("activation_distance.gap > 0")])


def test_check_passes_quietly_and_fails_with_value_bound_interval_and_band(card):
    results = G.check(card, "forget_error <= 100", fail_on=["test_error > 100"])
    assert [r.violated for r in results] == [False, False]
    with pytest.raises(G.GateFailure) as info:
        G.check(card, "forget_error within gold band", "mia_loss_auc.upper < 0.01", "forget_error <= 100")
    message = str(info.value)
    assert isinstance(info.value, AssertionError)
    assert message.startswith("2 of 3 gate(s) failed:")
    assert "gate FAILED [finetune] (require) mia_loss_auc.upper < 0.01: mia_loss_auc.upper = " in message
    assert "< 0.01; mia_loss_auc: unlearned " in message and "[95% interval " in message
    assert "gold band [" in message and "gold spread " in message
    assert "forget_error <= 100" not in message


def test_check_applies_to_every_scorecard_of_a_comparison(card):
    from muaudit.comparison import Comparison

    other = replace(card, method={**card.method, "name": "other"})
    comparison = Comparison("digits", card.task["hash"], 2, (card, other), ())
    with pytest.raises(G.GateFailure) as info:
        G.check(comparison, "test_error > 100")
    assert "[finetune]" in str(info.value) and "[other]" in str(info.value)


def test_check_rejects_names_the_scorecard_lacks(card):
    with pytest.raises(G.GateError, match="not in this audit"):
        G.check(card, "mia_lira_auc < 0.6")


# -------------------------------------------------------------------------------------------- TOML
def test_gate_files(tmp_path):
    path = tmp_path / "gates.toml"
    path.write_text('fail_on = ["verdict != aligned"]\nrequire = ["forget_error within gold band"]\n')
    gates = G.load_gates(path)
    assert [(g.mode, g.text) for g in gates] == [(G.FAIL_ON, "verdict != aligned"),
                                                 (G.REQUIRE, "forget_error within gold band")]
    for text, fragment in (('fail_on = "verdict != aligned"', "must be a list of strings"),
                           ('fail_ons = ["verdict != aligned"]', "unknown key(s) fail_ons"),
                           ("fail_on = [", "not valid TOML"), ("", "no gates")):
        path.write_text(text)
        with pytest.raises(G.GateError) as info:
            G.load_gates(path)
        assert fragment in str(info.value)
    with pytest.raises(G.GateError, match="cannot read it"):
        G.load_gates(tmp_path / "absent.toml")


# --------------------------------------------------------------------------------------- baselines
def test_a_baseline_matches_its_own_scorecard_and_is_small(card):
    baseline = json.loads(json.dumps(G.baseline_of(card)))
    assert G.compare_baseline(baseline, card) == []
    assert set(baseline) == {"muaudit_baseline", "schema_version", "task", "method", "gold_models", "readouts",
                             "verdicts", "verdict_summary"}
    assert len(json.dumps(baseline)) < 6000


def test_a_baseline_tolerates_the_noise_floor_and_reports_beyond_it(card):
    baseline = G.baseline_of(card)
    spread = card.readout("test_error").spread_max
    assert spread > 0
    value = card.readout("test_error").unlearned
    assert G.compare_baseline(baseline, _with_readout(card, "test_error",
                                                      unlearned=value + 0.9 * SPREAD_FACTOR * spread)) == []
    diffs = G.compare_baseline(baseline, _with_readout(card, "test_error",
                                                       unlearned=value + 1.1 * SPREAD_FACTOR * spread))
    assert len(diffs) == 1 and diffs[0].startswith("test_error: ") and "beyond 2 x gold spread" in diffs[0]
    flipped = replace(card, verdict_summary="mixed")
    assert G.compare_baseline(baseline, flipped) == [f"verdict summary: mixed, approved {card.verdict_summary}"]


def test_a_baseline_of_another_task_or_schema_is_an_error(card):
    baseline = G.baseline_of(card)
    other_task = {**baseline, "task": {"name": "digits-class", "hash": "f" * 64}}
    with pytest.raises(G.BaselineError, match="is a baseline of task digits-class"):
        G.compare_baseline(other_task, card, "b.json")
    with pytest.raises(G.BaselineError, match="approved for scorecard schema 1.2"):
        G.compare_baseline({**baseline, "schema_version": "1.2"}, card, "b.json")
    with pytest.raises(G.BaselineError, match="not a muaudit baseline"):
        G.compare_baseline({"readouts": {}}, card, "b.json")
    with pytest.raises(G.BaselineError, match="regenerate it"):
        G.compare_baseline({**baseline, "method": {"name": "finetune", "params": {"epochs": 2}}}, card, "b.json")


def test_gates_and_the_pytest_plugin_import_no_torch():
    code = ("import sys, muaudit.gates, muaudit.pytest_plugin\n"
            "print(sorted(m for m in ('torch', 'numpy', 'scipy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------- CLI
def _score(tmp_path, cache_dir, *extra):
    return ["score", "--method", "finetune", "--method-arg", "epochs=1", "--attacks", "loss", "--cache-dir",
            str(cache_dir), "--device", "cpu", "--quiet", *extra]


def _one_line_error(code, err, fragment):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("muaudit: error: ") and fragment in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("gate, fragment", [
    ("forget_eror > 1", "did you mean 'forget_error'?"),
    ("forget_eror > 1", "valid readouts: test_error, forget_error, retain_error"),
    ("mia_entropy-lr_auc.upper > 0.55", "'mia_entropy-lr_auc' is not in this audit"),
    ("forget_error >", "expected a number or a name"),
    ("verdict.forget_acc == aligned", "did you mean 'forget_accuracy'"),
])
def test_cli_bad_gates_are_usage_errors_before_any_training(tmp_path, capsys, gate, fragment):
    empty_cache = tmp_path / "cache"
    code = main(_score(tmp_path, empty_cache, "--fail-on", gate))
    _, err = capsys.readouterr()
    _one_line_error(code, err, fragment)
    assert not empty_cache.exists()  # nothing was trained


def test_cli_bands_need_two_gold_models_before_training(tmp_path, capsys):
    code = main(_score(tmp_path, tmp_path / "cache", "--gold-seeds", "1", "--require",
                       "forget_error within gold band"))
    _one_line_error(code, capsys.readouterr()[1], "at least 2 gold models")


def test_cli_bad_gate_file(tmp_path, capsys):
    path = tmp_path / "gates.toml"
    path.write_text('fail_on = ["verdict != alligned"]\n')
    code = main(_score(tmp_path, tmp_path / "cache", "--gates", str(path)))
    _one_line_error(code, capsys.readouterr()[1], "did you mean 'aligned'")


def test_cli_violated_gates_exit_1_after_writing(tmp_path, cache_dir, capsys):
    gates = tmp_path / "gates.toml"
    gates.write_text('require = ["test_error <= 100", "mia_loss_auc.upper < 0.01"]\n')
    out = tmp_path / "run"
    code = main(_score(tmp_path, cache_dir, "--out", str(out), "--fail-on", "forget_error > 100", "--gates",
                       str(gates)))
    stdout, err = capsys.readouterr()
    assert code == 1, err
    assert (out / "scorecard.json").is_file() and "test_error" in stdout
    failed = [line for line in err.splitlines() if "gate FAILED" in line]
    assert len(failed) == 1
    assert failed[0].startswith("muaudit: gate FAILED [finetune] (require) mia_loss_auc.upper < 0.01: "
                                "mia_loss_auc.upper = ")
    assert "[95% interval" in failed[0] and "gold band [" in failed[0]
    assert "muaudit: gates: 2 passed, 1 failed" in err
    assert "Traceback" not in err


def test_cli_passing_gates_exit_0(tmp_path, cache_dir, capsys):
    code = main(_score(tmp_path, cache_dir, "--fail-on", "forget_error > 100", "--require", "test_error < 100"))
    err = capsys.readouterr()[1]
    assert code == 0 and "muaudit: gates: 2 passed, 0 failed" in err and "gate FAILED" not in err


def test_cli_compare_gates_apply_per_method_and_name_it(cache_dir, capsys):
    code = main(["compare", "--methods", "finetune,neggrad", "--method-arg", "finetune.epochs=1", "--method-arg",
                 "neggrad.epochs=1", "--attacks", "loss", "--cache-dir", str(cache_dir), "--device", "cpu",
                 "--quiet", "--fail-on", "test_error >= 0", "--require", "test_error < 100"])
    err = capsys.readouterr()[1]
    failed = [line for line in err.splitlines() if "gate FAILED" in line]
    assert code == 1, err
    assert [line.split("]")[0] for line in failed] == ["muaudit: gate FAILED [finetune",
                                                       "muaudit: gate FAILED [neggrad"]
    assert "muaudit: gates: 2 passed, 2 failed" in err
