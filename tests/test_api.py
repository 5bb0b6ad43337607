"""The Python API (issue 13): names, classes and instances; paths, state dicts and modules; pandas; logging."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import muaudit
from muaudit import UnlearningMethod
from muaudit.base import AttackScores, MembershipAttack
from muaudit.errors import CheckpointError, ParameterError


class NotebookFinetune(UnlearningMethod):
    """A method defined in a notebook cell: one epoch of SGD on the retain set."""

    summary = "fine-tune on D_r (a notebook method)"
    paper = "none"
    needs = frozenset({"retain"})
    params = (muaudit.Param("lr", float, 0.01, "learning rate", muaudit.Interval(0.0, 1.0, closed="right")),)

    def unlearn(self, model, data, ctx):
        opt = torch.optim.SGD(model.parameters(), lr=self.hparams["lr"])
        for x, y in data.retain.batches(64, shuffle=True, generator=ctx.generator("epoch")):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        self.report(batches_per_epoch=-(-len(data.retain) // 64))
        return model


class NotebookLoss(MembershipAttack):
    summary = "negative loss (a notebook attack)"
    paper = "none"

    def score(self, outputs, ctx):
        ce = nn.functional.cross_entropy
        return AttackScores(-ce(outputs.forget_logits, outputs.forget_labels, reduction="none").numpy(),
                            -ce(outputs.test_logits, outputs.test_labels, reduction="none").numpy(), None)


def test_tab_completion_shows_the_api():
    names = dir(muaudit)
    assert {"audit", "compare", "Scorecard", "Comparison", "UnlearningMethod"} <= set(names)
    assert "import_module" not in names and "Any" not in names


def test_notebook_example(cache_dir):
    """The README's notebook example, as a user runs it."""
    card = muaudit.audit("finetune", task="digits", attacks="loss", cache_dir=cache_dir, progress=False, epochs=1)
    assert isinstance(card, muaudit.Scorecard) and card.method["name"] == "finetune"
    assert card.method["params"]["epochs"] == 1
    frame = card.to_pandas()
    assert set(frame.section) == {"readout", "verdict"}
    assert frame[frame.name == "forget_error"].unlearned.item() == card.readout("forget_error").unlearned

    result = muaudit.compare(["finetune", NotebookFinetune], params={"finetune": {"epochs": 1}},
                             attacks=["loss", NotebookLoss], cache_dir=cache_dir, progress=False)
    assert [c.method["name"] for c in result.scorecards] == ["finetune", "NotebookFinetune"]
    local = result.scorecards[1]
    assert local.provenance["method_plugin"]["distribution"] == "local"
    assert local.diagnostics == {"batches_per_epoch": 18}
    assert [a.name for a in local.attacks] == ["loss", "NotebookLoss"]
    assert result.failures == () and set(result.to_pandas().method) == {"finetune", "NotebookFinetune"}


def test_a_method_instance_keeps_its_parameters(cache_dir):
    card = muaudit.audit(NotebookFinetune(lr=0.05), attacks="loss", cache_dir=cache_dir, progress=False)
    assert card.method["params"]["lr"] == 0.05


def test_models_as_path_state_dict_or_module_give_the_same_scorecard(cache_dir, tmp_path):
    from muaudit.checkpoint import save_checkpoint
    from muaudit.models import checkpoint_metadata
    from muaudit.testing import tiny_setup

    setup = tiny_setup(cache_dir)
    path = tmp_path / "original.pt"
    save_checkpoint(setup.original, path, checkpoint_metadata(setup.task, "original", 0, 0.0))
    cards = [muaudit.audit("finetune", model=m, attacks="loss", cache_dir=cache_dir, progress=False, epochs=1)
             for m in (str(path), setup.original.state_dict(), setup.original)]
    readouts = [[(r.name, r.unlearned) for r in c.readouts] for c in cards]
    assert readouts[0] == readouts[1] == readouts[2]
    assert cards[1].provenance["original"]["sha256"] == cards[2].provenance["original"]["sha256"]


def test_bad_api_input_is_a_clear_error(cache_dir):
    with pytest.raises(CheckpointError, match="model must be"):
        muaudit.audit("finetune", model=42, cache_dir=cache_dir, progress=False)
    with pytest.raises(ParameterError, match="lr"):
        muaudit.audit("finetune", lr=-1.0, cache_dir=cache_dir, progress=False)
    with pytest.raises(ParameterError, match="not compared"):
        muaudit.compare(["finetune"], params={"neggrad": {}}, cache_dir=cache_dir, progress=False)
    with pytest.raises(muaudit.PluginError, match="expected a registered name"):
        muaudit.audit(3.5, cache_dir=cache_dir, progress=False)


def test_phases_are_logged_on_the_muaudit_logger(cache_dir, caplog, monkeypatch):
    monkeypatch.setenv("MUAUDIT_LOG_AFTER_SECONDS", "0")
    with caplog.at_level(logging.INFO, logger="muaudit"):
        muaudit.audit("finetune", attacks="loss", cache_dir=cache_dir, progress=False, epochs=1)
    phases = [r.getMessage() for r in caplog.records if r.name == "muaudit"]
    assert any(m.startswith("inference done in") for m in phases)
    assert any(m.startswith("attack:loss done in") for m in phases)


def test_the_cli_prints_a_progress_log_when_stderr_is_not_a_terminal(cache_dir, tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUAUDIT_LOG_AFTER_SECONDS": "0", "PYTHONPATH": os.pathsep.join(
        [str(root), str(root / "methods"), str(root / "attacks"), os.environ.get("PYTHONPATH", "")])}
    fresh = tmp_path / "cache"
    argv = [sys.executable, "-m", "muaudit", "score", "--method", "finetune", "--method-arg", "epochs=1",
            "--attacks", "loss", "--cache-dir", str(fresh), "--json"]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "muaudit: golds done in" in result.stderr
    json.loads(result.stdout)
    quiet = subprocess.run([*argv, "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert "done in" not in quiet.stderr


def test_an_executor_named_in_the_api_is_closed_when_the_call_returns(tmp_path, monkeypatch):
    """``executor="processes"``: the pool made for the call stops with it; an executor object is the caller's."""
    import muaudit.engine as engine

    made = []
    real = engine.make_executor

    def recording(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(engine, "make_executor", recording)
    card = muaudit.audit("finetune", attacks="loss", cache_dir=tmp_path, progress=False, epochs=1,
                         executor="processes")
    assert card.method["name"] == "finetune" and len(made) == 1
    assert made[0]._calls >= 1 and made[0]._pool is None  # it ran work, then its workers stopped
    with engine.ProcessExecutor(2) as mine:
        muaudit.audit("finetune", attacks="loss", cache_dir=tmp_path, progress=False, epochs=1, gold_seeds=4,
                      executor=mine)
        assert mine._pool is not None  # still the caller's
    assert mine._pool is None
