"""Audit cost: one inference pass per model per audit, none for cached models."""
from __future__ import annotations

import torch

from muaudit import outputs as O
from muaudit.audit import build_scorecard, prepare, run_method
from muaudit.cache import TensorCache
from muaudit.plugins import ATTACKS, load_by_name
from muaudit.task import NAMED_TASKS
from muaudit.testing import load_method

DEFAULT_ATTACKS = ("loss", "entropy-lr", "entropy-svc")


def _attacks():
    return [(load_by_name(ATTACKS, a), {}) for a in DEFAULT_ATTACKS]


def _audit(cache_dir, method: str = "finetune") -> tuple[int, object]:
    before = O.PASSES.total
    setup = prepare(NAMED_TASKS["digits"], gold_count=2, cache=TensorCache(cache_dir), device=torch.device("cpu"))
    card = build_scorecard(setup, run_method(setup, load_method(method), {"epochs": 1}), _attacks())
    return O.PASSES.total - before, card


def test_one_pass_per_model_then_none_for_cached_models(tmp_path):
    first, card = _audit(tmp_path)
    assert first == 1 + 1 + 2  # unlearned, original, two gold models
    second, again = _audit(tmp_path, "neggrad")
    assert second == 1  # only the new unlearned model: the original's and gold outputs come from the cache


def _comparable(card) -> dict:
    out = card.to_dict()
    out.pop("timings")
    return out


def test_cold_and_warm_audits_give_identical_scorecards(tmp_path):
    _, cold = _audit(tmp_path)
    _, warm = _audit(tmp_path)
    assert _comparable(cold) == _comparable(warm)


def test_a_corrupted_cached_output_is_recomputed_not_used(tmp_path):
    from muaudit.outputs import OutputStore

    _, first = _audit(tmp_path)
    setup = prepare(NAMED_TASKS["digits"], gold_count=2, cache=TensorCache(tmp_path), device=torch.device("cpu"))
    paths = [setup.cache.path(OutputStore.config(setup.outputs_identity(m)))
             for m in (setup.original, *(g.model for g in setup.golds))]
    assert all(p.is_file() for p in paths)
    for path in paths:  # damage the tensor data: the digest check must reject every entry
        data = bytearray(path.read_bytes())
        data[-8:] = bytes(8)
        path.write_bytes(bytes(data))
    passes, again = _audit(tmp_path)
    assert passes == 4  # the original and both gold models were inferred again
    assert _comparable(again) == _comparable(first)


def test_retain_sample_bounds_the_retain_evaluation_set(cache_dir):
    setup = prepare(NAMED_TASKS["digits"], gold_count=1, cache=TensorCache(cache_dir), device=torch.device("cpu"),
                    retain_sample_size=300)
    assert len(setup.retain_eval) == 300 and setup.retain_sampled and len(setup.retain) > 300
    card = build_scorecard(setup, run_method(setup, load_method("finetune"), {"epochs": 1}),
                           [(load_by_name(ATTACKS, "loss"), {})])
    retain = card.readout("retain_error")
    assert retain.interval is not None and retain.interval[0] <= retain.unlearned <= retain.interval[1]
    assert "sample of 300" in retain.description
    full = prepare(NAMED_TASKS["digits"], gold_count=1, cache=TensorCache(cache_dir), device=torch.device("cpu"))
    assert not full.retain_sampled and len(full.retain_eval) == len(full.retain)


def test_a_second_audit_scores_only_its_unlearned_model(tmp_path, monkeypatch):
    from muaudit import attacking

    _audit(tmp_path)
    roles = []
    real = attacking._attack_run

    def counting(attack, outputs, ctx, where):
        roles.append(ctx.role)
        return real(attack, outputs, ctx, where)

    monkeypatch.setattr(attacking, "_attack_run", counting)
    _audit(tmp_path, "neggrad")
    assert roles == ["unlearned"] * len(DEFAULT_ATTACKS)
