"""Audit cost: one inference pass per model per audit, none for cached models."""
from __future__ import annotations

import pytest
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
