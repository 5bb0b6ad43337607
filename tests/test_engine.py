"""Executors (issue 15, first part): local worker processes train exactly the models the sequential path trains."""
from __future__ import annotations

import json
import textwrap
from dataclasses import replace

import pytest
import torch

from muaudit.audit import prepare
from muaudit.cache import TensorCache
from muaudit.checkpoint import state_dict_sha256
from muaudit.cli import main
from muaudit.engine import ProcessExecutor, SequentialExecutor, make_executor
from muaudit.errors import ConfigurationError, MuauditError
from muaudit.task import NAMED_TASKS, ModelSpec


def _states(setup) -> list[str]:
    return [state_dict_sha256(m.state_dict()) for m in (setup.original, *(g.model for g in setup.golds))]


def test_worker_processes_train_bit_identical_models(tmp_path):
    task = NAMED_TASKS["digits"]
    sequential = prepare(task, gold_count=2, cache=TensorCache(tmp_path / "a"), executor=SequentialExecutor())
    spread = prepare(task, gold_count=2, cache=TensorCache(tmp_path / "b"), executor=ProcessExecutor(2))
    assert spread._bank.n_trained == 3 and _states(spread) == _states(sequential)
    assert all(g.train_seconds > 0 for g in spread.golds)


def test_each_executor_gives_the_same_scorecard(tmp_path, capsys):
    cards = []
    for name, extra in (("sequential", []), ("processes", ["--workers", "2"])):
        out = tmp_path / name
        assert main(["score", "--method", "finetune", "--method-arg", "epochs=1", "--attacks", "loss", "--quiet",
                     "--cache-dir", str(tmp_path / f"cache-{name}"), "--executor", name, *extra, "--out",
                     str(out)]) == 0
        card = json.loads((out / "scorecard.json").read_text())
        card.pop("timings")
        cards.append(card)
    assert cards[0] == cards[1]


KILLER = '''
import multiprocessing, os
from torch import nn


def build(input_shape, n_classes):
    """Dies in a worker process (as an out-of-memory kill would), builds an MLP in the main process."""
    if multiprocessing.current_process().name != "MainProcess":
        os._exit(9)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, n_classes))
'''


def test_a_dead_worker_fails_the_run_clearly_and_caches_nothing(tmp_path, monkeypatch):
    (tmp_path / "killer_arch.py").write_text(textwrap.dedent(KILLER))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{__import__('os').environ.get('PYTHONPATH', '')}")
    base = NAMED_TASKS["digits"]
    task = replace(base, model=ModelSpec("factory:killer_arch:build"), recipe=replace(base.recipe, epochs=1))
    cache = tmp_path / "cache"
    setup = prepare(task, gold_count=0, cache=TensorCache(cache), executor=ProcessExecutor(2))  # original: 1 model
    with pytest.raises(MuauditError, match="worker died while training the gold model"):
        from muaudit.models import add_golds

        add_golds(setup, 2)
    entries = [p for p in cache.rglob("*.safetensors")]
    assert len(entries) == 1  # only the original, trained in process; no gold entry, whole or partial


def test_executor_options():
    assert make_executor("sequential").workers == 1 and make_executor("processes", 3).workers == 3
    with pytest.raises(ConfigurationError, match="at least 1"):
        ProcessExecutor(0)
    with pytest.raises(ConfigurationError, match="unknown executor"):
        make_executor("ray")


@pytest.mark.parametrize("argv, fragment", [
    (["--executor", "processes", "--workers", "0"], "--workers must be at least 1"),
    (["--workers", "2"], "--workers needs --executor processes"),
    (["--executor", "ray"], "invalid choice: 'ray'"),
])
def test_bad_executor_options_are_one_line(tmp_path, capsys, argv, fragment):
    code = main(["score", "--method", "finetune", "--cache-dir", str(tmp_path / "never"), *argv])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and fragment in lines[0], lines
    assert not (tmp_path / "never").exists()


def test_one_torch_thread_in_workers_does_not_change_the_driver():
    before = torch.get_num_threads()
    ProcessExecutor(2)
    assert torch.get_num_threads() == before


def test_gold_models_say_whether_they_came_from_the_cache(tmp_path):
    cache = TensorCache(tmp_path / "c")
    cold = prepare(NAMED_TASKS["digits"], gold_count=2, cache=cache)
    assert [g.from_cache for g in cold.golds] == [False, False]
    warm = prepare(NAMED_TASKS["digits"], gold_count=3, cache=cache)  # two cached, one new
    assert [g.from_cache for g in warm.golds] == [True, True, False]
