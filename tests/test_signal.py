"""The signal section: undetermined verdicts where a task cannot show forgetting, and the consistency warning."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from muaudit import verdicts as V
from muaudit.audit import AuditSetup, build_scorecard, run_method
from muaudit.cli import main
from muaudit.plugins import ATTACKS, load_by_name
from muaudit.signal import NO_SIGNAL, Signal, apply_signal, consistency_check, signal_check
from muaudit.testing import load_method
from muaudit.training import fit, fresh_model


@pytest.fixture(scope="module")
def loss_attack():
    return load_by_name(ATTACKS, "loss")


def _verdict(check: str, verdict: str, value: float = 0.5) -> V.Verdict:
    return V.Verdict(check, verdict, "evidence", value, 0.5, 0.9, (0.4, 0.6), (value - 0.01, value + 0.01), "lower",
                     golds=(0.5, 0.45))


# ------------------------------------------------------------------------------------------- unit rules
def test_no_signal_makes_every_verdict_undetermined_with_the_reason():
    original = [_verdict("forget_accuracy", V.ALIGNED, 0.5), _verdict("attack_auc:loss", V.ALIGNED, 0.5)]
    signal = Signal(tuple(signal_check(v) for v in original))
    assert not signal.detectable
    verdicts, summary = apply_signal([_verdict("forget_accuracy", V.OVER, 0.1),
                                      _verdict("attack_auc:loss", V.ALIGNED)], signal)
    assert summary == V.UNDETERMINED
    assert [v.verdict for v in verdicts] == [V.UNDETERMINED, V.UNDETERMINED]
    assert [v.raw_verdict for v in verdicts] == [V.OVER, V.ALIGNED]
    assert all(NO_SIGNAL in v.evidence for v in verdicts)


def test_a_check_without_signal_cannot_call_aligned_but_keeps_deviations():
    original = [_verdict("forget_accuracy", V.UNDER, 0.99), _verdict("attack_auc:loss", V.ALIGNED),
                _verdict("member_rate:loss", V.ALIGNED)]
    signal = Signal(tuple(signal_check(v) for v in original))
    verdicts, summary = apply_signal([_verdict("forget_accuracy", V.ALIGNED), _verdict("attack_auc:loss", V.ALIGNED),
                                      _verdict("member_rate:loss", V.OVER, 0.1)], signal)
    assert [v.verdict for v in verdicts] == [V.ALIGNED, V.UNDETERMINED, V.OVER]
    assert summary == V.OVER  # over the determined checks only


def test_signal_check_reports_gap_in_gold_spreads():
    check = signal_check(_verdict("forget_accuracy", V.UNDER, 0.975))
    assert check.detectable and check.golds == (0.5, 0.45)
    assert check.gap == pytest.approx(0.975 - 0.475)
    assert check.snr == pytest.approx(0.5 / 0.05)


def test_consistency_check_flags_only_separable_error_rates():
    assert consistency_check("test_error", "test error", 9, 400, [8, 10]).consistent
    assert consistency_check("retain_error", "error on D_r", 2, 1000, [0, 0]).consistent  # within 3 SDs
    assert consistency_check("test_error", "test error", 1, 400, [9, 10]).consistent  # 2 points: within 3 SDs
    flagged = consistency_check("retain_error", "error on D_r", 25, 1131, [0, 1])
    assert not flagged.consistent and "trained on this task" in flagged.message


# ------------------------------------------------------------------------------------------- end to end
def test_digits_has_signal_and_no_warning(digits_setup, loss_attack):
    card = build_scorecard(digits_setup, run_method(digits_setup, load_method("retrain"), {}, seed=5), loss_attack)
    assert card.signal["detectable"] and card.signal["warnings"] == []
    by_name = {c["check"]: c for c in card.signal["checks"]}
    assert by_name["forget_loss"]["detectable"]  # the original fits D_f far better than any gold model
    assert card.verdict_summary != V.UNDETERMINED


def test_an_original_that_never_saw_the_forget_set_gives_undetermined_verdicts(digits_setup, loss_attack):
    """A "original" that is itself a retrain without D_f: nothing to forget, so nothing can be judged."""
    retrained = run_method(digits_setup, load_method("retrain"), {}, seed=11).model
    no_signal = dataclasses.replace(digits_setup, original=retrained, _outputs=None, _attack_memo={},
                                    _attack_instances={})
    card = build_scorecard(no_signal, run_method(no_signal, load_method("finetune"), {"epochs": 1}, seed=0),
                           loss_attack)
    assert not card.signal["detectable"]
    assert card.verdict_summary == V.UNDETERMINED
    assert {v.verdict for v in card.verdicts} == {V.UNDETERMINED}
    assert "cannot show forgetting" in card.to_text()


def _trained_on_test_split(setup: AuditSetup) -> torch.nn.Module:
    model = fresh_model(setup.task, setup.data, 123)
    return fit(model, setup.data.test, setup.task.recipe, 7, torch.device("cpu"), None).eval()


def test_an_original_trained_on_the_test_split_is_flagged(digits_setup, loss_attack):
    other = dataclasses.replace(digits_setup, original=_trained_on_test_split(digits_setup), _outputs=None,
                                _attack_memo={}, _attack_instances={})
    card = build_scorecard(other, run_method(other, load_method("finetune"), {"epochs": 1}, seed=0), loss_attack)
    flagged = {c["check"] for c in card.signal["consistency"] if not c["consistent"]}
    assert "retain_error" in flagged
    assert card.signal["warnings"] and "WARNING" in card.to_text()


@pytest.mark.parametrize("task", ["digits-class", "digits-poison"])
def test_muaudit_trained_originals_are_consistent(task, cache_dir, loss_attack):
    from muaudit.testing import tiny_setup

    setup = tiny_setup(cache_dir, task)
    card = build_scorecard(setup, run_method(setup, load_method("retrain"), {}, seed=1), loss_attack)
    assert card.signal["warnings"] == []
    assert card.signal["detectable"]


def test_cli_prints_the_signal_line(cache_dir, capsys):
    assert main(["score", "--method", "retrain", "--cache-dir", str(cache_dir), "--quiet", "--attacks", "loss"]) == 0
    err = capsys.readouterr().err
    assert "muaudit: signal:" in err and "warning" not in err
