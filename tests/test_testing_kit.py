"""The conformance kit (:mod:`muaudit.testing`) catches what it claims to: each check fails on a plugin with
exactly that fault and passes a sound one; :func:`parametrize_with_checks` builds readable, correctly marked
parameters; the example distribution runs the kit as a third party would."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from muaudit import testing as T
from muaudit.base import AttackScores, MembershipAttack, UnlearningMethod
from muaudit.readouts import losses
from muaudit.testing import as_plugin, parametrize_with_checks

EXAMPLE_TESTS = Path(__file__).parent / "example_plugin" / "tests"


# ------------------------------------------------------------------------------------------ faulty attacks
class NegLoss(MembershipAttack):
    """A sound attack: score = -loss."""

    name = "kit-neg-loss"
    summary = "score = -loss (sound)"
    paper = "none"

    def score(self, outputs, ctx):
        return AttackScores(-losses(outputs.forget_logits, outputs.forget_labels),
                            -losses(outputs.test_logits, outputs.test_labels), None)


class Reversed(NegLoss):
    name = "kit-reversed"

    def score(self, outputs, ctx):
        s = super().score(outputs, ctx)
        return AttackScores(-s.members, -s.nonmembers, None)


class IgnoresTheModel(NegLoss):
    """Knows which examples are members without looking at the model: passes orientation, not the null."""

    name = "kit-ignores-model"

    def score(self, outputs, ctx):
        rng = np.random.default_rng(ctx.seed)
        return AttackScores(1.0 + rng.normal(size=len(outputs.forget_labels)),
                            rng.normal(size=len(outputs.test_labels)), None)


class Unseeded(NegLoss):
    name = "kit-unseeded"

    def score(self, outputs, ctx):
        s = super().score(outputs, ctx)
        return AttackScores(s.members + np.random.default_rng().normal(0, 1e-3, len(s.members)), s.nonmembers, None)


class MutatesOutputs(NegLoss):
    name = "kit-mutates-outputs"

    def score(self, outputs, ctx):
        outputs.test_logits.mul_(2.0)
        return super().score(outputs, ctx)


class NaNScores(NegLoss):
    name = "kit-nan"

    def score(self, outputs, ctx):
        s = super().score(outputs, ctx)
        s.members[0] = np.nan
        return s


class ShortScores(NegLoss):
    name = "kit-short"

    def score(self, outputs, ctx):
        s = super().score(outputs, ctx)
        return AttackScores(s.members[1:], s.nonmembers, None)


class ReachesThroughBank(NegLoss):
    name = "kit-reaches-bank"
    needs = frozenset({"shadows"})

    def score(self, outputs, ctx):
        ctx.bank.data.train.x.add_(1.0)
        return super().score(outputs, ctx)


@pytest.mark.parametrize("cls, check, message", [
    (ReachesThroughBank, T.check_attack_does_not_mutate_input, "changed shadow bank data.train.x"),
    (Reversed, T.check_attack_orientation, "does not rank members higher"),
    (IgnoresTheModel, T.check_attack_null, "separates D_f from non-members on gold model"),
    (Unseeded, T.check_attack_seed_determinism, "not deterministic"),
    (MutatesOutputs, T.check_attack_does_not_mutate_input, "outputs.test_logits in place"),
    (NaNScores, T.check_attack_scores_valid, "member scores must be finite"),
    (ShortScores, T.check_attack_scores_valid, "member scores for"),
])
def test_each_attack_check_catches_its_fault(digits_setup, cls, check, message):
    with pytest.raises(AssertionError, match=message):
        check(digits_setup, as_plugin(cls), {})


def test_the_faulty_attacks_pass_the_checks_they_are_not_built_to_fail(digits_setup):
    """Contrast: each fault is caught by its own check only where it matters; a sound attack passes them all."""
    T.check_attack(digits_setup, as_plugin(NegLoss))
    T.check_attack_orientation(digits_setup, as_plugin(IgnoresTheModel), {})
    T.check_attack_null(digits_setup, as_plugin(Reversed), {})


def test_memorised_outputs_raise_only_the_forget_true_class_logit(digits_setup):
    outputs = digits_setup.outputs(digits_setup.original)
    memorised = T.memorised_outputs(outputs, margin=2.0)
    diff = memorised.forget_logits.double() - outputs.forget_logits.double()
    expected = 2.0 * torch.nn.functional.one_hot(outputs.forget_labels, diff.shape[1]).double()
    torch.testing.assert_close(diff, expected, rtol=0, atol=1e-5)
    assert torch.equal(memorised.test_logits, outputs.test_logits)


# ------------------------------------------------------------------------------------------ faulty methods
class Shrink(UnlearningMethod):
    name = "kit-shrink"
    summary = "multiply weights by 0.9 (sound)"
    paper = "none"

    def unlearn(self, model, data, ctx):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.9)
        return model


class ToDouble(Shrink):
    name = "kit-double"

    def unlearn(self, model, data, ctx):
        return model.double()


class WrongShape(Shrink):
    name = "kit-wrong-shape"

    def unlearn(self, model, data, ctx):
        return nn.Linear(3, 3)


class NoisyUnseeded(Shrink):
    name = "kit-noisy"

    def unlearn(self, model, data, ctx):
        with torch.no_grad():
            next(model.parameters()).add_(torch.from_numpy(np.random.default_rng().normal(
                0, 1e-3, next(model.parameters()).shape)).float())
        return model


class MutatesTrainInStats(Shrink):
    name = "kit-mutates-train"
    needs = frozenset({"train_stats"})

    def compute_train_stats(self, model, train, ctx):
        train.x.mul_(0.0)
        return {"mean": train.x.mean(0)}


@pytest.mark.parametrize("cls, check, message", [
    (ToDouble, T.check_returns_same_architecture, "another architecture.*float64"),
    (WrongShape, T.check_returns_same_architecture, "kit-wrong-shape"),
    (NoisyUnseeded, T.check_seed_determinism, "not deterministic"),
])
def test_each_method_check_catches_its_fault(digits_setup, cls, check, message):
    with pytest.raises(AssertionError, match=message):
        check(digits_setup, as_plugin(cls), {})


def test_a_mutation_in_compute_train_stats_is_caught_even_when_the_stats_are_cached(digits_setup):
    plugin = as_plugin(MutatesTrainInStats)
    with pytest.raises(AssertionError, match="train.x"):
        T.check_does_not_mutate_input(digits_setup, plugin, {})
    with pytest.raises(AssertionError, match="train.x"):  # again: the set-up's cache does not hide it
        T.check_does_not_mutate_input(digits_setup, plugin, {})


def test_a_sound_method_passes_every_check(digits_setup):
    T.check_method(digits_setup, as_plugin(Shrink))


def test_architecture_differences_name_keys_shapes_and_dtypes():
    a, b = nn.Linear(2, 3), nn.Linear(2, 4)
    assert T.architecture_differences(a, a) == []
    assert T.architecture_differences(a, b) == ["'weight': (4, 2) torch.float32 instead of (3, 2) torch.float32",
                                                "'bias': (4,) torch.float32 instead of (3,) torch.float32"]
    assert T.architecture_differences(a, nn.Sequential(a)) == ["missing 'weight'", "missing 'bias'",
                                                               "unexpected '0.weight'", "unexpected '0.bias'"]


# ------------------------------------------------------------------------------------------ parametrize
def _cases(mark):
    assert mark.args[0] == "plugin, check"
    return {case.id: case for case in mark.args[1]}


def test_parametrize_gives_readable_ids_for_names_classes_and_loaded_plugins():
    cases = _cases(parametrize_with_checks(["finetune", as_plugin(NegLoss)], params={"finetune": {"epochs": 1}}))
    assert set(cases) == {f"finetune-{c.__name__}" for c in T.METHOD_CHECKS} | {
        f"kit-neg-loss-{c.__name__}" for c in T.ATTACK_CHECKS}
    plugin, check = cases["finetune-check_seed_determinism"].values
    assert plugin.spec.dist == "muaudit" and check.func is T.check_seed_determinism and check.params == {"epochs": 1}
    assert all(not case.marks for case in cases.values())


def test_a_registered_class_is_loaded_through_its_entry_point():
    from muaudit_example_plugin import WeightShrink

    assert as_plugin(WeightShrink).spec.dist == "muaudit-example-plugin"
    assert as_plugin(NegLoss).spec.dist == "unregistered"


@pytest.mark.parametrize("expected", [{"kit-shrink": {"check_seed_determinism": "why"}},
                                      lambda plugin: {"check_seed_determinism": "why"}])
def test_expected_failures_are_strict_xfails(expected):
    cases = _cases(parametrize_with_checks([Shrink], expected_failed_checks=expected))
    (mark,) = cases["kit-shrink-check_seed_determinism"].marks
    assert mark.name == "xfail" and mark.kwargs == {"strict": True, "reason": "why"}
    assert not cases["kit-shrink-check_returns_same_architecture"].marks


def test_a_method_declared_non_deterministic_skips_the_determinism_check():
    class Declared(Shrink):
        name = "kit-declared"
        deterministic = False

    (mark,) = _cases(parametrize_with_checks([Declared]))["kit-declared-check_seed_determinism"].marks
    assert mark.name == "skip" and "deterministic = False" in mark.kwargs["reason"]


@pytest.mark.parametrize("kwargs, message", [
    ({"expected_failed_checks": {"kit-shrink": {"check_sed_determinism": "typo"}}}, "unknown checks"),
    ({"params": {"finetune": {}}}, "not checked"),
])
def test_parametrize_rejects_what_would_silently_do_nothing(kwargs, message):
    with pytest.raises(ValueError, match=message):
        parametrize_with_checks([Shrink], **kwargs)


def test_names_that_are_unknown_or_not_plugins_are_refused():
    with pytest.raises(ValueError, match="no method or attack"):
        as_plugin("no-such-plugin")
    with pytest.raises(TypeError, match="neither"):
        as_plugin(int)


def test_failing_checks_fail_and_expected_failures_pass_under_pytest(pytester):
    pytester.makepyfile(f'''
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from muaudit.testing import parametrize_with_checks
        from test_testing_kit import Reversed

        @parametrize_with_checks([Reversed], expected_failed_checks={{"kit-reversed": {{
            "check_attack_null": "claimed wrongly: it passes"}}}})
        def test_kit(plugin, check):
            check()
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider")  # in process: the kit's shared set-up is trained once
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["*AssertionError: attack \"kit-reversed\"*does not rank members higher*",
                                 "*XPASS(strict)*claimed wrongly: it passes*"])


def test_the_example_distribution_runs_the_kit_as_a_third_party(pytester, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one torch thread in the child too (see conftest.py)
    shutil.copy(EXAMPLE_TESTS / "test_conformance.py", pytester.path / "test_example_conformance.py")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=len(T.METHOD_CHECKS) + len(T.ATTACK_CHECKS))


class Undeclared(Shrink):
    name = "kit-undeclared"

    def unlearn(self, model, data, ctx):
        data.retain
        return model


def test_a_method_asking_for_undeclared_data_fails_the_check(digits_setup):
    with pytest.raises(AssertionError, match="asked for 'retain' data but did not declare it"):
        T.check_refuses_undeclared_data(digits_setup, as_plugin(Undeclared), {})
