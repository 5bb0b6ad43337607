"""Fault injection (issue 11): plugins that mutate their inputs, raise, exit, return garbage or hang.

A small fake distribution, ``muaudit-faults``, provides one faulty method or attack per fault. Every fault must be
survived with nothing lost: the audit's own data and models unchanged, exit 3 naming the plugin and its
distribution, one line on stderr, no traceback, nothing half-written; in ``compare`` the other methods' results
are written first.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from muaudit.audit import build_scorecard, run_method
from muaudit.cli import main
from muaudit.errors import PluginFailure, PluginValidationError, UndeclaredDataError
from muaudit.plugins import ATTACKS, METHODS, load_by_name
from muaudit.runs import method_context
from muaudit.seal import AuditFingerprint, audit_tensors

DIST = "muaudit-faults"
WHERE = f"from {DIST} 1.2.3"

FAULTS_MODULE = '''
import os, sys, time
import numpy as np
import torch
from torch import nn
from muaudit import UnlearningMethod
from muaudit.base import AttackScores, MembershipAttack
from muaudit.errors import TaskError


class Base(UnlearningMethod):
    summary = "a faulty method for tests"
    paper = "none"
    def unlearn(self, model, data, ctx):
        return model


class MutateForgetX(Base):
    def unlearn(self, model, data, ctx):
        data.forget.x.add_(1.0)
        return model

class MutateForgetY(Base):
    def unlearn(self, model, data, ctx):
        data.forget.y.zero_()
        return model

class MutateRetain(Base):
    needs = frozenset({"retain"})
    def unlearn(self, model, data, ctx):
        data.retain.x.mul_(0.0)
        return model

class MutateValidation(Base):
    needs = frozenset({"validation"})
    def unlearn(self, model, data, ctx):
        data.validation.y.fill_(0)
        return model

class MutateStats(Base):
    needs = frozenset({"train_stats"})
    def compute_train_stats(self, model, train, ctx):
        return {"mean": train.x.mean(0)}
    def unlearn(self, model, data, ctx):
        data.train_stats["mean"].add_(5.0)
        return model

class MutateTrainInStats(Base):
    needs = frozenset({"train_stats"})
    def compute_train_stats(self, model, train, ctx):
        train.x.zero_()
        return {"mean": train.x.mean(0)}

class RaiseInUnlearn(Base):
    def unlearn(self, model, data, ctx):
        raise ValueError("boom in unlearn")

class RaiseInInit(Base):
    def __init__(self, **params):
        super().__init__(**params)
        if os.environ.get("FAULTS_INIT_RAISES"):
            raise RuntimeError("boom in __init__")

class RaiseInStats(Base):
    needs = frozenset({"train_stats"})
    def compute_train_stats(self, model, train, ctx):
        raise ZeroDivisionError("boom in stats")

class RaiseTaskError(Base):
    def unlearn(self, model, data, ctx):
        raise TaskError("the task is fine; the plugin is not")

class ExitZero(Base):
    def unlearn(self, model, data, ctx):
        sys.exit(0)

class ExitInStats(Base):
    needs = frozenset({"train_stats"})
    def compute_train_stats(self, model, train, ctx):
        sys.exit(1)

class NaNModel(Base):
    def unlearn(self, model, data, ctx):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
        return model

class WrongArch(Base):
    def unlearn(self, model, data, ctx):
        return nn.Linear(3, 3)

class ReturnsNone(Base):
    def unlearn(self, model, data, ctx):
        return None

class Undeclared(Base):
    def unlearn(self, model, data, ctx):
        data.retain
        return model

class Interrupted(Base):
    def unlearn(self, model, data, ctx):
        raise KeyboardInterrupt

class Hang(Base):
    def unlearn(self, model, data, ctx):
        marker = os.environ.get("FAULTS_HANG_MARKER")
        if marker:
            open(marker, "w").close()
        while True:
            time.sleep(0.05)


class AttackBase(MembershipAttack):
    summary = "a faulty attack for tests"
    paper = "none"
    def score(self, outputs, ctx):
        members = -torch.nn.functional.cross_entropy(outputs.forget_logits, outputs.forget_labels, reduction="none")
        nonmembers = -torch.nn.functional.cross_entropy(outputs.test_logits, outputs.test_labels, reduction="none")
        return AttackScores(members.numpy(), nonmembers.numpy(), None)

class MutateOutputs(AttackBase):
    def score(self, outputs, ctx):
        outputs.forget_logits.zero_()
        return super().score(outputs, ctx)

class AttackRaises(AttackBase):
    def score(self, outputs, ctx):
        raise RuntimeError("boom in score")

class AttackExits(AttackBase):
    def score(self, outputs, ctx):
        sys.exit(0)

class AttackReturnsNone(AttackBase):
    def score(self, outputs, ctx):
        return None

class AttackNaN(AttackBase):
    def score(self, outputs, ctx):
        scores = super().score(outputs, ctx)
        return AttackScores(np.full_like(scores.members, np.nan), scores.nonmembers, None)

class ReachesThroughBank(AttackBase):
    needs = frozenset({"shadows"})
    def score(self, outputs, ctx):
        ctx.bank.data.train.x.add_(1.0)
        return super().score(outputs, ctx)

class ReachesThroughContext(AttackBase):
    needs = frozenset({"shadows"})
    def score(self, outputs, ctx):
        ctx.data.test.x.zero_()
        return super().score(outputs, ctx)
'''

METHOD_FAULTS = {
    "faults-mutate-forget-x": "MutateForgetX", "faults-mutate-forget-y": "MutateForgetY",
    "faults-mutate-retain": "MutateRetain", "faults-mutate-validation": "MutateValidation",
    "faults-mutate-stats": "MutateStats", "faults-mutate-train": "MutateTrainInStats",
    "faults-raise": "RaiseInUnlearn", "faults-raise-init": "RaiseInInit", "faults-raise-stats": "RaiseInStats",
    "faults-task-error": "RaiseTaskError", "faults-exit": "ExitZero", "faults-exit-stats": "ExitInStats",
    "faults-nan": "NaNModel", "faults-wrong-arch": "WrongArch", "faults-none": "ReturnsNone",
    "faults-undeclared": "Undeclared", "faults-interrupted": "Interrupted", "faults-hang": "Hang",
}
ATTACK_FAULTS = {
    "faults-attack-ok": "AttackBase", "faults-mutate-outputs": "MutateOutputs", "faults-attack-raises": "AttackRaises",
    "faults-attack-exits": "AttackExits", "faults-attack-none": "AttackReturnsNone", "faults-attack-nan": "AttackNaN",
    "faults-reach-bank": "ReachesThroughBank", "faults-reach-context": "ReachesThroughContext",
}


@pytest.fixture(scope="module")
def faults_path(tmp_path_factory) -> Path:
    """A directory holding the ``muaudit-faults`` distribution (entry points and module)."""
    root = tmp_path_factory.mktemp("faults")
    info = root / "muaudit_faults-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 1.2.3\n")
    lines = ["[muaudit.methods]", *(f"{n} = muaudit_faults_mod:{c}" for n, c in METHOD_FAULTS.items()),
             "[muaudit.attacks]", *(f"{n} = muaudit_faults_mod:{c}" for n, c in ATTACK_FAULTS.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    (root / "muaudit_faults_mod.py").write_text(textwrap.dedent(FAULTS_MODULE))
    return root


@pytest.fixture()
def faults(faults_path, monkeypatch, cache_dir):
    monkeypatch.syspath_prepend(str(faults_path))
    monkeypatch.setenv("MUAUDIT_CACHE_DIR", str(cache_dir))
    return faults_path


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("muaudit: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def score(name: str, cache_dir, out: Path | None = None, attacks: str = "loss") -> list[str]:
    argv = ["score", "--method", name, "--attacks", attacks, "--cache-dir", str(cache_dir), "--quiet"]
    return argv + (["--out", str(out)] if out else [])


# --------------------------------------------------------------------------------------- methods
@pytest.mark.parametrize("name, changed", [
    ("faults-mutate-forget-x", "data.forget.x"), ("faults-mutate-forget-y", "data.forget.y"),
    ("faults-mutate-retain", "data.retain.x"), ("faults-mutate-validation", "data.validation.y"),
    ("faults-mutate-stats", "data.train_stats['mean']"), ("faults-mutate-train", "train.x"),
])
def test_a_method_that_mutates_its_inputs_violates_the_contract_and_changes_nothing(faults, digits_setup, name,
                                                                                      changed):
    before = AuditFingerprint.of(audit_tensors(digits_setup))
    forget_error = _forget_error(digits_setup)
    with pytest.raises(PluginValidationError, match="in place") as info:
        run_method(digits_setup, load_by_name(METHODS, name), {}, seed=0)
    assert changed in str(info.value) and WHERE in str(info.value)
    assert before.changed(audit_tensors(digits_setup)) == []
    assert _forget_error(digits_setup) == forget_error


def _forget_error(setup) -> float:
    out = setup.outputs(setup.original)
    return float((out.forget_logits.argmax(1) != out.forget_labels).float().mean())


@pytest.mark.parametrize("name, fragment", [
    ("faults-mutate-forget-x", "modified its input data.forget.x in place"),
    ("faults-raise", "raised ValueError in unlearn: boom in unlearn"),
    ("faults-raise-stats", "raised ZeroDivisionError in compute_train_stats: boom in stats"),
    ("faults-task-error", "failed in unlearn: the task is fine"),
    ("faults-exit", "called sys.exit(0) in unlearn"),
    ("faults-exit-stats", "called sys.exit(1) in compute_train_stats"),
    ("faults-nan", "NaN or infinite"),
    ("faults-wrong-arch", "the model returned by"),
    ("faults-none", "returned NoneType"),
    ("faults-undeclared", "did not declare"),
])
def test_a_failing_method_exits_3_naming_it_and_writes_nothing(faults, cache_dir, tmp_path, capsys, name, fragment):
    out = tmp_path / "out"
    code = main(score(name, cache_dir, out))
    line = one_error_line(capsys.readouterr().err)
    assert code == 3, line
    assert fragment in line and name in line and DIST in line, line
    assert not out.exists()


def test_a_method_failing_in_its_constructor_is_blamed(faults, cache_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAULTS_INIT_RAISES", "1")
    code = main(score("faults-raise-init", cache_dir, tmp_path / "out"))
    line = one_error_line(capsys.readouterr().err)
    assert code == 3 and "faults-raise-init" in line and DIST in line and "boom in __init__" in line
    assert not (tmp_path / "out").exists()


def test_fresh_model_holds_the_architecture_not_the_data(digits_setup):
    """Issue 11, defect 8: ctx.fresh_model must not reach the training set or the gold models."""
    factory = method_context(digits_setup, 0, None).fresh_model
    assert getattr(factory, "__closure__", None) is None
    reachable = _reachable(factory)
    assert not any(isinstance(v, (torch.Tensor, torch.nn.Module)) for v in reachable)
    assert not any(type(v).__name__ in ("AuditSetup", "DataBundle", "Split", "ShadowBank") for v in reachable)
    model = factory(3)
    assert type(model).__name__ == "ZooModel"


def _reachable(root: object, depth: int = 4) -> list[object]:
    """Objects reachable from ``root`` through attributes, containers and closures (a few levels deep)."""
    seen, frontier, found = set(), [root], []
    for _ in range(depth):
        nxt = []
        for obj in frontier:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            found.append(obj)
            children = list(getattr(obj, "__dict__", {}).values())
            children += [getattr(obj, f) for f in getattr(obj, "__dataclass_fields__", {})]
            children += [c.cell_contents for c in (getattr(obj, "__closure__", None) or ())]
            if isinstance(obj, (list, tuple, set, frozenset)):
                children += list(obj)
            if isinstance(obj, dict):
                children += list(obj.values())
            nxt += children
        frontier = nxt
    return found


# --------------------------------------------------------------------------------------- attacks
@pytest.mark.parametrize("name, fragment", [
    ("faults-mutate-outputs", "modified its input outputs.forget_logits in place"),
    ("faults-attack-raises", "raised RuntimeError in score: boom in score"),
    ("faults-attack-exits", "called sys.exit(0) in score"),
    ("faults-attack-none", "returned NoneType from score"),
    ("faults-attack-nan", "invalid member scores"),
    ("faults-reach-bank", "changed shadow bank data.train.x"),
    ("faults-reach-context", "changed shadow bank data.test.x"),
])
def test_a_failing_attack_exits_3_naming_it(faults, cache_dir, tmp_path, capsys, name, fragment):
    out = tmp_path / "out"
    code = main(score("finetune", cache_dir, out, attacks=f"loss,{name}"))
    line = one_error_line(capsys.readouterr().err)
    assert code == 3, line
    assert fragment in line and name in line and DIST in line, line
    assert not out.exists()


def test_an_attack_cannot_corrupt_the_outputs_the_audit_uses(faults, digits_setup):
    from muaudit.attacking import run_attack

    before = digits_setup.outputs(digits_setup.original).forget_logits.clone()
    run = run_method(digits_setup, load_by_name(METHODS, "finetune"), {"epochs": 1}, seed=0)
    with pytest.raises(PluginValidationError, match="in place"):
        run_attack(digits_setup, load_by_name(ATTACKS, "faults-mutate-outputs"), run)
    assert torch.equal(digits_setup.outputs(digits_setup.original).forget_logits, before)
    card = build_scorecard(digits_setup, run, load_by_name(ATTACKS, "loss"))
    assert card.readouts  # the audit goes on with intact outputs


# ------------------------------------------------------------------------------------------ compare
def _compare(names: str, cache_dir, out: Path, capsys) -> tuple[int, dict, str]:
    code = main(["compare", "--methods", names, "--attacks", "loss", "--cache-dir", str(cache_dir), "--quiet",
                 "--method-arg", "finetune.epochs=1", "--out", str(out)])
    err = capsys.readouterr().err
    return code, json.loads((out / "comparison.json").read_text()), err


def _without_timings(card: dict) -> dict:
    card = json.loads(json.dumps(card))
    card.pop("timings", None)
    card.get("provenance", {}).pop("plugins", None)
    return card


def test_compare_keeps_every_other_method_when_one_fails(faults, cache_dir, tmp_path, capsys):
    code, comparison, err = _compare("faults-mutate-forget-x,finetune,faults-raise,retrain", cache_dir,
                                     tmp_path / "cmp", capsys)
    assert code == 3
    assert [c["method"]["name"] for c in comparison["scorecards"]] == ["finetune", "retrain"]
    failures = {f["method"]: f for f in comparison["failures"]}
    assert set(failures) == {"faults-mutate-forget-x", "faults-raise"}
    assert failures["faults-raise"]["kind"] == "plugin" and "boom in unlearn" in failures["faults-raise"]["reason"]
    assert failures["faults-mutate-forget-x"]["distribution"] == DIST
    assert "Failed methods" in (tmp_path / "cmp" / "comparison.md").read_text()
    assert one_error_line(err).endswith("the others' results were kept")
    # The mutating method ran first, yet finetune's scorecard is the one it gets alone.
    alone_code, alone, _ = _compare("finetune", cache_dir, tmp_path / "alone", capsys)
    assert alone_code == 0 and alone["failures"] == []
    assert _without_timings(comparison["scorecards"][0]) == _without_timings(alone["scorecards"][0])


def test_compare_interrupted_keeps_what_was_done(faults, cache_dir, tmp_path, capsys):
    code, comparison, err = _compare("finetune,faults-interrupted,retrain", cache_dir, tmp_path / "cmp", capsys)
    assert code == 130
    assert [c["method"]["name"] for c in comparison["scorecards"]] == ["finetune"]
    assert [(f["method"], f["kind"]) for f in comparison["failures"]] == [("faults-interrupted", "interrupted"),
                                                                         ("retrain", "not run")]
    assert "interrupted" in one_error_line(err)


# --------------------------------------------------------------------------------------- processes
def _env(faults_path: Path, cache_dir) -> dict[str, str]:
    root = Path(__file__).resolve().parents[1]
    paths = [str(faults_path), str(root), str(root / "methods"), str(root / "attacks"),
             os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "OMP_NUM_THREADS": "1",
            "MUAUDIT_CACHE_DIR": str(cache_dir)}


def test_sigint_during_a_hanging_method_ends_with_one_line(faults_path, cache_dir, tmp_path, digits_setup):
    marker = tmp_path / "started"
    env = {**_env(faults_path, cache_dir), "FAULTS_HANG_MARKER": str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "muaudit", *score("faults-hang", cache_dir, tmp_path / "out")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), proc.communicate()[1] if proc.poll() is not None else "the method never started"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert one_error_line(err) == "muaudit: error: interrupted"
    assert not (tmp_path / "out").exists()


def test_a_closed_stdout_ends_quietly(faults_path, cache_dir):
    proc = subprocess.Popen([sys.executable, "-m", "muaudit", "list"], env=_env(faults_path, cache_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before muaudit writes (``muaudit list | head -0``)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert err == ""


def test_two_processes_on_one_cache_train_each_model_once(tmp_path):
    """Issue 11, defect 11: the second process waits on the entry's lock and reuses the model."""
    cache = tmp_path / "shared-cache"
    script = textwrap.dedent(f"""
        import json, torch
        torch.set_num_threads(1)
        from muaudit.audit import prepare
        from muaudit.cache import TensorCache
        from muaudit.checkpoint import state_dict_sha256
        from muaudit.task import NAMED_TASKS
        setup = prepare(NAMED_TASKS["digits"], gold_count=2, cache=TensorCache({str(cache)!r}))
        print(json.dumps({{"trained": setup._bank.n_trained,
                          "states": [state_dict_sha256(m.state_dict())
                                     for m in (setup.original, *(g.model for g in setup.golds))]}}))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(r["trained"] for r in results) == 3  # one original and two gold models, each trained once
    assert results[0]["states"] == results[1]["states"]


# ------------------------------------------------------------------------------------------ verdicts
def test_verdicts_from_too_few_examples_are_undetermined(cache_dir):
    from dataclasses import replace

    from muaudit.audit import prepare
    from muaudit.cache import TensorCache
    from muaudit.signal import MIN_VERDICT_EXAMPLES
    from muaudit.task import NAMED_TASKS, ForgetSpec

    task = replace(NAMED_TASKS["digits"], name="digits-one", forget=ForgetSpec("random", count=1))
    setup = prepare(task, gold_count=2, cache=TensorCache(cache_dir))
    run = run_method(setup, load_by_name(METHODS, "finetune"), {"epochs": 1}, seed=0)
    card = build_scorecard(setup, run, load_by_name(ATTACKS, "loss"))
    assert card.verdict_summary == "undetermined"
    assert all(v.verdict == "undetermined" and "too few examples" in v.evidence for v in card.verdicts)
    assert MIN_VERDICT_EXAMPLES > 1


# ----------------------------------------------------------------------------------------------- --out
def test_out_is_checked_before_any_work(cache_dir, tmp_path, capsys):
    taken = tmp_path / "a-file"
    taken.write_text("not a directory")
    fresh_cache = tmp_path / "never-used"
    code = main(["score", "--method", "finetune", "--cache-dir", str(fresh_cache), "--out", str(taken), "--quiet"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "not a directory" in line
    assert not fresh_cache.exists()  # nothing was trained
    assert taken.read_text() == "not a directory"


def test_a_result_that_cannot_be_written_is_printed(cache_dir, tmp_path, capsys, monkeypatch):
    from muaudit import cli

    def refuse(directory, files):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli, "_write_outputs", refuse)
    code = main(["score", "--method", "finetune", "--method-arg", "epochs=1", "--attacks", "loss", "--cache-dir",
                 str(cache_dir), "--out", str(tmp_path / "out"), "--quiet", "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and "could not write --out" in one_error_line(err)
    assert json.loads(out)["method"]["name"] == "finetune"


def test_plugin_failure_is_a_plugin_error():
    assert PluginFailure("x").exit_code == 3 and UndeclaredDataError("x").exit_code == 3


@pytest.mark.parametrize("name", ["faults-mutate-forget-x", "faults-mutate-retain", "faults-mutate-stats"])
def test_check_method_catches_a_method_that_mutates_its_inputs(faults, digits_setup, name):
    from muaudit.testing import check_method

    with pytest.raises(AssertionError, match="in place"):
        check_method(digits_setup, load_by_name(METHODS, name))


def test_check_method_passes_a_well_behaved_method(faults, digits_setup):
    from muaudit.testing import check_method

    check_method(digits_setup, load_by_name(METHODS, "finetune"), {"epochs": 1})


@pytest.mark.parametrize("name", ["faults-reach-bank", "faults-reach-context"])
def test_an_attack_reaching_through_the_shadow_bank_cannot_change_the_audit(faults, digits_setup, name):
    from muaudit.attacking import run_attack
    from muaudit.task import NAMED_TASKS

    pristine = NAMED_TASKS["digits"].dataset.load().fingerprint()
    before = AuditFingerprint.of(audit_tensors(digits_setup))
    run = run_method(digits_setup, load_by_name(METHODS, "finetune"), {"epochs": 1}, seed=0)
    with pytest.raises(PluginValidationError, match="shadow bank"):
        run_attack(digits_setup, load_by_name(ATTACKS, name), run)
    assert before.changed(audit_tensors(digits_setup)) == []
    assert NAMED_TASKS["digits"].dataset.load().fingerprint() == pristine  # the in-process memo is intact too
    assert digits_setup._bank is None  # the tampered bank is dropped; the next attack gets a fresh one


def test_each_load_returns_private_data():
    from muaudit.task import NAMED_TASKS

    first, second = NAMED_TASKS["digits"].dataset.load(), NAMED_TASKS["digits"].dataset.load()
    first.train.x.add_(1.0)
    assert not torch.equal(first.train.x, second.train.x)
