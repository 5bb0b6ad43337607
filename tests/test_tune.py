"""muaudit tune: proxy forget sets, the same budget for every method, and never the audited gold models."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from muaudit import tune as T
from muaudit.audit import prepare
from muaudit.cache import TensorCache
from muaudit.cli import main
from muaudit.errors import ParameterError, PluginValidationError, TaskError
from muaudit.params import Param, Search
from muaudit.plugins import METHODS, load_by_name
from muaudit.shadows import ShadowBank
from muaudit.task import NAMED_TASKS, ForgetSpec, Task

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def original_only(cache_dir):
    """The digits set-up without gold models, as ``muaudit tune`` sees it."""
    return prepare(NAMED_TASKS["digits"], gold_count=0, cache=TensorCache(cache_dir), device=CPU)


def _materialised(name: str):
    task = NAMED_TASKS[name]
    data = task.dataset.load()
    return task.materialise(data), data


# --------------------------------------------------------------------------------------- proxy forget sets
@pytest.mark.parametrize("name", ["digits", "digits-class", "digits-poison"])
def test_proxies_have_the_same_kind_and_size_and_avoid_the_forget_set(name):
    task, data = _materialised(name)
    proxies = T.draw_proxy_tasks(task, data, 2, seed=0)
    forget = set(task.forget_indices)
    assert len(proxies) == 2
    for proxy in proxies:
        assert proxy.forget.kind == task.forget.kind
        assert not forget & set(proxy.forget_indices)
        assert proxy.is_materialised and proxy.content_hash() != task.content_hash()
    if name != "digits-poison":  # 68 candidates outside D_f for two proxies of 60: they may overlap
        assert not set(proxies[0].forget_indices) & set(proxies[1].forget_indices)
    if name == "digits":
        assert all(len(p.forget_indices) == len(forget) for p in proxies)


def test_full_class_proxies_are_other_whole_classes():
    task, data = _materialised("digits-class")
    labels = data.train.y.numpy()
    for proxy in T.draw_proxy_tasks(task, data, 3, seed=1):
        cls = proxy.forget.cls
        assert cls != task.forget.cls
        assert sorted(proxy.forget_indices) == np.flatnonzero(labels == cls).tolist()


def test_class_subset_proxies_come_from_other_classes():
    task = Task(name="subset", forget=ForgetSpec("class-subset", cls=2, count=20))
    data = task.dataset.load()
    task = task.materialise(data)
    for proxy in T.draw_proxy_tasks(task, data, 2, seed=0):
        labels = data.train.y.numpy()[list(proxy.forget_indices)]
        assert len(labels) == 20 and len(set(labels.tolist())) == 1 and labels[0] != 2


def test_label_flip_proxies_are_poisoned_by_the_same_rule():
    task, data = _materialised("digits-poison")
    for proxy in T.draw_proxy_tasks(task, data, 2, seed=0):
        true = data.train.y.numpy()[list(proxy.forget_indices)]
        assert (true == task.forget.cls).all()
        assert set(proxy.poison_labels) == {task.forget.target}


def test_no_proxy_can_be_drawn_is_a_task_error():
    two_classes = Task(name="big", forget=ForgetSpec("random", fraction=0.6))
    data = two_classes.dataset.load()
    with pytest.raises(TaskError, match="cannot draw 1 proxy"):
        T.draw_proxy_tasks(two_classes.materialise(data), data, 1, seed=0)
    task, data = _materialised("digits-class")
    with pytest.raises(TaskError, match="only 9 other class"):
        T.draw_proxy_tasks(task, data, 10, seed=0)


# ----------------------------------------------------------------------------------------- search spaces
def test_configurations_are_seeded_distinct_and_inside_the_space():
    space = {"lr": (Param("lr", float, 0.1, "x", search=Search(1e-3, 1.0, log=True)), Search(1e-3, 1.0, log=True)),
             "epochs": (Param("epochs", int, 5, "x"), Search(1, 30))}
    first = T.draw_configurations(space, 9, seed=3)
    assert first == T.draw_configurations(space, 9, seed=3) != T.draw_configurations(space, 9, seed=4)
    assert len(first) == 8 and len({json.dumps(c, sort_keys=True) for c in first}) == 8
    assert all(1e-3 <= c["lr"] <= 1.0 and 1 <= c["epochs"] <= 30 and isinstance(c["epochs"], int) for c in first)
    assert T.draw_configurations(space, 1, seed=0) == []


def test_every_builtin_with_parameters_declares_a_search_space():
    from muaudit.plugins import discover

    for spec in discover(METHODS):
        if spec.dist != "muaudit":
            continue
        cls = load_by_name(METHODS, spec.name).cls
        assert T.has_search_space(cls) == (spec.name != "retrain"), spec.name


def test_search_space_errors():
    finetune = load_by_name(METHODS, "finetune").cls
    with pytest.raises(ParameterError, match="nothing left to search"):
        T.search_space(finetune, {"lr": 0.1, "epochs": 3})
    with pytest.raises(PluginValidationError, match="declares no search space"):
        T.search_space(load_by_name(METHODS, "retrain").cls)


# ----------------------------------------------------------------------------------- the tuning protocol
class _BankSpy:
    """Records every model the bank is asked for: (task hash, role, training-index digest)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.requests: list[tuple[str, str, str]] = []
        original = ShadowBank.models

        def models(bank, requests, trainer=None):
            self.requests += [(bank.task_hash, r.role, r.config()["indices_sha256"]) for r in requests]
            return original(bank, requests, trainer)

        monkeypatch.setattr(ShadowBank, "models", models)


def _audited_gold_digest(setup) -> str:
    from muaudit.shadows import ModelRequest

    retain = np.setdiff1d(np.arange(len(setup.data.train)), np.asarray(setup.task.forget_indices))
    return ModelRequest("gold", retain, 0).config()["indices_sha256"]


def test_tune_never_requests_the_audited_gold_models(original_only, monkeypatch):
    spy = _BankSpy(monkeypatch)
    result = T.tune(original_only, load_by_name(METHODS, "finetune"), {}, budget=3, use_cache=False)
    audited = original_only.task.content_hash()
    digest = _audited_gold_digest(original_only)
    assert spy.requests, "the proxies' gold models go through the bank"
    assert all(h != audited for h, role, _ in spy.requests if role == "gold")
    assert all(d != digest for _, _, d in spy.requests)
    assert original_only.golds == []
    assert len(result.trials) == 3 and len(result.proxies) == 2


def test_tuned_is_at_least_as_close_to_proxy_gold_as_the_default(original_only):
    """Re-evaluated independently of the search table: the chosen and the default configuration, rerun."""
    plugin = load_by_name(METHODS, "finetune")
    result = T.tune(original_only, plugin, {}, budget=6, use_cache=False)
    proxies = [T._prepare_proxy(original_only, t, 2)
               for t in T.draw_proxy_tasks(original_only.task, original_only.data, 2, result.seed)]

    def rerun(index: int, config: dict) -> T.Trial:
        scored = T._scored_runs(original_only, plugin, {}, [config], proxies, result.seed)
        return T._trial(index, config, [per_proxy[0] for per_proxy in scored])

    chosen, default = rerun(1, result.chosen), rerun(0, {})
    assert chosen.score <= default.score
    assert chosen.score == pytest.approx(result.chosen_score) and default.score == pytest.approx(result.default_score)
    assert result.trials[0].is_default and result.trials[0].params  # the default's resolved values are recorded


def test_tune_result_round_trips_and_is_cached(original_only):
    plugin = load_by_name(METHODS, "neggrad")
    first = T.tune(original_only, plugin, {"epochs": 2}, budget=3)
    again = T.tune(original_only, plugin, {"epochs": 2}, budget=3)
    assert again == first == T.TuneResult.from_dict(json.loads(first.to_json()))
    assert first.method["fixed"] == {"epochs": 2} and all("epochs" not in t.params for t in first.trials[1:])
    assert first.chosen["epochs"] == 2
    assert "| # |" in first.to_markdown() and first.summary()["budget"] == 3


def test_a_failing_configuration_is_recorded_not_fatal(original_only):
    result = T.tune(original_only, load_by_name(METHODS, "mu-mis"), {"delta": float("inf"), "max_iters": 40},
                    budget=4, use_cache=False)
    failed = [t for t in result.trials if t.error]
    assert all(t.score == float("inf") for t in failed)
    assert any("diverged" in t.error for t in failed) or not failed


# ------------------------------------------------------------------------------------------------ the CLI
def test_cli_tune_writes_the_table_and_score_uses_it(cache_dir, tmp_path, capsys):
    out = tmp_path / "tune"
    common = ["--cache-dir", str(cache_dir), "--quiet"]
    assert main(["tune", "--method", "finetune", "--budget", "3", "--out", str(out), *common]) == 0
    table = json.loads((out / "tune.json").read_text())
    assert table["budget"] == 3 and len(table["trials"]) == 3
    card_dir = tmp_path / "card"
    assert main(["score", "--method", "finetune", "--tuned", "--tune-budget", "3", "--attacks", "loss",
                 "--out", str(card_dir), *common]) == 0
    card = json.loads((card_dir / "scorecard.json").read_text())
    assert card["method"]["tuning"]["budget"] == 3
    assert card["method"]["params"]["lr"] == table["chosen"].get("lr", card["method"]["params"]["lr"])
    capsys.readouterr()


def test_cli_compare_tunes_every_method_with_the_same_budget(cache_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "retrain,finetune", "--tune", "2", "--attacks", "loss", "--out", str(out),
                 "--cache-dir", str(cache_dir), "--quiet"]) == 0
    cards = json.loads((out / "comparison.json").read_text())["scorecards"]
    assert "tuning" not in cards[0]["method"] and cards[1]["method"]["tuning"]["budget"] == 2
    assert "retrain has nothing to tune" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["tune", "--method", "finetune", "--budget", "0"], "budget must be at least 1"),
    (["tune", "--method", "finetune", "--method-arg", "lr=0.1", "--method-arg", "epochs=2"], "nothing left to search"),
    (["tune", "--method", "finetune", "--proxies", "0"], "--proxies must be at least 1"),
    (["score", "--method", "finetune", "--tune-budget", "3"], "--tune-budget needs --tuned"),
    (["compare", "--methods", "finetune", "--tune", "-1"], "--tune must be 0"),
    (["tune", "--method", "finetune", "--task", "digits-class", "--proxies", "10"], "only 9 other class"),
])
def test_cli_bad_tuning_input_is_one_line_and_exit_2(argv, message, cache_dir, capsys):
    assert main([*argv, "--cache-dir", str(cache_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_cli_method_without_search_space_blames_it_with_exit_3(cache_dir, capsys):
    assert main(["tune", "--method", "retrain", "--cache-dir", str(cache_dir), "--quiet"]) == 3
    err = capsys.readouterr().err.strip()
    assert "retrain" in err and "muaudit" in err and "search space" in err
